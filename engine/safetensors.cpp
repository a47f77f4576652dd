#include "engine/safetensors.h"
#include "engine/json_depth.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <type_traits>
#include <unordered_set>

#include "engine/atomic_file.h"
#include "kernels/common/bf16.h"
#include "kernels/common/f16.h"

// Every reader error names the file first: "safetensors file 'x': <problem>".
#define RZ_ST_THROW(path, ...) RZ_THROW("safetensors file '", path, "': ", __VA_ARGS__)
#define RZ_ST_WRITE_THROW(path, ...) \
  RZ_THROW("cannot write safetensors file '", path, "': ", __VA_ARGS__)

namespace rz {
namespace {

// Tensor bytes go straight between the file and tensor storage.
static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; this code assumes a little-endian host");

// The reference implementation's cap on the header size (MAX_HEADER_SIZE).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// Elements per bounce-buffer chunk when converting F16 on load or floats on save.
constexpr size_t kChunkElems = size_t{1} << 16;

// Every dtype the format defines, with its size in bits (sub-byte float
// formats included), so read_safetensors_header can validate and list any file.
struct FileDType {
  const char* name;
  uint32_t bits;
};
constexpr FileDType kFileDTypes[] = {
    {"BOOL", 8},    {"U8", 8},   {"I8", 8},   {"F8_E5M2", 8}, {"F8_E4M3", 8},
    {"F8_E8M0", 8}, {"I16", 16}, {"U16", 16}, {"F16", 16},    {"BF16", 16},
    {"I32", 32},    {"U32", 32}, {"F32", 32}, {"F64", 64},    {"C64", 64},
    {"I64", 64},    {"U64", 64}, {"F4", 4},   {"F6_E2M3", 6}, {"F6_E3M2", 6}};

const FileDType* find_file_dtype(const std::string& name) {
  for (const FileDType& d : kFileDTypes)
    if (name == d.name) return &d;
  return nullptr;
}

std::string errno_str() {
  return std::strerror(errno);
}

// Owns a POSIX file descriptor.
class FileHandle {
 public:
  FileHandle() = default;
  explicit FileHandle(int fd) : fd_(fd) {}
  ~FileHandle() { close(); }
  FileHandle(const FileHandle&) = delete;
  FileHandle& operator=(const FileHandle&) = delete;
  int get() const { return fd_; }
  void reset(int fd) {
    close();
    fd_ = fd;
  }
  int close() {
    const int rc = fd_ >= 0 ? ::close(fd_) : 0;
    fd_ = -1;
    return rc;
  }

 private:
  int fd_ = -1;
};

// Reads exactly `bytes` at `offset`; a short file is reported as truncated.
void pread_all(int fd, void* dst, size_t bytes, uint64_t offset, const std::string& path) {
  char* p = static_cast<char*>(dst);
  while (bytes > 0) {
    const size_t want = std::min<size_t>(bytes, size_t{1} << 30);
    const ssize_t got = ::pread(fd, p, want, static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0)
      RZ_ST_THROW(path, "read of ", want, " bytes at offset ", offset, " failed: ", errno_str());
    if (got == 0)
      RZ_ST_THROW(path, "truncated: no data at byte ", offset, " (the file shrank while reading?)");
    p += got;
    bytes -= static_cast<size_t>(got);
    offset += static_cast<uint64_t>(got);
  }
}

const char* json_type(const nlohmann::ordered_json& j) {
  return j.type_name();
}

// A JSON value for an error message, cut to 120 characters (a header may
// hold a megabyte-long array).
std::string excerpt(const nlohmann::ordered_json& j) {
  std::string s = j.dump();
  if (s.size() > 120) s = s.substr(0, 120) + "... (" + std::to_string(s.size()) + " chars)";
  return s;
}

// A shape entry or offset: a JSON integer >= 0 (not 2.0, not -1, not "2").
// nlohmann stores non-negative integers as unsigned; "-0" arrives signed.
bool json_to_u64(const nlohmann::ordered_json& j, uint64_t& out) {
  if (j.is_number_unsigned()) {
    out = j.get<uint64_t>();
    return true;
  }
  if (j.is_number_integer() && j.get<int64_t>() == 0) {
    out = 0;
    return true;
  }
  return false;
}

// Opens a regular file for reading; returns its size in bytes.
uint64_t open_for_reading(const std::string& path, FileHandle& file) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) RZ_ST_THROW(path, "cannot open: ", errno_str());
  file.reset(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) RZ_ST_THROW(path, "cannot stat: ", errno_str());
  if (!S_ISREG(st.st_mode)) RZ_ST_THROW(path, "not a regular file");
  return static_cast<uint64_t>(st.st_size);
}

