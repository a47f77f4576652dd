// Images on the CPU: a small value type (height x width x channels, HWC, row-major,
// no padding between rows), JPEG/PNG decode and encode through stb, and the
// per-pixel helpers of the preprocessing pipeline (RGB<->gray, ImageNet normalize).
// Resizing lives in data/resize.h, histogram equalization and CLAHE in data/clahe.h.
//
// Conventions shared by every image op in data/:
//   * pixels are interleaved (HWC) in RGB order; gray images have channels == 1;
//   * uint8 results follow OpenCV's 8-bit semantics (saturate_cast = round half
//     to even, then clamp to [0, 255]), so the preprocessing can be checked
//     against cv2 fixtures (tests/fixtures/image, tools/make_image_fixtures.py);
//   * functions return new images and never modify their inputs;
//   * invalid arguments (empty image, wrong channel count, pixel buffer whose
//     size disagrees with the shape) throw rz::Error.
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace rz::data {

// A value-semantic image: copy copies the pixels, move is O(1).
template <typename T>
struct ImageT {
  int64_t height = 0;
  int64_t width = 0;
  int64_t channels = 0;
  std::vector<T> pixels;  // height * width * channels, HWC, rows back to back

  ImageT() = default;
  // Zero-filled image of the given shape (dimensions must be >= 1).
  ImageT(int64_t h, int64_t w, int64_t c);

  bool empty() const { return pixels.empty(); }
  int64_t numel() const { return height * width * channels; }
  int64_t row_elems() const { return width * channels; }  // elements per row
  T* row(int64_t y) { return pixels.data() + y * width * channels; }
  const T* row(int64_t y) const { return pixels.data() + y * width * channels; }
  T& at(int64_t y, int64_t x, int64_t c = 0) { return pixels[(y * width + x) * channels + c]; }
  const T& at(int64_t y, int64_t x, int64_t c = 0) const {
    return pixels[(y * width + x) * channels + c];
  }
};

using Image = ImageT<uint8_t>;  // 8-bit, what decode produces and CLAHE consumes
using ImageF = ImageT<float>;   // float, e.g. normalized network input

// Throws rz::Error (naming `what`) unless the image is non-empty, has 1..4
// channels and pixels.size() == numel().
template <typename T>
void check_image(const ImageT<T>& img, const char* what);

// ---- decode / encode (stb_image, stb_image_write) ----

// The decode budget. A file's header is read before anything is decoded, and
// an image whose header claims more than max_image_pixels() pixels (width x
// height), or a side of 0 or over kMaxImageSide, is refused with an error
// naming the file, its dimensions and the budget: a 5 KB JPEG can claim
// 20000 x 20000 and would otherwise cost 1.2 GB per channel and many seconds.
// The default, 50 megapixels, is about 7000 x 7000: real chest radiographs
// are 2000-3000 px a side (RANZCR: at most about 3500), so it is several
// times what real data needs and far below what would exhaust memory. The
// setting is process-wide (an atomic, read at every decode); change it before
// starting decode threads (config key / CLI flag max_image_pixels).
inline constexpr int64_t kDefaultMaxImagePixels = 50'000'000;
inline constexpr int64_t kMaxImageSide = 65535;  // JPEG's own limit; PNG allows more
void set_max_image_pixels(int64_t pixels);       // >= 1
int64_t max_image_pixels();

enum class ImageFormat { jpeg, png };

// What a file's header says, read without decoding.
struct ImageHeader {
  ImageFormat format = ImageFormat::jpeg;
  int64_t width = 0;
  int64_t height = 0;
  int channels = 0;  // colour components in the file (PNG: with alpha; JPEG CMYK counts 3)
};

// The format comes from the magic bytes (JPEG FF D8 FF, the PNG signature),
// the size from the JPEG frame header (SOFn) or the PNG IHDR. Throws
// rz::Error "decode_image: cannot decode '<name>': <reason>": "empty file",
// "truncated or corrupt JPEG (...)", "truncated PNG (...)", "not a JPEG or
// PNG image (first bytes ...)". Does not check the budget.
ImageHeader read_image_header(std::span<const uint8_t> bytes, const std::string& name);
// Throws rz::Error naming `name`, the dimensions and the budget when the
// header's size is outside [1, kMaxImageSide] a side or over max_image_pixels().
void check_image_budget(const ImageHeader& header, const std::string& name);

// Decodes a JPEG or PNG file. desired_channels: 0 keeps the file's colour
// type (gray -> 1 channel, RGB -> 3), 1 forces gray, 3 forces RGB.
//   * alpha is dropped (gray+alpha -> gray, RGBA -> RGB), not composited,
//     like cv2.imread with IMREAD_COLOR / IMREAD_GRAYSCALE;
//   * 16-bit PNGs are reduced to 8 bits by keeping the high byte (what
//     cv2.imread does without IMREAD_ANYDEPTH);
//   * colour -> gray uses OpenCV's COLOR_RGB2GRAY fixed point (rgb_to_gray),
//     not stb's own weights; gray -> RGB replicates.
// JPEG pixels come from stb's decoder, which differs slightly from libjpeg
// (IDCT and chroma upsampling): a few grey levels on some pixels.
// Only JPEG and PNG are decoded (other formats stb knows are refused), and
// only after read_image_header and check_image_budget passed. Errors name the
// path and a reason that fits the file: "cannot open '<path>': <strerror>",
// "not a regular file", "empty file", "truncated, corrupt or unsupported JPEG
// (<stb's JPEG reason>)", the budget.
Image decode_image(const std::string& path, int desired_channels = 0);
// Same for an encoded image already in memory; `name` is used in error messages.
Image decode_image_memory(std::span<const uint8_t> bytes, const std::string& name,
                          int desired_channels = 0);

// Lossless PNG (1 or 3 channels). The bytes are encoded in memory and written
// through AtomicFile (engine/atomic_file.h): an exclusively created temporary
// renamed over `path`, so a link planted at the path is replaced, never
// followed. Throws rz::Error if the file cannot be written.
void write_png(const std::string& path, const Image& img);
// The PNG bytes in memory (for embedding); `name` is used in error messages.
std::string encode_png(const Image& img, const std::string& name);
// Baseline JPEG, quality 1..100 (stb's encoder; 4:2:0 chroma at quality <= 90),
// written like write_png.
void write_jpeg(const std::string& path, const Image& img, int quality = 95);

// ---- colour ----

// cv2.cvtColor(COLOR_RGB2GRAY) bit for bit: (R*9798 + G*19235 + B*3735 + 16384) >> 15
// (OpenCV 4/5's 15-bit coefficients; checked against cv2 on every RGB triple).
Image rgb_to_gray(const Image& rgb);
// Gray -> RGB by replicating the channel.
Image gray_to_rgb(const Image& gray);

// ---- normalization ----

inline constexpr std::array<float, 3> kImageNetMean = {0.485f, 0.456f, 0.406f};
inline constexpr std::array<float, 3> kImageNetStd = {0.229f, 0.224f, 0.225f};

// out = (pixel / 255 - mean[c]) / stddev[c] in float, HWC, bit-identical to
// torchvision's ToTensor + Normalize. 3-channel images use mean/std per
// channel; 1-channel images use mean[0] / stddev[0].
ImageF normalize(const Image& img, const std::array<float, 3>& mean = kImageNetMean,
                 const std::array<float, 3>& stddev = kImageNetStd);

namespace detail {
// OpenCV's saturate_cast<uchar>(float): round half to even (cvRound under the
// default rounding mode), then clamp to [0, 255].
inline uint8_t saturate_u8(float v) {
  const float r = std::nearbyint(v);
  return static_cast<uint8_t>(r <= 0.0f ? 0.0f : (r >= 255.0f ? 255.0f : r));
}
}  // namespace detail

}  // namespace rz::data
