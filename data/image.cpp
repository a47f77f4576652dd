// Image value type, stb decode/encode, colour conversion and normalization.
//
// Memory traffic: decode reads the file once into a byte buffer, stb decodes
// into its own malloc'd buffer (H*W*c bytes) and we copy that once into the
// Image (stb cannot write into our vector), so a 2500x2500 gray JPEG costs
// ~6 MB written twice. rgb_to_gray reads 3 bytes and writes 1 per pixel;
// normalize reads 1 byte and writes 4 per element through a 256-entry LUT per
// channel (no per-pixel division).
// Invariant: every Image leaving this file satisfies check_image().
#include "data/image.h"

#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <memory>

#include "engine/error.h"

namespace rz::data {

template <typename T>
ImageT<T>::ImageT(int64_t h, int64_t w, int64_t c) : height(h), width(w), channels(c) {
  RZ_CHECK(h >= 1 && w >= 1 && c >= 1 && c <= 4,
           "image shape must be positive with 1..4 channels, got ", h, "x", w, "x", c);
  RZ_CHECK(h <= (int64_t{1} << 40) / (w * c), "image too large: ", h, "x", w, "x", c);
  pixels.assign(static_cast<size_t>(h * w * c), T{});
}

template <typename T>
void check_image(const ImageT<T>& img, const char* what) {
  RZ_CHECK(img.height >= 1 && img.width >= 1, what, ": empty image (", img.height, "x", img.width,
           ")");
  RZ_CHECK(img.channels >= 1 && img.channels <= 4, what, ": channels must be 1..4, got ",
           img.channels);
  RZ_CHECK(static_cast<int64_t>(img.pixels.size()) == img.numel(), what, ": pixel buffer has ",
           img.pixels.size(), " elements, shape ", img.height, "x", img.width, "x", img.channels,
           " needs ", img.numel());
}

template struct ImageT<uint8_t>;
template struct ImageT<float>;
template void check_image(const ImageT<uint8_t>&, const char*);
template void check_image(const ImageT<float>&, const char*);

namespace {

const char* stb_reason() {
  const char* r = stbi_failure_reason();
  return r ? r : "unknown error";
}

// Reads a whole file; errors name the path and the OS reason.
std::vector<uint8_t> read_file_bytes(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) RZ_THROW("decode_image: cannot open '", path, "': ", std::strerror(errno));
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> guard(f, std::fclose);
  std::vector<uint8_t> bytes;
  if (std::fseek(f, 0, SEEK_END) == 0) {
    long size = std::ftell(f);
    if (size > 0) bytes.reserve(static_cast<size_t>(size));
    std::rewind(f);
  }
  uint8_t chunk[1 << 16];
  size_t n;
  while ((n = std::fread(chunk, 1, sizeof(chunk), f)) > 0)
    bytes.insert(bytes.end(), chunk, chunk + n);
  if (std::ferror(f)) RZ_THROW("decode_image: read error on '", path, "': ", std::strerror(errno));
  return bytes;
}

}  // namespace

Image decode_image_memory(std::span<const uint8_t> bytes, const std::string& name,
                          int desired_channels) {
  RZ_CHECK(desired_channels == 0 || desired_channels == 1 || desired_channels == 3,
           "decode_image: desired_channels must be 0, 1 or 3 for '", name, "', got ",
           desired_channels);
  if (bytes.empty()) RZ_THROW("decode_image: '", name, "' is empty (0 bytes)");
  if (bytes.size() > static_cast<size_t>(INT_MAX))
    RZ_THROW("decode_image: '", name, "' is too large for stb (", bytes.size(), " bytes)");
  const auto* data = reinterpret_cast<const stbi_uc*>(bytes.data());
  const int len = static_cast<int>(bytes.size());

  int w = 0, h = 0, file_channels = 0;
  if (!stbi_info_from_memory(data, len, &w, &h, &file_channels))
    RZ_THROW("decode_image: cannot decode '", name, "': ", stb_reason());
  // Ask stb for gray or RGB only: it drops alpha (GA -> G, RGBA -> RGB) and
  // reduces 16-bit samples to their high byte.
  const int load_channels = file_channels >= 3 ? 3 : 1;
  stbi_uc* decoded = stbi_load_from_memory(data, len, &w, &h, &file_channels, load_channels);
  if (!decoded) RZ_THROW("decode_image: cannot decode '", name, "': ", stb_reason());
  std::unique_ptr<stbi_uc, void (*)(void*)> guard(decoded, stbi_image_free);

  Image img(h, w, load_channels);
  std::memcpy(img.pixels.data(), decoded, img.pixels.size());
  guard.reset();
  if (desired_channels == 1 && img.channels == 3) return rgb_to_gray(img);
  if (desired_channels == 3 && img.channels == 1) return gray_to_rgb(img);
  return img;
}