struct Header {
  std::vector<SafetensorsEntry> entries;  // sorted by (begin, end), ties in header order
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // 8 + N: where the buffer starts in the file
};

// Duplicate keys: nlohmann keeps the last of duplicated keys silently, so the
// parser callback keeps one set of seen keys per open object (a stack, as
// objects nest) and records the first key seen twice. It is reported after
// the parse, so a JSON syntax error still wins.
struct DuplicateFinder {
  std::vector<std::unordered_set<std::string>> open_objects;
  std::string top_level_key;  // the entry we are inside, for the message
  std::string duplicate;      // first duplicate found, with where it is
  bool operator()(int, nlohmann::ordered_json::parse_event_t event,
                  nlohmann::ordered_json& parsed) {
    using Event = nlohmann::ordered_json::parse_event_t;
    if (event == Event::object_start) {
      open_objects.emplace_back();
    } else if (event == Event::object_end) {
      if (!open_objects.empty()) open_objects.pop_back();
    } else if (event == Event::key && !open_objects.empty()) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (open_objects.size() == 1) top_level_key = key;
      if (!open_objects.back().insert(key).second && duplicate.empty()) {
        duplicate = open_objects.size() == 1
                        ? "duplicate tensor name '" + key + "' in the header"
                        : "duplicate key '" + key + "' inside the entry '" + top_level_key + "'";
      }
    }
    return true;
  }
};

