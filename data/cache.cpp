// prep (decode -> CLAHE -> resize -> uint8 shards) and the mmap'ed reader.
//
// Threads: `threads` workers claim CSV rows in order from a shared counter and
// process them independently (decode, CLAHE, resize: ~all the time); the
// calling thread is the only writer. It takes the results strictly in row
// order from a ring of W = 4 * threads slots, so shard bytes never depend on
// which worker finished first, and workers never run more than W rows ahead
// of the writer: memory stays at W images of S*S plus the full-size images
// being decoded (~6 MB each for a 2500 px film), not a shard's worth.
// Memory traffic per image: the JPEG (~0.5-1 MB) read once, the full-size
// gray image written by stb, copied into an Image, read twice and written
// once by CLAHE, read once by the area resize; S*S bytes written to the shard.
#include "data/cache.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>
#include <utility>

#include "data/pipeline.h"
#include "data/csv.h"
#include "data/paths.h"
#include "data/ranzcr_csv.h"
#include "data/resize.h"
#include "engine/atomic_file.h"
#include "engine/json_depth.h"
#include "engine/error.h"

namespace rz::data {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr const char* kIndexFormat = "rz-image-cache";
constexpr const char* kProgressFormat = "rz-image-cache-progress";
constexpr int64_t kAutoShardBytes = int64_t{256} << 20;
constexpr auto kProgressInterval = std::chrono::milliseconds(250);
constexpr int kBadFilesNamed = 5;  // in the "too many bad images" error

std::string shard_file_name(const std::string& split, int64_t k) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "-%05lld.u8", static_cast<long long>(k));
  return split + buf;
}
std::string shard_meta_name(const std::string& split, int64_t k) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "-%05lld.json", static_cast<long long>(k));
  return split + buf;
}
std::string progress_path(const std::string& dir, const std::string& split) {
  return (fs::path(dir) / (split + ".progress.json")).string();
}

uint64_t fnv1a(std::string_view s, uint64_t h = 0xcbf29ce484222325ull) {
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}
std::string hex16(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) RZ_THROW(path, ": cannot open: ", std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json read_json(const std::string& path) {
  const std::string text = read_text(path);
  RZ_CHECK(json_depth(text) <= kMaxJsonDepth, path, ": JSON nests deeper than ", kMaxJsonDepth,
           " levels");
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    RZ_THROW(path, ": not valid JSON: ", e.what());
  }
}

// ---- what the run reads ----

struct Source {
  std::string csv_path;
  std::string image_dir;
  std::vector<std::string> uids;  // CSV order
};

Source read_source(const PrepOptions& o) {
  RZ_CHECK(o.split == "train" || o.split == "test", "prep: split must be 'train' or 'test', got '",
           o.split, "'");
  RZ_CHECK(!o.data_dir.empty(), "prep: no data_dir given");
  RZ_CHECK(fs::is_directory(o.data_dir), "prep: data_dir '", o.data_dir,
           "' is not a directory (expected the RANZCR layout: train.csv, train/<uid>.jpg)");
  Source s;
  const fs::path dir(o.data_dir);
  if (o.split == "train") {
    s.csv_path = (dir / "train.csv").string();
    s.image_dir = (dir / "train").string();
  } else {
    s.csv_path = (dir / "sample_submission.csv").string();
    s.image_dir = (dir / "test").string();
  }
  RZ_CHECK(fs::is_regular_file(s.csv_path), "prep: ", s.csv_path, " not found");
  if (o.split == "train") {
    const RanzcrTrainSet train = read_ranzcr_train(s.csv_path);
    s.uids.reserve(train.studies.size());
    for (const RanzcrStudy& st : train.studies) s.uids.push_back(st.uid);
  } else {
    s.uids = read_ranzcr_sample_submission(s.csv_path);
  }
  RZ_CHECK(!s.uids.empty(), "prep: ", s.csv_path, " lists no images");
  RZ_CHECK(fs::is_directory(s.image_dir), "prep: image directory ", s.image_dir,
           " does not exist (", s.csv_path, " lists ", s.uids.size(), " images)");
  return s;
}

void check_options(const PrepOptions& o) {
  check_prep_spec(prep_spec_of(o), "prep");
  RZ_CHECK(!o.out_dir.empty(), "prep: no out_dir given");
  RZ_CHECK(o.shard_images >= 0 && o.shard_images <= (int64_t{1} << 30),
           "prep: shard_images must be in [0, 2^30] (0: automatic), got ", o.shard_images);
  RZ_CHECK(o.threads >= 0, "prep: threads must be >= 0 (0: all cores), got ", o.threads);
  RZ_CHECK(o.max_bad_fraction >= 0 && o.max_bad_fraction <= 1,
           "prep: max_bad_fraction must be in [0, 1], got ", o.max_bad_fraction);
}

