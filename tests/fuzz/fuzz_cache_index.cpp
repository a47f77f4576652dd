// Fuzzes the prep cache's index reader (data/cache.h, ImageCache::open): the
// input is <cache>/train.index.json, opened as split "train".
//
// The cache folder holds three real shards the index may name (4 x 4 gray
// images, S = 4): train-00000.u8 (2 images), train-00001.u8 (1 image) and
// train-00002.u8 (empty); their bytes are all below 0x80. Beside the folder,
// outside.u8 (32 bytes of 0xA5) is a canary: a shard name that leaves the
// folder (../outside.u8, an absolute path) must be refused, and no image of
// an opened cache may show canary bytes.
//
// Invariants of an opened cache: every image lies inside a real shard (each
// byte of it is read), its entry has positive original sizes, and find()
// returns its index.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "data/cache.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

namespace fs = std::filesystem;

constexpr uint8_t kCanary = 0xA5;

void write_bytes(const fs::path& path, size_t n, uint8_t first, bool canary) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  for (size_t i = 0; i < n; ++i)
    out.put(static_cast<char>(canary ? kCanary : static_cast<uint8_t>((first + i) & 0x7F)));
  if (!out) rz::fuzz::fail(__FILE__, __LINE__, "cannot write " + path.string());
}

// The cache folder, with its shards written once per process.
const fs::path& cache_dir() {
  static const fs::path dir = [] {
    const fs::path d = rz::fuzz::ScratchDir::get() / "cache";
    fs::create_directories(d);
    write_bytes(d / "train-00000.u8", 32, 0, false);
    write_bytes(d / "train-00001.u8", 16, 40, false);
    write_bytes(d / "train-00002.u8", 0, 0, false);
    write_bytes(rz::fuzz::ScratchDir::get() / "outside.u8", 32, 0, true);
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fs::path& dir = cache_dir();
  rz::fuzz::write_scratch_file("cache/train.index.json", data, size);

  rz::data::ImageCache cache;
  if (!rz::fuzz::rejects_only([&] { cache = rz::data::ImageCache::open(dir.string(), "train"); }))
    return 0;

  const int64_t s = cache.image_size();
  FUZZ_REQUIRE(s >= 1, "image size ", s);
  for (int64_t i = 0; i < cache.size(); ++i) {
    const rz::data::CacheEntry& e = cache.entry(i);
    FUZZ_REQUIRE(e.orig_h >= 1 && e.orig_w >= 1, "image ", i, " original size ", e.orig_h, "x",
                 e.orig_w);
    FUZZ_REQUIRE(cache.find(e.uid) == i, "find('", e.uid, "') is ", cache.find(e.uid), ", not ", i);
    const std::span<const uint8_t> px = cache.image(i);
    FUZZ_REQUIRE(static_cast<int64_t>(px.size()) == s * s, "image ", i, " has ", px.size(),
                 " bytes");
    size_t canary = 0;
    for (const uint8_t b : px) canary += b == kCanary;  // reads every byte (ASan, SIGSEGV)
    FUZZ_REQUIRE(canary == 0, "image ", i, " ('", e.uid,
                 "') was read from outside the cache folder");
    const rz::data::Image img = cache.load(i);
    FUZZ_REQUIRE(img.height == s && img.width == s && img.channels == 1, "load(", i, ") shape");
  }
  return 0;
}
