// safetensors reader/writer and the f16 conversions. The fixtures and their
// expected values (expected.json) come from tools/make_safetensors_fixtures.py,
// i.e. from the reference Python writer and numpy/torch, never from our code.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "engine/generator.h"
#include "engine/safetensors.h"
#include "kernels/common/f16.h"

using namespace rz;
namespace fs = std::filesystem;

namespace {

const std::string kDir = std::string(RZ_FIXTURES_DIR) + "/safetensors/";

// A fresh directory under the system temp dir, removed at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() /
           ("rz_safetensors_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE(f.good());
  return std::string(std::istreambuf_iterator<char>(f), {});
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream f(path);
  REQUIRE(f.good());
  return nlohmann::json::parse(f);
}

// The parts of a safetensors file: the parsed header and the data buffer.
struct RawFile {
  nlohmann::json header;
  std::string buffer;
};
RawFile split_file(const std::string& path) {
  const std::string bytes = read_bytes(path);
  REQUIRE(bytes.size() >= 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i)
    n = (n << 8) | static_cast<unsigned char>(bytes[static_cast<size_t>(i)]);
  REQUIRE(8 + n <= bytes.size());
  CHECK(n % 8 == 0);
  return {nlohmann::json::parse(bytes.substr(8, n)), bytes.substr(8 + n)};
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const rz::Error& e) {
    return e.what();
  }
  return "<no error>";
}

const Tensor& find(const NamedTensors& ts, const std::string& name) {
  for (const auto& [n, t] : ts)
    if (n == name) return t;
  FAIL("no tensor named ", name);
  static Tensor none;
  return none;
}

bool is_half_nan(uint16_t h) {
  return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0;
}

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

// Compares a loaded tensor with its expected.json entry.
void check_against_expected(const std::string& name, const Tensor& t, const nlohmann::json& e) {
  INFO("tensor ", name);
  CHECK(t.dtype() == parse_dtype(e["loads_as"].get<std::string>()));
  CHECK(t.shape() == e["shape"].get<Shape>());
  REQUIRE(static_cast<size_t>(t.numel()) == e["values"].size());
  const size_t n = static_cast<size_t>(t.numel());
  switch (t.dtype()) {
    case DType::F32:
      for (size_t i = 0; i < n; ++i)
        CHECK(bits_of(t.data<float>()[i]) == e["bits"][i].get<uint32_t>());
      break;
    case DType::F64:
      for (size_t i = 0; i < n; ++i) {
        uint64_t u;
        std::memcpy(&u, t.data<double>() + i, 8);
        CHECK(u == e["bits"][i].get<uint64_t>());
      }
      break;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) {
        CHECK(t.data<bf16>()[i].bits == e["bits"][i].get<uint16_t>());
        const float v = bf16_to_f32(t.data<bf16>()[i]);
        const auto& ev = e["values"][i];
        if (ev.is_string()) {
          const std::string s = ev.get<std::string>();
          if (s == "nan")
            CHECK(std::isnan(v));
          else
            CHECK(v == (s == "inf" ? INFINITY : -INFINITY));
        } else {
          CHECK(v == ev.get<float>());
        }
      }
      break;
    case DType::I64:
      for (size_t i = 0; i < n; ++i) CHECK(t.data<int64_t>()[i] == e["values"][i].get<int64_t>());
      break;
    case DType::U8:
      for (size_t i = 0; i < n; ++i) CHECK(t.data<uint8_t>()[i] == e["values"][i].get<uint8_t>());
      break;
  }
}

}  // namespace

// ---------------------------------------------------------------- f16 ----

