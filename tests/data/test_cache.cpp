// prep and ImageCache on a tiny RANZCR layout built in a temp dir: 12 studies
// with images of different sizes (PNG and JPEG, gray and RGB), one corrupt
// file and one missing. Also the ready-made cache transform of the loader.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/cache.h"
#include "data/clahe.h"
#include "data/image.h"
#include "data/loader.h"
#include "data/ranzcr_csv.h"
#include "data/resize.h"
#include "tests/data/temp_dir.h"

namespace fs = std::filesystem;
using rz::data::Image;
using rz::data::ImageCache;
using rz::data::PrepOptions;
using rz::data::PrepReport;
using rz::test::contains;
using rz::test::error_message;
using rz::test::TempDir;

namespace {


constexpr int kRows = 12;
constexpr int kCorruptRow = 5;
constexpr int kMissingRow = 9;
constexpr int64_t kS = 32;

std::string uid_of(int i) {
  return "1.2.826.0.1.3680043.8.498." + std::to_string(1000 + i);
}

std::vector<uint8_t> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A film-like test image: a smooth gradient with a bright "line" and texture.
Image make_image(int i, int64_t h, int64_t w, int64_t c) {
  Image img(h, w, c);
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int64_t k = 0; k < c; ++k) {
        int v =
            static_cast<int>(40 + (150 * y) / h + (30 * x) / w + ((x * 7 + y * 13 + i * 5) % 23));
        if (std::abs(x - y - i) < 2) v = 240;
        img.at(y, x, k) = static_cast<uint8_t>(std::min(255, v + static_cast<int>(k) * 10));
      }
  return img;
}

// <dir>/train.csv and <dir>/train/<uid>.{jpg,png}; row kCorruptRow is garbage
// bytes, row kMissingRow has no file. Returns the full paths of the images.
std::vector<std::string> make_layout(const fs::path& dir) {
  std::string csv = "StudyInstanceUID";
  for (auto name : rz::kRanzcrLabels) csv += "," + std::string(name);
  csv += ",PatientID\n";
  for (int i = 0; i < kRows; ++i)
    csv += uid_of(i) + ",0,0,1,0,0,0,1,0,0,1,0,P" + std::to_string(i / 2) + "\n";
  std::ofstream(dir / "train.csv", std::ios::binary) << csv;
  fs::create_directories(dir / "train");
  std::vector<std::string> paths(kRows);
  for (int i = 0; i < kRows; ++i) {
    const int64_t h = 40 + 9 * i, w = 72 - 3 * i;  // enlarging and shrinking, odd sizes
    const bool png = i % 3 == 0;
    paths[i] = (dir / "train" / (uid_of(i) + (png ? ".png" : ".jpg"))).string();
    if (i == kMissingRow) continue;
    if (i == kCorruptRow) {
      std::ofstream(paths[i], std::ios::binary) << "\xff\xd8 this is not a JPEG";
      continue;
    }
    const Image img = make_image(i, h, w, i == 2 ? 3 : 1);
    if (png)
      rz::data::write_png(paths[i], img);
    else
      rz::data::write_jpeg(paths[i], img, 90);
  }
  return paths;
}

PrepOptions options(const fs::path& data, const fs::path& out) {
  PrepOptions o;
  o.data_dir = data.string();
  o.out_dir = out.string();
  o.image_size = kS;
  o.shard_images = 4;
  o.threads = 2;
  o.max_bad_fraction = 0.2;
  return o;
}

const rz::data::PrepWarning kQuiet = [](const std::string&) {};

Image expected_image(const std::string& path, bool with_clahe) {
  Image img = rz::data::decode_image(path, 1);
  if (with_clahe) img = rz::data::clahe(img, 2.0, 8, 8);
  return rz::data::resize_area(img, kS, kS);
}

}  // namespace