int64_t resolved_shard_images(const PrepOptions& o) {
  if (o.shard_images > 0) return o.shard_images;
  return std::max<int64_t>(1, kAutoShardBytes / (o.image_size * o.image_size));
}

// Everything that changes shard contents; the fingerprint hashes it. The
// CSV's UID list is hashed in, so an edited CSV does not resume onto shards
// made from the old one. (max_bad_fraction and threads change no bytes.)
json make_params(const PrepOptions& o, const Source& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const std::string& uid : s.uids) h = fnv1a(uid + "\n", h);
  json p;
  p["version"] = kCacheFormatVersion;
  p["split"] = o.split;
  p["image_size"] = o.image_size;
  p["resize"] = "area";
  p["clahe"] = o.clahe;
  p["clahe_clip"] = o.clahe ? o.clahe_clip : 0.0;
  p["clahe_tiles_x"] = o.clahe ? o.clahe_tiles_x : 0;
  p["clahe_tiles_y"] = o.clahe ? o.clahe_tiles_y : 0;
  p["shard_images"] = resolved_shard_images(o);
  p["rows"] = static_cast<int64_t>(s.uids.size());
  p["uids_fnv1a"] = hex16(h);
  return p;
}

// ---- one image ----

struct RowResult {
  bool ready = false;
  bool ok = false;
  std::vector<uint8_t> pixels;  // S*S when ok
  int64_t orig_h = 0, orig_w = 0;
  std::string reason;  // when !ok
};

std::string find_image_file(const std::string& image_dir, const std::string& uid,
                            std::string* tried) {
  static constexpr const char* kExts[] = {".jpg", ".jpeg", ".png"};
  for (const char* ext : kExts) {
    std::string p = path_in_folder(image_dir, uid, ext, "image");
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) return p;
  }
  *tried = path_in_folder(image_dir, uid, ".jpg", "image") + " (also .jpeg, .png)";
  return {};
}

RowResult process_row(const PrepOptions& o, const std::string& image_dir, const std::string& uid) {
  RowResult r;
  try {
    std::string tried;
    const std::string path = find_image_file(image_dir, uid, &tried);
    if (path.empty()) {
      r.reason = "not found: " + tried;
      return r;
    }
    Image img = load_preprocessed(path, prep_spec_of(o), &r.orig_h, &r.orig_w);
    r.pixels = std::move(img.pixels);
    r.ok = true;
  } catch (const Error& e) {
    r.reason = e.what();  // decode errors name the file and stb's reason
  }
  return r;
}

// ---- the worker pool: rows in, results out in row order ----

class RowPipeline {
 public:
  RowPipeline(const PrepOptions& o, const Source& s, int64_t begin, int64_t end, int threads)
      : opts_(o),
        src_(s),
        next_row_(begin),
        consumed_(begin),
        end_(end),
        window_(std::max<int64_t>(8, 4 * int64_t{threads})),
        slots_(static_cast<size_t>(window_)) {
    const int64_t n = std::min<int64_t>(threads, std::max<int64_t>(1, end - begin));
    try {
      for (int64_t i = 0; i < n; ++i) workers_.emplace_back([this] { work(); });
    } catch (...) {
      shutdown();
      throw;
    }
  }
  ~RowPipeline() { shutdown(); }
  RowPipeline(const RowPipeline&) = delete;
  RowPipeline& operator=(const RowPipeline&) = delete;

  // The result of the next row in order; waits at most `timeout`. Returns
  // false on timeout (so the caller can report progress). Rethrows a
  // worker's fatal (non-image) error.
  bool take(RowResult* out, std::chrono::milliseconds timeout) {
    std::unique_lock lk(mu_);
    RowResult& slot = slots_[static_cast<size_t>(consumed_ % window_)];
    if (!done_cv_.wait_for(lk, timeout, [&] { return slot.ready || fatal_; })) return false;
    if (fatal_) {
      const std::string where =
          fatal_row_ >= 0 ? "processing " + src_.uids[static_cast<size_t>(fatal_row_)] + " (row " +
                                std::to_string(fatal_row_) + ")"
                          : std::string("a decode worker");
      try {
        std::rethrow_exception(fatal_);
      } catch (const std::exception& e) {
        RZ_THROW("prep: ", where, " failed: ", e.what());
      } catch (...) {
        RZ_THROW("prep: ", where, " failed: unknown exception");
      }
    }
    *out = std::move(slot);
    slot = RowResult{};
    ++consumed_;
    lk.unlock();
    work_cv_.notify_all();
    return true;
  }

