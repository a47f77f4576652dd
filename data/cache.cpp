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
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>
#include <utility>

#include "data/clahe.h"
#include "data/csv.h"
#include "data/ranzcr_csv.h"
#include "data/resize.h"
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
  RZ_CHECK(o.image_size >= 32 && o.image_size <= 4096,
           "prep: image_size must be in [32, 4096], got ", o.image_size);
  RZ_CHECK(!o.out_dir.empty(), "prep: no out_dir given");
  RZ_CHECK(o.shard_images >= 0, "prep: shard_images must be >= 0 (0: automatic), got ",
           o.shard_images);
  RZ_CHECK(o.threads >= 0, "prep: threads must be >= 0 (0: all cores), got ", o.threads);
  RZ_CHECK(o.max_bad_fraction >= 0 && o.max_bad_fraction <= 1,
           "prep: max_bad_fraction must be in [0, 1], got ", o.max_bad_fraction);
  if (o.clahe) {
    RZ_CHECK(std::isfinite(o.clahe_clip), "prep: clahe_clip must be finite, got ", o.clahe_clip);
    RZ_CHECK(o.clahe_tiles_x >= 1 && o.clahe_tiles_y >= 1 && o.clahe_tiles_x <= 256 &&
                 o.clahe_tiles_y <= 256,
             "prep: CLAHE tiles must be in [1, 256], got ", o.clahe_tiles_x, "x", o.clahe_tiles_y);
  }
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
    std::string p = (fs::path(image_dir) / (uid + ext)).string();
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) return p;
  }
  *tried = (fs::path(image_dir) / (uid + ".jpg")).string() + " (also .jpeg, .png)";
  return {};
}

