#include "train/checkpoint.h"

#include <algorithm>

#include <charconv>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "engine/safetensors.h"
#include "engine/json_depth.h"
#include "models/timm_weights.h"

namespace rz {

namespace {
constexpr const char* kFormatPrefix = "ranzcr-checkpoint-";

std::string state_to_json(const TrainState& s) {
  nlohmann::json j;
  j["epoch"] = s.epoch;
  j["step"] = s.step;
  j["batch_in_epoch"] = s.batch_in_epoch;
  j["best_metric"] = std::isfinite(s.best_metric) ? nlohmann::json(s.best_metric) : nlohmann::json();
  j["best_epoch"] = s.best_epoch;
  nlohmann::json rng = nlohmann::json::object();
  for (const auto& [name, st] : s.rng) {
    // u64 words as strings: JSON readers elsewhere may round big integers.
    nlohmann::json words = nlohmann::json::array();
    for (uint64_t w : st) words.push_back(std::to_string(w));
    rng[name] = words;
  }
  j["rng"] = rng;
  j["config_toml"] = s.config_toml;
  return j.dump();
}

// A short rendering of a JSON value for messages (long strings cut).
std::string shown(const nlohmann::json& v) {
  std::string s = v.dump();
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

// Reads the TrainState JSON of `path` strictly: every field present with its
// type and within its range, so that a damaged or hand-edited file stops here
// with the field and value named instead of wrapping, rounding or looping.
class StateReader {
 public:
  StateReader(const nlohmann::json& j, const std::string& path) : j_(j), path_(path) {}

  [[noreturn]] void bad(const std::string& field, const std::string& value, const std::string& expected) const {
    RZ_THROW("checkpoint '", path_, "': state field '", field, "' = ", value, " (expected ", expected, ")");
  }

  const nlohmann::json& field(const char* key) const {
    const auto it = j_.find(key);
    if (it == j_.end()) RZ_THROW("checkpoint '", path_, "': state field '", key, "' is missing");
    return *it;
  }

  int64_t integer(const char* key, int64_t lo, int64_t hi) const {
    const auto& v = field(key);
    const std::string expected = "an integer in " + std::to_string(lo) + ".." + std::to_string(hi);
    // Only JSON integers: 1e18 or 2.5 parse as floating-point numbers.
    if (!v.is_number_integer()) bad(key, shown(v), expected);
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi)) bad(key, shown(v), expected);
    const int64_t x = v.get<int64_t>();
    if (x < lo || x > hi) bad(key, shown(v), expected);
    return x;
  }

  // A generator word: an unsigned 64-bit integer written in decimal, digits only.
  uint64_t word(const nlohmann::json& v, const std::string& field_name) const {
    const char* expected = "an unsigned 64-bit integer as a decimal string";
    if (!v.is_string()) bad(field_name, shown(v), expected);
    const std::string& s = v.get_ref<const std::string&>();
    if (s.empty() || s.size() > 20 || s.find_first_not_of("0123456789") != std::string::npos)
      bad(field_name, shown(v), expected);
    uint64_t x = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), x);
    if (ec != std::errc() || end != s.data() + s.size()) bad(field_name, shown(v), expected);
    return x;
  }

  TrainState read() const {
    if (!j_.is_object()) RZ_THROW("checkpoint '", path_, "': the training state is not a JSON object");
    TrainState s;
    s.epoch = integer("epoch", 0, kMaxCheckpointEpoch);
    s.step = integer("step", 0, kMaxCheckpointStep);
    s.batch_in_epoch = integer("batch_in_epoch", 0, kMaxCheckpointBatch);
    s.best_epoch = integer("best_epoch", -1, s.epoch);
    if (s.best_epoch == 0) bad("best_epoch", "0", "-1 (none yet) or an epoch in 1.." + std::to_string(s.epoch));
    const auto& metric = field("best_metric");
    if (metric.is_null()) {
      if (s.best_epoch != -1)
        bad("best_metric", "null", "a number, since best_epoch = " + std::to_string(s.best_epoch));
    } else {
      if (!metric.is_number() || !std::isfinite(metric.get<double>())) bad("best_metric", shown(metric), "a finite number or null");
      if (s.best_epoch == -1) bad("best_metric", shown(metric), "null, since best_epoch = -1");
      s.best_metric = metric.get<double>();
    }
    const auto& rng = field("rng");
    if (!rng.is_object()) bad("rng", shown(rng), "an object of generator states");
    for (const auto& [name, words] : rng.items()) {
      const std::string f = "rng." + name;
      if (!words.is_array() || words.size() != 4) bad(f, shown(words), "an array of 4 words");
      std::array<uint64_t, 4> a{};
      for (size_t i = 0; i < 4; ++i) a[i] = word(words[i], f + "[" + std::to_string(i) + "]");
      // xoshiro256** never leaves the all-zero state, nor reaches it.
      if (a == std::array<uint64_t, 4>{}) bad(f, shown(words), "a generator state that is not all zero");
      s.rng[name] = a;
    }
    const auto& cfg = field("config_toml");
    if (!cfg.is_string()) bad("config_toml", shown(cfg), "a string (the resolved configuration)");
    s.config_toml = cfg.get<std::string>();
    return s;
  }

 private:
  const nlohmann::json& j_;
  const std::string& path_;
};