Header read_header(int fd, const std::string& path, uint64_t file_bytes) {
  if (file_bytes < 8)
    RZ_ST_THROW(path, "file is only ", file_bytes,
                " bytes; a safetensors file starts with an 8-byte header size");
  unsigned char prefix[8];
  pread_all(fd, prefix, 8, 0, path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | prefix[i];
  if (n > kMaxHeaderBytes)
    RZ_ST_THROW(path, "header size ", n, " bytes is larger than the ", kMaxHeaderBytes,
                "-byte limit (not a safetensors file?)");
  if (n > file_bytes - 8)
    RZ_ST_THROW(path, "header size ", n, " bytes is larger than the rest of the file (",
                file_bytes - 8,
                " bytes after the size prefix): truncated or not a safetensors file");

  std::string text(n, '\0');
  pread_all(fd, text.data(), n, 8, path);
  if (json_depth(text) > kMaxJsonDepth)
    RZ_ST_THROW(path, "header JSON nests deeper than ", kMaxJsonDepth, " levels");
  DuplicateFinder dups;
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(text, std::ref(dups));
  } catch (const nlohmann::json::exception& e) {
    RZ_ST_THROW(path, "header is not valid JSON: ", e.what());
  }
  if (!j.is_object()) RZ_ST_THROW(path, "header is a JSON ", json_type(j), ", not an object");
  if (!dups.duplicate.empty()) RZ_ST_THROW(path, dups.duplicate);

  Header h;
  h.data_start = 8 + n;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const auto& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object())
        RZ_ST_THROW(path, "__metadata__ is a JSON ", json_type(v), ", not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          RZ_ST_THROW(path, "__metadata__ value of '", m.key(), "' is a JSON ",
                      json_type(m.value()), " (", excerpt(m.value()), "), not a string");
        h.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object())
      RZ_ST_THROW(path, "entry '", name, "' is a JSON ", json_type(v), ", not an object");
    SafetensorsEntry e;
    e.name = name;
    for (const char* key : {"dtype", "shape", "data_offsets"})
      if (!v.contains(key)) RZ_ST_THROW(path, "tensor '", name, "' has no \"", key, "\"");
    const auto& dt = v.at("dtype");
    if (!dt.is_string())
      RZ_ST_THROW(path, "tensor '", name, "': dtype is a JSON ", json_type(dt), " (", excerpt(dt),
                  "), not a string");
    e.dtype = dt.get<std::string>();
    const FileDType* fdt = find_file_dtype(e.dtype);
    if (fdt == nullptr) RZ_ST_THROW(path, "tensor '", name, "' has unknown dtype '", e.dtype, "'");

    const auto& shape = v.at("shape");
    if (!shape.is_array())
      RZ_ST_THROW(path, "tensor '", name, "': shape is a JSON ", json_type(shape), " (",
                  excerpt(shape), "), not an array");
    // The element count in checked int64 arithmetic (what Tensor uses): the
    // product of the non-zero sizes must fit even when a zero size makes the
    // count 0, so [2^32, 2^32, 0] is refused like [2^40, 2^40].
    int64_t nonzero_product = 1;
    bool overflow = false, has_zero = false;
    for (const auto& d : shape) {
      uint64_t size = 0;
      if (!json_to_u64(d, size) ||
          size > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        RZ_ST_THROW(path, "tensor '", name, "': shape ", excerpt(shape),
                    " has an entry that is not a non-negative integer: ", excerpt(d));
      e.shape.push_back(static_cast<int64_t>(size));
      if (size == 0)
        has_zero = true;
      else if (__builtin_mul_overflow(nonzero_product, static_cast<int64_t>(size), &nonzero_product))
        overflow = true;
    }

    const auto& off = v.at("data_offsets");
    if (!off.is_array() || off.size() != 2 || !json_to_u64(off[0], e.begin) ||
        !json_to_u64(off[1], e.end))
      RZ_ST_THROW(path, "tensor '", name, "': data_offsets ", excerpt(off),
                  " is not a pair of non-negative integers [begin, end]");
    if (e.end < e.begin)
      RZ_ST_THROW(path, "tensor '", name, "': data_offsets [", e.begin, ", ", e.end,
                  "] end before they begin");
    if (overflow)
      RZ_ST_THROW(path, "tensor '", name, "': shape ", shape_str(e.shape),
                  " has more elements than fit in 64 bits");
    const uint64_t numel = has_zero ? 0 : static_cast<uint64_t>(nonzero_product);
    if (numel > std::numeric_limits<uint64_t>::max() / fdt->bits)
      RZ_ST_THROW(path, "tensor '", name, "': shape ", shape_str(e.shape), " of ", e.dtype,
                  " has a byte size that does not fit in 64 bits");
    const uint64_t bits = numel * fdt->bits;
    if (bits % 8 != 0)
      RZ_ST_THROW(path, "tensor '", name, "': ", numel, " elements of ", e.dtype,
                  " do not fill a whole number of bytes");
    if (e.end - e.begin != bits / 8)
      RZ_ST_THROW(path, "tensor '", name, "' (", e.dtype, ", shape ", shape_str(e.shape),
                  ") needs ", bits / 8, " bytes but its data_offsets [", e.begin, ", ", e.end,
                  "] span ", e.end - e.begin, " bytes");
    h.entries.push_back(std::move(e));
  }

  // The offsets must tile [0, buffer size) exactly, as the reference reader
  // requires: sorted by offset, each tensor starts where the previous ended.
  std::stable_sort(h.entries.begin(), h.entries.end(), [](const auto& a, const auto& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t covered = 0;
  const SafetensorsEntry* prev = nullptr;  // the entry that ends at `covered`
  for (const SafetensorsEntry& e : h.entries) {
    if (e.begin < covered)
      RZ_ST_THROW(path, "tensors '", prev->name, "' (bytes [", prev->begin, ", ", prev->end,
                  ")) and '", e.name, "' (bytes [", e.begin, ", ", e.end, ")) overlap");
    if (e.begin > covered)
      RZ_ST_THROW(path, "hole in the data buffer: bytes [", covered, ", ", e.begin,
                  ") belong to no tensor (", prev ? "after '" + prev->name + "', " : "", "before '",
                  e.name, "')");
    prev = &e;
    covered = e.end;
  }
  const uint64_t buffer_bytes = file_bytes - h.data_start;
  if (covered > buffer_bytes)
    RZ_ST_THROW(path, "truncated: the header describes ", covered,
                " data bytes, so the file should be ", h.data_start + covered, " bytes, but it is ",
                file_bytes, " bytes");
  if (covered < buffer_bytes)
    RZ_ST_THROW(path, "the data buffer has ", buffer_bytes - covered,
                " unused bytes at the end: tensors cover ", covered, " of its ", buffer_bytes,
                " bytes");
  return h;
}

// safetensors dtype -> engine dtype for loading; F16 is widened to F32.
bool engine_dtype(const std::string& file_dtype, DType& out) {
  if (file_dtype == "F32" || file_dtype == "F16")
    out = DType::F32;
  else if (file_dtype == "F64")
    out = DType::F64;
  else if (file_dtype == "BF16")
    out = DType::BF16;
  else if (file_dtype == "I64")
    out = DType::I64;
  else if (file_dtype == "U8")
    out = DType::U8;
  else
    return false;
  return true;
}

const char* file_dtype_name(DType t) {
  switch (t) {
    case DType::F32:
      return "F32";
    case DType::F64:
      return "F64";
    case DType::BF16:
      return "BF16";
    case DType::U8:
      return "U8";
    case DType::I64:
      return "I64";
  }
  return "?";
}

// The reference writer's order (its Dtype enum, descending): 8-byte types
// first, then 4-, 2- and 1-byte ones.
int writer_rank(const std::string& file_dtype) {
  for (const auto& [name, rank] : {std::pair<const char*, int>{"I64", 5},
                                   {"F64", 4},
                                   {"F32", 3},
                                   {"BF16", 2},
                                   {"F16", 1},
                                   {"U8", 0}})
    if (file_dtype == name) return rank;
  return -1;
}

// Converts `count` floating elements (float, double or bf16) into the file
// dtype `dst` ("F32", "F16" or "BF16"), going through f32.
template <typename S>
void encode_floats(const S* src, const std::string& dst, void* out, size_t count) {
  auto widen = [](S v) -> float {
    if constexpr (std::is_same_v<S, bf16>)
      return bf16_to_f32(v);
    else
      return static_cast<float>(v);
  };
  if (dst == "F32") {
    float* o = static_cast<float*>(out);
    for (size_t i = 0; i < count; ++i) o[i] = widen(src[i]);
  } else if (dst == "F16") {
    f16* o = static_cast<f16*>(out);
    for (size_t i = 0; i < count; ++i) o[i] = f32_to_f16(widen(src[i]));
  } else {
    bf16* o = static_cast<bf16*>(out);
    for (size_t i = 0; i < count; ++i) o[i] = f32_to_bf16(widen(src[i]));
  }
}

void encode_floats(const void* src, DType src_dtype, const std::string& dst, void* out,
                   size_t count) {
  switch (src_dtype) {
    case DType::F32:
      return encode_floats(static_cast<const float*>(src), dst, out, count);
    case DType::F64:
      return encode_floats(static_cast<const double*>(src), dst, out, count);
    case DType::BF16:
      return encode_floats(static_cast<const bf16*>(src), dst, out, count);
    default:
      RZ_THROW("encode_floats: not a floating dtype: ", dtype_name(src_dtype));
  }
}

std::string json_string(const std::string& s, const std::string& path, const char* what) {
  try {
    return nlohmann::json(s).dump();
  } catch (const nlohmann::json::exception& e) {
    RZ_ST_WRITE_THROW(path, what, " is not valid UTF-8: ", e.what());
  }
}

}  // namespace

