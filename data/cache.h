// The uint8 image cache: `prep` decodes every RANZCR image once (gray, CLAHE
// at full resolution, INTER_AREA resize to S x S) into raw shards, and
// ImageCache memory-maps them back for the loader.
//
// Pipeline per image (order fixed on purpose):
//   decode_image(path, 1) -> clahe(clip, tiles) at full resolution -> resize_area(S, S)
// CLAHE runs before the resize because its tiles and clip limit are defined
// on the original pixels: the 8x8 tile histograms then see the full detail of
// a 2000-3000 px film, the result does not depend on S (the same enhanced
// image is only sampled differently at 512 or 640), and the area resize
// averages down the noise that CLAHE amplifies. Resizing first would equalize
// resampled noise and tie the contrast to the cache size. The resize squeezes
// the whole film into S x S (no crop, aspect not kept), as the RANZCR
// solutions do; the original height/width are kept to rescale annotations.
//
// Files in out_dir for split "train" (the same with "test"):
//   train-00000.u8 ...      shards: raw S*S gray bytes per image, back to back,
//                           images in CSV order; shard k holds the good images
//                           among CSV rows [k*R, (k+1)*R) (R = shard_images),
//                           so a bad row shortens its shard instead of
//                           shifting every later one.
//   train-00000.json ...    per-shard metadata (entries and skipped rows),
//                           written after its shard is complete.
//   train.progress.json     parameters + number of complete shards, rewritten
//                           (atomically) after every shard: what resume reads.
//   train.index.json        the index ImageCache opens, written last and
//                           atomically, so it never points at a half shard:
//     { "format": "rz-image-cache", "version": 1, "split", "image_size",
//       "channels": 1, "resize": "area",
//       "clahe": {"enabled", "clip_limit", "tiles_x", "tiles_y"},
//       "shard_images", "source": {"data_dir", "csv", "image_dir"},
//       "rows": <CSV rows>, "fingerprint": "<16 hex digits>",
//       "shards": [{"file", "images", "bytes"}],
//       "images": [{"uid", "row", "shard", "offset", "orig_h", "orig_w"}],
//       "skipped": [{"uid", "row", "reason"}] }
// Shards are written through AtomicFile (an exclusively created temporary
// ".<name>.tmp-XXXXXX" beside them, fsync'ed and renamed when complete); a
// run that resumes its own cache removes the temporaries a killed run left.
//
// Untrusted input: every field of the index is checked where it is read
// (type, range, offsets inside their shard, sizes in checked 64-bit
// arithmetic, UIDs and shard names that cannot leave the folder); errors name
// the index file, the field ("images[3].offset") and the value.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "data/image.h"
#include "data/ranzcr_csv.h"