TrainState state_from_metadata(const std::map<std::string, std::string>& meta, const std::string& path) {
  if (!is_ranzcr_checkpoint(meta, path)) {
    const auto fmt = meta.find("format");
    RZ_THROW("'", path, "' is not a ranzcr checkpoint (",
             fmt == meta.end() ? std::string("no format tag") : "format '" + fmt->second + "'",
             "): a plain weights file can start a run (model.pretrained, stage.init), not resume one");
  }
  const auto st = meta.find("state");
  RZ_CHECK(st != meta.end(), "checkpoint '", path, "' has no training state");
  RZ_CHECK(json_depth(st->second) <= kMaxJsonDepth, "checkpoint '", path,
           "': the training state JSON nests deeper than ", kMaxJsonDepth, " levels");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(st->second);
  } catch (const nlohmann::json::exception& e) {
    RZ_THROW("checkpoint '", path, "': the training state is not valid JSON: ", e.what());
  }
  try {
    return StateReader(j, path).read();
  } catch (const nlohmann::json::exception& e) {  // not expected after the type checks; named anyway
    RZ_THROW("checkpoint '", path, "': bad training state: ", e.what());
  }
}

NamedTensors with_prefix(const NamedTensors& in, const std::string& prefix) {
  NamedTensors out;
  out.reserve(in.size());
  for (const auto& [n, t] : in) out.emplace_back(prefix + n, t);
  return out;
}

NamedTensors strip_prefix(const NamedTensors& in, const std::string& prefix) {
  NamedTensors out;
  for (const auto& [n, t] : in)
    if (n.starts_with(prefix)) out.emplace_back(n.substr(prefix.size()), t);
  return out;
}

template <typename T, typename IsBad>
int64_t first_bad(const T* p, int64_t n, IsBad is_bad) {
  for (int64_t i = 0; i < n; ++i)
    if (is_bad(p[i])) return i;
  return -1;
}
}  // namespace

bool is_ranzcr_checkpoint(const std::map<std::string, std::string>& meta, const std::string& path) {
  const auto fmt = meta.find("format");
  if (fmt == meta.end() || !fmt->second.starts_with(kFormatPrefix)) return false;
  RZ_CHECK(fmt->second == kCheckpointFormat, "'", path, "' is a ranzcr checkpoint of another version (format '",
           fmt->second, "'; this build reads '", kCheckpointFormat, "')");
  return true;
}

void check_finite_tensors(const NamedTensors& tensors, const std::string& path) {
  for (const auto& [name, t] : tensors) {
    if (!is_floating(t.dtype()) || t.numel() == 0) continue;
    const Tensor h = t.device().is_cpu() ? t : t.to(Device::cpu());
    int64_t at = -1;
    double value = 0;
    switch (h.dtype()) {
      case DType::F32: {
        const float* p = h.data<float>();
        at = first_bad(p, h.numel(), [](float v) { return !std::isfinite(v); });
        if (at >= 0) value = p[at];
        break;
      }
      case DType::F64: {
        const double* p = h.data<double>();
        at = first_bad(p, h.numel(), [](double v) { return !std::isfinite(v); });
        if (at >= 0) value = p[at];
        break;
      }
      case DType::BF16: {
        // The bits: an all-ones exponent is an infinity or a NaN.
        const auto* p = static_cast<const uint16_t*>(h.raw_data());
        at = first_bad(p, h.numel(), [](uint16_t b) { return (b & 0x7f80u) == 0x7f80u; });
        if (at >= 0) {
          const uint32_t bits = static_cast<uint32_t>(p[at]) << 16;
          float f = 0;
          std::memcpy(&f, &bits, sizeof f);
          value = f;
        }
        break;
      }
      default: break;
    }
    if (at >= 0)
      RZ_THROW("'", path, "': tensor '", name, "' holds a non-finite value (", value, " at flat index ", at, " of ",
               h.numel(), "); the weights are damaged (or come from a diverged run)");
  }
}