std::vector<SafetensorsEntry> read_safetensors_header(
    const std::string& path, std::map<std::string, std::string>* metadata) {
  FileHandle file;
  const uint64_t file_bytes = open_for_reading(path, file);
  Header h = read_header(file.get(), path, file_bytes);
  if (metadata) *metadata = std::move(h.metadata);
  return std::move(h.entries);
}

SafetensorsFile load_safetensors(const std::string& path) {
  FileHandle file;
  const uint64_t file_bytes = open_for_reading(path, file);
  const int fd = file.get();
  Header h = read_header(fd, path, file_bytes);

  // Reject unsupported dtypes before allocating anything.
  std::vector<DType> dtypes;
  for (const SafetensorsEntry& e : h.entries) {
    DType dt{};
    if (!engine_dtype(e.dtype, dt))
      RZ_ST_THROW(path, "tensor '", e.name, "' has dtype ", e.dtype,
                  ", which this engine cannot load (supported: F32, F64, BF16, I64, U8, and F16 "
                  "as f32)");
    dtypes.push_back(dt);
  }
#if defined(POSIX_FADV_SEQUENTIAL)
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);  // a hint; failure is harmless
#endif

  SafetensorsFile out;
  out.tensors.reserve(h.entries.size());
  std::vector<f16> bounce;
  for (size_t i = 0; i < h.entries.size(); ++i) {
    const SafetensorsEntry& e = h.entries[i];
    Tensor t = Tensor::empty(e.shape, dtypes[i]);
    const uint64_t at = h.data_start + e.begin;
    if (e.dtype == "F16") {
      float* dst = t.data<float>();
      const size_t n = static_cast<size_t>(t.numel());
      bounce.resize(std::min(n, kChunkElems));
      for (size_t done = 0; done < n;) {
        const size_t k = std::min(n - done, kChunkElems);
        pread_all(fd, bounce.data(), k * sizeof(f16), at + done * sizeof(f16), path);
        for (size_t j = 0; j < k; ++j) dst[done + j] = f16_to_f32(bounce[j]);
        done += k;
      }
    } else if (t.nbytes() > 0) {
      pread_all(fd, t.raw_data(), t.nbytes(), at, path);
    }
    out.tensors.emplace_back(e.name, std::move(t));
  }
  out.metadata = std::move(h.metadata);
  return out;
}

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata,
                      SafetensorsFloats floats) {
  struct Item {
    const std::string* name;
    const Tensor* tensor;
    std::string dtype;  // in the file
    size_t elem_bytes;  // in the file
    uint64_t bytes;
  };
  std::vector<Item> items;
  items.reserve(tensors.size());
  std::unordered_set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__")
      RZ_ST_WRITE_THROW(path, "\"__metadata__\" is reserved and cannot name a tensor");
    if (!seen.insert(name).second) RZ_ST_WRITE_THROW(path, "duplicate tensor name '", name, "'");
    if (!t.defined()) RZ_ST_WRITE_THROW(path, "tensor '", name, "' is undefined");
    std::string dtype = file_dtype_name(t.dtype());
    size_t elem = dtype_size(t.dtype());
    if (is_floating(t.dtype()) && floats != SafetensorsFloats::Keep) {
      dtype = floats == SafetensorsFloats::F32   ? "F32"
              : floats == SafetensorsFloats::F16 ? "F16"
                                                 : "BF16";
      elem = dtype == "F32" ? 4 : 2;
    }
    items.push_back({&name, &t, dtype, elem, static_cast<uint64_t>(t.numel()) * elem});
  }
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    const int ra = writer_rank(a.dtype), rb = writer_rank(b.dtype);
    return ra != rb ? ra > rb : *a.name < *b.name;
  });

  // Compact JSON in the reference writer's form: metadata first, then the
  // tensors in data order, each as {"dtype", "shape", "data_offsets"}.
  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      if (!first) header += ',';
      first = false;
      header += json_string(k, path, "a metadata key");
      header += ':';
      header += json_string(v, path, ("metadata value of '" + k + "'").c_str());
    }
    header += '}';
  }
  uint64_t offset = 0;
  for (const Item& it : items) {
    if (header.size() > 1) header += ',';
    header += json_string(*it.name, path, "a tensor name");
    header += ":{\"dtype\":\"" + it.dtype + "\",\"shape\":[";
    const Shape& shape = it.tensor->shape();
    for (size_t d = 0; d < shape.size(); ++d) header += (d ? "," : "") + std::to_string(shape[d]);
    header += "],\"data_offsets\":[" + std::to_string(offset) + "," +
              std::to_string(offset + it.bytes) + "]}";
    offset += it.bytes;
  }
  header += '}';
  header.append((8 - header.size() % 8) % 8, ' ');
  unsigned char prefix[8];
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<unsigned char>(header.size() >> (8 * i));

  AtomicFile file(path, "safetensors file");
  file.write(prefix, sizeof prefix);
  file.write(header.data(), header.size());
  std::vector<char> bounce;
  for (const Item& it : items) {
    const Tensor host = it.tensor->device().is_cpu() ? *it.tensor : it.tensor->to(Device::cpu());
    if (it.dtype == file_dtype_name(host.dtype())) {
      file.write(host.raw_data(), host.nbytes());
      continue;
    }
    const size_t n = static_cast<size_t>(host.numel());
    const size_t in_elem = dtype_size(host.dtype());
    const size_t out_elem = it.elem_bytes;
    bounce.resize(std::min(n, kChunkElems) * out_elem);
    const char* src = static_cast<const char*>(host.raw_data());
    for (size_t done = 0; done < n;) {
      const size_t k = std::min(n - done, kChunkElems);
      encode_floats(src + done * in_elem, host.dtype(), it.dtype, bounce.data(), k);
      file.write(bounce.data(), k * out_elem);
      done += k;
    }
  }
  file.commit();
}

}  // namespace rz
