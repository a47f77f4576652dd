#include "train/trainer.h"

#include <omp.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>

#include "data/pipeline.h"
#include "data/cache.h"
#include "data/csv.h"
#include "data/draw.h"
#include "data/folds.h"
#include "data/loader.h"
#include "data/ranzcr_csv.h"
#include "engine/atomic_file.h"
#include "engine/autograd.h"
#include "engine/cuda_context.h"
#include "engine/cuda_graph.h"
#include "engine/fault.h"
#include "engine/lr_schedule.h"
#include "engine/optim.h"
#include "engine/safetensors.h"
#include "engine/storage.h"
#include "models/seresnet.h"
#include "models/timm_weights.h"
#include "train/checkpoint.h"
#include "train/memory_plan.h"
#include "train/compute.h"
#include "train/inputs.h"
#include "train/metrics.h"
#include "train/run_folder.h"
#include "train/run_records.h"
#include "train/train_step.h"
#include "train/data_parallel.h"
#include "engine/comm.h"
#include "engine/nn.h"

namespace fs = std::filesystem;

namespace rz {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// ---- data: studies, folds, cache and the per-sample input pipeline ----

struct Dataset {
  RanzcrTrainSet train;
  RanzcrAnnotations annotations;  // by_study empty when there is no annotation file
  std::unique_ptr<data::ImageCache> cache;
  std::vector<int> fold;          // per study
  std::vector<int64_t> cache_row; // per study: index in the cache, -1 when skipped by prep

