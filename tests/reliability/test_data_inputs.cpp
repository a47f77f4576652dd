// Bad data inputs: every name and number read from a data file is checked
// where it is read. Each case feeds one hostile or broken input (a UID that
// walks out of the data folder, an image header that claims 20000 x 20000, a
// truncated JPEG, a cache index with overflowing fields, a planted link, an
// overflowing tensor shape, ...) through the library and, where a user would
// meet it, through the `ranzcr` binary; it checks the error (or exit status)
// and its message (file, line or field, value), and that nothing was written
// outside the folder or lost.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/cache.h"
#include "data/csv.h"
#include "data/image.h"
#include "data/paths.h"
#include "data/ranzcr_csv.h"
#include "data/synth.h"
#include "engine/safetensors.h"
#include "engine/tensor.h"
#include "tests/data/temp_dir.h"
#include "tests/run_command.h"

namespace fs = std::filesystem;
using rz::test::write_file;
using rz::test::read_file;
using rz::data::Image;
using rz::test::contains;
using rz::test::error_message;
using rz::test::TempDir;

namespace {

// ---- files ----

std::vector<uint8_t> as_bytes(const std::string& s) {
  return {s.begin(), s.end()};
}

// Every path under `dir`, relative, sorted: to show that nothing else appeared.
std::vector<std::string> listing(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    out.push_back(fs::relative(e.path(), dir).string());
  std::sort(out.begin(), out.end());
  return out;
}

Image test_image(int64_t h, int64_t w) {
  Image img(h, w, 1);
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) img.at(y, x) = static_cast<uint8_t>((x * 37 + y * 11) % 251);
  return img;
}

// An encoded image as stb writes it (through a file: write_* only write files).
std::string encoded(bool png, int64_t h, int64_t w) {
  const TempDir tmp("enc");
  const fs::path p = tmp.path() / (png ? "x.png" : "x.jpg");
  png ? rz::data::write_png(p.string(), test_image(h, w))
      : rz::data::write_jpeg(p.string(), test_image(h, w), 90);
  return read_file(p);
}

// A real small JPEG whose frame header (SOF0) is patched to claim h x w: a
// decoder that trusts the header allocates h * w bytes before it notices.
std::string jpeg_claiming(uint32_t h, uint32_t w) {
  std::string b = encoded(false, 16, 16);
  const size_t sof = b.find("\xff\xc0", 2);
  REQUIRE(sof != std::string::npos);
  b[sof + 5] = static_cast<char>(h >> 8), b[sof + 6] = static_cast<char>(h & 255);
  b[sof + 7] = static_cast<char>(w >> 8), b[sof + 8] = static_cast<char>(w & 255);
  return b;
}

// A real small PNG whose IHDR claims h x w (stb does not check chunk CRCs).
std::string png_claiming(uint32_t h, uint32_t w) {
  std::string b = encoded(true, 8, 8);
  for (int i = 0; i < 4; ++i) {
    b[16 + i] = static_cast<char>(w >> (24 - 8 * i));
    b[20 + i] = static_cast<char>(h >> (24 - 8 * i));
  }
  return b;
}

// Restores the process-wide decode budget at scope exit.
struct BudgetGuard {
  int64_t saved = rz::data::max_image_pixels();
  ~BudgetGuard() { rz::data::set_max_image_pixels(saved); }
};

// ---- a small RANZCR folder ----

std::string uid_of(int i) {
  return "1.2.826.0.1.3680043.8.498." + std::to_string(7000 + i);
}

std::string train_header() {
  std::string h = "StudyInstanceUID";
  for (auto name : rz::kRanzcrLabels) h += "," + std::string(name);
  return h + ",PatientID\n";
}
std::string train_row(const std::string& uid, int patient) {
  return uid + ",0,0,1,0,0,0,1,0,0,1,0,P" + std::to_string(patient) + "\n";
}

// <dir>/train.csv and <dir>/train/<uid>.png for `rows` studies.
void make_data(const fs::path& dir, int rows) {
  fs::create_directories(dir / "train");
  std::string csv = train_header();
  for (int i = 0; i < rows; ++i) {
    csv += train_row(uid_of(i), i / 2);
    rz::data::write_png((dir / "train" / (uid_of(i) + ".png")).string(), test_image(40 + i, 48));
  }
  write_file(dir / "train.csv", csv);
}