void save_checkpoint(const std::string& path, const Module& model, const Module* ema,
                     const Optimizer* optim, const TrainState& state) {
  NamedTensors all = with_prefix(timm_state_dict(model), "model.");
  if (ema) {
    auto e = with_prefix(timm_state_dict(*ema), "ema.");
    all.insert(all.end(), e.begin(), e.end());
  }
  std::map<std::string, std::string> meta{{"format", kCheckpointFormat}, {"state", state_to_json(state)}};
  if (optim) {
    auto o = with_prefix(optim->state(), "optim.");
    all.insert(all.end(), o.begin(), o.end());
    // Recorded even when the state is empty (SGD without momentum), so a
    // file saved without an optimizer is told apart from one with nothing in it.
    meta["optimizer"] = optim->name();
  }
  save_safetensors(path, all, meta);
}

TrainState load_checkpoint(const std::string& path, Module& model, Module* ema, Optimizer* optim) {
  const SafetensorsFile file = load_safetensors(path);
  TrainState s = state_from_metadata(file.metadata, path);
  check_finite_tensors(file.tensors, path);
  if (optim) {
    const NamedTensors o = strip_prefix(file.tensors, "optim.");
    const auto saved = file.metadata.find("optimizer");
    RZ_CHECK(saved != file.metadata.end() || !o.empty(), "checkpoint '", path,
             "' holds no optimizer state (it was saved for its weights alone, like best.ckpt): "
             "resume from the run's last.ckpt, or start a new run from it with stage.init");
    RZ_CHECK(saved == file.metadata.end() || saved->second == optim->name(), "checkpoint '", path,
             "': its optimizer state is for '", saved->second, "', the run uses '", optim->name(), "'");
  }
  try {
    load_timm_state_dict(model, strip_prefix(file.tensors, "model."));
    if (ema) {
      const auto e = strip_prefix(file.tensors, "ema.");
      RZ_CHECK(!e.empty(), "no EMA weights in the file (was the run trained without EMA?)");
      load_timm_state_dict(*ema, e);
    }
    if (optim) optim->load_state(strip_prefix(file.tensors, "optim."));
  } catch (const Error& err) {
    RZ_THROW("checkpoint '", path, "': ", err.what());
  }
  return s;
}

NamedTensors checkpoint_weights(const std::string& path, bool ema) {
  const SafetensorsFile file = load_safetensors(path);
  state_from_metadata(file.metadata, path);
  NamedTensors w = strip_prefix(file.tensors, ema ? "ema." : "model.");
  RZ_CHECK(!w.empty(), "checkpoint '", path, "' holds no ", ema ? "EMA " : "", "weights");
  check_finite_tensors(w, path);
  return w;
}

TrainState read_checkpoint_state(const std::string& path) {
  std::map<std::string, std::string> meta;
  read_safetensors_header(path, &meta);
  return state_from_metadata(meta, path);
}

NamedTensors read_model_weights(const std::string& path) {
  std::map<std::string, std::string> meta;
  const auto entries = read_safetensors_header(path, &meta);
  if (is_ranzcr_checkpoint(meta, path)) {
    // With EMA, the EMA weights are the ones validation measured.
    const bool ema = std::any_of(entries.begin(), entries.end(),
                                 [](const SafetensorsEntry& e) { return e.name.rfind("ema.", 0) == 0; });
    return checkpoint_weights(path, ema);
  }
  SafetensorsFile file = load_safetensors(path);
  RZ_CHECK(!file.tensors.empty(), "weights file '", path, "' holds no tensors");
  check_finite_tensors(file.tensors, path);
  return std::move(file.tensors);
}

TimmLoadReport load_pretrained(Module& model, const std::string& path) {
  const NamedTensors weights = read_model_weights(path);
  try {
    return load_timm_state_dict(model, weights, /*strict=*/true);
  } catch (const Error& e) {
    RZ_THROW("model.pretrained '", path, "' does not fit the model: ", e.what());
  }
}

}  // namespace rz