  bool annotated(size_t study) const {
    return !annotations.by_study.empty() && !annotations.by_study[study].empty();
  }
};

Dataset load_dataset(const TrainConfig& cfg) {
  RZ_CHECK(!cfg.data.dir.empty(), "config: data.dir is empty (the RANZCR folder with train.csv)");
  RZ_CHECK(!cfg.data.cache_dir.empty(),
           "config: data.cache_dir is empty (run `ranzcr prep` and point data.cache_dir at it)");
  Dataset d;
  d.train = read_ranzcr_train((fs::path(cfg.data.dir) / "train.csv").string());
  const fs::path ann = fs::path(cfg.data.dir) / "train_annotations.csv";
  if (fs::exists(ann)) d.annotations = read_ranzcr_annotations(ann.string(), d.train);
  d.cache = std::make_unique<data::ImageCache>(data::ImageCache::open(cfg.data.cache_dir, "train"));
  // The cache must be what the config's prep.* says it is (when it says).
  TrainConfig checked = cfg;
  resolve_prep(checked, d.cache->info(), data::cache_index_path(cfg.data.cache_dir, "train"));
  // A cache built from an older train.csv lacks studies: an error, unless
  // data.allow_missing_studies (then they are left out like bad images).
  d.cache->check_covers(d.train, data::CacheOpenOptions{.allow_missing_studies = cfg.data.allow_missing_studies});
  if (d.train.has_fold_column) {
    for (const auto& s : d.train.studies) d.fold.push_back(s.fold);
  } else {
    d.fold = group_kfold(d.train.patient_ids(), static_cast<int>(cfg.data.n_folds));
  }
  for (const auto& s : d.train.studies) d.cache_row.push_back(d.cache->find(s.uid));
  return d;
}

struct Split {
  std::vector<int64_t> train, val;  // study indices
};

Split make_split(const Dataset& d, const TrainConfig& cfg) {
  Split s;
  const bool teacher = cfg.stage.kind == "teacher";
  const bool need_annotation = teacher || cfg.stage.kind == "student-kd";
  const int64_t n = cfg.data.limit > 0 ? std::min<int64_t>(cfg.data.limit, static_cast<int64_t>(d.train.studies.size()))
                                       : static_cast<int64_t>(d.train.studies.size());
  for (int64_t i = 0; i < n; ++i) {
    const auto si = static_cast<size_t>(i);
    if (d.cache_row[si] < 0) continue;  // not in the cache (bad image)
    const bool val = d.fold[si] == cfg.data.fold;
    // The teacher sees annotated images only; the distilled student needs the
    // annotated twin for its teacher, so it trains on annotated studies too.
    if (!val && need_annotation && !d.annotated(si)) continue;
    if (!val && cfg.data.annotated_only && !d.annotated(si)) continue;
    if (val && teacher && !d.annotated(si)) continue;  // the teacher is judged on what it reads
    (val ? s.val : s.train).push_back(i);
  }
  RZ_CHECK(!s.train.empty(), "no training studies for fold ", cfg.data.fold, " (stage ",
           cfg.stage.kind, ", ", d.train.studies.size(), " studies in ", d.train.path, ")");
  RZ_CHECK(!s.val.empty(), "no validation studies in fold ", cfg.data.fold);
  return s;
}

// The per-sample pipeline (data/pipeline.h) over this dataset's cache:
// plain input for students, annotated for teachers, and the annotated twin
// of a paired (distillation) sample under the same augmentation.
data::SampleTransform make_transform(const Dataset& d, const TrainConfig& cfg, bool train,
                                     bool plain_is_annotated) {
  const data::CacheSamples samples{
      .cache = d.cache.get(),
      .cache_row = &d.cache_row,
      .annotations = &d.annotations,
      .style = data::parse_annotation_style(cfg.stage.annotation_style),
      .thickness = static_cast<float>(cfg.stage.annotation_thickness)};
  return data::make_sample_transform(samples, input_spec(cfg, train), plain_is_annotated);
}

Tensor gather_labels(const Dataset& d, const std::vector<int64_t>& studies) {
  Tensor y = Tensor::empty({static_cast<int64_t>(studies.size()), kNumRanzcrLabels});
  float* p = y.data<float>();
  for (size_t i = 0; i < studies.size(); ++i) {
    const auto& l = d.train.studies[static_cast<size_t>(studies[i])].labels;
    std::copy(l.begin(), l.end(), p + i * kNumRanzcrLabels);
  }
  return y;
}

// ---- model, teacher, optimizer ----


std::unique_ptr<Optimizer> build_optimizer(const TrainConfig& cfg, std::vector<Tensor> params) {
  if (cfg.optim.name == "sgd")
    return std::make_unique<Sgd>(std::move(params),
                                 SgdHyper{.lr = cfg.optim.lr, .momentum = cfg.optim.momentum,
                                          .weight_decay = cfg.optim.weight_decay,
                                          .nesterov = cfg.optim.nesterov});
  return std::make_unique<Adam>(
      std::move(params),
      AdamHyper{.lr = cfg.optim.lr, .beta1 = cfg.optim.beta1, .beta2 = cfg.optim.beta2,
                .eps = cfg.optim.eps, .weight_decay = cfg.optim.weight_decay,
                .decoupled = cfg.optim.name == "adamw"});
}

LrSchedule build_schedule(const TrainConfig& cfg, int64_t steps_per_epoch) {
  LrSchedule s;
  s.kind = parse_schedule_kind(cfg.sched.kind);
  s.base_lr = cfg.optim.lr;
  s.warmup_steps = static_cast<int64_t>(std::llround(cfg.sched.warmup_epochs * static_cast<double>(steps_per_epoch)));
  s.warmup_init_lr = cfg.sched.warmup_lr;
  s.step_size = std::max<int64_t>(1, static_cast<int64_t>(std::llround(cfg.sched.step_epochs * static_cast<double>(steps_per_epoch))));
  s.gamma = cfg.sched.gamma;
  s.total_steps = std::max(cfg.train.epochs * steps_per_epoch, s.warmup_steps + 1);
  s.min_lr = cfg.sched.min_lr;
  check_schedule(s);
  return s;
}


// train.profile_steps "A:B" -> {A, B}: cudaProfilerStart before optimizer step
// A, cudaProfilerStop after step B (0-based step counts); "" -> {-1, -1}.
std::pair<int64_t, int64_t> parse_profile_steps(const std::string& s) {
  if (s.empty()) return {-1, -1};
  const auto colon = s.find(':');
  long long a = -1, b = -1;
  char tail = 0;
  RZ_CHECK(colon != std::string::npos &&
               std::sscanf(s.c_str(), "%lld:%lld%c", &a, &b, &tail) == 2 && a >= 0 && b >= a,
           "train.profile_steps = '", s, "': expected A:B with 0 <= A <= B");
  return {a, b};
}

// Runs `model` (eval mode, no gradients) over the loader's studies: loss,
// per-label AUC, and the ROC curves when asked; sigmoid scores into *scores_out.
EpochRecord validate(const Dataset& data, ResNet& model, data::Loader& loader,
                     const std::vector<int64_t>& val, const Compute& compute,
                     std::vector<RocCurve>* roc, std::vector<float>* scores_out = nullptr,
                     Communicator* comm = nullptr) {
  NvtxRange range("validate");
  NoGradGuard no_grad;
  model.eval();
  const int64_t n = static_cast<int64_t>(val.size());
  std::vector<float> scores(static_cast<size_t>(n * kNumRanzcrLabels));
  std::vector<float> labels(scores.size());
  double loss_sum = 0;
  int64_t rows = 0;
  loader.start_epoch(0);
  while (auto b = loader.next()) {
    std::vector<int64_t> studies;
    for (int64_t i : b->indices) studies.push_back(i);
    const Tensor y = gather_labels(data, studies);
    const Tensor logits = model.forward(to_compute(b->images, compute));
    loss_sum += bce_with_logits(logits, y.to(compute.device)).item() * static_cast<double>(studies.size());
    const std::vector<float> host = host_floats(logits);
    const float* pl = host.data();
    const float* py = y.data<float>();
    for (int64_t i = 0; i < logits.numel(); ++i) {
      scores[static_cast<size_t>(rows * kNumRanzcrLabels + i)] = 1.0f / (1.0f + std::exp(-pl[i]));
      labels[static_cast<size_t>(rows * kNumRanzcrLabels + i)] = py[i];
    }
    rows += static_cast<int64_t>(studies.size());
  }
  model.train();
  if (comm && comm->world_size() > 1) {
    // Each rank scored its shard (rows r, r + W, ...): every rank gets the
    // whole fold in its order, so the AUC is the one of a single process.
    scores.resize(static_cast<size_t>(rows * kNumRanzcrLabels));
    labels.resize(scores.size());
    scores = gather_sharded_rows(*comm, scores, n, kNumRanzcrLabels);
    labels = gather_sharded_rows(*comm, labels, n, kNumRanzcrLabels);
    double totals[2] = {loss_sum, static_cast<double>(rows)};
    comm->all_reduce_sum(totals, 2);
    loss_sum = totals[0];
    rows = static_cast<int64_t>(totals[1]);
  }
  if (scores_out) *scores_out = scores;
  EpochRecord r;
  r.val_loss = loss_sum / static_cast<double>(std::max<int64_t>(rows, 1));
  const AucReport rep = auc_report(scores.data(), labels.data(), rows);
  r.mean_auc = rep.mean;
  r.auc = rep.per_label;
  if (roc) {
    roc->clear();
    std::vector<float> s(static_cast<size_t>(rows)), l(static_cast<size_t>(rows));
    for (int k = 0; k < kNumRanzcrLabels; ++k) {
      for (int64_t i = 0; i < rows; ++i) {
        s[static_cast<size_t>(i)] = scores[static_cast<size_t>(i * kNumRanzcrLabels + k)];
        l[static_cast<size_t>(i)] = labels[static_cast<size_t>(i * kNumRanzcrLabels + k)];
      }
      roc->push_back(roc_curve(s.data(), l.data(), rows));
    }
  }
  return r;
}

// ---- the run ----

// run.threads for one run or evaluation: the process's OpenMP thread count
// comes back when it returns (a library call leaves no global changed).
class OmpThreadsScope {
 public:
  explicit OmpThreadsScope(int64_t threads) : saved_(omp_get_max_threads()) {
    if (threads > 0) omp_set_num_threads(static_cast<int>(threads));
  }
  ~OmpThreadsScope() { omp_set_num_threads(saved_); }
  OmpThreadsScope(const OmpThreadsScope&) = delete;
  OmpThreadsScope& operator=(const OmpThreadsScope&) = delete;

