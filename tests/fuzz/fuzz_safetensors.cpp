// Fuzzes the safetensors reader (engine/safetensors.h): the input is a whole
// file, read through read_safetensors_header and load_safetensors.
//
// Invariants: the two readers agree (load accepts exactly the files whose
// header is valid and whose dtypes it can load); an accepted header lists
// entries sorted by offset that tile the data buffer, each as long as its
// shape and dtype need; loaded tensors come in the header's order with its
// names and shapes.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "engine/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

bool loadable(const std::string& dtype) {
  return dtype == "F32" || dtype == "F16" || dtype == "F64" || dtype == "BF16" || dtype == "I64" ||
         dtype == "U8";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = rz::fuzz::write_scratch_file("fuzz.safetensors", data, size);

  std::vector<rz::SafetensorsEntry> entries;
  std::map<std::string, std::string> metadata;
  const bool header_ok =
      rz::fuzz::rejects_only([&] { entries = rz::read_safetensors_header(path, &metadata); });
  rz::SafetensorsFile file;
  const bool loaded = rz::fuzz::rejects_only([&] { file = rz::load_safetensors(path); });

  bool all_loadable = true;
  for (const rz::SafetensorsEntry& e : entries) all_loadable = all_loadable && loadable(e.dtype);
  FUZZ_REQUIRE(loaded == (header_ok && all_loadable), "load_safetensors ",
               loaded ? "accepted" : "rejected", " a file whose header was ",
               header_ok ? "accepted" : "rejected");
  if (!header_ok) return 0;

  uint64_t covered = 0;
  for (const rz::SafetensorsEntry& e : entries) {
    FUZZ_REQUIRE(e.begin == covered, "entry '", e.name, "' begins at ", e.begin, ", expected ",
                 covered);
    FUZZ_REQUIRE(e.end >= e.begin, "entry '", e.name, "' ends before it begins");
    covered = e.end;
    FUZZ_REQUIRE(e.name != "__metadata__", "__metadata__ listed as a tensor");
  }
  FUZZ_REQUIRE(size >= 8 + covered, "entries cover ", covered, " bytes of a ", size, "-byte file");
  if (!loaded) return 0;

  FUZZ_REQUIRE(file.tensors.size() == entries.size(), "loaded ", file.tensors.size(),
               " tensors of ", entries.size());
  FUZZ_REQUIRE(file.metadata == metadata, "metadata differ between the readers");
  for (size_t i = 0; i < entries.size(); ++i) {
    const auto& [name, t] = file.tensors[i];
    FUZZ_REQUIRE(name == entries[i].name, "tensor ", i, " is '", name, "', header says '",
                 entries[i].name, "'");
    FUZZ_REQUIRE(t.shape() == entries[i].shape, "tensor '", name, "' has another shape");
  }
  return 0;
}