TEST_CASE("safetensors: every half value converts to float exactly and back") {
  int nans = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t bits = static_cast<uint16_t>(h);
    const float f = f16_to_f32(f16{bits});
    if (is_half_nan(bits)) {
      ++nans;
      CHECK(std::isnan(f));
      CHECK(is_half_nan(f32_to_f16(f).bits));
      CHECK(std::signbit(f) == ((bits & 0x8000u) != 0));
      continue;
    }
    // An independent formula for the value.
    const int exp = (bits >> 10) & 0x1f;
    const int mant = bits & 0x3ff;
    double want = exp == 0    ? std::ldexp(mant, -24)
                  : exp == 31 ? INFINITY
                              : std::ldexp(1024 + mant, exp - 25);
    if (bits & 0x8000u) want = -want;
    if (f != static_cast<float>(want) || std::signbit(f) != std::signbit(want))
      FAIL_CHECK("half 0x", std::hex, h, " -> ", f, " want ", want);
    if (f32_to_f16(f).bits != bits) FAIL_CHECK("half 0x", std::hex, h, " does not round-trip");
  }
  CHECK(nans == 2 * 1023);
}

TEST_CASE("safetensors: float to half rounding cases by hand") {
  auto h = [](float f) { return f32_to_f16(f).bits; };
  CHECK(h(0.0f) == 0x0000);
  CHECK(h(-0.0f) == 0x8000);
  CHECK(h(1.0f) == 0x3c00);
  CHECK(h(-2.0f) == 0xc000);
  CHECK(h(0.1f) == 0x2e66);
  CHECK(h(1.0f / 3.0f) == 0x3555);
  // Ties to even at 1: the spacing of halves there is 2^-10.
  CHECK(h(1.0f + 0x1p-11f) == 0x3c00);             // tie, 0x3c00 is even: down
  CHECK(h(1.0f + 3 * 0x1p-11f) == 0x3c02);         // tie between 0x3c01 and 0x3c02: up
  CHECK(h(1.0f + 0x1p-11f + 0x1p-23f) == 0x3c01);  // just above the tie
  CHECK(h(2049.0f) == 0x6800);                     // 2048 and 2050 are halves: tie to 2048
  CHECK(h(2051.0f) == 0x6802);                     // tie to 2052
  // Overflow: 65504 is the largest half; 65520 is the tie with 2^16 -> inf.
  CHECK(h(65504.0f) == 0x7bff);
  CHECK(h(std::nextafter(65520.0f, 0.0f)) == 0x7bff);
  CHECK(h(65520.0f) == 0x7c00);
  CHECK(h(-65520.0f) == 0xfc00);
  CHECK(h(1e10f) == 0x7c00);
  CHECK(h(INFINITY) == 0x7c00);
  CHECK(h(-INFINITY) == 0xfc00);
  CHECK(is_half_nan(h(NAN)));
  CHECK(is_half_nan(h(-NAN)));
  // A NaN whose payload sits only in the low f32 bits must not become inf.
  float low_nan;
  const uint32_t low_nan_bits = 0x7f800001u;
  std::memcpy(&low_nan, &low_nan_bits, 4);
  CHECK(is_half_nan(h(low_nan)));
  // Subnormals: the smallest is 2^-24, the largest 1023 * 2^-24; 2^-14 the smallest normal.
  CHECK(h(0x1p-14f) == 0x0400);
  CHECK(h(0x1p-24f) == 0x0001);
  CHECK(h(-0x1p-24f) == 0x8001);
  CHECK(h(1023 * 0x1p-24f) == 0x03ff);
  CHECK(h(1023.5f * 0x1p-24f) == 0x0400);  // tie, rounds up into the normals
  CHECK(h(0x1p-25f) == 0x0000);            // tie between 0 and 2^-24: even is 0
  CHECK(h(std::nextafter(0x1p-25f, 1.0f)) == 0x0001);
  CHECK(h(1.5f * 0x1p-24f) == 0x0002);  // tie between 1 and 2: even is 2
  CHECK(h(2.5f * 0x1p-24f) == 0x0002);  // tie between 2 and 3: even is 2
  CHECK(h(1e-8f) == 0x0000);
  CHECK(h(1e-45f) == 0x0000);  // an f32 subnormal
  CHECK(h(-1e-45f) == 0x8000);
  // And back.
  CHECK(f16_to_f32(f16{0x0001}) == 0x1p-24f);
  CHECK(f16_to_f32(f16{0x7bff}) == 65504.0f);
  CHECK(f16_to_f32(f16{0xfc00}) == -INFINITY);
  CHECK(std::isnan(f16_to_f32(f16{0x7e00})));
  CHECK(std::signbit(f16_to_f32(f16{0x8000})));
}