 private:
  // Nothing may escape a worker thread (std::terminate): a failure outside
  // process_row's own handling ends the run through fatal_, rethrown by take().
  void work() {
    try {
      work_loop();
    } catch (...) {
      std::lock_guard lk(mu_);
      if (!fatal_) {
        fatal_ = std::current_exception();
        fatal_row_ = -1;
      }
      stop_ = true;
      done_cv_.notify_all();
      work_cv_.notify_all();
    }
  }

  void work_loop() {
    for (;;) {
      int64_t row;
      {
        std::unique_lock lk(mu_);
        work_cv_.wait(
            lk, [&] { return stop_ || next_row_ >= end_ || next_row_ < consumed_ + window_; });
        if (stop_ || next_row_ >= end_) return;
        row = next_row_++;
      }
      RowResult r;
      try {
        r = process_row(opts_, src_.image_dir, src_.uids[static_cast<size_t>(row)]);
      } catch (...) {  // not an image problem (out of memory, ...): stop the run
        std::lock_guard lk(mu_);
        if (!fatal_) {
          fatal_ = std::current_exception();
          fatal_row_ = row;
        }
        stop_ = true;
        done_cv_.notify_all();
        work_cv_.notify_all();
        return;
      }
      r.ready = true;
      {
        std::lock_guard lk(mu_);
        slots_[static_cast<size_t>(row % window_)] = std::move(r);
      }
      done_cv_.notify_all();
    }
  }

  void shutdown() {
    {
      std::lock_guard lk(mu_);
      stop_ = true;
    }
    work_cv_.notify_all();
    for (std::thread& t : workers_)
      if (t.joinable()) t.join();
    workers_.clear();
  }

  const PrepOptions& opts_;
  const Source& src_;
  std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  int64_t next_row_, consumed_, end_, window_;
  std::vector<RowResult> slots_;
  bool stop_ = false;
  std::exception_ptr fatal_;
  int64_t fatal_row_ = 0;
  std::vector<std::thread> workers_;
};

// ---- shard files ----
// A shard is written through AtomicFile ("prep shard"): an exclusively
// created temporary beside it, renamed when complete, so a half shard never
// carries the final name and a link planted at any name is never followed.

struct ShardMeta {
  json images = json::array();
  json skipped = json::array();
  int64_t bytes = 0;
};

json shard_meta_json(const std::string& split, int64_t k, int64_t begin, int64_t end,
                     const ShardMeta& m) {
  return json{{"shard", k},           {"file", shard_file_name(split, k)},
              {"rows", {begin, end}}, {"bytes", m.bytes},
              {"images", m.images},   {"skipped", m.skipped}};
}

// A shard from an earlier run counts as complete when its metadata reads and
// the shard file has exactly the bytes the metadata says.
bool load_complete_shard(const std::string& dir, const std::string& split, int64_t k,
                         int64_t per_shard, int64_t image_bytes, ShardMeta* m) {
  const std::string meta_path = (fs::path(dir) / shard_meta_name(split, k)).string();
  const std::string shard_path = (fs::path(dir) / shard_file_name(split, k)).string();
  std::error_code ec;
  if (!fs::is_regular_file(meta_path, ec) || !fs::is_regular_file(shard_path, ec)) return false;
  ShardMeta loaded;
  try {
    const json j = read_json(meta_path);
    loaded.images = j.at("images");
    loaded.skipped = j.at("skipped");
    loaded.bytes = j.at("bytes").get<int64_t>();
  } catch (const std::exception&) {
    return false;
  }
  // Anything unexpected in the metadata (a type, a row outside the shard, an
  // offset that is not the next image) makes the shard incomplete: it is
  // rewritten rather than trusted.
  const int64_t begin = k * per_shard, end = begin + per_shard;
  auto row_ok = [&](const json& e) {
    return e.is_object() && e.contains("uid") && e["uid"].is_string() &&
           is_valid_uid(e["uid"].get_ref<const std::string&>()) && e.contains("row") &&
           e["row"].is_number_integer() && e["row"].get<int64_t>() >= begin &&
           e["row"].get<int64_t>() < end;
  };
  if (!loaded.images.is_array() || !loaded.skipped.is_array()) return false;
  int64_t offset = 0;
  for (const json& e : loaded.images) {
    if (!row_ok(e)) return false;
    for (const char* key : {"offset", "orig_h", "orig_w"})
      if (!e.contains(key) || !e[key].is_number_integer()) return false;
    if (e["offset"].get<int64_t>() != offset) return false;
    for (const char* key : {"orig_h", "orig_w"})
      if (e[key].get<int64_t>() < 1 || e[key].get<int64_t>() > kMaxImageSide) return false;
    offset += image_bytes;
  }
  for (const json& e : loaded.skipped)
    if (!row_ok(e) || !e.contains("reason") || !e["reason"].is_string()) return false;
  if (loaded.bytes != offset) return false;
  const auto size = fs::file_size(shard_path, ec);
  if (ec || static_cast<int64_t>(size) != loaded.bytes) return false;
  *m = std::move(loaded);
  return true;
}

