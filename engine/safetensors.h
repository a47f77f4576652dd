// safetensors reading and writing (https://github.com/huggingface/safetensors).
//
// File layout: an 8-byte little-endian u64 N, N bytes of UTF-8 JSON (possibly
// padded with trailing spaces), then the data buffer. The JSON maps each tensor
// name to {"dtype", "shape", "data_offsets": [begin, end)} with offsets relative
// to the start of the buffer, plus an optional "__metadata__" {str: str}.
//
// Reading validates the whole header before touching the data, like the
// reference implementation: the header is at most 100 MB and fits in the file,
// is a JSON object without duplicate keys (detected while parsing, see the
// .cpp), every entry is well typed, each tensor's byte size is
// product(shape) * dtype size, and the sorted offsets tile the buffer exactly
// (no overlap, no hole, no unused tail; a short buffer is reported as a
// truncated file with the expected and actual sizes). Every error is an
// rz::Error that names the file and the offending values.
//
// dtypes: F32, F64, BF16, I64 and U8 load as themselves; F16 loads as F32
// (exactly, kernels/common/f16.h). Other dtypes of the format (BOOL, I8, I16,
// I32, U16, U32, U64, F8_*, ...) are listed by read_safetensors_header but
// rejected by load_safetensors with the tensor's name and dtype.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/module.h"  // NamedTensors
#include "engine/tensor.h"

namespace rz {

struct SafetensorsFile {
  NamedTensors tensors;  // in file order: sorted by data offsets
  std::map<std::string, std::string> metadata;
};

// One header entry, for inspection without reading the data.
struct SafetensorsEntry {
  std::string name;
  std::string dtype;  // as in the file: "F32", "BF16", "F16", "BOOL", ...
  Shape shape;
  uint64_t begin = 0, end = 0;  // byte offsets into the data buffer, end exclusive
};

// Reads every tensor onto the CPU. The data goes straight from the file into
// each tensor's storage (one read per tensor; F16 is converted through a small
// bounce buffer), so loading costs one pass over the file and no extra copy.
SafetensorsFile load_safetensors(const std::string& path);

// Reads and validates the header only, in file order. Fills *metadata if given.
std::vector<SafetensorsEntry> read_safetensors_header(
    const std::string& path, std::map<std::string, std::string>* metadata = nullptr);

// How save_safetensors stores floating tensors (f32, f64, bf16). Keep writes
// each tensor's own dtype; the others convert every floating tensor (f64 goes
// through f32 first, as PyTorch does; F16/BF16 round to nearest even).
// Integer tensors (i64, u8) are always stored as they are.
enum class SafetensorsFloats { Keep, F32, F16, BF16 };

// Writes the tensors (any device: device tensors are copied to the host one at
// a time) and the optional metadata. Tensors are laid out like the reference
// writer: by dtype alignment (8-byte types first) then by name, so the header
// plus every tensor is naturally aligned, and the header JSON is compact and
// padded with spaces to a multiple of 8 bytes. Names must be unique, valid
// UTF-8 and not "__metadata__"; metadata keys and values valid UTF-8.
// F16 saves turn values beyond +-65504 into +-inf (round to nearest even).
// The write is atomic (engine/atomic_file.h): the bytes go to a unique
// temporary created exclusively beside `path`, are flushed to disk (fsync),
// and the temporary is renamed over `path`; on any error it is removed and
// `path` is left as it was.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {},
                      SafetensorsFloats floats = SafetensorsFloats::Keep);

}  // namespace rz
