#include "train/config.h"

#include <charconv>
#include <cmath>
#include <functional>
#include <map>
#include <sstream>
#include <toml++/toml.h>
#include <variant>
#include <vector>

#include "data/draw.h"
#include "engine/error.h"

namespace rz {

namespace {

using FieldPtr = std::variant<int64_t*, uint64_t*, double*, bool*, std::string*,
                              std::vector<std::string>*>;

struct Field {
  std::string key;  // "section.name"
  FieldPtr ptr;
  const char* help;
};

// The one registry of keys: order here is the order of the saved TOML.
std::vector<Field> fields(TrainConfig& c) {
  return {
      {"run.name", &c.run.name, "run folder name under run.out_dir"},
      {"run.out_dir", &c.run.out_dir, "parent folder of run folders"},
      {"run.seed", &c.run.seed, "seed for init, data order, augmentation"},
      {"run.device", &c.run.device, "cpu, cuda, cuda:N or auto"},
      {"run.precision", &c.run.precision, "fp32 or bf16 (CUDA)"},
      {"run.deterministic", &c.run.deterministic, "CUDA: only reproducible cuDNN algorithms"},
      {"run.allow_tf32", &c.run.allow_tf32, "CUDA: fp32 convolutions/GEMMs may use TF32"},
      {"run.conv_impl", &c.run.conv_impl, "CUDA convolutions: cudnn, native or auto (timed per layer)"},
      {"run.allow_unvalidated_kernels", &c.run.allow_unvalidated_kernels,
       "CUDA: auto may pick native kernels not yet validated on a GPU"},
      {"run.threads", &c.run.threads, "CPU threads (0: all cores)"},
      {"run.memory_check", &c.run.memory_check,
       "estimate host and GPU memory before training and refuse a run that cannot fit"},
      {"model.name", &c.model.name, "model (seresnet152d, resnet200d, seresnet_tiny, ...)"},
      {"model.img_size", &c.model.img_size, "square input size in pixels"},
      {"model.in_chans", &c.model.in_chans, "input channels (3: gray replicated; 1)"},
      {"model.drop_rate", &c.model.drop_rate, "dropout before the classifier"},
      {"model.fused_se", &c.model.fused_se, "fuse bn3 + SE + residual add + ReLU into one op"},
      {"model.fused_bn", &c.model.fused_bn, "fuse bn1/bn2 + ReLU of every block into one op each"},
      {"model.fused_conv_bn", &c.model.fused_conv_bn,
       "conv1/conv2 + BN + ReLU of every block as conv_bn_act (BN statistics in the native conv epilogue)"},
      {"model.sync_bn", &c.model.sync_bn,
       "data-parallel: batch-norm statistics and their gradients summed over all ranks (timm --sync-bn)"},
      {"model.pretrained", &c.model.pretrained, "timm-named safetensors weights to start from (first conv adapted to in_chans, new head), as timm create_model(pretrained=True)"},
      {"data.dir", &c.data.dir, "RANZCR data folder (train.csv, train/)"},
      {"data.cache_dir", &c.data.cache_dir, "ranzcr prep output folder"},
      {"data.fold", &c.data.fold, "validation fold"},
      {"data.n_folds", &c.data.n_folds, "GroupKFold splits by PatientID"},
      {"data.annotated_only", &c.data.annotated_only, "train only on annotated studies"},
      {"data.workers", &c.data.workers, "loader threads"},
      {"data.limit", &c.data.limit, "use only the first N studies (0: all)"},
      {"data.allow_missing_studies", &c.data.allow_missing_studies,
       "go on when the prep cache lacks studies of train.csv (built from an older CSV): leave them out"},
      {"prep.image_size", &c.prep.image_size,
       "prep cache image size (0: what data.cache_dir holds, recorded when training starts)"},
      {"prep.clahe", &c.prep.clahe, "prep cache: CLAHE at full resolution (recorded from the cache)"},
      {"prep.clahe_clip", &c.prep.clahe_clip, "prep cache: CLAHE clip limit (recorded from the cache)"},
      {"prep.clahe_tiles_x", &c.prep.clahe_tiles_x, "prep cache: CLAHE tiles across (recorded from the cache)"},
      {"prep.clahe_tiles_y", &c.prep.clahe_tiles_y, "prep cache: CLAHE tiles down (recorded from the cache)"},
      {"aug.eval_crop", &c.aug.eval_crop,
       "validation and inference: central crop of this fraction of each side (1: the whole image)"},
      {"aug.scale_min", &c.aug.scale_min, "random resized crop: min area fraction"},
      {"aug.scale_max", &c.aug.scale_max, "random resized crop: max area fraction"},
      {"aug.ratio_min", &c.aug.ratio_min, "random resized crop: min aspect ratio"},
      {"aug.ratio_max", &c.aug.ratio_max, "random resized crop: max aspect ratio"},
      {"aug.rotate_deg", &c.aug.rotate_deg, "rotation range +-degrees"},
      {"aug.rotate_p", &c.aug.rotate_p, "rotation probability"},
      {"aug.hflip_p", &c.aug.hflip_p, "horizontal flip probability"},
      {"aug.brightness", &c.aug.brightness, "brightness limit"},
      {"aug.contrast", &c.aug.contrast, "contrast limit"},
      {"aug.brightness_contrast_p", &c.aug.brightness_contrast_p, "brightness/contrast probability"},
      {"aug.dropout_p", &c.aug.dropout_p, "coarse dropout probability"},
      {"aug.dropout_holes", &c.aug.dropout_holes, "coarse dropout: max holes"},
      {"aug.dropout_size", &c.aug.dropout_size, "coarse dropout: max hole size (fraction of side)"},
      {"stage.kind", &c.stage.kind, "teacher, student-kd, student-transfer or finetune"},
      {"stage.teacher", &c.stage.teacher, "teacher checkpoint for student stages"},
      {"stage.init", &c.stage.init, "checkpoint or weights to initialize from"},
      {"stage.freeze", &c.stage.freeze, "parameter-name prefixes to freeze (e.g. layer3, fc)"},
      {"stage.w_bce", &c.stage.w_bce, "weight of the BCE loss"},
      {"stage.w_feat", &c.stage.w_feat, "weight of the feature MSE (student-kd)"},
      {"stage.feat_layers", &c.stage.feat_layers,
       "student-kd: stages compared by the feature MSE, any of layer1..layer4 (mean of their MSEs)"},
      {"stage.annotation_style", &c.stage.annotation_style, "seed (black lines), color (a colour per label) or device (a colour per device)"},
      {"stage.annotation_thickness", &c.stage.annotation_thickness,
       "line thickness (seed: original px; color, device: working px)"},
      {"stage.input_noise", &c.stage.input_noise, "student input Gaussian noise std"},
      {"stage.input_dropout", &c.stage.input_dropout, "student input: share of pixels set to 0"},
      {"optim.name", &c.optim.name, "sgd, adam or adamw"},
      {"optim.lr", &c.optim.lr, "peak learning rate"},
      {"optim.weight_decay", &c.optim.weight_decay, "weight decay (L2 for sgd/adam, decoupled for adamw)"},
      {"optim.momentum", &c.optim.momentum, "sgd momentum"},
      {"optim.nesterov", &c.optim.nesterov, "sgd nesterov"},
      {"optim.beta1", &c.optim.beta1, "adam beta1"},
      {"optim.beta2", &c.optim.beta2, "adam beta2"},
      {"optim.eps", &c.optim.eps, "adam eps"},
      {"sched.kind", &c.sched.kind, "constant, step or cosine"},
      {"sched.warmup_epochs", &c.sched.warmup_epochs, "linear warmup length in epochs"},
      {"sched.warmup_lr", &c.sched.warmup_lr, "learning rate at the start of warmup"},
      {"sched.min_lr", &c.sched.min_lr, "cosine floor"},
      {"sched.step_epochs", &c.sched.step_epochs, "step schedule: epochs per decay"},
      {"sched.gamma", &c.sched.gamma, "step schedule: decay factor"},
      {"train.epochs", &c.train.epochs, "epochs"},
      {"train.batch", &c.train.batch, "images per optimizer micro-batch"},
      {"train.accum_steps", &c.train.accum_steps, "micro-batches per optimizer step"},
      {"train.clip_grad", &c.train.clip_grad, "max global gradient norm (0: off)"},
      {"train.ema_decay", &c.train.ema_decay, "weight EMA decay (0: off)"},
      {"train.max_nonfinite", &c.train.max_nonfinite, "abort after N non-finite losses in a row"},
      {"train.log_every", &c.train.log_every, "optimizer steps between logged lines"},
      {"train.cuda_graph", &c.train.cuda_graph,
       "CUDA: capture forward+backward+optimizer once, then replay it each step"},
      {"train.profile_steps", &c.train.profile_steps, "A:B brackets steps for nsys/ncu"},
      {"dist.bucket_mb", &c.dist.bucket_mb, "data-parallel: MB of gradients per all-reduce bucket"},
      {"dist.reduce_dtype", &c.dist.reduce_dtype, "data-parallel: gradient all-reduce in f32 or bf16"},
      {"dist.timeout_s", &c.dist.timeout_s,
       "data-parallel: seconds a collective may wait for the other ranks before the job ends with an error"},
  };
}

const char* type_name(const FieldPtr& p) {
  return std::visit(
      [](auto* ptr) -> const char* {
        using T = std::remove_pointer_t<decltype(ptr)>;
        if constexpr (std::is_same_v<T, int64_t> || std::is_same_v<T, uint64_t>) return "integer";
        else if constexpr (std::is_same_v<T, double>) return "number";
        else if constexpr (std::is_same_v<T, bool>) return "boolean";
        else if constexpr (std::is_same_v<T, std::string>) return "string";
        else return "list of strings";
      },
      p);
}

Field* find_field(std::vector<Field>& fs, const std::string& key) {
  for (auto& f : fs)
    if (f.key == key) return &f;
  return nullptr;
}

[[noreturn]] void unknown_key(const std::string& key, const std::string& where) {
  RZ_THROW(where, ": unknown configuration key '", key, "' (ranzcr train --help-config lists them)");
}

// Sets a field from a TOML node; `where` names the file and line for errors.
void set_from_node(Field& f, const toml::node& node, const std::string& where) {
  auto bad = [&](const char* expected) {
    std::ostringstream v;
    node.visit([&](const auto& n) { v << n; });
    RZ_THROW(where, ": '", f.key, "' must be ", expected, ", got ", v.str());
  };
  std::visit(
      [&](auto* ptr) {
        using T = std::remove_pointer_t<decltype(ptr)>;
        if constexpr (std::is_same_v<T, int64_t>) {
          if (!node.is_integer()) bad("an integer");
          *ptr = node.value<int64_t>().value();
        } else if constexpr (std::is_same_v<T, uint64_t>) {
          if (!node.is_integer() || node.value<int64_t>().value() < 0) bad("a non-negative integer");
          *ptr = static_cast<uint64_t>(node.value<int64_t>().value());
        } else if constexpr (std::is_same_v<T, double>) {
          if (!node.is_number()) bad("a number");
          *ptr = node.value<double>().value();
        } else if constexpr (std::is_same_v<T, bool>) {
          if (!node.is_boolean()) bad("true or false");
          *ptr = node.value<bool>().value();
        } else if constexpr (std::is_same_v<T, std::string>) {
          if (!node.is_string()) bad("a string");
          *ptr = node.value<std::string>().value();
        } else {
          if (!node.is_array()) bad("an array of strings");
          ptr->clear();
          for (const auto& item : *node.as_array()) {
            if (!item.is_string()) bad("an array of strings");
            ptr->push_back(item.value<std::string>().value());
          }
        }
      },
      f.ptr);
}

std::string location(const std::string& source, const toml::node& node) {
  const auto& src = node.source();
  return source + ":" + std::to_string(src.begin.line);
}

void walk(const toml::table& table, const std::string& prefix, std::vector<Field>& fs,
          const std::string& source) {
  for (const auto& [k, node] : table) {
    const std::string key = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    if (node.is_table()) {
      walk(*node.as_table(), key, fs, source);
      continue;
    }
    Field* f = find_field(fs, key);
    if (!f) unknown_key(key, location(source, node));
    set_from_node(*f, node, location(source, node));
  }
}

}  // namespace

TrainConfig parse_config(const std::string& toml_text, const std::string& source) {
  TrainConfig cfg;
  toml::table table;
  try {
    table = toml::parse(toml_text, source);
  } catch (const toml::parse_error& e) {
    RZ_THROW(source, ":", e.source().begin.line, ": TOML syntax error: ", e.description());
  }
  auto fs = fields(cfg);
  walk(table, "", fs, source);
  return cfg;
}

TrainConfig load_config(const std::string& path) {
  toml::table table;
  try {
    table = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    RZ_THROW(path, ":", e.source().begin.line, ": ", e.description());
  }
  TrainConfig cfg;
  auto fs = fields(cfg);
  walk(table, "", fs, path);
  return cfg;
}

void apply_override(TrainConfig& cfg, const std::string& assignment) {
  const auto eq = assignment.find('=');
  RZ_CHECK(eq != std::string::npos && eq > 0, "override '", assignment,
           "' must look like section.key=value");
  const std::string key = assignment.substr(0, eq), value = assignment.substr(eq + 1);
  auto fs = fields(cfg);
  Field* f = find_field(fs, key);
  if (!f) unknown_key(key, "--set " + assignment);
  // Parse the value as TOML so that numbers, booleans, strings and arrays
  // follow the file syntax; bare words count as strings, and a bare
  // comma-separated list as an array of strings.
  std::string text = value;
  const bool is_list = std::holds_alternative<std::vector<std::string>*>(f->ptr);
  if (is_list && (value.empty() || value.front() != '[')) {
    std::string arr = "[";
    std::stringstream ss(value);
    std::string item;
    bool first = true;
    while (std::getline(ss, item, ',')) {
      arr += (first ? "\"" : ", \"") + item + "\"";
      first = false;
    }
    text = arr + "]";
  } else if (std::holds_alternative<std::string*>(f->ptr) && (value.empty() || value.front() != '"')) {
    std::ostringstream quoted;
    quoted << toml::value<std::string>(value);
    text = quoted.str();
  }
  toml::table t;
  try {
    t = toml::parse("v = " + text);
  } catch (const toml::parse_error& e) {
    RZ_THROW("--set ", assignment, ": cannot parse the value: ", e.description());
  }
  set_from_node(*f, *t.get("v"), "--set " + assignment);
}

std::string config_to_toml(const TrainConfig& cfg_const) {
  TrainConfig cfg = cfg_const;
  std::string out, section;
  for (const auto& f : fields(cfg)) {
    const auto dot = f.key.find('.');
    const std::string sec = f.key.substr(0, dot), name = f.key.substr(dot + 1);
    if (sec != section) {
      out += (section.empty() ? "[" : "\n[") + sec + "]\n";
      section = sec;
    }
    std::ostringstream v;
    std::visit(
        [&](auto* ptr) {
          using T = std::remove_pointer_t<decltype(ptr)>;
          if constexpr (std::is_same_v<T, int64_t>) v << *ptr;
          else if constexpr (std::is_same_v<T, uint64_t>) v << *ptr;
          else if constexpr (std::is_same_v<T, double>) v << toml::value<double>(*ptr);
          else if constexpr (std::is_same_v<T, bool>) v << (*ptr ? "true" : "false");
          else if constexpr (std::is_same_v<T, std::string>) v << toml::value<std::string>(*ptr);
          else {
            toml::array arr;
            for (const auto& s : *ptr) arr.push_back(s);
            v << arr;
          }
        },
        f.ptr);
    out += name + " = " + v.str() + "\n";
  }
  return out;
}

void validate_config(const TrainConfig& c) {
  auto one_of = [](const std::string& key, const std::string& v, const std::vector<std::string>& ok) {
    for (const std::string& o : ok)
      if (v == o) return;
    std::string list;
    for (const std::string& o : ok) list += (list.empty() ? "" : ", ") + o;
    RZ_THROW("config: ", key, " = '", v, "' (expected one of ", list, ")");
  };
  one_of("run.precision", c.run.precision, {"fp32", "bf16"});
  one_of("run.conv_impl", c.run.conv_impl, {"cudnn", "native", "auto"});
  one_of("stage.kind", c.stage.kind, {"teacher", "student-kd", "student-transfer", "finetune"});
  one_of("stage.annotation_style", c.stage.annotation_style,
         std::vector<std::string>(data::kAnnotationStyleNames.begin(), data::kAnnotationStyleNames.end()));
  one_of("optim.name", c.optim.name, {"sgd", "adam", "adamw"});
  one_of("sched.kind", c.sched.kind, {"constant", "step", "cosine"});
  one_of("dist.reduce_dtype", c.dist.reduce_dtype, {"f32", "bf16"});
  RZ_CHECK(!c.model.sync_bn || (!c.model.fused_se && !c.model.fused_bn && !c.model.fused_conv_bn),
           "config: model.sync_bn needs model.fused_se, model.fused_bn and model.fused_conv_bn = false "
           "(the fused ops compute their batch statistics on one rank)");
  RZ_CHECK(c.dist.bucket_mb > 0 && c.dist.bucket_mb <= 4096, "config: dist.bucket_mb = ", c.dist.bucket_mb,
           " (expected 0 < MB <= 4096)");
  RZ_CHECK(c.dist.timeout_s > 0, "config: dist.timeout_s = ", c.dist.timeout_s, " (expected > 0)");
  RZ_CHECK(c.model.img_size >= 32 && c.model.img_size <= 4096, "config: model.img_size = ",
           c.model.img_size, " (expected 32..4096)");
  RZ_CHECK(c.model.in_chans == 1 || c.model.in_chans == 3, "config: model.in_chans = ",
           c.model.in_chans, " (expected 1 or 3)");
  RZ_CHECK(c.prep.image_size == 0 || (c.prep.image_size >= 32 && c.prep.image_size <= 4096),
           "config: prep.image_size = ", c.prep.image_size, " (expected 0: from the cache, or 32..4096)");
  if (c.prep.image_size > 0 && c.prep.clahe)
    RZ_CHECK(std::isfinite(c.prep.clahe_clip) && c.prep.clahe_tiles_x >= 1 && c.prep.clahe_tiles_x <= 256 &&
                 c.prep.clahe_tiles_y >= 1 && c.prep.clahe_tiles_y <= 256,
             "config: prep.clahe_clip = ", c.prep.clahe_clip, ", prep.clahe_tiles_x = ", c.prep.clahe_tiles_x,
             ", prep.clahe_tiles_y = ", c.prep.clahe_tiles_y, " (a finite clip, tiles in 1..256)");
  RZ_CHECK(c.aug.eval_crop > 0 && c.aug.eval_crop <= 1, "config: aug.eval_crop = ", c.aug.eval_crop,
           " (expected 0 < crop <= 1)");
  RZ_CHECK(c.data.n_folds >= 2 && c.data.fold >= 0 && c.data.fold < c.data.n_folds,
           "config: data.fold = ", c.data.fold, " with data.n_folds = ", c.data.n_folds);
  RZ_CHECK(c.train.epochs >= 1 && c.train.batch >= 1 && c.train.accum_steps >= 1,
           "config: train.epochs = ", c.train.epochs, ", train.batch = ", c.train.batch,
           ", train.accum_steps = ", c.train.accum_steps, " (all must be >= 1)");
  RZ_CHECK(c.optim.lr > 0, "config: optim.lr = ", c.optim.lr, " (must be > 0)");
  RZ_CHECK(c.train.ema_decay >= 0 && c.train.ema_decay < 1, "config: train.ema_decay = ",
           c.train.ema_decay, " (expected 0 <= decay < 1)");
  RZ_CHECK(c.train.clip_grad >= 0, "config: train.clip_grad = ", c.train.clip_grad);
  RZ_CHECK(c.stage.input_noise >= 0 && c.stage.input_dropout >= 0 && c.stage.input_dropout < 1,
           "config: stage.input_noise = ", c.stage.input_noise, ", stage.input_dropout = ",
           c.stage.input_dropout, " (noise >= 0, 0 <= dropout < 1)");
  RZ_CHECK(c.train.max_nonfinite >= 1, "config: train.max_nonfinite = ", c.train.max_nonfinite);
  const bool student = c.stage.kind == "student-kd";
  RZ_CHECK(!student || !c.stage.teacher.empty(), "config: stage.kind = student-kd needs stage.teacher");
  RZ_CHECK(!c.stage.feat_layers.empty(), "config: stage.feat_layers is empty (expected some of layer1..layer4)");
  for (size_t i = 0; i < c.stage.feat_layers.size(); ++i) {
    one_of("stage.feat_layers", c.stage.feat_layers[i], {"layer1", "layer2", "layer3", "layer4"});
    for (size_t j = 0; j < i; ++j)
      RZ_CHECK(c.stage.feat_layers[j] != c.stage.feat_layers[i], "config: stage.feat_layers lists '",
               c.stage.feat_layers[i], "' twice");
  }
  RZ_CHECK(c.stage.kind != "student-transfer" || !c.stage.init.empty(),
           "config: stage.kind = student-transfer needs stage.init (the teacher's weights)");
}

std::string config_keys_help() {
  TrainConfig c;
  std::string out;
  for (const auto& f : fields(c)) {
    char line[200];
    std::snprintf(line, sizeof line, "  %-30s %-16s %s\n", f.key.c_str(), type_name(f.ptr), f.help);
    out += line;
  }
  return out;
}

}  // namespace rz