std::string describe_param_change(const json& old_p, const json& new_p) {
  for (auto it = new_p.begin(); it != new_p.end(); ++it) {
    const auto o = old_p.find(it.key());
    if (o == old_p.end()) return it.key() + " (missing in the old cache)";
    if (*o != it.value()) return it.key() + " " + o->dump() + " -> " + it.value().dump();
  }
  return "parameters differ";
}

std::string bad_rows_error(int64_t bad, int64_t rows, double limit,
                           const std::vector<PrepSkipped>& skipped) {
  std::ostringstream os;
  os << "prep: " << bad << " of " << rows << " images are missing or corrupt (more than "
     << "max_bad_fraction " << limit << " allows); first:";
  for (size_t i = 0; i < skipped.size() && i < static_cast<size_t>(kBadFilesNamed); ++i)
    os << (i ? "; " : " ") << skipped[i].uid << " (" << skipped[i].reason << ")";
  os << ". Fix the data, or raise max_bad_fraction; complete shards are kept and resumed.";
  return os.str();
}

}  // namespace

std::string cache_index_path(const std::string& dir, const std::string& split) {
  return (fs::path(dir) / (split + ".index.json")).string();
}

PrepReport run_prep(const PrepOptions& o, const PrepProgress& progress,
                    const PrepWarning& warning) {
  const auto t0 = Clock::now();
  check_options(o);
  const Source src = read_source(o);
  const json params = make_params(o, src);
  const std::string fingerprint = hex16(fnv1a(params.dump()));
  const int64_t rows = static_cast<int64_t>(src.uids.size());
  const int64_t per_shard = params["shard_images"].get<int64_t>();
  const int64_t n_shards = rows / per_shard + (rows % per_shard != 0);
  const int64_t S = o.image_size;
  const int64_t image_bytes = S * S;

  std::error_code ec;
  fs::create_directories(o.out_dir, ec);
  RZ_CHECK(fs::is_directory(o.out_dir), "prep: cannot create out_dir ", o.out_dir, ": ",
           ec.message());
  const std::string index_path = cache_index_path(o.out_dir, o.split);
  const std::string prog_path = progress_path(o.out_dir, o.split);

  // ---- resume: which shards are already complete? ----
  int64_t complete = 0;
  std::vector<ShardMeta> metas(static_cast<size_t>(n_shards));
  if (fs::exists(prog_path)) {
    const json prev = read_json(prog_path);
    const json old_params = prev.is_object() ? prev.value("params", json::object()) : json();
    if (old_params != params)
      RZ_THROW("prep: ", o.out_dir, " already holds a '", o.split,
               "' cache made with other parameters (", describe_param_change(old_params, params),
               "); pick another out_dir or delete this one");
    // The folder holds our own cache of these parameters: clear the
    // temporaries a killed run left behind (shards, metadata, progress).
    remove_stale_temporaries(o.out_dir);
    const json claimed_j = prev.value("complete_shards", json(0));
    if (!claimed_j.is_number_integer() || claimed_j.get<int64_t>() < 0)
      RZ_THROW(prog_path, ": field 'complete_shards' is ", csv_excerpt(claimed_j.dump()),
               ", expected a non-negative integer (pick another out_dir or delete this one)");
    const int64_t claimed = std::min(claimed_j.get<int64_t>(), n_shards);
    while (complete < claimed &&
           load_complete_shard(o.out_dir, o.split, complete, per_shard, image_bytes,
                               &metas[static_cast<size_t>(complete)]))
      ++complete;
  } else if (fs::exists(index_path) ||
             fs::exists(fs::path(o.out_dir) / shard_file_name(o.split, 0))) {
    RZ_THROW("prep: ", o.out_dir, " holds '", o.split, "' cache files but no ", prog_path,
             " to tell how they were made; pick another out_dir or delete them");
  }
  if (complete < n_shards) fs::remove(index_path, ec);  // it would point at shards being rewritten

  auto write_progress = [&](int64_t done_shards) {
    const json p{{"format", kProgressFormat},
                 {"params", params},
                 {"fingerprint", fingerprint},
                 {"shards", n_shards},
                 {"complete_shards", done_shards}};
    write_text_file_atomic(prog_path, p.dump(1) + "\n");
  };
  write_progress(complete);

  PrepReport rep;
  rep.index_path = index_path;
  rep.rows = rows;
  rep.shards = n_shards;
  rep.shards_resumed = complete;
  std::vector<PrepSkipped>& skipped = rep.skipped;
  for (int64_t k = 0; k < complete; ++k)
    for (const json& s : metas[static_cast<size_t>(k)].skipped)
      skipped.push_back({s.at("uid").get<std::string>(), s.at("row").get<int64_t>(),
                         s.at("reason").get<std::string>()});
  const double bad_limit = o.max_bad_fraction * static_cast<double>(rows);
  auto check_bad = [&] {
    const auto bad = static_cast<int64_t>(skipped.size());
    if (static_cast<double>(bad) > bad_limit)
      RZ_THROW(bad_rows_error(bad, rows, o.max_bad_fraction, skipped));
  };
  check_bad();

  auto warn = [&](const std::string& line) {
    if (warning)
      warning(line);
    else
      std::fprintf(stderr, "warning: %s\n", line.c_str());
  };
  auto last_report = Clock::now();
  auto report_progress = [&](int64_t done) {
    last_report = Clock::now();
    if (progress) progress(done, rows, static_cast<int64_t>(skipped.size()));
  };

  // ---- decode the remaining rows, write shard by shard ----
  const int64_t first_row = complete * per_shard;
  if (first_row < rows) {
    int threads = o.threads;
    if (threads == 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    RowPipeline pipe(o, src, first_row, rows, threads);
    for (int64_t k = complete; k < n_shards; ++k) {
      const int64_t begin = k * per_shard, end = std::min(rows, begin + per_shard);
      ShardMeta& meta = metas[static_cast<size_t>(k)];
      const std::string shard_path = (fs::path(o.out_dir) / shard_file_name(o.split, k)).string();
      AtomicFile out(shard_path, "prep shard");
      for (int64_t row = begin; row < end; ++row) {
        RowResult r;
        while (!pipe.take(&r, kProgressInterval)) report_progress(row);
        if (Clock::now() - last_report >= kProgressInterval) report_progress(row);
        ++rep.images_decoded;
        const std::string& uid = src.uids[static_cast<size_t>(row)];
        if (r.ok) {
          RZ_CHECK(static_cast<int64_t>(r.pixels.size()) == image_bytes, "prep: internal: ", uid);
          meta.images.push_back(json{{"uid", uid},
                                     {"row", row},
                                     {"offset", out.bytes()},
                                     {"orig_h", r.orig_h},
                                     {"orig_w", r.orig_w}});
          out.write(r.pixels.data(), r.pixels.size());
        } else {
          warn("prep: skipping " + uid + " (row " + std::to_string(row) + "): " + r.reason);
          meta.skipped.push_back(json{{"uid", uid}, {"row", row}, {"reason", r.reason}});
          skipped.push_back({uid, row, r.reason});
          check_bad();
        }
      }
      out.commit();
      meta.bytes = out.bytes();
      write_text_file_atomic((fs::path(o.out_dir) / shard_meta_name(o.split, k)).string(),
                             shard_meta_json(o.split, k, begin, end, meta).dump() + "\n");
      write_progress(k + 1);
      ++rep.shards_written;
      report_progress(end);
    }
  }

  // ---- the index, last ----
  json index{
      {"format", kIndexFormat},
      {"version", kCacheFormatVersion},
      {"split", o.split},
      {"image_size", S},
      {"channels", 1},
      {"resize", "area"},
      {"clahe",
       {{"enabled", o.clahe},
        {"clip_limit", params["clahe_clip"]},
        {"tiles_x", params["clahe_tiles_x"]},
        {"tiles_y", params["clahe_tiles_y"]}}},
      {"shard_images", per_shard},
      {"source", {{"data_dir", o.data_dir}, {"csv", src.csv_path}, {"image_dir", src.image_dir}}},
      {"rows", rows},
      {"fingerprint", fingerprint}};
  json shards = json::array(), images = json::array(), skipped_j = json::array();
  for (int64_t k = 0; k < n_shards; ++k) {
    ShardMeta& m = metas[static_cast<size_t>(k)];
    shards.push_back(json{{"file", shard_file_name(o.split, k)},
                          {"images", static_cast<int64_t>(m.images.size())},
                          {"bytes", m.bytes}});
    for (json& e : m.images) {
      e["shard"] = k;
      images.push_back(std::move(e));
      ++rep.images;
    }
    for (json& s : m.skipped) skipped_j.push_back(std::move(s));
  }
  index["shards"] = std::move(shards);
  index["images"] = std::move(images);
  index["skipped"] = std::move(skipped_j);
  write_text_file_atomic(index_path, index.dump(1) + "\n");

  rep.bad = static_cast<int64_t>(skipped.size());
  report_progress(rows);
  rep.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return rep;
}

// ---- ImageCache ----

ImageCache::ImageCache(ImageCache&& other) noexcept
    : dir_(std::move(other.dir_)),
      info_(std::move(other.info_)),
      entries_(std::move(other.entries_)),
      by_uid_(std::move(other.by_uid_)),
      shards_(std::exchange(other.shards_, {})) {}

ImageCache& ImageCache::operator=(ImageCache&& other) noexcept {
  if (this != &other) {
    release();
    dir_ = std::move(other.dir_);
    info_ = std::move(other.info_);
    entries_ = std::move(other.entries_);
    by_uid_ = std::move(other.by_uid_);
    shards_ = std::exchange(other.shards_, {});
  }
  return *this;
}

ImageCache::~ImageCache() {
  release();
}

void ImageCache::release() {
  for (Mapping& m : shards_)
    if (m.data && m.bytes > 0) ::munmap(const_cast<uint8_t*>(m.data), m.bytes);
  shards_.clear();
}

namespace {

// Every value of the index is checked for its type and range where it is
// read; errors name the file, the field ("images[3].offset") and the value.
class IndexFields {
 public:
  explicit IndexFields(const std::string& path) : path_(path) {}

  [[noreturn]] void fail(const std::string& field, const std::string& problem) const {
    RZ_THROW(path_, ": field '", field, "' ", problem,
             " (a damaged or foreign cache index: re-run prep into a fresh out_dir)");
  }
  static std::string join(const std::string& where, const char* key) {
    return where.empty() ? std::string(key) : where + "." + key;
  }
  static std::string show(const json& v) { return csv_excerpt(v.dump(), 60); }

  const json& at(const json& obj, const std::string& where, const char* key) const {
    if (!obj.is_object())
      fail(where.empty() ? "(top level)" : where, std::string("is a JSON ") + obj.type_name() +
                                                      ", expected an object");
    const auto it = obj.find(key);
    if (it == obj.end()) fail(join(where, key), "is missing");
    return *it;
  }
  int64_t integer(const json& obj, const std::string& where, const char* key, int64_t lo,
                  int64_t hi) const {
    const json& v = at(obj, where, key);
    if (!v.is_number_integer()) fail(join(where, key), "is " + show(v) + ", expected an integer");
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi))
      fail(join(where, key), "is " + show(v) + ", expected " + std::to_string(lo) + ".." +
                                 std::to_string(hi));
    const int64_t x = v.get<int64_t>();
    if (x < lo || x > hi)
      fail(join(where, key), "is " + std::to_string(x) + ", expected " + std::to_string(lo) +
                                 ".." + std::to_string(hi));
    return x;
  }
  std::string string(const json& obj, const std::string& where, const char* key) const {
    const json& v = at(obj, where, key);
    if (!v.is_string()) fail(join(where, key), "is " + show(v) + ", expected a string");
    return v.get<std::string>();
  }
  std::string uid(const json& obj, const std::string& where) const {
    const std::string u = string(obj, where, "uid");
    const std::string problem = uid_problem(u);
    if (!problem.empty()) fail(join(where, "uid"), "'" + csv_excerpt(u) + "' " + problem);
    return u;
  }
  bool boolean(const json& obj, const std::string& where, const char* key) const {
    const json& v = at(obj, where, key);
    if (!v.is_boolean()) fail(join(where, key), "is " + show(v) + ", expected true or false");
    return v.get<bool>();
  }
  double number(const json& obj, const std::string& where, const char* key) const {
    const json& v = at(obj, where, key);
    if (!v.is_number()) fail(join(where, key), "is " + show(v) + ", expected a number");
    return v.get<double>();
  }
  const json& array(const json& obj, const std::string& where, const char* key) const {
    const json& v = at(obj, where, key);
    if (!v.is_array()) fail(join(where, key), "is " + show(v) + ", expected an array");
    return v;
  }
  // a * b, or an error naming the field when it overflows 64 bits.
  int64_t product(int64_t a, int64_t b, const std::string& field, const std::string& what) const {
    int64_t r = 0;
    if (__builtin_mul_overflow(a, b, &r))
      fail(field, "is " + std::to_string(a) + ": " + what + " overflows 64 bits (" +
                      std::to_string(a) + " x " + std::to_string(b) + ")");
    return r;
  }

 private:
  const std::string& path_;
};