rz::data::PrepOptions prep_options(const fs::path& data, const fs::path& out) {
  rz::data::PrepOptions o;
  o.data_dir = data.string();
  o.out_dir = out.string();
  o.image_size = 32;
  o.shard_images = 2;
  o.threads = 1;
  return o;
}

const rz::data::PrepWarning kQuiet = [](const std::string&) {};

// ---- the CLI ----

rz::test::CommandOutput cli(const std::string& args) {
  return rz::test::run_command(std::string(RZ_CLI_PATH) + " " + args);
}

// ---- safetensors ----

// 8-byte little-endian header size, the header, then `data_bytes` zero bytes.
std::string safetensors_file(const std::string& header, size_t data_bytes,
                             uint64_t claimed_header = UINT64_MAX) {
  const uint64_t n = claimed_header == UINT64_MAX ? header.size() : claimed_header;
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>(n >> (8 * i));
  return out + header + std::string(data_bytes, '\0');
}

}  // namespace

// ================================================================ names ====

TEST_CASE("reliability data: UIDs that would leave the data folder are refused in train.csv") {
  const TempDir tmp("rel_uid_train");
  struct Bad {
    std::string uid, shown, problem;
  };
  const std::vector<Bad> cases = {
      {"../x", "'../x'", "starts with '.'"},
      {"/etc/passwd", "'/etc/passwd'", "contains '/'"},
      {"a/b", "'a/b'", "contains '/'"},
      {"..", "'..'", "starts with '.'"},
      {".hidden", "'.hidden'", "starts with '.'"},
      {"1.2..3", "'1.2..3'", "contains \"..\""},
      {"a\\b", "'a\\b'", "contains '\\'"},
      {"1.2 3", "'1.2 3'", "contains ' '"},
      {std::string(300, '7'), "(300 chars)", "300 characters long"},
  };
  for (const Bad& bad : cases) {
    CAPTURE(bad.uid);
    const std::string path =
        tmp.write("train.csv", train_header() + train_row("1.2.3", 0) + train_row(bad.uid, 1));
    const std::string msg = error_message([&] { rz::read_ranzcr_train(path); });
    CHECK(contains(msg, path + ":3:"));
    CHECK(contains(msg, bad.shown));
    CHECK(contains(msg, bad.problem));
  }
  // Empty, and a NUL byte inside a field.
  std::string path = tmp.write("train.csv", train_header() + train_row("", 0));
  CHECK(contains(error_message([&] { rz::read_ranzcr_train(path); }),
                 ":2: column 'StudyInstanceUID' is empty"));
  path = tmp.write("train.csv", train_header() + train_row(std::string("1.2\0.3", 6), 0));
  const std::string msg = error_message([&] { rz::read_ranzcr_train(path); });
  CHECK(contains(msg, ":2:"));
  CHECK(contains(msg, "\\x00"));
  // A real UID is fine.
  path = tmp.write(
      "train.csv",
      train_header() +
          train_row("1.2.826.0.1.3680043.8.498.46923145579096002617106567297135160932", 0));
  CHECK(rz::read_ranzcr_train(path).studies.size() == 1);
}

TEST_CASE(
    "reliability data: traversal UIDs are refused in the annotations CSV and sample_submission") {
  const TempDir tmp("rel_uid_other");
  const rz::RanzcrTrainSet train =
      rz::parse_ranzcr_train(train_header() + train_row("1.2.3", 0), "train.csv");
  const std::string ann = tmp.write("train_annotations.csv",
                                    "StudyInstanceUID,label,data\n1.2.3,ETT - Normal,\"[[1, 2]]\"\n"
                                    "../../etc/passwd,ETT - Normal,\"[[1, 2]]\"\n");
  std::string msg = error_message([&] { rz::read_ranzcr_annotations(ann, train); });
  CHECK(contains(msg, ann + ":3:"));
  CHECK(contains(msg, "'../../etc/passwd'"));

  std::string sample = "StudyInstanceUID";
  for (auto name : rz::kRanzcrLabels) sample += "," + std::string(name);
  sample += "\n/etc/passwd,0,0,0,0,0,0,0,0,0,0,0\n";
  const std::string sub = tmp.write("sample_submission.csv", sample);
  msg = error_message([&] { rz::read_ranzcr_sample_submission(sub); });
  CHECK(contains(msg, sub + ":2:"));
  CHECK(contains(msg, "'/etc/passwd'"));

  // The submission writer refuses such a UID too (predict writes what it listed).
  std::vector<float> probs(11, 0.5f);
  msg = error_message([&] { rz::format_ranzcr_submission({"a/b"}, probs); });
  CHECK(contains(msg, "submission: row 0"));
  CHECK(contains(msg, "'a/b'"));
}