RowResult process_row(const PrepOptions& o, const std::string& image_dir, const std::string& uid) {
  RowResult r;
  std::string tried;
  const std::string path = find_image_file(image_dir, uid, &tried);
  if (path.empty()) {
    r.reason = "not found: " + tried;
    return r;
  }
  try {
    Image img = decode_image(path, 1);
    r.orig_h = img.height;
    r.orig_w = img.width;
    if (o.clahe) img = clahe(img, o.clahe_clip, o.clahe_tiles_x, o.clahe_tiles_y);
    img = resize_area(img, o.image_size, o.image_size);
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
      try {
        std::rethrow_exception(fatal_);
      } catch (const std::exception& e) {
        RZ_THROW("prep: processing ", src_.uids[static_cast<size_t>(fatal_row_)], " (row ",
                 fatal_row_, ") failed: ", e.what());
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
  void work() {
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

// Writes <path>.tmp; commit() fsyncs and renames it to <path>. Destroyed
// uncommitted (an exception), it removes the temp file.
class ShardWriter {
 public:
  explicit ShardWriter(std::string path) : path_(std::move(path)), tmp_(path_ + ".tmp") {
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) RZ_THROW("prep: cannot create ", tmp_, ": ", std::strerror(errno));
  }
  ~ShardWriter() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_.c_str());
  }
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  void write(const uint8_t* data, size_t n) {
    while (n > 0) {
      const ssize_t w = ::write(fd_, data, n);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) RZ_THROW("prep: write error on ", tmp_, ": ", std::strerror(errno));
      data += w;
      n -= static_cast<size_t>(w);
      bytes_ += static_cast<int64_t>(w);
    }
  }
  int64_t bytes() const { return bytes_; }

  void commit() {
    if (::fsync(fd_) != 0) RZ_THROW("prep: fsync failed on ", tmp_, ": ", std::strerror(errno));
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) RZ_THROW("prep: close failed on ", tmp_, ": ", std::strerror(errno));
    if (::rename(tmp_.c_str(), path_.c_str()) != 0)
      RZ_THROW("prep: cannot rename ", tmp_, " to ", path_, ": ", std::strerror(errno));
    committed_ = true;
  }

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  int64_t bytes_ = 0;
  bool committed_ = false;
};

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
                         ShardMeta* m) {
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
  const int64_t n_shards = (rows + per_shard - 1) / per_shard;
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
    const json old_params = prev.value("params", json::object());
    if (old_params != params)
      RZ_THROW("prep: ", o.out_dir, " already holds a '", o.split,
               "' cache made with other parameters (", describe_param_change(old_params, params),
               "); pick another out_dir or delete this one");
    const int64_t claimed = std::min(prev.value("complete_shards", int64_t{0}), n_shards);
    while (complete < claimed &&
           load_complete_shard(o.out_dir, o.split, complete, &metas[static_cast<size_t>(complete)]))
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
      ShardWriter out(shard_path);
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

ImageCache ImageCache::open(const std::string& dir, const std::string& split) {
  const std::string index_path = cache_index_path(dir, split);
  RZ_CHECK(fs::is_regular_file(index_path), "image cache: ", index_path,
           " not found (run `ranzcr prep` for split '", split, "' first)");
  const json j = read_json(index_path);
  ImageCache c;
  c.dir_ = dir;
  try {
    RZ_CHECK(j.at("format").get<std::string>() == kIndexFormat, index_path,
             ": not an image cache index");
    const int version = j.at("version").get<int>();
    RZ_CHECK(version == kCacheFormatVersion, index_path, ": cache format version ", version,
             ", this build reads version ", kCacheFormatVersion, " (re-run prep)");
    CacheInfo& info = c.info_;
    info.split = j.at("split").get<std::string>();
    info.data_dir = j.at("source").at("data_dir").get<std::string>();
    info.image_size = j.at("image_size").get<int64_t>();
    const json& cl = j.at("clahe");
    info.clahe = cl.at("enabled").get<bool>();
    info.clahe_clip = cl.at("clip_limit").get<double>();
    info.clahe_tiles_x = cl.at("tiles_x").get<int>();
    info.clahe_tiles_y = cl.at("tiles_y").get<int>();
    info.rows = j.at("rows").get<int64_t>();
    info.fingerprint = j.at("fingerprint").get<std::string>();
    for (const json& s : j.at("skipped"))
      info.skipped.push_back({s.at("uid").get<std::string>(), s.at("row").get<int64_t>(),
                              s.at("reason").get<std::string>()});
    RZ_CHECK(info.image_size >= 1, index_path, ": bad image_size ", info.image_size);
    const int64_t image_bytes = info.image_size * info.image_size;

    for (const json& s : j.at("shards")) {
      Mapping m;
      m.file = (fs::path(dir) / s.at("file").get<std::string>()).string();
      const int64_t expected = s.at("bytes").get<int64_t>();
      RZ_CHECK(expected == s.at("images").get<int64_t>() * image_bytes, index_path, ": shard ",
               m.file, " lists ", s.at("images").get<int64_t>(), " images but ", expected,
               " bytes");
      const int fd = ::open(m.file.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) RZ_THROW("image cache: cannot open shard ", m.file, ": ", std::strerror(errno));
      struct stat st {};
      if (::fstat(fd, &st) != 0) {
        const int err = errno;
        ::close(fd);
        RZ_THROW("image cache: cannot stat shard ", m.file, ": ", std::strerror(err));
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

    const json& images = j.at("images");
    c.entries_.reserve(images.size());
    for (const json& e : images) {
      CacheEntry ce;
      ce.uid = e.at("uid").get<std::string>();
      ce.row = e.at("row").get<int64_t>();
      ce.shard = e.at("shard").get<int64_t>();
      ce.offset = e.at("offset").get<int64_t>();
      ce.orig_h = e.at("orig_h").get<int64_t>();
      ce.orig_w = e.at("orig_w").get<int64_t>();
      RZ_CHECK(ce.shard >= 0 && ce.shard < static_cast<int64_t>(c.shards_.size()), index_path,
               ": image ", ce.uid, " names shard ", ce.shard, " of ", c.shards_.size());
      const Mapping& m = c.shards_[static_cast<size_t>(ce.shard)];
      RZ_CHECK(ce.offset >= 0 && ce.offset % image_bytes == 0 &&
                   ce.offset + image_bytes <= static_cast<int64_t>(m.bytes),
               index_path, ": image ", ce.uid, " at offset ", ce.offset, " is outside ", m.file,
               " (", m.bytes, " bytes)");
      const auto [it, inserted] =
          c.by_uid_.emplace(ce.uid, static_cast<int64_t>(c.entries_.size()));
      RZ_CHECK(inserted, index_path, ": duplicate uid ", ce.uid);
      c.entries_.push_back(std::move(ce));
    }
  } catch (const json::exception& e) {
    RZ_THROW(index_path, ": malformed cache index: ", e.what());
  }
  return c;
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