 private:
  int saved_;
};

// The device and the settings that depend on it, checked before any data is read.
Compute run_compute(const TrainConfig& cfg) {
  const Compute compute = resolve_compute(cfg.run.device, cfg.run.precision, cuda_settings(cfg));
  if (cfg.train.cuda_graph) {
    RZ_CHECK(compute.device.is_cuda(), "train.cuda_graph needs a CUDA device (run.device = ",
             cfg.run.device, " resolved to ", compute.device.str(), ")");
    RZ_CHECK(cfg.train.accum_steps == 1 && cfg.train.clip_grad == 0 && cfg.model.drop_rate == 0,
             "train.cuda_graph needs train.accum_steps = 1, train.clip_grad = 0 and model.drop_rate = 0 "
             "(got ", cfg.train.accum_steps, ", ", cfg.train.clip_grad, ", ", cfg.model.drop_rate, ")");
  }
  RZ_CHECK(cfg.stage.annotation_style == "seed" || cfg.model.in_chans == 3,
           "stage.annotation_style = ", cfg.stage.annotation_style, " needs model.in_chans = 3");
  return compute;
}

TrainHooks with_default_log(TrainHooks hooks) {
  if (!hooks.log) hooks.log = [](const std::string& s) { std::printf("%s\n", s.c_str()); std::fflush(stdout); };
  return hooks;
}

class Run {
 public:
  Run(TrainConfig cfg, std::string run_dir, const TrainHooks& hooks)
      : cfg_(std::move(cfg)), dir_(std::move(run_dir)), hooks_(with_default_log(hooks)) {}