TEST_CASE("reliability data: path_in_folder keeps a name from a file inside its folder") {
  using rz::data::path_in_folder;
  CHECK(path_in_folder("/data/train", "1.2.3", ".jpg") == "/data/train/1.2.3.jpg");
  for (const std::string& name : std::vector<std::string>{"..", "/etc/passwd", "a/b", "", ".",
                                                          "a\\b", std::string("x\0y", 3)}) {
    CAPTURE(name);
    const std::string msg =
        error_message([&] { path_in_folder("/data/train", name, "", "image"); });
    CHECK(contains(msg, "refusing the image name"));
    CHECK(contains(msg, "/data/train"));
  }
  CHECK(contains(error_message([&] { path_in_folder("/d", std::string(300, 'a')); }),
                 "300 characters long"));
  // "../x" + ".jpg" is refused for its separator, whatever the suffix.
  CHECK(contains(error_message([&] { path_in_folder("/d", "../x", ".jpg"); }), "'../x.jpg'"));
}

TEST_CASE(
    "reliability data: prep (CLI) refuses a traversal UID and reads nothing outside the folder") {
  const TempDir tmp("rel_prep_uid");
  const fs::path data = tmp.path() / "data";
  make_data(data, 2);
  // A secret image beside the data folder: "../secret" would reach it.
  rz::data::write_png((tmp.path() / "secret.png").string(), test_image(40, 40));
  write_file(data / "train.csv",
             train_header() + train_row(uid_of(0), 0) + train_row("../secret", 1));
  const auto before = listing(tmp.path());
  const auto o = cli("prep --data-dir " + data.string() + " --out-dir " +
                     (tmp.path() / "cache").string() + " --size 32");
  INFO(o.text);
  CHECK(o.status == 1);
  CHECK(contains(o.text, "ranzcr: error: "));
  CHECK(contains(o.text, "train.csv:3:"));
  CHECK(contains(o.text, "'../secret'"));
  CHECK(listing(tmp.path()) == before);  // no cache, nothing else
}

TEST_CASE("reliability data: predict (CLI) refuses a traversal UID in the sample submission") {
  const TempDir tmp("rel_predict_uid");
  fs::create_directories(tmp.path() / "test");
  std::string sample = "StudyInstanceUID";
  for (auto name : rz::kRanzcrLabels) sample += "," + std::string(name);
  write_file(tmp.path() / "sample_submission.csv", sample + "\n../../x,0,0,0,0,0,0,0,0,0,0,0\n");
  const auto o =
      cli("predict --weights " + (tmp.path() / "none.ckpt").string() +
          " --model seresnet_tiny --img-size 64 --images " + (tmp.path() / "test").string() +
          " --sample-submission " + (tmp.path() / "sample_submission.csv").string() + " --out " +
          (tmp.path() / "sub.csv").string());
  INFO(o.text);
  CHECK(o.status == 1);
  CHECK(contains(o.text, "sample_submission.csv:2:"));
  CHECK(contains(o.text, "'../../x'"));
  CHECK(!fs::exists(tmp.path() / "sub.csv"));
}

// =============================================================== images ====

TEST_CASE("reliability data: a JPEG whose header claims 20000x20000 is refused before decoding") {
  const std::string bytes = jpeg_claiming(20000, 20000);
  CHECK(bytes.size() < 2000);
  const std::string msg =
      error_message([&] { rz::data::decode_image_memory(as_bytes(bytes), "huge.jpg"); });
  CHECK(contains(msg, "'huge.jpg'"));
  CHECK(contains(msg, "20000x20000"));
  CHECK(contains(msg, "400000000 pixels"));
  CHECK(contains(msg, "budget of 50000000"));
}