constexpr int64_t kMaxRows = int64_t{1} << 40;
constexpr int64_t kI64Max = std::numeric_limits<int64_t>::max();

}  // namespace

ImageCache ImageCache::open(const std::string& dir, const std::string& split) {
  const std::string index_path = cache_index_path(dir, split);
  RZ_CHECK(fs::is_regular_file(index_path), "image cache: ", index_path,
           " not found (run `ranzcr prep` for split '", split, "' first)");
  const json j = read_json(index_path);
  const IndexFields f(index_path);
  ImageCache c;
  c.dir_ = dir;
  try {
    RZ_CHECK(f.string(j, "", "format") == kIndexFormat, index_path,
             ": not an image cache index");
    const int64_t version = f.integer(j, "", "version", 0, kI64Max);
    RZ_CHECK(version == kCacheFormatVersion, index_path, ": cache format version ", version,
             ", this build reads version ", kCacheFormatVersion, " (re-run prep)");
    CacheInfo& info = c.info_;
    info.split = f.string(j, "", "split");
    if (info.split != split)
      f.fail("split", "is '" + csv_excerpt(info.split) + "', expected '" + split + "'");
    info.data_dir = f.string(f.at(j, "", "source"), "source", "data_dir");
    info.image_size = f.integer(j, "", "image_size", 1, kMaxImageSide);
    if (j.contains("channels")) f.integer(j, "", "channels", 1, 1);
    const json& cl = f.at(j, "", "clahe");
    info.clahe = f.boolean(cl, "clahe", "enabled");
    info.clahe_clip = f.number(cl, "clahe", "clip_limit");
    info.clahe_tiles_x = static_cast<int>(f.integer(cl, "clahe", "tiles_x", 0, 256));
    info.clahe_tiles_y = static_cast<int>(f.integer(cl, "clahe", "tiles_y", 0, 256));
    info.rows = f.integer(j, "", "rows", 0, kMaxRows);
    info.fingerprint = f.string(j, "", "fingerprint");
    const json& skipped = f.array(j, "", "skipped");
    for (size_t i = 0; i < skipped.size(); ++i) {
      const std::string w = "skipped[" + std::to_string(i) + "]";
      PrepSkipped sk;
      sk.uid = f.uid(skipped[i], w);
      sk.row = f.integer(skipped[i], w, "row", 0, info.rows - 1);
      sk.reason = f.string(skipped[i], w, "reason");
      info.skipped.push_back(std::move(sk));
    }
    const int64_t image_bytes = f.product(info.image_size, info.image_size, "image_size",
                                          "image_size x image_size");

    const json& shards = f.array(j, "", "shards");
    for (size_t k = 0; k < shards.size(); ++k) {
      const std::string w = "shards[" + std::to_string(k) + "]";
      const std::string file = f.string(shards[k], w, "file");
      const std::string problem = file_name_problem(file);
      if (!problem.empty())
        f.fail(w + ".file", "'" + csv_excerpt(file) + "' " + problem +
                                " (a shard must be a file of the cache folder)");
      Mapping m;
      m.file = path_in_folder(dir, file, "", "cache shard");
      const int64_t n_images = f.integer(shards[k], w, "images", 0, info.rows);
      const int64_t expected = f.integer(shards[k], w, "bytes", 0, kI64Max);
      const int64_t needed =
          f.product(n_images, image_bytes, w + ".images", "images x image_size^2 bytes");
      if (expected != needed)
        f.fail(w + ".bytes", "is " + std::to_string(expected) + ", but " +
                                 std::to_string(n_images) + " images of " +
                                 std::to_string(image_bytes) + " bytes need " +
                                 std::to_string(needed));
      const int fd = ::open(m.file.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
      if (fd < 0) RZ_THROW("image cache: cannot open shard ", m.file, ": ", std::strerror(errno));
      struct stat st {};
      if (::fstat(fd, &st) != 0) {
        const int err = errno;
        ::close(fd);
        RZ_THROW("image cache: cannot stat shard ", m.file, ": ", std::strerror(err));
      }
      if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        RZ_THROW("image cache: shard ", m.file, " is not a regular file");
      }
      if (st.st_size != expected) {
        ::close(fd);
        RZ_THROW("image cache: shard ", m.file, " has the wrong size: expected ", expected,
                 " bytes, found ", static_cast<int64_t>(st.st_size),
                 " (truncated or modified; re-run prep into a fresh out_dir)");
      }
      m.bytes = static_cast<size_t>(expected);
      if (m.bytes > 0) {
        void* p = ::mmap(nullptr, m.bytes, PROT_READ, MAP_SHARED, fd, 0);
        const int err = errno;
        ::close(fd);  // the mapping keeps the file referenced
        if (p == MAP_FAILED)
          RZ_THROW("image cache: cannot mmap shard ", m.file, ": ", std::strerror(err));
        m.data = static_cast<const uint8_t*>(p);
      } else {
        ::close(fd);
      }
      c.shards_.push_back(std::move(m));
    }

    const json& images = f.array(j, "", "images");
    std::vector<int64_t> per_shard(c.shards_.size(), 0);
    c.entries_.reserve(images.size());
    for (size_t i = 0; i < images.size(); ++i) {
      const std::string w = "images[" + std::to_string(i) + "]";
      const json& e = images[i];
      CacheEntry ce;
      ce.uid = f.uid(e, w);
      ce.row = f.integer(e, w, "row", 0, info.rows - 1);
      ce.shard = f.integer(e, w, "shard", 0, static_cast<int64_t>(c.shards_.size()) - 1);
      const Mapping& m = c.shards_[static_cast<size_t>(ce.shard)];
      // The last offset an image fits at (-1: none); m.bytes is a real file size.
      const int64_t last = static_cast<int64_t>(m.bytes) - image_bytes;
      ce.offset = f.integer(e, w, "offset", 0, std::max<int64_t>(last, 0));
      if (last < 0 || ce.offset % image_bytes != 0)
        f.fail(w + ".offset", "is " + std::to_string(ce.offset) + ": not the start of an image of " +
                                  std::to_string(image_bytes) + " bytes inside " + m.file + " (" +
                                  std::to_string(m.bytes) + " bytes)");
      ce.orig_h = f.integer(e, w, "orig_h", 1, kMaxImageSide);
      ce.orig_w = f.integer(e, w, "orig_w", 1, kMaxImageSide);
      ++per_shard[static_cast<size_t>(ce.shard)];
      const auto [it, inserted] =
          c.by_uid_.emplace(ce.uid, static_cast<int64_t>(c.entries_.size()));
      if (!inserted)
        f.fail(w + ".uid", "'" + ce.uid + "' is listed twice (also images[" +
                               std::to_string(it->second) + "])");
      c.entries_.push_back(std::move(ce));
    }
    for (size_t k = 0; k < per_shard.size(); ++k) {
      const int64_t listed = shards[k]["images"].get<int64_t>();
      if (per_shard[k] != listed)
        f.fail("shards[" + std::to_string(k) + "].images",
               "is " + std::to_string(listed) + ", but " + std::to_string(per_shard[k]) +
                   " entries of 'images' name this shard");
    }
  } catch (const json::exception& e) {
    RZ_THROW(index_path, ": malformed cache index: ", e.what());
  }
  return c;
}

