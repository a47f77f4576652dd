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

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <memory>

#include "engine/atomic_file.h"
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

// ---- the decode budget ----

namespace {
std::atomic<int64_t> g_max_image_pixels{kDefaultMaxImagePixels};
}  // namespace

void set_max_image_pixels(int64_t pixels) {
  RZ_CHECK(pixels >= 1, "max_image_pixels must be >= 1, got ", pixels);
  g_max_image_pixels.store(pixels, std::memory_order_relaxed);
}

int64_t max_image_pixels() {
  return g_max_image_pixels.load(std::memory_order_relaxed);
}

namespace {

const char* stb_reason() {
  const char* r = stbi_failure_reason();
  return r ? r : "unknown error";
}

std::string hex_bytes(std::span<const uint8_t> bytes, size_t max) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < bytes.size() && i < max; ++i) {
    if (i) out += ' ';
    out += kHex[bytes[i] >> 4];
    out += kHex[bytes[i] & 15];
  }
  return out;
}

// A chunk type as text when it is printable ASCII, else as hex bytes.
std::string hex_safe(const std::string& t) {
  for (const char c : t)
    if (c < 0x20 || c > 0x7E)
      return hex_bytes(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(t.data()), t.size()), t.size());
  return t;
}

uint32_t be16(const uint8_t* p) {
  return (uint32_t{p[0]} << 8) | p[1];
}
uint32_t be32(const uint8_t* p) {
  return (be16(p) << 16) | be16(p + 2);
}

constexpr uint8_t kPngSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

[[noreturn]] void fail_decode(const std::string& name, const std::string& reason) {
  RZ_THROW("decode_image: cannot decode '", name, "': ", reason);
}

// A frame header with no scan after it decodes, in stb, to an image made of
// whatever the heap held: refuse it. Walks the marker segments after the
// frame header up to the first start of scan (SOS); `pos` is the byte after
// the frame header's segment.
void require_jpeg_scan(std::span<const uint8_t> b, size_t pos, const std::string& name) {
  const size_t n = b.size();
  auto no_scan = [&](const std::string& where) {
    fail_decode(name, "truncated or corrupt JPEG (no scan (SOS) after the frame header: " + where +
                          "; the file has " + std::to_string(n) + " bytes)");
  };
  for (;;) {
    if (pos >= n) no_scan("it ends at byte " + std::to_string(n));
    if (b[pos] != 0xFF) no_scan("expected a marker at byte " + std::to_string(pos));
    while (pos < n && b[pos] == 0xFF) ++pos;
    if (pos >= n) no_scan("it ends at byte " + std::to_string(n));
    const uint8_t m = b[pos++];
    if (m == 0xDA) return;
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;
    if (m == 0xD8 || m == 0xD9) no_scan("a marker FF " + hex_bytes(b.subspan(pos - 1), 1) + " at byte " +
                                        std::to_string(pos - 2));
    if (pos + 2 > n) no_scan("a marker segment is cut off at byte " + std::to_string(pos));
    const uint32_t len = be16(&b[pos]);
    if (len < 2) no_scan("a marker segment of length " + std::to_string(len));
    pos += len;
  }
}