TEST_CASE("reliability data: a PNG whose header claims 20000x20000 is refused before decoding") {
  const TempDir tmp("rel_png_huge");
  const fs::path p = tmp.path() / "huge.png";
  write_file(p, png_claiming(20000, 20000));
  const std::string msg = error_message([&] { rz::data::decode_image(p.string()); });
  CHECK(contains(msg, p.string()));
  CHECK(contains(msg, "20000x20000"));
  CHECK(contains(msg, "max_image_pixels"));
}

TEST_CASE("reliability data: absurd dimensions (0, over 65535 a side) are refused") {
  std::string msg = error_message(
      [&] { rz::data::decode_image_memory(as_bytes(jpeg_claiming(0, 16)), "zero.jpg"); });
  CHECK(contains(msg, "'zero.jpg'"));
  CHECK(contains(msg, "16x0"));
  CHECK(contains(msg, "1..65535"));
  msg = error_message(
      [&] { rz::data::decode_image_memory(as_bytes(png_claiming(1, 70000)), "wide.png"); });
  CHECK(contains(msg, "70000x1"));
  CHECK(contains(msg, "1..65535"));
}

TEST_CASE("reliability data: the decode budget is a setting") {
  const BudgetGuard guard;
  const std::string bytes = encoded(true, 16, 16);
  CHECK(rz::data::decode_image_memory(as_bytes(bytes), "ok.png").width == 16);
  rz::data::set_max_image_pixels(255);
  const std::string msg =
      error_message([&] { rz::data::decode_image_memory(as_bytes(bytes), "ok.png"); });
  CHECK(contains(msg, "16x16 = 256 pixels"));
  CHECK(contains(msg, "budget of 255"));
  CHECK(contains(error_message([] { rz::data::set_max_image_pixels(0); }), ">= 1"));
}

TEST_CASE("reliability data: a truncated JPEG reports a JPEG reason, never stb's 'bad png sig'") {
  const std::string full = encoded(false, 64, 64);
  REQUIRE(full.size() > 400);
  for (const size_t cut : {size_t{200}, size_t{100}, size_t{400}}) {
    CAPTURE(cut);
    const std::string msg = error_message(
        [&] { rz::data::decode_image_memory(as_bytes(full.substr(0, cut)), "cut.jpg"); });
    CHECK(contains(msg, "cannot decode 'cut.jpg'"));
    CHECK(contains(msg, "JPEG"));
    CHECK(!contains(msg, "png"));
  }
}

TEST_CASE("reliability data: empty, missing, unknown-format and non-regular image files") {
  const TempDir tmp("rel_img_files");
  const fs::path empty = tmp.path() / "empty.jpg";
  write_file(empty, "");
  std::string msg = error_message([&] { rz::data::decode_image(empty.string()); });
  CHECK(contains(msg, empty.string()));
  CHECK(contains(msg, "empty file"));

  const fs::path missing = tmp.path() / "missing.jpg";
  msg = error_message([&] { rz::data::decode_image(missing.string()); });
  CHECK(contains(msg, "cannot open '" + missing.string() + "'"));
  CHECK(contains(msg, "No such file"));

  const fs::path gif = tmp.path() / "image.jpg";
  write_file(gif, "GIF89a\x10\x00\x10\x00 not ours");
  msg = error_message([&] { rz::data::decode_image(gif.string()); });
  CHECK(contains(msg, gif.string()));
  CHECK(contains(msg, "not a JPEG or PNG image (first bytes 47 49 46 38 39 61"));

  // A folder, and a FIFO (whose open must not block).
  msg = error_message([&] { rz::data::decode_image(tmp.path().string()); });
  CHECK(contains(msg, "not a regular file"));
  const fs::path fifo = tmp.path() / "fifo.jpg";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  msg = error_message([&] { rz::data::decode_image(fifo.string()); });
  CHECK(contains(msg, "not a regular file"));
  CHECK(contains(error_message([&] { rz::read_csv(fifo.string()); }), "not a regular file"));
}