TEST_CASE("safetensors: float to half rounding matches numpy") {
  const SafetensorsFile f = load_safetensors(kDir + "f16_rounding.safetensors");
  const Tensor& src = find(f.tensors, "src");
  const Tensor& half = find(f.tensors, "half");  // numpy's float16 values, loaded as f32
  REQUIRE(src.numel() == half.numel());
  CHECK(src.numel() == read_json(kDir + "expected.json")["f16_rounding_count"].get<int64_t>());
  for (int64_t i = 0; i < src.numel(); ++i) {
    const float x = src.data<float>()[i];
    const float want = half.data<float>()[i];
    const f16 ours = f32_to_f16(x);
    if (std::isnan(want)) {
      CHECK(is_half_nan(ours.bits));
      continue;
    }
    if (bits_of(f16_to_f32(ours)) != bits_of(want))
      FAIL_CHECK("f32 ", x, " (0x", std::hex, bits_of(x), ") -> half 0x", ours.bits,
                 "; numpy gives ", want);
  }
}

// ---------------------------------------------------------- reading ----

TEST_CASE("safetensors: loads the Python-written fixtures") {
  const nlohmann::json expected = read_json(kDir + "expected.json");
  for (const std::string file : {"basic.safetensors", "bf16.safetensors"}) {
    INFO("file ", file);
    const SafetensorsFile f = load_safetensors(kDir + file);
    const auto& want = expected[file];
    CHECK(f.tensors.size() == want["tensors"].size());
    const auto want_meta = want["metadata"].get<std::map<std::string, std::string>>();
    CHECK(f.metadata == want_meta);
    for (const auto& [name, e] : want["tensors"].items())
      check_against_expected(name, find(f.tensors, name), e);

    // File order is the order of the data offsets, as the header lists them.
    const auto entries = read_safetensors_header(kDir + file);
    REQUIRE(entries.size() == f.tensors.size());
    for (size_t i = 0; i < entries.size(); ++i) {
      CHECK(entries[i].name == f.tensors[i].first);
      if (i > 0) CHECK(entries[i].begin >= entries[i - 1].end);
    }
  }
}

TEST_CASE("safetensors: header-only read lists names, dtypes, shapes and offsets") {
  std::map<std::string, std::string> meta;
  const auto entries = read_safetensors_header(kDir + "basic.safetensors", &meta);
  CHECK(meta.at("format") == "np");
  std::map<std::string, SafetensorsEntry> by_name;
  for (const auto& e : entries) by_name[e.name] = e;
  CHECK(by_name.at("f16.values").dtype == "F16");
  CHECK(by_name.at("f16.values").shape == Shape{14});
  CHECK(by_name.at("f16.values").end - by_name.at("f16.values").begin == 28);
  CHECK(by_name.at("f32.scalar").shape == Shape{});
  CHECK(by_name.at("f32.scalar").end - by_name.at("f32.scalar").begin == 4);
  CHECK(by_name.at("f16.empty").shape == Shape{2, 0, 3});
  CHECK(by_name.at("f16.empty").begin == by_name.at("f16.empty").end);
  CHECK(by_name.at("i64.labels").dtype == "I64");
  // The raw header agrees.
  const RawFile raw = split_file(kDir + "basic.safetensors");
  for (const auto& e : entries) {
    CHECK(raw.header[e.name]["dtype"] == e.dtype);
    CHECK(raw.header[e.name]["data_offsets"][0].get<uint64_t>() == e.begin);
    CHECK(raw.header[e.name]["data_offsets"][1].get<uint64_t>() == e.end);
  }

  // Other dtypes are listed by the header reader but not loaded.
  const auto other = read_safetensors_header(kDir + "unsupported_dtype.safetensors");
  REQUIRE(other.size() == 2);
  CHECK(other[1].name == "flags");
  CHECK(other[1].dtype == "BOOL");
  const std::string msg =
      error_of([] { load_safetensors(kDir + "unsupported_dtype.safetensors"); });
  CHECK(msg.find("unsupported_dtype.safetensors") != std::string::npos);
  CHECK(msg.find("tensor 'flags' has dtype BOOL") != std::string::npos);
}