// The JPEG frame header (SOFn): walks the marker segments from the start of
// the file as stb does, without decoding anything.
ImageHeader jpeg_header(std::span<const uint8_t> b, const std::string& name) {
  const size_t n = b.size();
  auto truncated = [&](const std::string& what) {
    fail_decode(name, "truncated or corrupt JPEG (" + what + "; the file has " + std::to_string(n) +
                          " bytes)");
  };
  size_t pos = 2;  // after SOI (FF D8)
  for (;;) {
    if (pos >= n) truncated("it ends before the frame header (SOF)");
    if (b[pos] != 0xFF)
      fail_decode(name, "truncated or corrupt JPEG (expected a marker at byte " +
                            std::to_string(pos) + ", found " + hex_bytes(b.subspan(pos), 1) + ")");
    while (pos < n && b[pos] == 0xFF) ++pos;  // fill bytes
    if (pos >= n) truncated("it ends before the frame header (SOF)");
    const uint8_t m = b[pos++];
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;  // markers without a segment
    if (m == 0xD8 || m == 0xD9 || m == 0xDA)
      fail_decode(name, std::string("truncated or corrupt JPEG (") +
                            (m == 0xDA   ? "scan data"
                             : m == 0xD9 ? "end of image"
                                         : "a second start of image") +
                            " before the frame header (SOF), at byte " + std::to_string(pos - 2) +
                            ")");
    if (pos + 2 > n) truncated("a marker segment is cut off at byte " + std::to_string(pos));
    const uint32_t len = be16(&b[pos]);
    if (len < 2)
      fail_decode(name, "truncated or corrupt JPEG (marker segment of length " +
                            std::to_string(len) + " at byte " + std::to_string(pos) + ")");
    const bool sof = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
    if (sof) {
      if (len < 8 || pos + 8 > n) truncated("the frame header (SOF) is cut off");
      ImageHeader h;
      h.format = ImageFormat::jpeg;
      h.height = be16(&b[pos + 3]);
      h.width = be16(&b[pos + 5]);
      h.channels = b[pos + 7];
      if (h.channels != 1 && h.channels != 3 && h.channels != 4)
        fail_decode(name, "corrupt JPEG (" + std::to_string(h.channels) + " colour components)");
      if (h.channels == 4) h.channels = 3;  // CMYK / YCCK: stb converts to RGB
      require_jpeg_scan(b, pos + len, name);
      return h;
    }
    pos += len;
  }
}

// The PNG IHDR chunk: the signature, then a 13-byte IHDR first.
ImageHeader png_header(std::span<const uint8_t> b, const std::string& name) {
  constexpr size_t kIhdrEnd = 8 + 8 + 13;
  if (b.size() < kIhdrEnd)
    fail_decode(name, "truncated PNG (" + std::to_string(b.size()) +
                          " bytes; the header (IHDR) alone needs " + std::to_string(kIhdrEnd) +
                          ")");
  if (be32(&b[8]) != 13 || std::memcmp(&b[12], "IHDR", 4) != 0)
    fail_decode(name, "corrupt PNG (the first chunk is not a 13-byte IHDR)");
  ImageHeader h;
  h.format = ImageFormat::png;
  const uint32_t w = be32(&b[16]), hh = be32(&b[20]);
  h.width = w;
  h.height = hh;
  switch (b[25]) {  // colour type
    case 0:
      h.channels = 1;
      break;
    case 4:
      h.channels = 2;
      break;
    case 2:
    case 3:
      h.channels = 3;
      break;
    case 6:
      h.channels = 4;
      break;
    default:
      fail_decode(name, "corrupt PNG (colour type " + std::to_string(b[25]) + ")");
  }
  // An indexed-colour PNG whose pixels point past its palette decodes, in
  // stb, to uninitialized memory. Radiographs are grayscale, so palette
  // images are refused rather than half supported.
  if (b[25] == 3)
    fail_decode(name, "unsupported PNG (indexed colour, a palette image): save it as a grayscale "
                      "or RGB PNG");
  // Every chunk must fit in the file before stb sizes a buffer by it: a
  // length past the end would be allocated first and found missing later.
  size_t pos = 8;
  bool idat = false;
  while (pos + 8 <= b.size()) {
    const uint32_t len = be32(&b[pos]);
    const std::string type(reinterpret_cast<const char*>(&b[pos + 4]), 4);
    const size_t left = b.size() - pos - 8;
    if (len > 0x7FFFFFFFu || static_cast<size_t>(len) + 4 > left)
      fail_decode(name, "truncated or corrupt PNG (chunk '" + hex_safe(type) + "' at byte " +
                            std::to_string(pos) + " claims " + std::to_string(len) +
                            " bytes of data and its CRC, the file has " + std::to_string(left) +
                            " left)");
    idat = idat || type == "IDAT";
    if (type == "IEND") break;
    pos += 12 + static_cast<size_t>(len);
  }
  if (!idat) fail_decode(name, "truncated or corrupt PNG (no image data: no IDAT chunk)");
  return h;
}

// What stb's (thread-local) failure reason reads after reset_stb_reason():
// a failed load of one zero byte ends with this reason.
constexpr const char* kStbResetReason = "unknown image type";
void reset_stb_reason() {
  const stbi_uc zero = 0;
  int w, h, c;
  if (stbi_uc* p = stbi_load_from_memory(&zero, 1, &w, &h, &c, 0)) stbi_image_free(p);
}