TEST_CASE("reliability data: prep (CLI) skips a huge-header image with the budget in the warning") {
  const TempDir tmp("rel_prep_huge");
  const fs::path data = tmp.path() / "data";
  make_data(data, 3);
  fs::remove(data / "train" / (uid_of(1) + ".png"));
  write_file(data / "train" / (uid_of(1) + ".jpg"), jpeg_claiming(20000, 20000));
  const auto o = cli("prep --data-dir " + data.string() + " --out-dir " +
                     (tmp.path() / "cache").string() + " --size 32 --max-bad-fraction 0.5");
  INFO(o.text);
  CHECK(o.status == 0);
  CHECK(contains(o.text, uid_of(1)));
  CHECK(contains(o.text, "20000x20000"));
  CHECK(contains(o.text, "decode budget"));
  const auto cache = rz::data::ImageCache::open((tmp.path() / "cache").string());
  CHECK(cache.size() == 2);
}

TEST_CASE("reliability data: write_jpeg and write_png replace a planted link, never follow it") {
  const TempDir tmp("rel_img_link");
  const fs::path victim = tmp.path() / "victim.txt";
  write_file(victim, "keep me");
  for (const char* name : {"a.jpg", "b.png"}) {
    const fs::path dest = tmp.path() / name;
    fs::create_symlink(victim, dest);
    if (std::string(name).ends_with(".jpg"))
      rz::data::write_jpeg(dest.string(), test_image(8, 8));
    else
      rz::data::write_png(dest.string(), test_image(8, 8));
    CHECK(read_file(victim) == "keep me");
    CHECK(fs::is_regular_file(fs::symlink_status(dest)));
    CHECK(rz::data::decode_image(dest.string()).width == 8);
  }
}

// ================================================================== CSV ====

TEST_CASE("reliability data: a CSV with a column name twice is refused, naming both positions") {
  std::string msg = error_message([] { rz::parse_csv("a,b,a\n1,2,3\n", "dup.csv"); });
  CHECK(contains(msg, "dup.csv:1:"));
  CHECK(contains(msg, "duplicate column name 'a' in columns 1 and 3"));
  // A train.csv with an extra column that repeats a label.
  std::string text = train_header();
  text.pop_back();
  text += ",ETT - Normal\n1.2.3,0,0,1,0,0,0,1,0,0,1,0,P1,1\n";
  msg = error_message([&] { rz::parse_ranzcr_train(text, "train.csv"); });
  CHECK(contains(msg, "train.csv:1:"));
  CHECK(contains(msg, "'ETT - Normal' in columns 4 and 14"));
}

TEST_CASE("reliability data: score (CLI) refuses predictions with a label column twice") {
  const TempDir tmp("rel_score_dup");
  const std::string truth =
      tmp.write("truth.csv", train_header() + train_row("1.2.3", 0) + train_row("1.2.4", 1));
  std::string pred = "StudyInstanceUID";
  for (auto name : rz::kRanzcrLabels) pred += "," + std::string(name);
  pred += ",CVC - Normal\n";
  for (const char* uid : {"1.2.3", "1.2.4"})
    pred += std::string(uid) + ",0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.9\n";
  const std::string pred_path = tmp.write("pred.csv", pred);
  const auto o = cli("score --pred " + pred_path + " --truth " + truth);
  INFO(o.text);
  CHECK(o.status == 1);
  CHECK(contains(o.text, pred_path + ":1:"));
  CHECK(contains(o.text, "duplicate column name 'CVC - Normal' in columns 11 and 13"));
}

TEST_CASE("reliability data: malformed CSV rows name the file, the line and the value") {
  std::string msg = error_message(
      [] { rz::parse_ranzcr_train(train_header() + "1.2.3,0,0,7,0,0,0,1,0,0,1,0,P1\n", "t.csv"); });
  CHECK(contains(msg, "t.csv:2:"));
  CHECK(contains(msg, "'ETT - Normal'"));
  CHECK(contains(msg, "'7'"));
  msg = error_message([] { rz::parse_csv("a,b\n1,2\n3,4,5\n", "rows.csv"); });
  CHECK(contains(msg, "rows.csv:3:"));
  CHECK(contains(msg, "3,4,5"));
}

// ================================================================ cache ====