TEST_CASE("safetensors: malformed files give errors naming the file and the problem") {
  struct Case {
    const char* file;
    std::vector<std::string> parts;  // substrings the message must contain
  };
  const std::string trunc = kDir + "bad_truncated.safetensors";
  const std::string trunc_size = std::to_string(fs::file_size(trunc));
  const std::string trunc_want = std::to_string(fs::file_size(trunc) + 10);
  const std::vector<Case> cases = {
      {"bad_too_short.safetensors", {"only 3 bytes", "8-byte header size"}},
      {"bad_header_too_large.safetensors", {"header size 200000000 bytes", "100000000-byte limit"}},
      {"bad_header_past_end.safetensors",
       {"header size 4096 bytes", "larger than the rest of the file"}},
      {"bad_json.safetensors", {"header is not valid JSON", "parse error"}},
      {"bad_not_object.safetensors", {"header is a JSON array, not an object"}},
      {"bad_truncated.safetensors",
       {"truncated", "describes 24 data bytes", "should be " + trunc_want + " bytes",
        "it is " + trunc_size + " bytes"}},
      {"bad_overlap.safetensors", {"'a' (bytes [0, 16))", "'b' (bytes [8, 24))", "overlap"}},
      {"bad_hole.safetensors",
       {"hole", "bytes [8, 16) belong to no tensor", "after 'a'", "before 'b'"}},
      {"bad_trailing.safetensors", {"8 unused bytes at the end", "cover 8 of its 16 bytes"}},
      {"bad_byte_size.safetensors",
       {"tensor 'a' (F32, shape [3]) needs 12 bytes", "[0, 16]", "span 16"}},
      {"bad_offsets_reversed.safetensors", {"tensor 'a'", "[8, 0] end before they begin"}},
      {"bad_duplicate.safetensors", {"duplicate tensor name 'w'"}},
      {"bad_missing_dtype.safetensors", {"tensor 'a' has no \"dtype\""}},
      {"bad_shape_negative.safetensors",
       {"tensor 'a'", "[2,-1]", "not a non-negative integer: -1"}},
      {"bad_shape_float.safetensors", {"tensor 'a'", "not a non-negative integer: 2.0"}},
      {"bad_offsets_type.safetensors", {"data_offsets \"0-8\"", "not a pair"}},
      {"bad_unknown_dtype.safetensors", {"tensor 'a' has unknown dtype 'Q7'"}},
      {"bad_metadata_value.safetensors",
       {"__metadata__ value of 'epoch'", "number (3)", "not a string"}},
  };
  // Every malformed fixture the script wrote is covered here.
  std::set<std::string> listed, generated;
  for (const Case& c : cases) listed.insert(c.file);
  const nlohmann::json expected = read_json(kDir + "expected.json");
  for (const auto& [name, why] : expected["malformed"].items()) generated.insert(name);
  CHECK(listed == generated);

  for (const Case& c : cases) {
    const std::string path = kDir + c.file;
    for (const bool header_only : {false, true}) {
      const std::string msg = error_of([&] {
        if (header_only)
          read_safetensors_header(path);
        else
          load_safetensors(path);
      });
      INFO("message: ", msg);
      CHECK(msg.find("safetensors file '" + path + "'") != std::string::npos);
      for (const std::string& part : c.parts)
        if (msg.find(part) == std::string::npos) FAIL_CHECK(c.file, ": missing \"", part, "\"");
    }
  }
  const std::string missing = error_of([] { load_safetensors(kDir + "no_such_file.safetensors"); });
  CHECK(missing.find("no_such_file.safetensors': cannot open: No such file") != std::string::npos);
  const std::string dir = error_of([] { load_safetensors(kDir); });
  CHECK(dir.find("not a regular file") != std::string::npos);
}

// ---------------------------------------------------------- writing ----