Image decode_image(const std::string& path, int desired_channels) {
  std::vector<uint8_t> bytes = read_file_bytes(path);
  return decode_image_memory(bytes, path, desired_channels);
}

namespace {
void check_writable(const Image& img, const std::string& path, const char* what) {
  check_image(img, what);
  RZ_CHECK(img.channels == 1 || img.channels == 3, what, ": '", path,
           "': only 1- or 3-channel images are written, got ", img.channels);
  RZ_CHECK(img.width <= INT_MAX / 4 && img.height <= INT_MAX / 4, what, ": '", path,
           "': image too large (", img.height, "x", img.width, ")");
}
}  // namespace

void write_png(const std::string& path, const Image& img) {
  check_writable(img, path, "write_png");
  const int w = static_cast<int>(img.width), h = static_cast<int>(img.height);
  const int c = static_cast<int>(img.channels);
  if (!stbi_write_png(path.c_str(), w, h, c, img.pixels.data(), w * c))
    RZ_THROW("write_png: cannot write '", path, "': ", std::strerror(errno));
}

void write_jpeg(const std::string& path, const Image& img, int quality) {
  check_writable(img, path, "write_jpeg");
  RZ_CHECK(quality >= 1 && quality <= 100, "write_jpeg: quality must be 1..100, got ", quality);
  const int w = static_cast<int>(img.width), h = static_cast<int>(img.height);
  const int c = static_cast<int>(img.channels);
  if (!stbi_write_jpg(path.c_str(), w, h, c, img.pixels.data(), quality))
    RZ_THROW("write_jpeg: cannot write '", path, "': ", std::strerror(errno));
}

Image rgb_to_gray(const Image& rgb) {
  check_image(rgb, "rgb_to_gray");
  RZ_CHECK(rgb.channels == 3, "rgb_to_gray: expects 3 channels, got ", rgb.channels);
  // OpenCV 4.x/5.x 8-bit RGB2GRAY: 0.299, 0.587, 0.114 in 15-bit fixed point
  // (color.hpp RY15/GY15/BY15). The older 14-bit set (4899, 9617, 1868) differs
  // on ~0.25% of colours; this one matches cv2 on all 2^24 RGB triples.
  constexpr uint32_t kR = 9798, kG = 19235, kB = 3735, kShift = 15;
  Image gray(rgb.height, rgb.width, 1);
  const uint8_t* s = rgb.pixels.data();
  uint8_t* d = gray.pixels.data();
  const int64_t n = rgb.height * rgb.width;
  for (int64_t i = 0; i < n; ++i, s += 3)
    d[i] =
        static_cast<uint8_t>((s[0] * kR + s[1] * kG + s[2] * kB + (1u << (kShift - 1))) >> kShift);
  return gray;
}

Image gray_to_rgb(const Image& gray) {
  check_image(gray, "gray_to_rgb");
  RZ_CHECK(gray.channels == 1, "gray_to_rgb: expects 1 channel, got ", gray.channels);
  Image rgb(gray.height, gray.width, 3);
  const uint8_t* s = gray.pixels.data();
  uint8_t* d = rgb.pixels.data();
  const int64_t n = gray.height * gray.width;
  for (int64_t i = 0; i < n; ++i, d += 3) d[0] = d[1] = d[2] = s[i];
  return rgb;
}

ImageF normalize(const Image& img, const std::array<float, 3>& mean,
                 const std::array<float, 3>& stddev) {
  check_image(img, "normalize");
  RZ_CHECK(img.channels == 1 || img.channels == 3, "normalize: expects 1 or 3 channels, got ",
           img.channels);
  const int64_t c = img.channels;
  // lut[ch][v] = (v / 255 - mean) / std, evaluated in float exactly as
  // torchvision does it (ToTensor divides by 255, Normalize subtracts then divides).
  std::array<std::array<float, 256>, 3> lut;
  for (int64_t ch = 0; ch < c; ++ch) {
    RZ_CHECK(stddev[ch] != 0.0f, "normalize: std[", ch, "] is zero");
    for (int v = 0; v < 256; ++v)
      lut[ch][v] = (static_cast<float>(v) / 255.0f - mean[ch]) / stddev[ch];
  }
  ImageF out(img.height, img.width, c);
  const uint8_t* s = img.pixels.data();
  float* d = out.pixels.data();
  const int64_t n = img.height * img.width;
  if (c == 1) {
    for (int64_t i = 0; i < n; ++i) d[i] = lut[0][s[i]];
  } else {
    for (int64_t i = 0; i < n; ++i, s += 3, d += 3) {
      d[0] = lut[0][s[0]];
      d[1] = lut[1][s[1]];
      d[2] = lut[2][s[2]];
    }
  }
  return out;
}

}  // namespace rz::data
