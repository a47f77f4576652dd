#include "train/roofline_join.h"

#include <cstdio>
#include <filesystem>
#include <functional>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "engine/error.h"

namespace rz {

namespace {

std::string file_name(const std::string& path) { return std::filesystem::path(path).filename().string(); }

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  RZ_CHECK(in.good(), "cannot open '", path, "'");
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// "NVIDIA H200, sm_90, ..." -> "h200".
std::string gpu_key_of(const std::string& device) {
  if (device.find("H200") != std::string::npos) return "h200";
  if (device.find("H100") != std::string::npos) return "h100-sxm";
  if (device.find("A100") != std::string::npos) return "a100";
  return "";
}

// Rows accumulate per (source, class) in first-seen order.
class Joiner {
 public:
  // weight: how many layers one measured shape stands for (conv_bench).
  void add(const std::string& source, const std::string& klass, double measured_s, double bound_s,
           double weight = 1.0) {
    const std::string key = source + "\n" + klass;
    auto [it, added] = index_.try_emplace(key, rows_.size());
    if (added) rows_.push_back({source, klass, 0, 0, 0});
    JoinRow& r = rows_[it->second];
    ++r.rows;
    r.measured_s += measured_s * weight;
    r.bound_s += bound_s * weight;
  }
  std::vector<JoinRow> rows() const { return rows_; }

 private:
  std::vector<JoinRow> rows_;
  std::map<std::string, size_t> index_;
};

struct Parsed {
  std::string device;
  // Deferred: the bound needs the GPU, known only once every file is read.
  std::vector<std::function<void(const GpuPeaks&, Joiner&)>> rows;
};

void parse_train_step(const nlohmann::json& j, const std::string& path, Parsed& p) {
  p.device = j.at("device").get<std::string>();
  RooflineOptions o;
  o.model = resnet_config(j.at("model").get<std::string>());
  o.model.num_classes = j.value("num_classes", int64_t{11});
  o.image_size = j.at("img_size").get<int64_t>();
  o.batch = j.at("batch").get<int64_t>();
  const std::string precision = j.at("precision").get<std::string>();
  RZ_CHECK(precision == "bf16" || precision == "fp32", path, ": precision '", precision, "'");
  o.bf16 = precision == "bf16";
  o.allow_tf32 = j.value("tf32", false);
  o.optimizer = j.at("optim").get<std::string>();
  const bool fused = j.value("fused_se", false);
  o.model.fused_se = o.model.fused_bn = o.model.fused_conv_bn = fused;  // train_step_bench --fused-se
  const double ms = j.at("ms_per_step").get<double>();
  RZ_CHECK(ms > 0, path, ": ms_per_step = ", ms);
  std::string klass = "step " + precision + " b" + std::to_string(o.batch) + " " + j.value("conv_impl", "cudnn");
  if (fused) klass += " fused";
  if (j.value("graph", false)) klass += " graph";
  const std::string source = file_name(path);
  p.rows.push_back([o, ms, klass, source](const GpuPeaks& gpu, Joiner& out) {
    out.add(source, klass, ms / 1e3, roofline(o, gpu).totals.bound_s);
  });
}

void parse_ops_row(const std::string& op, const std::string& dtype, double bytes, double median_ms,
                   const std::string& source, Parsed& p) {
  p.rows.push_back([=](const GpuPeaks& gpu, Joiner& out) {
    out.add(source, op + " " + dtype, median_ms / 1e3, bytes / (gpu.hbm_tbps * 1e12));
  });
}

// ops_gpu_bench's table: "op dtype site shape MB median_ms min_ms GB/s %HBM note".
bool parse_ops_table(const std::string& text, const std::string& path, Parsed& p) {
  std::istringstream in(text);
  std::string line;
  if (!std::getline(in, line) || line.rfind("ops_gpu_bench: ", 0) != 0) return false;
  p.device = line.substr(std::string("ops_gpu_bench: ").size());
  static const std::regex row(
      R"(^(\S+)\s+(f32|bf16)\s+(\S+)\s+(.+?)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9]+)\s+([0-9.]+)%.*$)");
  int64_t n = 1;
  while (std::getline(in, line)) {
    ++n;
    std::smatch m;
    if (!std::regex_match(line, m, row)) continue;  // headers, the summary
    const double mb = std::stod(m[5]), ms = std::stod(m[6]);
    RZ_CHECK(ms > 0, path, ":", n, ": median_ms = ", ms);
    if (mb <= 0) continue;  // rows too small to count (the loss on 32x11)
    parse_ops_row(m[1], m[2], mb * 1e6, ms, file_name(path), p);
  }
  return true;
}

// conv_bench's table: "layer N H C K RxS s cnt pass | cudnn ms TFLOP/s | v1 ms TFLOP/s ratio nmse | ...".
bool parse_conv_table(const std::string& text, const std::string& path, Parsed& p) {
  std::istringstream in(text);
  std::string line;
  if (!std::getline(in, line) || line.rfind("conv_bench: ", 0) != 0) return false;
  const bool bf16 = line.find(", bf16;") != std::string::npos;
  RZ_CHECK(bf16 || line.find(", fp32;") != std::string::npos, path, ":1: no precision in '", line, "'");
  const std::string source = file_name(path);
  std::vector<std::string> impls;
  int64_t n = 1;
  while (std::getline(in, line)) {
    ++n;
    if (line.rfind("device: ", 0) == 0) {
      p.device = line.substr(8, line.find(';') - 8);
      continue;
    }
    if (line.rfind("first layer", 0) == 0) {
      impls.clear();
      std::istringstream h(line);
      std::string part;
      std::getline(h, part, '|');
      while (std::getline(h, part, '|')) {
        std::istringstream w(part);
        std::string impl;
        w >> impl;
        impls.push_back(impl);
      }
      continue;
    }
    if (line.find('|') == std::string::npos || impls.empty()) continue;
    std::istringstream row(line);
    std::string first;
    std::getline(row, first, '|');
    std::istringstream f(first);
    std::string layer, rxs, pass;
    ConvShape cs;
    int64_t count = 0;
    if (!(f >> layer >> cs.n >> cs.h >> cs.c >> cs.k >> rxs >> cs.stride >> count >> pass)) continue;
    cs.w = cs.h;
    RZ_CHECK(std::sscanf(rxs.c_str(), "%ldx", &cs.r) == 1, path, ":", n, ": kernel '", rxs, "'");
    RZ_CHECK(count >= 1, path, ":", n, ": layer count ", count);
    std::string part;
    for (size_t i = 0; i < impls.size() && std::getline(row, part, '|'); ++i) {
      std::istringstream w(part);
      std::string ms_text;
      w >> ms_text;
      char* end = nullptr;
      const double ms = std::strtod(ms_text.c_str(), &end);
      if (ms_text.empty() || *end != '\0' || !(ms > 0)) continue;  // "-" or a variant that declined
      const std::string klass = "conv " + pass + " " + impls[i];
      p.rows.push_back([=](const GpuPeaks& gpu, Joiner& out) {
        const double bound = bound_time(conv_pass(cs, pass, bf16), gpu, bf16, /*allow_tf32=*/false);
        out.add(source, klass, ms / 1e3, bound, static_cast<double>(count));
      });
    }
  }
  return true;
}

Parsed parse_file(const std::string& path) {
  const std::string text = read_text(path);
  Parsed p;
  const size_t start = text.find_first_not_of(" \t\r\n");
  RZ_CHECK(start != std::string::npos, "'", path, "' is empty");
  if (text[start] == '{') {
    // One JSON object (train_step_bench) or JSON lines (ops_gpu_bench --json).
    std::istringstream in(text);
    std::string line;
    int64_t n = 0;
    nlohmann::json whole;
    try {
      whole = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception&) {
      whole = nullptr;
    }
    if (!whole.is_null()) {
      RZ_CHECK(whole.value("bench", "") == "train_step_bench" && whole.value("engine", "ranzcr") == "ranzcr", path,
               ": a JSON file that is not train_step_bench's (bench = ", whole.value("bench", "?"), ")");
      parse_train_step(whole, path, p);
      return p;
    }
    while (std::getline(in, line)) {
      ++n;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        RZ_THROW(path, ":", n, ": not JSON: ", e.what());
      }
      RZ_CHECK(j.value("bench", "") == "ops_gpu_bench", path, ":", n, ": not an ops_gpu_bench row");
      p.device = j.at("device").get<std::string>();
      if (j.at("bytes").get<double>() <= 0) continue;
      parse_ops_row(j.at("op"), j.at("dtype"), j.at("bytes").get<double>(), j.at("median_ms").get<double>(),
                    file_name(path), p);
    }
    return p;
  }
  if (parse_ops_table(text, path, p) || parse_conv_table(text, path, p)) return p;
  RZ_THROW(path, ":1: not a train_step_bench JSON, an ops_gpu_bench table or JSON lines, or a conv_bench table");
}

}  // namespace

