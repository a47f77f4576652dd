// Training configuration: one struct, read from TOML (configs/*.toml), then
// dotted overrides (`--set optim.lr=3e-4`), then saved resolved into the run
// folder. Every key is registered once in config.cpp with its type and help,
// so unknown keys and badly typed values are errors naming the key, the file
// and the value.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace rz {

struct TrainConfig {
  struct Run {
    std::string name = "run";
    std::string out_dir = "runs";
    uint64_t seed = 0;
    std::string device = "auto";      // cpu, cuda, cuda:N, auto
    std::string precision = "fp32";   // fp32 | bf16 (CUDA)
    bool deterministic = false;       // CUDA: reproducible cuDNN algorithms only
    bool allow_tf32 = false;          // CUDA: fp32 convs/GEMMs may use TF32 tensor cores
    std::string conv_impl = "cudnn";  // CUDA: cudnn | native | auto (per-layer autotune)
    bool allow_unvalidated_kernels = false;  // CUDA: auto may pick kernels no GPU run validated
    int64_t threads = 0;              // CPU threads, 0: all cores
    bool memory_check = true;         // estimate memory first (train/memory_plan.h)
  } run;
  struct Model {
    std::string name = "seresnet152d";
    int64_t img_size = 512;
    int64_t in_chans = 3;
    double drop_rate = 0.0;
    bool fused_se = false;            // bottleneck ends (bn3+SE+add+ReLU) as one fused op
    bool fused_bn = false;            // bn1/bn2 + ReLU of every block as one fused op
    bool fused_conv_bn = false;       // conv1/conv2 + BN + ReLU as conv_bn_act
    bool sync_bn = false;             // data-parallel: batch statistics over all ranks
    std::string pretrained;           // timm-format safetensors file
  } model;
  struct Data {
    std::string dir;                  // RANZCR layout: train.csv, train/*.jpg, ...
    std::string cache_dir;            // `ranzcr prep` output
    int64_t fold = 0;                 // validation fold
    int64_t n_folds = 5;
    bool annotated_only = false;      // train only on studies with annotations
    int64_t workers = 2;
    int64_t limit = 0;                // use only the first N studies (0: all)
    bool allow_missing_studies = false;  // train.csv studies absent from the cache are left out
  } data;
  // What `ranzcr prep` did to the images (data/pipeline.h PrepSpec). Training
  // records the cache's values here when it starts (image_size 0: take them
  // from data.cache_dir), so the run's config, and every checkpoint, says
  // how inference must preprocess; a non-zero image_size is a requirement
  // that the cache must meet.
  struct Prep {
    int64_t image_size = 0;
    bool clahe = true;
    double clahe_clip = 2.0;
    int64_t clahe_tiles_x = 8;
    int64_t clahe_tiles_y = 8;
  } prep;
  struct Aug {
    double eval_crop = 1.0;           // validation/inference: central crop of this fraction of each side
    double scale_min = 0.85, scale_max = 1.0;
    double ratio_min = 0.75, ratio_max = 1.3333333333333333;
    double rotate_deg = 10.0, rotate_p = 0.5;
    double hflip_p = 0.5;
    double brightness = 0.2, contrast = 0.2, brightness_contrast_p = 0.5;
    double dropout_p = 0.0;
    int64_t dropout_holes = 8;
    double dropout_size = 0.1;
  } aug;
  struct Stage {
    std::string kind = "teacher";     // teacher | student-kd | student-transfer | finetune
    std::string teacher;              // teacher checkpoint (student stages)
    std::string init;                 // weights to start from (checkpoint or safetensors)
    std::vector<std::string> freeze;  // parameter-name prefixes kept fixed
    double w_bce = 1.0;
    double w_feat = 0.5;
    // student-kd: the stages whose outputs the feature MSE compares (the mean of
    // their MSEs); layer4 is the final feature map, layer1..3 the finer ones.
    std::vector<std::string> feat_layers{"layer4"};
    std::string annotation_style = "seed";  // seed | color | device (data/draw.h)
    double annotation_thickness = 2.0;
    double input_noise = 0.0;         // extra student perturbation (Gaussian std)
    double input_dropout = 0.0;       // extra student perturbation: share of pixels zeroed
  } stage;
  struct Optim {
    std::string name = "adam";        // sgd | adam | adamw
    double lr = 1e-4;
    double weight_decay = 0.0;
    double momentum = 0.9;
    bool nesterov = false;
    double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  } optim;
  struct Sched {
    std::string kind = "cosine";      // constant | step | cosine
    double warmup_epochs = 1.0;
    double warmup_lr = 1e-6;
    double min_lr = 1e-6;
    double step_epochs = 1.0;
    double gamma = 0.1;
  } sched;
  struct Train {
    int64_t epochs = 10;
    int64_t batch = 16;
    int64_t accum_steps = 1;
    double clip_grad = 0.0;           // max global grad norm; 0: off
    bool cuda_graph = false;          // CUDA: capture the whole step once, then replay it
    double ema_decay = 0.0;           // weight EMA; 0: off
    int64_t max_nonfinite = 5;        // abort after this many non-finite losses in a row
    int64_t log_every = 10;           // optimizer steps between metrics lines
    std::string profile_steps;        // "A:B": cudaProfilerStart/Stop around steps A..B
  } train;
  // Data-parallel training (train/data_parallel.h), active when the process
  // is one of several ranks launched by mpirun or srun.
  struct Dist {
    double bucket_mb = 25.0;          // gradient bucket size of the all-reduce
    std::string reduce_dtype = "f32"; // f32 | bf16: the gradients' wire format
    double timeout_s = 600.0;         // a collective not done by then ends the job
  } dist;
};

// Reads a TOML file over the defaults. Errors name the file, the key and the value.
TrainConfig load_config(const std::string& path);
TrainConfig parse_config(const std::string& toml_text, const std::string& source);
// Applies "section.key=value" (value parsed according to the key's type;
// lists as comma-separated or TOML arrays).
void apply_override(TrainConfig& cfg, const std::string& assignment);
// The whole configuration as TOML (every key, resolved).
std::string config_to_toml(const TrainConfig& cfg);
// Checks values and combinations; throws rz::Error naming the key.
void validate_config(const TrainConfig& cfg);
// "section.key: type  help" lines, for --help-config.
std::string config_keys_help();

}  // namespace rz