TEST_CASE("cache: prep writes shards and an index, skipping bad images with warnings") {
  TempDir tmp("cache");
  make_layout(tmp.path());
  std::vector<std::string> warnings;
  std::vector<std::array<int64_t, 3>> calls;
  const PrepReport rep = rz::data::run_prep(
      options(tmp.path(), tmp.path() / "out"),
      [&](int64_t done, int64_t total, int64_t bad) {
        calls.push_back({done, total, bad});
      },
      [&](const std::string& line) { warnings.push_back(line); });

  CHECK(rep.rows == kRows);
  CHECK(rep.images == kRows - 2);
  CHECK(rep.bad == 2);
  CHECK(rep.shards == 3);
  CHECK(rep.shards_written == 3);
  CHECK(rep.shards_resumed == 0);
  CHECK(rep.images_decoded == kRows);
  REQUIRE(rep.skipped.size() == 2);
  CHECK(rep.skipped[0].uid == uid_of(kCorruptRow));
  CHECK(rep.skipped[1].uid == uid_of(kMissingRow));
  REQUIRE(warnings.size() == 2);
  CHECK(contains(warnings[0], uid_of(kCorruptRow)));
  CHECK(contains(warnings[0], "cannot decode"));
  CHECK(contains(warnings[1], uid_of(kMissingRow)));
  CHECK(contains(warnings[1], "not found"));
  REQUIRE(!calls.empty());
  CHECK(calls.back() == std::array<int64_t, 3>{kRows, kRows, 2});

  const fs::path out = tmp.path() / "out";
  CHECK(rep.index_path == (out / "train.index.json").string());
  const auto index = nlohmann::json::parse(read_bytes(out / "train.index.json"));
  CHECK(index["version"] == rz::data::kCacheFormatVersion);
  CHECK(index["image_size"] == kS);
  CHECK(index["clahe"]["enabled"] == true);
  CHECK(index["clahe"]["clip_limit"] == 2.0);
  CHECK(index["clahe"]["tiles_x"] == 8);
  CHECK(index["images"].size() == kRows - 2);
  CHECK(index["skipped"].size() == 2);
  CHECK(index["images"][2]["orig_h"] == 40 + 9 * 2);
  CHECK(index["images"][2]["orig_w"] == 72 - 3 * 2);
  // Shard k holds the good rows among [4k, 4k+4): 4, 3 (row 5 corrupt), 3 (row 9 missing).
  const int64_t per = kS * kS;
  CHECK(fs::file_size(out / "train-00000.u8") == static_cast<uintmax_t>(4 * per));
  CHECK(fs::file_size(out / "train-00001.u8") == static_cast<uintmax_t>(3 * per));
  CHECK(fs::file_size(out / "train-00002.u8") == static_cast<uintmax_t>(3 * per));
  for (const auto& e : fs::directory_iterator(out)) CHECK(e.path().extension() != ".tmp");
}

TEST_CASE("cache: reads back the exact bytes of resize_area(clahe(decode(file)))") {
  TempDir tmp("cache");
  const std::vector<std::string> paths = make_layout(tmp.path());
  rz::data::run_prep(options(tmp.path(), tmp.path() / "out"), {}, kQuiet);
  PrepOptions plain = options(tmp.path(), tmp.path() / "plain");
  plain.clahe = false;
  rz::data::run_prep(plain, {}, kQuiet);

  const ImageCache cache = ImageCache::open((tmp.path() / "out").string(), "train");
  const ImageCache nocl = ImageCache::open((tmp.path() / "plain").string());
  REQUIRE(cache.size() == kRows - 2);
  CHECK(cache.image_size() == kS);
  CHECK(cache.info().clahe);
  CHECK(!nocl.info().clahe);
  CHECK(cache.info().skipped.size() == 2);
  CHECK(cache.find(uid_of(kCorruptRow)) == -1);
  CHECK(cache.find("no such uid") == -1);
  for (int row : {0, 2, 3, 7, 11}) {  // PNG, RGB JPEG, PNG, JPEG after the bad row, last
    CAPTURE(row);
    const int64_t i = cache.find(uid_of(row));
    REQUIRE(i >= 0);
    const auto& e = cache.entry(i);
    CHECK(e.uid == uid_of(row));
    CHECK(e.row == row);
    CHECK(e.orig_h == 40 + 9 * row);
    CHECK(e.orig_w == 72 - 3 * row);
    const Image want = expected_image(paths[row], true);
    const auto got = cache.image(i);
    CHECK(std::equal(got.begin(), got.end(), want.pixels.begin(), want.pixels.end()));
    CHECK(cache.load(i).pixels == want.pixels);
    const Image want_plain = expected_image(paths[row], false);
    const auto got_plain = nocl.image(nocl.find(uid_of(row)));
    CHECK(std::equal(got_plain.begin(), got_plain.end(), want_plain.pixels.begin(),
                     want_plain.pixels.end()));
  }
  CHECK(contains(error_message([&] { cache.entry(cache.size()); }), "out of range"));
}