TEST_CASE("safetensors: save -> load round trip of every dtype") {
  Generator gen(7);
  NamedTensors ts;
  ts.emplace_back("w.f32", Tensor::normal({3, 5}, 0.0, 1.0, gen));
  ts.emplace_back("w.f64", Tensor::normal({2, 2, 2}, 0.0, 1e100, gen, DType::F64));
  std::vector<bf16> bf;  // every interesting pattern: +-0, subnormals, inf, NaN, random
  for (int b : {0x0000, 0x8000, 0x0001, 0x807f, 0x7f80, 0xff80, 0x7fc0, 0x7f81, 0x3f80, 0xc049})
    bf.push_back(bf16{static_cast<uint16_t>(b)});
  ts.emplace_back("w.bf16", Tensor::from_vector(bf, {2, 5}));
  ts.emplace_back("labels",
                  Tensor::from_vector(std::vector<int64_t>{INT64_MIN, -1, 0, 1, INT64_MAX}, {5}));
  ts.emplace_back("image", Tensor::from_vector(std::vector<uint8_t>{0, 7, 128, 255}, {1, 2, 2, 1}));
  ts.emplace_back("scalar", Tensor::full({}, 2.5));
  ts.emplace_back("empty.f32", Tensor::empty({0, 3}));
  ts.emplace_back("empty.i64", Tensor::empty({4, 0}, DType::I64));
  ts.emplace_back("empty.bf16", Tensor::empty({0}, DType::BF16));
  ts.emplace_back("view", Tensor::normal({6, 2}, 0.0, 1.0, gen).narrow0(2, 3));  // storage offset
  ts.emplace_back("layer3.12.se.fc1.bias \"quoted\" \u00fc", Tensor::ones({2}, DType::U8));
  const std::map<std::string, std::string> meta = {
      {"format", "pt"}, {"epoch", "3"}, {"", "empty key"}};

  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  save_safetensors(path, ts, meta);
  const SafetensorsFile back = load_safetensors(path);
  CHECK(back.metadata == meta);
  REQUIRE(back.tensors.size() == ts.size());
  for (const auto& [name, t] : ts) {
    INFO("tensor ", name);
    CHECK(same_bytes(find(back.tensors, name), t));
  }
  // Re-saving what we read gives the identical file.
  const std::string again = dir.file("again.safetensors");
  save_safetensors(again, back.tensors, back.metadata);
  CHECK(read_bytes(again) == read_bytes(path));
  // Layout: 8-byte types first, then by name; header padded to 8 with spaces.
  const auto entries = read_safetensors_header(path);
  std::vector<std::string> order;
  for (const auto& e : entries) order.push_back(e.name);
  CHECK(order == std::vector<std::string>{"empty.i64", "labels", "w.f64", "empty.f32", "scalar",
                                          "view", "w.f32", "empty.bf16", "w.bf16", "image",
                                          "layer3.12.se.fc1.bias \"quoted\" \u00fc"});
  for (const auto& e : entries) {  // every tensor naturally aligned (the buffer starts at 8k)
    const uint64_t align = e.dtype == "U8" ? 1 : e.dtype == "BF16" ? 2 : e.dtype == "F32" ? 4 : 8;
    CHECK(e.begin % align == 0);
  }
  const std::string bytes = read_bytes(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  CHECK(n % 8 == 0);
  CHECK(bytes[8] == '{');
  CHECK(bytes.find('\n') == std::string::npos);  // compact JSON
  // Nothing else left in the directory (no temp files).
  int files = 0;
  for ([[maybe_unused]] const auto& f : fs::directory_iterator(dir.path)) ++files;
  CHECK(files == 2);
}

TEST_CASE("safetensors: our writer lays out files like the reference writer") {
  const std::string ref = kDir + "layout.safetensors";
  const SafetensorsFile f = load_safetensors(ref);
  TempDir dir;
  const std::string ours = dir.file("layout.safetensors");
  save_safetensors(ours, f.tensors, f.metadata);
  const RawFile a = split_file(ref), b = split_file(ours);
  CHECK(a.header == b.header);  // parsed: key order may differ
  CHECK(a.buffer == b.buffer);
  // With one metadata key the reference header is deterministic, and so is ours.
  CHECK(read_bytes(ours) == read_bytes(ref));

  // F16 on request: the F16 tensors of basic.safetensors (loaded as f32)
  // written back as F16 reproduce the reference writer's bytes.
  const std::string basic = kDir + "basic.safetensors";
  const RawFile py = split_file(basic);
  const SafetensorsFile loaded = load_safetensors(basic);
  for (const std::string name : {"f16.values", "f16.scalar", "f16.empty"}) {
    INFO("tensor ", name);
    const std::string one = dir.file(name + ".safetensors");
    save_safetensors(one, {{name, find(loaded.tensors, name)}}, {}, SafetensorsFloats::F16);
    const RawFile mine = split_file(one);
    const auto& want = py.header[name];
    CHECK(mine.header[name]["dtype"] == "F16");
    CHECK(mine.header[name]["shape"] == want["shape"]);
    const auto begin = want["data_offsets"][0].get<size_t>(),
               end = want["data_offsets"][1].get<size_t>();
    CHECK(mine.buffer == py.buffer.substr(begin, end - begin));
  }
}

TEST_CASE("safetensors: storing floats as F32, F16 or BF16 on request") {
  Generator gen(3);
  const Tensor x = Tensor::normal({257}, 0.0, 100.0, gen);
  const Tensor d = Tensor::normal({5}, 0.0, 1.0, gen, DType::F64);
  const Tensor b = x.to(DType::BF16);
  const Tensor labels = Tensor::from_vector(std::vector<int64_t>{3, 4}, {2});
  const NamedTensors ts = {{"x", x}, {"d", d}, {"b", b}, {"labels", labels}};
  TempDir dir;

  const std::string as_f16 = dir.file("f16.safetensors");
  save_safetensors(as_f16, ts, {}, SafetensorsFloats::F16);
  for (const auto& e : read_safetensors_header(as_f16))
    CHECK(e.dtype == (e.name == "labels" ? "I64" : "F16"));
  SafetensorsFile back = load_safetensors(as_f16);
  for (int64_t i = 0; i < x.numel(); ++i)
    CHECK(find(back.tensors, "x").data<float>()[i] == f16_to_f32(f32_to_f16(x.data<float>()[i])));
  for (int64_t i = 0; i < d.numel(); ++i)
    CHECK(find(back.tensors, "d").data<float>()[i] ==
          f16_to_f32(f32_to_f16(static_cast<float>(d.data<double>()[i]))));
  CHECK(same_bytes(find(back.tensors, "labels"), labels));

  const std::string as_bf16 = dir.file("bf16.safetensors");
  save_safetensors(as_bf16, ts, {}, SafetensorsFloats::BF16);
  back = load_safetensors(as_bf16);
  CHECK(same_bytes(find(back.tensors, "x"), b));  // same rounding as Tensor::to(BF16)
  CHECK(same_bytes(find(back.tensors, "b"), b));
  CHECK(find(back.tensors, "d").dtype() == DType::BF16);

  const std::string as_f32 = dir.file("f32.safetensors");
  save_safetensors(as_f32, ts, {}, SafetensorsFloats::F32);
  back = load_safetensors(as_f32);
  CHECK(same_bytes(find(back.tensors, "x"), x));
  CHECK(same_bytes(find(back.tensors, "d"), d.to(DType::F32)));
  CHECK(same_bytes(find(back.tensors, "b"), b.to(DType::F32)));  // widening is exact
}

TEST_CASE("safetensors: writes are atomic and errors name the path") {
  TempDir dir;
  const std::string path = dir.file("ckpt.safetensors");
  const NamedTensors first = {{"a", Tensor::full({4}, 1.0)}};
  save_safetensors(path, first);
  const std::string before = read_bytes(path);

  // Overwriting replaces the file.
  save_safetensors(path, {{"a", Tensor::full({4}, 2.0)}});
  CHECK(find(load_safetensors(path).tensors, "a").to_vector<float>() ==
        std::vector<float>(4, 2.0f));
  save_safetensors(path, first);

  // A failed save leaves the old file untouched and no temp file behind.
  const Tensor t = Tensor::ones({2});
  std::string msg = error_of([&] { save_safetensors(path, {{"w", t}, {"w", t}}); });
  CHECK(msg.find("cannot write safetensors file '" + path + "'") != std::string::npos);
  CHECK(msg.find("duplicate tensor name 'w'") != std::string::npos);
  msg = error_of([&] { save_safetensors(path, {{"__metadata__", t}}); });
  CHECK(msg.find("reserved") != std::string::npos);
  msg = error_of([&] { save_safetensors(path, {{"u", Tensor()}}); });
  CHECK(msg.find("tensor 'u' is undefined") != std::string::npos);
  msg = error_of([&] { save_safetensors(path, {{std::string("bad\xff"), t}}); });
  CHECK(msg.find("not valid UTF-8") != std::string::npos);
  // Renaming onto a directory fails after the data was written: the temp goes.
  const std::string subdir = dir.file("subdir");
  fs::create_directories(fs::path(subdir) / "inner");
  msg = error_of([&] { save_safetensors(subdir, first); });
  CHECK(msg.find("cannot write safetensors file '" + subdir + "'") != std::string::npos);
  CHECK(msg.find("rename") != std::string::npos);
  CHECK(read_bytes(path) == before);
  int files = 0;
  for (const auto& f : fs::directory_iterator(dir.path)) {
    ++files;
    CHECK(f.path().filename().string().find(".tmp.") == std::string::npos);
  }
  CHECK(files == 2);  // ckpt.safetensors and subdir

  // A missing directory: the error names the path.
  const std::string nowhere = dir.file("missing/dir/model.safetensors");
  msg = error_of([&] { save_safetensors(nowhere, first); });
  CHECK(msg.find("cannot write safetensors file '" + nowhere + "'") != std::string::npos);
  CHECK(msg.find("No such file or directory") != std::string::npos);
}

TEST_CASE("safetensors: hand-written headers: padding, empty files, nested duplicates") {
  TempDir dir;
  auto write = [&](const std::string& name, const std::string& header, const std::string& buffer) {
    std::string bytes(8, '\0');
    for (size_t i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
    std::ofstream(dir.file(name), std::ios::binary) << bytes << header << buffer;
    return dir.file(name);
  };
  // No tensors at all, and whitespace padding that is not a multiple of 8.
  const SafetensorsFile none = load_safetensors(write("empty.st", "{}   \n\t ", ""));
  CHECK(none.tensors.empty());
  CHECK(none.metadata.empty());
  // Offsets listed out of order in the header: file order follows the offsets.
  const std::string f32_pair = std::string("\0\0\x80\x3f\0\0\0\x40", 8);  // 1.0f, 2.0f
  const SafetensorsFile two = load_safetensors(write(
      "order.st",
      R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})",
      f32_pair));
  REQUIRE(two.tensors.size() == 2);
  CHECK(two.tensors[0].first == "a");
  CHECK(two.tensors[0].second.item() == 1.0);
  CHECK(two.tensors[1].second.to_vector<float>() == std::vector<float>{2.0f});
  // A duplicate key inside an entry is reported with the entry's name.
  const std::string dup =
      write("dup.st", R"({"a":{"dtype":"F32","dtype":"F64","shape":[2],"data_offsets":[0,8]}})",
            f32_pair);
  CHECK(error_of([&] {
          load_safetensors(dup);
        }).find("duplicate key 'dtype' inside the entry 'a'") != std::string::npos);
  const std::string not_obj = write("notobj.st", R"({"a":[1,2]})", "");
  CHECK(error_of([&] {
          load_safetensors(not_obj);
        }).find("entry 'a' is a JSON array, not an object") != std::string::npos);
  const std::string huge = write(
      "huge.st", R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})",
      f32_pair);
  CHECK(error_of([&] { load_safetensors(huge); }).find("more elements than fit in 64 bits") !=
        std::string::npos);
}