int64_t ImageCache::check_covers(const std::vector<std::string>& uids, const std::string& csv_path,
                                 const CacheOpenOptions& options,
                                 std::span<const int64_t> csv_lines) const {
  std::unordered_map<std::string_view, int64_t> skipped;
  for (const PrepSkipped& s : info_.skipped) skipped.emplace(s.uid, s.row);
  int64_t missing = 0;
  size_t first = 0;
  for (size_t i = 0; i < uids.size(); ++i) {
    if (find(uids[i]) >= 0 || skipped.count(uids[i])) continue;
    if (missing++ == 0) first = i;
  }
  if (missing > 0 && !options.allow_missing_studies)
    RZ_THROW("image cache ", dir_, " lacks ", missing, " of the ", uids.size(), " studies of ",
             csv_path, " (first: '", uids[first], "', ",
             first < csv_lines.size() ? "line " + std::to_string(csv_lines[first])
                                      : "row " + std::to_string(first + 1),
             "): it was built from an older or different CSV. Rebuild it with `ranzcr prep "
             "--data-dir <data folder> --out-dir <a new folder>` (or delete ",
             dir_, " first), or set allow_missing_studies to go on without them");
  return missing;
}

int64_t ImageCache::check_covers(const RanzcrTrainSet& train,
                                 const CacheOpenOptions& options) const {
  std::vector<std::string> uids;
  std::vector<int64_t> lines;
  uids.reserve(train.studies.size());
  lines.reserve(train.studies.size());
  for (const RanzcrStudy& s : train.studies) {
    uids.push_back(s.uid);
    lines.push_back(s.csv_line);
  }
  return check_covers(uids, train.path, options, lines);
}

std::span<const uint8_t> ImageCache::image(int64_t i) const {
  const CacheEntry& e = entry(i);
  const Mapping& m = shards_[static_cast<size_t>(e.shard)];
  return {m.data + e.offset, static_cast<size_t>(info_.image_size * info_.image_size)};
}

Image ImageCache::load(int64_t i) const {
  const std::span<const uint8_t> px = image(i);
  Image img(info_.image_size, info_.image_size, 1);
  std::copy(px.begin(), px.end(), img.pixels.begin());
  return img;
}

const CacheEntry& ImageCache::entry(int64_t i) const {
  RZ_CHECK(i >= 0 && i < size(), "image cache: index ", i, " out of range [0, ", size(), ")");
  return entries_[static_cast<size_t>(i)];
}

int64_t ImageCache::find(std::string_view uid) const {
  const auto it = by_uid_.find(std::string(uid));
  return it == by_uid_.end() ? -1 : it->second;
}

}  // namespace rz::data