TEST_CASE("cache: too many bad images abort the run, naming the count and the files") {
  TempDir tmp("cache");
  make_layout(tmp.path());
  PrepOptions o = options(tmp.path(), tmp.path() / "out");
  o.max_bad_fraction = 0.01;  // the default: 1 bad row of 12 is already too many
  std::string msg = error_message([&] { rz::data::run_prep(o, {}, kQuiet); });
  CHECK(contains(msg, "1 of 12 images are missing or corrupt"));
  CHECK(contains(msg, uid_of(kCorruptRow)));
  CHECK(!fs::exists(tmp.path() / "out" / "train.index.json"));

  o.max_bad_fraction = 0.1;  // 1.2 rows: the second bad row (in shard 2) aborts
  msg = error_message([&] { rz::data::run_prep(o, {}, kQuiet); });
  CHECK(contains(msg, "2 of 12"));
  CHECK(contains(msg, uid_of(kCorruptRow)));
  CHECK(contains(msg, uid_of(kMissingRow)));
  CHECK(!fs::exists(tmp.path() / "out" / "train.index.json"));
  CHECK(!fs::exists(tmp.path() / "out" / "train-00002.u8.tmp"));

  // A higher limit resumes after the two complete shards.
  o.max_bad_fraction = 0.2;
  const PrepReport rep = rz::data::run_prep(o, {}, kQuiet);
  CHECK(rep.shards_resumed == 2);
  CHECK(rep.shards_written == 1);
  CHECK(rep.bad == 2);
  CHECK(ImageCache::open(o.out_dir).size() == kRows - 2);
}

TEST_CASE("cache: re-running resumes after the complete shards") {
  TempDir tmp("cache");
  make_layout(tmp.path());
  const PrepOptions o = options(tmp.path(), tmp.path() / "out");
  rz::data::run_prep(o, {}, kQuiet);
  const fs::path out(o.out_dir);
  std::vector<fs::file_time_type> mtimes;
  for (int k = 0; k < 3; ++k)
    mtimes.push_back(fs::last_write_time(out / ("train-0000" + std::to_string(k) + ".u8")));
  const auto index_before = read_bytes(out / "train.index.json");

  // Everything complete: nothing is decoded or rewritten, the index is the same.
  const PrepReport again = rz::data::run_prep(o, {}, kQuiet);
  CHECK(again.shards_resumed == 3);
  CHECK(again.shards_written == 0);
  CHECK(again.images_decoded == 0);
  CHECK(again.bad == 2);
  for (int k = 0; k < 3; ++k)
    CHECK(fs::last_write_time(out / ("train-0000" + std::to_string(k) + ".u8")) == mtimes[k]);
  CHECK(read_bytes(out / "train.index.json") == index_before);

  // A run cancelled after its first shard (the progress callback throws)
  // leaves no index; the next run resumes at shard 1 and ends identical.
  PrepOptions o2 = options(tmp.path(), tmp.path() / "out2");
  o2.threads = 3;
  const std::string msg = error_message([&] {
    rz::data::run_prep(
        o2,
        [](int64_t done, int64_t, int64_t) {
          if (done >= 4) throw rz::Error("cancelled");
        },
        kQuiet);
  });
  CHECK(msg == "cancelled");
  const fs::path out2(o2.out_dir);
  CHECK(fs::exists(out2 / "train-00000.u8"));
  CHECK(!fs::exists(out2 / "train.index.json"));
  const PrepReport resumed = rz::data::run_prep(o2, {}, kQuiet);
  CHECK(resumed.shards_resumed == 1);
  CHECK(resumed.shards_written == 2);
  CHECK(resumed.images_decoded == kRows - 4);
  CHECK(resumed.bad == 2);
  CHECK(resumed.skipped.size() == 2);
  for (int k = 0; k < 3; ++k) {
    const std::string name = "train-0000" + std::to_string(k) + ".u8";
    CHECK(read_bytes(out2 / name) == read_bytes(out / name));
  }
  const auto i1 = nlohmann::json::parse(read_bytes(out / "train.index.json"));
  const auto i2 = nlohmann::json::parse(read_bytes(out2 / "train.index.json"));
  CHECK(i1["images"] == i2["images"]);
  CHECK(i1["skipped"] == i2["skipped"]);
  CHECK(i1["fingerprint"] == i2["fingerprint"]);
}