// Where a JPEG's marker structure ends before its image data (the start of
// scan), as "it ends at byte N inside a <what> segment, before the image
// data", or "" when the scan is reached (then truncation of the entropy-coded
// data is the decoder's to report).
std::string jpeg_structure_problem(std::span<const uint8_t> b) {
  const size_t n = b.size();
  size_t pos = 2;
  while (pos < n) {
    if (b[pos] != 0xFF) return "expected a marker at byte " + std::to_string(pos);
    while (pos < n && b[pos] == 0xFF) ++pos;
    if (pos >= n) break;
    const uint8_t m = b[pos++];
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;
    if (m == 0xD9)
      return "an end-of-image marker at byte " + std::to_string(pos - 2) + " before any image data";
    if (pos + 2 > n) break;
    const uint32_t len = be16(&b[pos]);
    if (pos + len > n) {
      const char* what = m == 0xC4                  ? "Huffman table (DHT)"
                         : m == 0xDB                ? "quantization table (DQT)"
                         : m == 0xDA                ? "scan header (SOS)"
                         : (m >= 0xE0 && m <= 0xEF) ? "application (APPn)"
                                                    : "marker";
      return "it ends at byte " + std::to_string(n) + " inside a " + what + " segment that needs " +
             std::to_string(pos + len) + ", before the image data";
    }
    if (m == 0xDA) return {};
    if (len < 2) return "a marker segment of length " + std::to_string(len);
    pos += len;
  }
  return "it ends at byte " + std::to_string(n) + ", before the image data";
}

// Opens only regular files (O_NONBLOCK: a FIFO at the path must not block),
// refuses files stb cannot take (over INT_MAX bytes) before reading them.
std::vector<uint8_t> read_file_bytes(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) RZ_THROW("decode_image: cannot open '", path, "': ", std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    RZ_THROW("decode_image: cannot stat '", path, "': ", std::strerror(errno));
  if (!S_ISREG(st.st_mode)) RZ_THROW("decode_image: cannot read '", path, "': not a regular file");
  if (st.st_size > INT_MAX)
    RZ_THROW("decode_image: '", path, "' is ", static_cast<int64_t>(st.st_size),
             " bytes, larger than an image file can be (", INT_MAX, ")");
  std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < bytes.size()) {
    const ssize_t r = ::read(fd, bytes.data() + got, bytes.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) RZ_THROW("decode_image: read error on '", path, "': ", std::strerror(errno));
    if (r == 0) break;  // the file shrank: decode what is there
    got += static_cast<size_t>(r);
  }
  bytes.resize(got);
  return bytes;
}

}  // namespace

ImageHeader read_image_header(std::span<const uint8_t> bytes, const std::string& name) {
  if (bytes.empty()) fail_decode(name, "empty file (0 bytes)");
  if (bytes.size() >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF)
    return jpeg_header(bytes, name);
  if (bytes.size() >= 8 && std::memcmp(bytes.data(), kPngSignature, 8) == 0)
    return png_header(bytes, name);
  if (bytes.size() >= 2 && bytes[0] == 0xFF && bytes[1] == 0xD8)
    fail_decode(name, "truncated or corrupt JPEG (" + std::to_string(bytes.size()) + " bytes)");
  if (bytes.size() < 8 && std::memcmp(bytes.data(), kPngSignature, bytes.size()) == 0)
    fail_decode(name, "truncated PNG (" + std::to_string(bytes.size()) + " bytes)");
  fail_decode(name, "not a JPEG or PNG image (first bytes " + hex_bytes(bytes, 8) + ")");
}

void check_image_budget(const ImageHeader& h, const std::string& name) {
  if (h.width < 1 || h.height < 1 || h.width > kMaxImageSide || h.height > kMaxImageSide)
    RZ_THROW("decode_image: refusing '", name, "': its header claims ", h.width, "x", h.height,
             " pixels (each side must be 1..", kMaxImageSide, ")");
  const int64_t pixels = h.width * h.height;  // both <= 65535: no overflow
  const int64_t budget = max_image_pixels();
  if (pixels > budget)
    RZ_THROW("decode_image: refusing '", name, "': ", h.width, "x", h.height, " = ", pixels,
             " pixels is over the decode budget of ", budget,
             " pixels (max_image_pixels; raise it if the image is genuine)");
}