  TrainResult execute(bool resuming);

 private:
  void log(const std::string& s) { hooks_.log(s); }
  void write_jsonl(const nlohmann::json& j) { append_line((fs::path(dir_) / "metrics.jsonl").string(), j.dump()); }
  TrainConfig cfg_;
  std::string dir_;
  TrainHooks hooks_;
  Dataset data_;
};

TrainResult Run::execute(bool resuming) {
  validate_config(cfg_);
  const OmpThreadsScope threads(cfg_.run.threads);
  Compute compute = run_compute(cfg_);
  // Data parallelism (train/data_parallel.h): one process per rank, each on
  // the GPU of its local rank; rank 0 alone logs and writes files.
  const DistEnv env = detect_dist_env();
  const bool distributed = env.world_size > 1;
  if (distributed && compute.device.is_cuda()) compute.device = Device::cuda(env.local_rank);
  const std::shared_ptr<Communicator> comm = communicator_for(compute.device, cfg_.dist.timeout_s);
  const bool writer = comm->rank() == 0;
  if (!writer) {
    hooks_.log = [](const std::string&) {};
    hooks_.progress = ProgressMode::off;
  }
  RZ_CHECK(!distributed || !cfg_.train.cuda_graph, "train.cuda_graph is not supported in data-parallel training (",
           env.world_size, " ranks)");
  const auto [profile_first, profile_last] = parse_profile_steps(cfg_.train.profile_steps);
  check_training_memory(cfg_, compute.device.is_cuda() ? compute.device.index : -1);
  data_ = load_dataset(cfg_);
  const Split split = make_split(data_, cfg_);
  const bool teacher_stage = cfg_.stage.kind == "teacher";
  const bool kd = cfg_.stage.kind == "student-kd";
  const int64_t S = cfg_.model.img_size, C = cfg_.model.in_chans;
  log("stage " + cfg_.stage.kind + ": " + std::to_string(split.train.size()) + " training and " +
      std::to_string(split.val.size()) + " validation studies (fold " + std::to_string(cfg_.data.fold) +
      "), model " + cfg_.model.name + " at " + std::to_string(S) + "px on " + compute.str() + ", " +
      std::to_string(omp_get_max_threads()) + " CPU threads" +
      (distributed ? ", rank 0 of " + std::to_string(comm->world_size()) + " (" + comm->name() + ", " +
                         env.launcher + "), global batch " + std::to_string(cfg_.train.batch * comm->world_size())
                   : std::string()));

  // Model, teacher, optimizer.
  auto model = build_model(cfg_, cfg_.run.seed);
  if (!resuming) {
    if (!cfg_.model.pretrained.empty()) {
      log("pretrained " + cfg_.model.pretrained + ": " + load_pretrained(*model, cfg_.model.pretrained).str());
    }
    if (!cfg_.stage.init.empty()) {
      load_timm_state_dict(*model, read_model_weights(cfg_.stage.init));
      log("initialized from " + cfg_.stage.init);
    }
  }
  for (const auto& prefix : cfg_.stage.freeze) {
    const int64_t k = model->set_requires_grad(prefix, false);
    RZ_CHECK(k > 0, "stage.freeze: no parameter name starts with '", prefix, "'");
  }
  model->to(compute.device);
  std::vector<Tensor> trainable;
  for (const auto& [name, p] : model->named_parameters())
    if (p.requires_grad()) trainable.push_back(p);
  std::shared_ptr<ResNet> teacher;
  if (kd) {
    teacher = build_model(cfg_, 0);
    load_timm_state_dict(*teacher, read_model_weights(cfg_.stage.teacher));
    teacher->eval();
    teacher->set_requires_grad("", false);
    teacher->to(compute.device);
  }
  std::shared_ptr<ResNet> ema;
  if (cfg_.train.ema_decay > 0) {
    ema = build_model(cfg_, 0);
    ema->to(compute.device);
    ema->load_state_dict(model->state_dict());
  }
  auto optim = build_optimizer(cfg_, trainable);
  std::unique_ptr<GradientReducer> reducer;
  if (distributed) {
    // Every rank starts from rank 0's weights and statistics.
    std::vector<Tensor> state;
    for (auto& [name, t] : model->state_dict()) state.push_back(t);
    broadcast_state(*comm, state);
    if (ema) ema->load_state_dict(model->state_dict());
    if (cfg_.model.sync_bn) {
      const int64_t n = set_sync_batch_norm(*model, comm);
      log("sync_bn: " + std::to_string(n) + " batch norms take their statistics over " +
          std::to_string(comm->world_size()) + " ranks");
    }
    reducer = std::make_unique<GradientReducer>(
        comm, trainable,
        ReducerOptions{.bucket_mb = cfg_.dist.bucket_mb,
                       .reduce_dtype = cfg_.dist.reduce_dtype == "bf16" ? DType::BF16 : DType::F32});
    char line[160];
    std::snprintf(line, sizeof line, "data parallel: %d ranks, %lld gradient buckets of up to %g MB (%s)",
                  comm->world_size(), static_cast<long long>(reducer->bucket_count()), cfg_.dist.bucket_mb,
                  cfg_.dist.reduce_dtype.c_str());
    log(line);
  }

  // Data: each rank reads its shard of every epoch.
  data::LoaderOptions lo{.batch = cfg_.train.batch, .shuffle = true, .drop_last = true,
                         .seed = cfg_.run.seed, .workers = static_cast<int>(cfg_.data.workers),
                         .prefetch = kTrainLoaderPrefetch, .paired = kd,
                         .shard_rank = comm->rank(), .shard_count = comm->world_size()};
  RZ_CHECK(static_cast<int64_t>(split.train.size()) >= cfg_.train.batch * comm->world_size(), "only ",
           split.train.size(), " training studies for a batch of ", cfg_.train.batch, " on ",
           comm->world_size(), " rank(s)");
  data::Loader train_loader(split.train, lo, {S, S, C}, make_transform(data_, cfg_, true, teacher_stage));
  data::LoaderOptions vo = lo;  // sharded too: validate() gathers the scores
  vo.shuffle = false;
  vo.drop_last = false;
  vo.paired = false;
  data::Loader val_loader(split.val, vo, {S, S, C}, make_transform(data_, cfg_, false, teacher_stage));
  const int64_t micro_per_epoch = train_loader.batches_per_epoch();
  const int64_t steps_per_epoch = std::max<int64_t>(1, micro_per_epoch / cfg_.train.accum_steps);
  const LrSchedule sched = build_schedule(cfg_, steps_per_epoch);

  TrainState state;
  const fs::path last_ckpt = fs::path(dir_) / "last.ckpt";
  RunRecords records(dir_, kd, writer);
  state.config_toml = config_to_toml(cfg_);
  if (resuming) {
    state = load_checkpoint(last_ckpt.string(), *model, ema.get(), optim.get());
    RZ_CHECK(state.epoch <= cfg_.train.epochs && state.batch_in_epoch == 0, "cannot resume ", dir_,
             ": last.ckpt changed while it was being read (epoch ", state.epoch, ")");
    if (state.rng.count("dropout")) model->dropout_generator().set_state(state.rng.at("dropout"));
    state.config_toml = config_to_toml(cfg_);
    if (writer) check_best_files(dir_, state, ema ? *ema : *model, cfg_.stage.kind, hooks_.log);
    // The logs keep exactly the committed epochs.
    records.resume(state.epoch, hooks_.log);
    log("resuming " + dir_ + " after epoch " + std::to_string(state.epoch));
  }

  TrainStep step(cfg_, compute, *model, teacher.get(), ema.get(), *optim, trainable,
                 [this](const std::string& s) { log(s); });
  step.set_gradient_sync(reducer.get());
  TrainResult result;
  result.run_dir = dir_;
  result.rank = comm->rank();
  int64_t nonfinite_in_a_row = 0;
  // Out of memory inside the loop names the step and the settings to lower.
  const AllocationPurpose purpose(
      "the training step (batch " + std::to_string(cfg_.train.batch) + " at " + std::to_string(S) +
          " px, " + compute.str() + ")",
      "lower train.batch (raise train.accum_steps to keep the effective batch) or model.img_size" +
          std::string(compute.device.is_cuda() ? ", or set run.precision = \"bf16\"" : ""));
  for (int64_t epoch = state.epoch; epoch < cfg_.train.epochs; ++epoch) {
    if (hooks_.stop_after_epochs > 0 && result.epochs_run >= hooks_.stop_after_epochs) break;
    const auto t_epoch = Clock::now();
    train_loader.start_epoch(epoch, 0);
    model->train();
    double loss_sum = 0, feat_sum = 0;
    int64_t loss_count = 0, micro = 0, images = 0;
    auto t_log = Clock::now();
    int64_t images_since_log = 0;
    ProgressLine progress("epoch " + std::to_string(epoch + 1) + "/" + std::to_string(cfg_.train.epochs),
                          micro_per_epoch, "img", hooks_.progress, hooks_.progress_every_s, cfg_.train.log_every);
    optim->zero_grad();
    while (true) {
      std::optional<data::Batch> b;
      {
        NvtxRange range("data wait");
        b = train_loader.next();
      }
      if (!b) break;
      if (compute.device.is_cuda() && state.step == profile_first && micro % cfg_.train.accum_steps == 0)
        profile_start();
      NvtxRange step_range("train step");
      const Tensor y_host = gather_labels(data_, b->indices);
      ++micro;
      images += y_host.size(0) * comm->world_size();
      images_since_log += y_host.size(0) * comm->world_size();
      const StepResult r = step.run(b->images, b->images_annotated, y_host, lr_at(sched, state.step),
                                    micro % cfg_.train.accum_steps == 0);
      if (!r.finite) {
        // A skipped step: warn, and abort after train.max_nonfinite in a row.
        ++nonfinite_in_a_row;
        progress.clear();
        log("warning: non-finite loss " + std::to_string(r.loss) + " at epoch " + std::to_string(epoch + 1) +
            " batch " + std::to_string(b->batch_index) + ": step skipped (" + std::to_string(nonfinite_in_a_row) +
            " in a row)");
        RZ_CHECK(nonfinite_in_a_row < cfg_.train.max_nonfinite, "aborting: ", nonfinite_in_a_row,
                 " non-finite losses in a row (train.max_nonfinite = ", cfg_.train.max_nonfinite,
                 "); last checkpoint: ", last_ckpt.string());
        continue;
      }
      nonfinite_in_a_row = 0;
      loss_sum += r.loss;
      feat_sum += r.feat;
      ++loss_count;
      if (!r.stepped) continue;
      if (compute.device.is_cuda() && state.step == profile_last) profile_stop();
      ++state.step;
      fault_point("train step");
      char fields[96];
      std::snprintf(fields, sizeof fields, "loss %.4f  lr %.2e",
                    loss_sum / static_cast<double>(std::max<int64_t>(loss_count, 1)), optim->lr());
      progress.update(micro, images, fields);
      if (state.step % cfg_.train.log_every == 0) {
        const double dt = seconds_since(t_log);
        records.step_line(epoch + 1, state.step, r.loss, optim->lr(),
                          static_cast<double>(images_since_log) / std::max(dt, 1e-9),
                          cfg_.train.clip_grad > 0 ? std::optional<double>(r.grad_norm) : std::nullopt);
        if (hooks_.progress == ProgressMode::off) log(progress.format(micro, images, seconds_since(t_epoch), fields));
        t_log = Clock::now();
        images_since_log = 0;
      }
    }
    progress.close();  // the epoch's summary line follows

    // Validation (the EMA weights when EMA is on), checkpoints, logs, report.
    std::vector<RocCurve> roc;
    EpochRecord rec = validate(data_, ema ? *ema : *model, val_loader, split.val, compute, &roc, nullptr, comm.get());
    rec.epoch = epoch + 1;
    rec.train_loss = loss_sum / static_cast<double>(std::max<int64_t>(loss_count, 1));
    if (kd) rec.feat_loss = feat_sum / static_cast<double>(std::max<int64_t>(loss_count, 1));
    rec.lr = optim->lr();
    rec.seconds = seconds_since(t_epoch);
    state.epoch = epoch + 1;
    state.batch_in_epoch = 0;
    state.rng["dropout"] = model->dropout_generator().state();
    const bool best = std::isfinite(rec.mean_auc) && rec.mean_auc > state.best_metric;
    if (best) {
      state.best_metric = rec.mean_auc;
      state.best_epoch = rec.epoch;
    }
    // The epoch's files, last.ckpt the commit point (train/trainer.h): its log
    // lines before it (a resume drops them if it never came), best.* after
    // it (a resume rewrites them from it if they lag).
    records.epoch_lines(rec, state.step, images);
    if (writer) {
      fault_point("epoch files", "last.ckpt");
      save_checkpoint(last_ckpt.string(), *model, ema.get(), optim.get(), state);
      if (best) write_best_files(dir_, ema ? *ema : *model, state, cfg_.stage.kind);
    }
    if (best) result.best_roc = roc;
    char line[260], feat[40] = "";
    if (kd) std::snprintf(feat, sizeof feat, " (features %.4f)", rec.feat_loss);
    std::snprintf(line, sizeof line, "epoch %lld/%lld: train loss %.4f%s  val loss %.4f  val mean AUC %.4f%s  (%.1fs)",
                  static_cast<long long>(rec.epoch), static_cast<long long>(cfg_.train.epochs), rec.train_loss, feat,
                  rec.val_loss, rec.mean_auc, best ? "  *best*" : "", rec.seconds);
    log(line);
    records.report(cfg_.run.name + " (" + cfg_.stage.kind + ", fold " + std::to_string(cfg_.data.fold) + ")",
                   state.config_toml, state.best_epoch, result.best_roc);
    result.last = rec;
    ++result.epochs_run;
    // No rank runs ahead of the files of the epoch (a resume reads them).
    if (distributed) comm->barrier();
  }
  result.history = records.history();
  result.best_epoch = state.best_epoch;
  result.best_mean_auc = state.best_metric;
  return result;
}

}  // namespace