TEST_CASE("reliability data: a cache built from an older train.csv is refused for the newer one") {
  const TempDir tmp("rel_stale");
  const fs::path data = tmp.path() / "data", out = tmp.path() / "cache";
  make_data(data, 4);
  rz::data::run_prep(prep_options(data, out), {}, kQuiet);
  // train.csv grows by two studies after the cache was built.
  make_data(data, 6);
  const auto cache = rz::data::ImageCache::open(out.string());
  const rz::RanzcrTrainSet train = rz::read_ranzcr_train((data / "train.csv").string());
  const std::string msg = error_message([&] { cache.check_covers(train); });
  CHECK(contains(msg, "image cache " + out.string()));
  CHECK(contains(msg, "lacks 2 of the 6 studies"));
  CHECK(contains(msg, (data / "train.csv").string()));
  CHECK(contains(msg, "'" + uid_of(4) + "', line 6"));
  CHECK(contains(msg, "ranzcr prep"));
  CHECK(contains(msg, "allow_missing_studies"));
  CHECK(cache.check_covers(train, {.allow_missing_studies = true}) == 2);
  // The old CSV is covered.
  make_data(data, 4);
  CHECK(cache.check_covers(rz::read_ranzcr_train((data / "train.csv").string())) == 0);
}

TEST_CASE(
    "reliability data: overflowing or out-of-range cache index fields name the field and value") {
  const TempDir tmp("rel_index");
  const fs::path data = tmp.path() / "data", out = tmp.path() / "cache";
  make_data(data, 4);
  rz::data::run_prep(prep_options(data, out), {}, kQuiet);
  const fs::path index = out / "train.index.json";
  const std::string good = read_file(index);
  struct Bad {
    std::function<void(nlohmann::json&)> edit;
    std::vector<std::string> parts;
  };
  using nlohmann::json;
  const std::vector<Bad> cases = {
      {[](json& j) { j["image_size"] = int64_t{1} << 32; },
       {"field 'image_size' is 4294967296, expected 1..65535"}},
      {[](json& j) { j["image_size"] = 2.5; }, {"field 'image_size' is 2.5, expected an integer"}},
      {[](json& j) { j["shards"][0]["images"] = int64_t{1} << 62; },
       {"field 'shards[0].images' is 4611686018427387904"}},
      {[](json& j) {
         j["rows"] = int64_t{1} << 40;
         j["image_size"] = 65535;
         j["shards"][0]["images"] = int64_t{1} << 40;
       },
       {"field 'shards[0].images' is 1099511627776", "overflows 64 bits"}},
      {[](json& j) { j["rows"] = int64_t{1} << 62; }, {"field 'rows' is 4611686018427387904"}},
      {[](json& j) { j["shards"][0]["bytes"] = "2048"; },
       {"field 'shards[0].bytes' is \"2048\", expected an integer"}},
      {[](json& j) { j["shards"][0]["bytes"] = 4096; }, {"shards[0].bytes' is 4096", "need 2048"}},
      {[](json& j) { j["images"][0]["offset"] = UINT64_MAX; },
       {"field 'images[0].offset' is 18446744073709551615"}},
      {[](json& j) { j["images"][0]["offset"] = -1024; }, {"field 'images[0].offset' is -1024"}},
      {[](json& j) { j["images"][1]["offset"] = 1; },
       {"field 'images[1].offset' is 1: not the start of an image"}},
      {[](json& j) { j["images"][0]["shard"] = 7; },
       {"field 'images[0].shard' is 7, expected 0..1"}},
      {[](json& j) { j["images"][0]["orig_h"] = 0; }, {"field 'images[0].orig_h' is 0"}},
      {[](json& j) { j["images"][0]["uid"] = "../x"; },
       {"field 'images[0].uid'", "'../x' starts with '.'"}},
      {[](json& j) { j["shards"][0]["file"] = "../../etc/passwd"; },
       {"field 'shards[0].file'", "'../../etc/passwd'", "path separator"}},
      {[](json& j) { j["images"].erase(1); }, {"field 'shards[0].images' is 2, but 1 entries"}},
      {[](json& j) { j.erase("clahe"); }, {"field 'clahe' is missing"}},
      {[](json& j) { j["split"] = "test"; }, {"field 'split' is 'test', expected 'train'"}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    CAPTURE(i);
    json j = json::parse(good);
    cases[i].edit(j);
    write_file(index, j.dump(1));
    const std::string msg = error_message([&] { rz::data::ImageCache::open(out.string()); });
    CAPTURE(msg);
    CHECK(contains(msg, index.string()));
    for (const auto& part : cases[i].parts) CHECK(contains(msg, part));
  }
  write_file(index, good);
  CHECK(rz::data::ImageCache::open(out.string()).size() == 4);
}

TEST_CASE("reliability data: prep never follows a link planted at a shard or temporary name") {
  const TempDir tmp("rel_shard_link");
  const fs::path data = tmp.path() / "data", out = tmp.path() / "cache";
  make_data(data, 4);
  fs::create_directories(out);
  const fs::path victim1 = tmp.path() / "victim1", victim2 = tmp.path() / "victim2";
  write_file(victim1, "one");
  write_file(victim2, "two");
  // The old fixed temporary name and the final name of shard 1.
  fs::create_symlink(victim1, out / "train-00000.u8.tmp");
  fs::create_symlink(victim2, out / "train-00001.u8");
  const auto rep = rz::data::run_prep(prep_options(data, out), {}, kQuiet);
  CHECK(rep.images == 4);
  CHECK(read_file(victim1) == "one");
  CHECK(read_file(victim2) == "two");
  CHECK(fs::is_regular_file(fs::symlink_status(out / "train-00001.u8")));
  CHECK(fs::file_size(out / "train-00001.u8") == 2 * 32 * 32);
  CHECK(rz::data::ImageCache::open(out.string()).size() == 4);

  // A resumed run clears the temporaries a killed one left in its own cache
  // folder: regular files only, never what a link points to.
  write_file(out / ".train-00000.u8.tmp-AbC123", "stale");
  fs::create_symlink(victim1, out / ".train-00001.u8.tmp-XyZ789");
  const auto again = rz::data::run_prep(prep_options(data, out), {}, kQuiet);
  CHECK(again.shards_resumed == 2);
  CHECK(!fs::exists(fs::symlink_status(out / ".train-00000.u8.tmp-AbC123")));
  CHECK(read_file(victim1) == "one");
}

// ================================================================ synth ====

TEST_CASE(
    "reliability data: synth refuses a folder that holds a data set unless told to overwrite") {
  const TempDir tmp("rel_synth");
  rz::data::SynthOptions o;
  o.out_dir = (tmp.path() / "data").string();
  o.n = 4;
  o.n_test = 1;
  o.size = 32;
  o.threads = 1;
  rz::data::run_synth(o);
  const std::string train_csv = read_file(tmp.path() / "data" / "train.csv");
  o.seed = 9;
  const std::string msg = error_message([&] { rz::data::run_synth(o); });
  CHECK(contains(msg, "'" + o.out_dir + "' already holds a data set"));
  CHECK(contains(msg, "train.csv"));
  CHECK(contains(msg, "4 images in train/"));
  CHECK(contains(msg, "--force"));
  CHECK(read_file(tmp.path() / "data" / "train.csv") == train_csv);  // nothing lost
  // Only images left behind count too.
  const fs::path other = tmp.path() / "other";
  fs::create_directories(other / "train");
  rz::data::write_png((other / "train" / "1.2.3.png").string(), test_image(8, 8));
  o.out_dir = other.string();
  CHECK(contains(error_message([&] { rz::data::run_synth(o); }), "1 images in train/"));
  // On purpose: replaced.
  o.out_dir = (tmp.path() / "data").string();
  o.overwrite = true;
  rz::data::run_synth(o);
  CHECK(read_file(tmp.path() / "data" / "train.csv") != train_csv);
}

TEST_CASE("reliability data: synth (CLI) onto an existing data folder exits 1 and keeps it") {
  const TempDir tmp("rel_synth_cli");
  const std::string out = (tmp.path() / "data").string();
  auto o = cli("synth --out " + out + " --n 4 --n-test 1 --size 64 --threads 1");
  INFO(o.text);
  REQUIRE(o.status == 0);
  const std::string train_csv = read_file(tmp.path() / "data" / "train.csv");
  o = cli("synth --out " + out + " --n 6 --n-test 1 --size 64 --seed 5 --threads 1");
  INFO(o.text);
  CHECK(o.status == 1);
  CHECK(contains(o.text, "ranzcr: error: synth: '" + out + "' already holds a data set"));
  CHECK(read_file(tmp.path() / "data" / "train.csv") == train_csv);
}

// ========================================================= tensor shapes ====

TEST_CASE("reliability data: shape_numel refuses overflowing and negative shapes") {
  const int64_t big32 = int64_t{1} << 32, big40 = int64_t{1} << 40;
  CHECK(contains(error_message([&] {
                   rz::shape_numel({big32, big32, 0});
                 }),
                 "[4294967296, 4294967296, 0] has more elements than fit in 64 bits"));
  CHECK(contains(error_message([&] { rz::shape_numel({big40, big40}); }), "fit in 64 bits"));
  CHECK(contains(error_message([&] { rz::shape_numel({3, -1}); }), "negative size"));
  CHECK(rz::shape_numel({0, big40}) == 0);
  CHECK(rz::shape_numel({}) == 1);
  CHECK(rz::shape_numel({big32, 2}) == 2 * big32);
  CHECK(contains(error_message([&] { rz::Tensor::empty({int64_t{1} << 62}); }),
                 "does not fit in 64 bits"));
}

TEST_CASE(
    "reliability data: safetensors headers with overflowing or inconsistent numbers are refused") {
  const TempDir tmp("rel_st");
  struct Bad {
    std::string name, file;
    std::vector<std::string> parts;
  };
  const std::vector<Bad> cases = {
      {"zero.safetensors",
       safetensors_file(
           R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}})", 0),
       {"tensor 'w'", "[4294967296, 4294967296, 0]", "more elements than fit in 64 bits"}},
      {"big.safetensors",
       safetensors_file(
           R"({"w":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,16]}})",
           16),
       {"tensor 'w'", "fit in 64 bits"}},
      {"bytes.safetensors",
       safetensors_file(
           R"({"w":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]}})", 8),
       {"tensor 'w'", "byte size that does not fit in 64 bits"}},
      {"negative.safetensors",
       safetensors_file(R"({"w":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", 16),
       {"tensor 'w'", "not a non-negative integer: -4"}},
      {"mismatch.safetensors",
       safetensors_file(R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,8]}})", 8),
       {"tensor 'w'", "needs 16 bytes", "[0, 8]"}},
      {"offsets.safetensors",
       safetensors_file(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 4),
       {"truncated", "should be"}},
      {"header.safetensors",
       safetensors_file(R"({})", 0, 1000),
       {"header size 1000 bytes is larger than the rest of the file"}},
      {"hugeheader.safetensors",
       safetensors_file(R"({})", 0, uint64_t{1} << 62),
       {"4611686018427387904", "limit"}},
  };
  for (const Bad& bad : cases) {
    CAPTURE(bad.name);
    const fs::path p = tmp.path() / bad.name;
    write_file(p, bad.file);
    for (const bool load : {false, true}) {
      const std::string msg = error_message([&] {
        if (load)
          rz::load_safetensors(p.string());
        else
          rz::read_safetensors_header(p.string());
      });
      CAPTURE(msg);
      CHECK(contains(msg, "safetensors file '" + p.string() + "'"));
      for (const auto& part : bad.parts) CHECK(contains(msg, part));
    }
  }
}

TEST_CASE("reliability data: images the decoder would fill from uninitialized memory are refused") {
  const fs::path dir = fs::path(RZ_SOURCE_DIR) / "tests/fuzz/regressions/image";
  const struct {
    const char* file;
    const char* says;
  } cases[] = {
      {"jpeg_baseline_frame_without_scan.jpg", "no scan (SOS) after the frame header"},
      {"jpeg_progressive_frame_without_scan.jpg", "no scan (SOS) after the frame header"},
      {"png_palette_index_past_plte.png", "indexed colour"},
      {"png_idat_length_past_file.png", "chunk 'IDAT'"},
  };
  for (const auto& c : cases) {
    const std::string path = (dir / c.file).string();
    const std::string msg = error_message([&] { rz::data::decode_image(path, 1); });
    INFO(c.file, ": ", msg);
    CHECK(contains(msg, c.file));
    CHECK(contains(msg, c.says));
  }
}