Image decode_image_memory(std::span<const uint8_t> bytes, const std::string& name,
                          int desired_channels) {
  RZ_CHECK(desired_channels == 0 || desired_channels == 1 || desired_channels == 3,
           "decode_image: desired_channels must be 0, 1 or 3 for '", name, "', got ",
           desired_channels);
  if (bytes.size() > static_cast<size_t>(INT_MAX))
    RZ_THROW("decode_image: '", name, "' is too large for stb (", bytes.size(), " bytes)");
  // The header decides the format and the size before stb allocates anything.
  const ImageHeader header = read_image_header(bytes, name);
  check_image_budget(header, name);
  const char* kind = header.format == ImageFormat::jpeg ? "JPEG" : "PNG";
  const auto* data = reinterpret_cast<const stbi_uc*>(bytes.data());
  const int len = static_cast<int>(bytes.size());

  // Ask stb for gray or RGB only: it drops alpha (GA -> G, RGBA -> RGB) and
  // reduces 16-bit samples to their high byte. stb picks its decoder from
  // the same magic bytes as read_image_header.
  const int load_channels = header.channels >= 3 ? 3 : 1;
  int w = 0, h = 0, file_channels = 0;
  reset_stb_reason();
  stbi_uc* decoded = stbi_load_from_memory(data, len, &w, &h, &file_channels, load_channels);
  if (!decoded) {
    // stb probes PNG (and BMP, GIF, ...) before JPEG and its JPEG decoder
    // fails on some truncations without a reason of its own, leaving "bad png
    // sig": such a reason is no reason. The file's own structure says more.
    const std::string reason = stb_reason();
    const bool stale = reason == "bad png sig" || reason == kStbResetReason;
    const std::string structure =
        header.format == ImageFormat::jpeg ? jpeg_structure_problem(bytes) : std::string();
    if (!structure.empty())
      fail_decode(name, "truncated or corrupt JPEG (" + structure +
                            (stale ? "" : "; the decoder says: " + reason) + ")");
    fail_decode(
        name, std::string("truncated, corrupt or unsupported ") + kind + " (" +
                  (stale ? "the decoder gives no reason; " + std::to_string(bytes.size()) + " bytes"
                         : reason) +
                  ")");
  }
  std::unique_ptr<stbi_uc, void (*)(void*)> guard(decoded, stbi_image_free);
  if (w != header.width || h != header.height)
    fail_decode(name, std::string("corrupt ") + kind + " (the header says " +
                          std::to_string(header.width) + "x" + std::to_string(header.height) +
                          ", the decoder found " + std::to_string(w) + "x" + std::to_string(h) +
                          ")");

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

// stb encodes into memory; the file is then written through AtomicFile, so a
// link planted at the destination or a temporary name is never followed.
void append_bytes(void* context, void* data, int size) {
  static_cast<std::string*>(context)->append(static_cast<const char*>(data),
                                             static_cast<size_t>(size));
}
}  // namespace

std::string encode_png(const Image& img, const std::string& name) {
  check_writable(img, name, "encode_png");
  const int w = static_cast<int>(img.width), h = static_cast<int>(img.height);
  const int c = static_cast<int>(img.channels);
  std::string bytes;
  if (!stbi_write_png_to_func(append_bytes, &bytes, w, h, c, img.pixels.data(), w * c))
    RZ_THROW("encode_png: cannot encode '", name, "'");
  return bytes;
}

void write_png(const std::string& path, const Image& img) {
  write_file_atomic(path, encode_png(img, path), "PNG image");
}

void write_jpeg(const std::string& path, const Image& img, int quality) {
  check_writable(img, path, "write_jpeg");
  RZ_CHECK(quality >= 1 && quality <= 100, "write_jpeg: quality must be 1..100, got ", quality);
  const int w = static_cast<int>(img.width), h = static_cast<int>(img.height);
  const int c = static_cast<int>(img.channels);
  std::string bytes;
  if (!stbi_write_jpg_to_func(append_bytes, &bytes, w, h, c, img.pixels.data(), quality))
    RZ_THROW("write_jpeg: cannot encode '", path, "'");
  write_file_atomic(path, bytes, "JPEG image");
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