TEST_CASE("cache: other parameters on the same out_dir are an error") {
  TempDir tmp("cache");
  make_layout(tmp.path());
  PrepOptions o = options(tmp.path(), tmp.path() / "out");
  rz::data::run_prep(o, {}, kQuiet);
  o.image_size = 48;
  const std::string msg = error_message([&] { rz::data::run_prep(o, {}, kQuiet); });
  CHECK(contains(msg, "image_size 32 -> 48"));
  CHECK(contains(msg, "pick another out_dir or delete"));
  o.image_size = kS;
  o.clahe_clip = 3.0;
  CHECK(contains(error_message([&] { rz::data::run_prep(o, {}, kQuiet); }), "clahe_clip"));
  // Thread count and the bad-row limit change no bytes: same cache.
  o.clahe_clip = 2.0;
  o.threads = 1;
  o.max_bad_fraction = 0.5;
  CHECK(rz::data::run_prep(o, {}, kQuiet).shards_resumed == 3);
}

TEST_CASE("cache: a truncated shard is an error naming it and the sizes") {
  TempDir tmp("cache");
  make_layout(tmp.path());
  const PrepOptions o = options(tmp.path(), tmp.path() / "out");
  rz::data::run_prep(o, {}, kQuiet);
  const fs::path shard = fs::path(o.out_dir) / "train-00001.u8";
  fs::resize_file(shard, 3 * kS * kS - 10);
  const std::string msg = error_message([&] { ImageCache::open(o.out_dir); });
  CHECK(contains(msg, "train-00001.u8"));
  CHECK(contains(msg, "expected 3072 bytes, found 3062"));
  // prep notices it too: shard 1 is redone, shard 0 kept.
  const PrepReport rep = rz::data::run_prep(o, {}, kQuiet);
  CHECK(rep.shards_resumed == 1);
  CHECK(rep.shards_written == 2);
  CHECK(ImageCache::open(o.out_dir).size() == kRows - 2);
  CHECK(contains(error_message([&] { ImageCache::open((tmp.path() / "nothing").string()); }),
                 "not found"));
}

TEST_CASE("cache: shard contents do not depend on the thread count") {
  TempDir tmp("cache");
  make_layout(tmp.path());
  PrepOptions a = options(tmp.path(), tmp.path() / "t1");
  a.threads = 1;
  PrepOptions b = options(tmp.path(), tmp.path() / "t3");
  b.threads = 3;
  rz::data::run_prep(a, {}, kQuiet);
  rz::data::run_prep(b, {}, kQuiet);
  for (int k = 0; k < 3; ++k) {
    const std::string name = "train-0000" + std::to_string(k) + ".u8";
    CHECK(read_bytes(fs::path(a.out_dir) / name) == read_bytes(fs::path(b.out_dir) / name));
  }
}

TEST_CASE("cache: prep checks its inputs and names the paths") {
  TempDir tmp("cache");
  PrepOptions o = options(tmp.path(), tmp.path() / "out");
  CHECK(contains(error_message([&] { rz::data::run_prep(o, {}, kQuiet); }),
                 (tmp.path() / "train.csv").string() + " not found"));
  make_layout(tmp.path());
  o.image_size = 16;
  CHECK(contains(error_message([&] { rz::data::run_prep(o, {}, kQuiet); }), "[32, 4096], got 16"));
  o.image_size = kS;
  o.split = "valid";
  CHECK(contains(error_message([&] { rz::data::run_prep(o, {}, kQuiet); }), "'valid'"));
  o.split = "train";
  fs::rename(tmp.path() / "train", tmp.path() / "elsewhere");
  const std::string msg = error_message([&] { rz::data::run_prep(o, {}, kQuiet); });
  CHECK(contains(msg, (tmp.path() / "train").string()));
  CHECK(contains(msg, "does not exist"));
  fs::rename(tmp.path() / "elsewhere", tmp.path() / "train");
  tmp.write("train.csv", "StudyInstanceUID,label\nx,1\n");
  CHECK(contains(error_message([&] { rz::data::run_prep(o, {}, kQuiet); }), "train.csv"));
  CHECK(!fs::exists(o.out_dir));  // nothing written before the checks pass
}