JoinResult roofline_join(const std::vector<std::string>& files, const std::string& gpu_key) {
  RZ_CHECK(!files.empty(), "roofline join: no bench files");
  std::vector<Parsed> parsed;
  std::string key = gpu_key, device;
  for (const auto& f : files) {
    Parsed p = parse_file(f);
    RZ_CHECK(!p.rows.empty(), f, ": no measurements in it");
    if (gpu_key.empty()) {
      const std::string k = gpu_key_of(p.device);
      RZ_CHECK(!k.empty(), f, ": device '", p.device, "' is not a built-in GPU; name one with --gpu");
      RZ_CHECK(key.empty() || k == key, f, " was measured on '", p.device, "', the other files on ", key);
      key = k;
    }
    if (device.empty()) device = p.device;
    parsed.push_back(std::move(p));
  }
  JoinResult r;
  r.gpu = gpu_peaks(key);
  r.device = device;
  Joiner j;
  for (const auto& p : parsed)
    for (const auto& row : p.rows) row(r.gpu, j);
  r.rows = j.rows();
  return r;
}

std::string join_table(const JoinResult& r) {
  std::string out = "measured on " + r.device + "; bounds on " + r.gpu.key + " (" + r.gpu.name + ")\n";
  char line[256];
  std::snprintf(line, sizeof line, "%-40s %-28s %6s %12s %12s %9s\n", "source", "class", "rows", "measured ms",
                "bound ms", "% roofline");
  out += line;
  for (const auto& row : r.rows) {
    std::snprintf(line, sizeof line, "%-40s %-28s %6lld %12.3f %12.3f %8.1f%%\n", row.source.c_str(),
                  row.klass.c_str(), static_cast<long long>(row.rows), row.measured_s * 1e3, row.bound_s * 1e3,
                  row.percent());
    out += line;
  }
  return out;
}

}  // namespace rz
