#include "train/checkpoint.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "engine/safetensors.h"
#include "models/timm_weights.h"

namespace rz {

namespace {
constexpr const char* kFormat = "ranzcr-checkpoint-1";

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

TrainState state_from_metadata(const std::map<std::string, std::string>& meta, const std::string& path) {
  auto fmt = meta.find("format");
  RZ_CHECK(fmt != meta.end() && fmt->second == kFormat, "'", path, "' is not a ranzcr checkpoint (",
           fmt == meta.end() ? std::string("no format tag") : "format '" + fmt->second + "'", ")");
  auto st = meta.find("state");
  RZ_CHECK(st != meta.end(), "checkpoint '", path, "' has no training state");
  TrainState s;
  try {
    const auto j = nlohmann::json::parse(st->second);
    s.epoch = j.at("epoch");
    s.step = j.at("step");
    s.batch_in_epoch = j.at("batch_in_epoch");
    s.best_metric = j.at("best_metric").is_null() ? -std::numeric_limits<double>::infinity()
                                                   : j.at("best_metric").get<double>();
    s.best_epoch = j.at("best_epoch");
    for (const auto& [name, words] : j.at("rng").items()) {
      std::array<uint64_t, 4> a{};
      RZ_CHECK(words.size() == 4, "checkpoint '", path, "': rng '", name, "' needs 4 words");
      for (size_t i = 0; i < 4; ++i) a[i] = std::stoull(words[i].get<std::string>());
      s.rng[name] = a;
    }
    s.config_toml = j.at("config_toml");
  } catch (const nlohmann::json::exception& e) {
    RZ_THROW("checkpoint '", path, "': bad training state: ", e.what());
  }
  return s;
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
}  // namespace

void save_checkpoint(const std::string& path, const Module& model, const Module* ema,
                     const Optimizer* optim, const TrainState& state) {
  NamedTensors all = with_prefix(timm_state_dict(model), "model.");
  if (ema) {
    auto e = with_prefix(timm_state_dict(*ema), "ema.");
    all.insert(all.end(), e.begin(), e.end());
  }
  if (optim) {
    auto o = with_prefix(optim->state(), "optim.");
    all.insert(all.end(), o.begin(), o.end());
  }
  save_safetensors(path, all, {{"format", kFormat}, {"state", state_to_json(state)}});
}

TrainState load_checkpoint(const std::string& path, Module& model, Module* ema, Optimizer* optim) {
  const SafetensorsFile file = load_safetensors(path);
  TrainState s = state_from_metadata(file.metadata, path);
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
  return w;
}

TrainState read_checkpoint_state(const std::string& path) {
  std::map<std::string, std::string> meta;
  read_safetensors_header(path, &meta);
  return state_from_metadata(meta, path);
}

}  // namespace rz