namespace rz::data {

inline constexpr int kCacheFormatVersion = 1;

struct PrepOptions {
  std::string data_dir;  // RANZCR layout: train.csv + train/, or sample_submission.csv + test/
  std::string out_dir;   // created if missing
  std::string split = "train";  // or "test" (sample_submission.csv, test/<uid>.jpg)
  int64_t image_size = 512;     // S: cached images are S x S gray, S in [32, 4096]
  bool clahe = true;
  double clahe_clip = 2.0;  // cv2.createCLAHE clipLimit (<= 0: no clipping)
  int clahe_tiles_x = 8;
  int clahe_tiles_y = 8;
  int64_t shard_images = 0;        // CSV rows per shard; 0: as many as fit in 256 MiB (1024 at 512)
  int threads = 0;                 // decode workers; 0: std::thread::hardware_concurrency()
  double max_bad_fraction = 0.01;  // abort when more than this share of rows is missing/corrupt
};

struct PrepSkipped {
  std::string uid;
  int64_t row = 0;     // 0-based row in the CSV
  std::string reason;  // "not found: ..." or the decode error
};

struct PrepReport {
  std::string index_path;
  int64_t rows = 0;            // images listed in the CSV
  int64_t images = 0;          // images in the cache
  int64_t bad = 0;             // missing or corrupt rows (skipped)
  int64_t shards = 0;          // shard files in the cache
  int64_t shards_resumed = 0;  // complete shards found from an earlier run, not rewritten
  int64_t shards_written = 0;  // shards written by this run
  int64_t images_decoded = 0;  // rows this run decoded (0 when everything was resumed)
  double seconds = 0;
  std::vector<PrepSkipped> skipped;  // all skipped rows, CSV order
};

// Called from the thread that runs run_prep (never from a worker), a few
// times a second and once at the end: rows done so far (resumed ones
// included), total rows, bad rows so far. It may throw to cancel the run;
// complete shards stay on disk and a later run resumes after them.
using PrepProgress = std::function<void(int64_t done, int64_t total, int64_t bad)>;
// One line per skipped image ("prep: skipping <uid> (row N): <reason>");
// called from the run_prep thread. Empty: the line goes to stderr.
using PrepWarning = std::function<void(const std::string& line)>;

// Builds (or resumes) the cache. Checks first: S in [32, 4096], the CSV parses,
// the image directory exists, the other options are in range; an out_dir that
// holds a cache of this split made with other parameters (size, CLAHE, shard
// size, CSV contents) is an error asking for another out_dir. Missing or
// corrupt images are warned about, counted and skipped; once the bad rows
// exceed max_bad_fraction of all rows the run throws rz::Error with the count
// and the first few files. Decoding runs on `threads` workers; shard contents
// do not depend on the thread count.
PrepReport run_prep(const PrepOptions& options, const PrepProgress& progress = {},
                    const PrepWarning& warning = {});

// The index path for a split in a cache directory: <dir>/<split>.index.json.
std::string cache_index_path(const std::string& dir, const std::string& split);

struct CacheEntry {
  std::string uid;
  int64_t row = 0;  // 0-based row in the source CSV
  int64_t shard = 0;
  int64_t offset = 0;  // bytes into the shard
  int64_t orig_h = 0;  // original image size, for rescaling annotations
  int64_t orig_w = 0;
};

struct CacheInfo {
  std::string split;
  std::string data_dir;  // as given to prep
  int64_t image_size = 0;
  bool clahe = false;
  double clahe_clip = 0;
  int clahe_tiles_x = 0;
  int clahe_tiles_y = 0;
  int64_t rows = 0;
  std::string fingerprint;
  std::vector<PrepSkipped> skipped;
};

struct CacheOpenOptions {
  // A CSV listing studies the cache has neither cached nor skipped (a cache
  // built from an older train.csv) is an error unless this is set; then those
  // studies are left out (ImageCache::find returns -1 for them).
  bool allow_missing_studies = false;
};

// Read-only view of a finished cache: the shards are mmap'ed (PROT_READ,
// MAP_SHARED), so opening is cheap, pages come from the OS page cache on
// demand, and several loader threads (or processes) share them. Move-only.
// Thread-safe for concurrent reads.
class ImageCache {
 public:
  // Opens <dir>/<split>.index.json and maps its shards. Errors: no index
  // (naming the path; run prep first), an unknown format version, a missing
  // shard, or a shard whose size disagrees with the index ("<file>: expected
  // N bytes, found M").
  static ImageCache open(const std::string& dir, const std::string& split = "train");

  // Checks that the cache covers every study of a CSV (`uids` in its order,
  // read from `csv_path`; csv_lines, when given, their lines): a study that
  // is neither cached nor skipped by prep (a bad image) means the cache was
  // built from an older or different CSV. Throws rz::Error naming the cache,
  // the CSV, the count and the first such UID with its line, and how to
  // rebuild, unless options.allow_missing_studies. Returns the count.
  int64_t check_covers(const std::vector<std::string>& uids, const std::string& csv_path,
                       const CacheOpenOptions& options = {},
                       std::span<const int64_t> csv_lines = {}) const;
  // The same for train.csv as read (its path, UIDs and lines).
  int64_t check_covers(const RanzcrTrainSet& train, const CacheOpenOptions& options = {}) const;

  ImageCache() = default;
  ImageCache(ImageCache&& other) noexcept;
  ImageCache& operator=(ImageCache&& other) noexcept;
  ImageCache(const ImageCache&) = delete;
  ImageCache& operator=(const ImageCache&) = delete;
  ~ImageCache();  // munmaps the shards

  int64_t size() const { return static_cast<int64_t>(entries_.size()); }
  int64_t image_size() const { return info_.image_size; }  // S
  // The S*S gray bytes of image i (row-major), valid while the cache lives.
  std::span<const uint8_t> image(int64_t i) const;
  // A copy of image i as an S x S x 1 Image.
  Image load(int64_t i) const;
  const CacheEntry& entry(int64_t i) const;
  // Index of the image with this StudyInstanceUID, or -1 (e.g. skipped).
  int64_t find(std::string_view uid) const;
  const CacheInfo& info() const { return info_; }
  const std::string& dir() const { return dir_; }

 private:
  struct Mapping {
    std::string file;
    const uint8_t* data = nullptr;
    size_t bytes = 0;
  };
  void release();

  std::string dir_;
  CacheInfo info_;
  std::vector<CacheEntry> entries_;
  std::unordered_map<std::string, int64_t> by_uid_;
  std::vector<Mapping> shards_;
};

}  // namespace rz::data