CudaSettings cuda_settings(const TrainConfig& c) {
  return {c.run.deterministic, c.run.allow_tf32, c.run.conv_impl, c.run.allow_unvalidated_kernels};
}

ResNetConfig model_config(const TrainConfig& cfg) {
  ResNetConfig m = resnet_config(cfg.model.name);
  m.num_classes = kNumRanzcrLabels;
  m.in_chans = cfg.model.in_chans;
  m.drop_rate = cfg.model.drop_rate;
  m.fused_se = cfg.model.fused_se;
  m.fused_bn = cfg.model.fused_bn;
  m.fused_conv_bn = cfg.model.fused_conv_bn;
  return m;
}

std::shared_ptr<ResNet> build_model(const TrainConfig& cfg, uint64_t seed) {
  return create_resnet(model_config(cfg), seed);
}

EvalResult evaluate(const TrainConfig& cfg_in, const std::string& weights, int64_t fold) {
  TrainConfig cfg = cfg_in;
  if (fold >= 0) cfg.data.fold = fold;
  validate_config(cfg);
  const OmpThreadsScope threads(cfg.run.threads);
  const Dataset d = load_dataset(cfg);
  const Split split = make_split(d, cfg);
  const Compute compute = resolve_compute(cfg.run.device, cfg.run.precision, cuda_settings(cfg));
  auto model = build_model(cfg, 0);
  load_timm_state_dict(*model, read_model_weights(weights));
  model->to(compute.device);
  const bool teacher_input = cfg.stage.kind == "teacher";
  data::LoaderOptions vo{.batch = cfg.train.batch, .shuffle = false, .drop_last = false,
                         .seed = cfg.run.seed, .workers = static_cast<int>(cfg.data.workers)};
  const int64_t S = cfg.model.img_size, C = cfg.model.in_chans;
  data::Loader loader(split.val, vo, {S, S, C}, make_transform(d, cfg, false, teacher_input));
  EvalResult r;
  r.studies = static_cast<int64_t>(split.val.size());
  r.record = validate(d, *model, loader, split.val, compute, &r.roc, &r.probs);
  for (int64_t i : split.val) r.uids.push_back(d.train.studies[static_cast<size_t>(i)].uid);
  return r;
}