TEST_CASE("cache: the test split reads sample_submission.csv and test/") {
  TempDir tmp("cache");
  std::string csv = "StudyInstanceUID";
  for (auto name : rz::kRanzcrLabels) csv += "," + std::string(name);
  csv += "\n";
  fs::create_directories(tmp.path() / "test");
  for (int i = 0; i < 3; ++i) {
    csv += uid_of(i) + ",0,0,0,0,0,0,0,0,0,0,0\n";
    rz::data::write_jpeg((tmp.path() / "test" / (uid_of(i) + ".jpg")).string(),
                         make_image(i, 50 + i, 60, 1));
  }
  tmp.write("sample_submission.csv", csv);
  PrepOptions o = options(tmp.path(), tmp.path() / "out");
  o.split = "test";
  o.shard_images = 0;  // automatic: one shard at this size
  const PrepReport rep = rz::data::run_prep(o, {}, kQuiet);
  CHECK(rep.images == 3);
  CHECK(rep.shards == 1);
  const ImageCache c = ImageCache::open(o.out_dir, "test");
  CHECK(c.size() == 3);
  CHECK(c.info().split == "test");
  CHECK(c.entry(1).orig_h == 51);
  CHECK(fs::exists(tmp.path() / "out" / "test-00000.u8"));
}

TEST_CASE("cache: make_cache_transform gives normalize(gray_to_rgb(resize(image)))") {
  TempDir tmp("cache");
  make_layout(tmp.path());
  const PrepOptions o = options(tmp.path(), tmp.path() / "out");
  rz::data::run_prep(o, {}, kQuiet);
  const ImageCache cache = ImageCache::open(o.out_dir);
  std::vector<int64_t> all(static_cast<size_t>(cache.size()));
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int64_t>(i);

  for (const int64_t out : {kS, int64_t{16}, int64_t{40}}) {
    CAPTURE(out);
    rz::data::LoaderOptions lo;
    lo.batch = 4;
    lo.shuffle = false;
    lo.paired = true;
    rz::data::Loader loader(all, lo, {out, out, 3}, rz::data::make_cache_transform(cache, out, 3));
    loader.start_epoch(0);
    int64_t seen = 0;
    while (auto b = loader.next()) {
      CHECK(b->images.shape() == rz::Shape{static_cast<int64_t>(b->indices.size()), out, out, 3});
      const std::vector<float> got = b->images.to_vector<float>();
      CHECK(b->images_annotated.to_vector<float>() == got);
      for (size_t r = 0; r < b->indices.size(); ++r) {
        Image img = cache.load(b->indices[r]);
        if (out < kS) img = rz::data::resize_area(img, out, out);
        if (out > kS) img = rz::data::resize_bilinear(img, out, out);
        const rz::data::ImageF want = rz::data::normalize(rz::data::gray_to_rgb(img));
        const size_t n = want.pixels.size();
        CHECK(std::equal(want.pixels.begin(), want.pixels.end(), got.begin() + r * n));
        ++seen;
      }
    }
    CHECK(seen == cache.size());
  }
  rz::data::Loader gray(all, {}, {kS, kS, 1}, rz::data::make_cache_transform(cache, kS, 1));
  gray.start_epoch(0);
  const auto b = gray.next();
  REQUIRE(b);
  const rz::data::ImageF want = rz::data::normalize(cache.load(b->indices[0]));
  const std::vector<float> got = b->images.to_vector<float>();
  CHECK(std::equal(want.pixels.begin(), want.pixels.end(), got.begin()));
}