TrainResult train(const TrainConfig& cfg_in, const TrainHooks& hooks_in) {
  const TrainHooks hooks = with_default_log(hooks_in);
  validate_config(cfg_in);
  // The run records how its images were prepared (prep.*): its config and
  // checkpoints then tell inference how to preprocess.
  run_compute(cfg_in);
  TrainConfig cfg = cfg_in;
  RZ_CHECK(!cfg.data.cache_dir.empty(),
           "config: data.cache_dir is empty (run `ranzcr prep` and point data.cache_dir at it)");
  resolve_prep(cfg, data::ImageCache::open(cfg.data.cache_dir, "train").info(),
               data::cache_index_path(cfg.data.cache_dir, "train"));
  const fs::path dir = fs::path(cfg.run.out_dir) / cfg.run.name;
  // In a data-parallel launch rank 0 alone prepares the folder.
  if (detect_dist_env().rank != 0) {
    Run run(cfg, dir.string(), hooks);
    return run.execute(false);
  }
  RZ_CHECK(!fs::exists(dir / "last.ckpt"), "run folder ", dir.string(),
           " already holds a checkpoint: resume it (ranzcr train --resume ", dir.string(),
           ") or choose another run.name");
  fs::create_directories(dir);
  if (const int n = remove_run_temporaries(dir.string()))
    hooks.log("removed " + std::to_string(n) + " temporary file(s) of interrupted writes in " + dir.string());
  // best.* are written after last.ckpt: without it they are not leftovers of
  // this run's first epoch, and are nobody's to overwrite.
  for (const char* f : {"best.ckpt", "best.safetensors"})
    RZ_CHECK(!fs::exists(fs::symlink_status(dir / f)), "run folder ", dir.string(), " holds ", f,
             " but no last.ckpt: move it away or choose another run.name");
  // The logs of a first epoch that never reached its last.ckpt start over.
  for (const char* f : {"metrics.jsonl", "summary.csv", "report.html"}) {
    const fs::path p = dir / f;
    if (fs::exists(fs::symlink_status(p))) {
      RZ_CHECK(fs::is_regular_file(fs::symlink_status(p)), p.string(),
               " is not a regular file (a link or a folder): the run writes only inside its folder");
      fs::remove(p);
      hooks.log("removed " + p.string() + " of an interrupted first epoch");
    }
  }
  write_text_file_atomic((dir / "config.toml").string(), config_to_toml(cfg));
  Run run(cfg, dir.string(), hooks);
  return run.execute(false);
}

TrainResult resume(const std::string& run_dir, const TrainHooks& hooks_in) {
  const TrainHooks hooks = with_default_log(hooks_in);
  const fs::path dir(run_dir);
  RZ_CHECK(fs::is_directory(dir), "cannot resume ", run_dir, ": not a folder");
  for (const char* f : {"config.toml", "last.ckpt"})
    RZ_CHECK(fs::is_regular_file(dir / f), "cannot resume ", run_dir, ": ", (dir / f).string(),
             " is missing (a run folder that never finished an epoch has nothing to resume: start it again)");
  const bool writer = detect_dist_env().rank == 0;  // rank 0 alone repairs the folder
  if (writer) {
    if (const int n = remove_run_temporaries(run_dir))
      hooks.log("removed " + std::to_string(n) + " temporary file(s) of interrupted writes in " + run_dir);
  }
  const TrainConfig cfg = load_config((dir / "config.toml").string());
  validate_config(cfg);
  check_resume(run_dir, cfg, read_checkpoint_state((dir / "last.ckpt").string()), hooks.allow_config_change,
               writer ? hooks.log : RunLog([](const std::string&) {}));
  Run run(cfg, run_dir, hooks);
  return run.execute(true);
}

}  // namespace rz
