// Fuzzes image decoding (data/image.h): the input is a whole file, given to
// decode_image through a file and to decode_image_memory from memory. The
// requested channel count (0, 1 or 3) is the input size modulo 3, so every
// input decodes one way, always the same.
//
// Invariants: both entry points accept the same inputs and return the same
// pixels, with every allocation made during the first decode filled with
// 0x00 and during the second with 0xFF (a sanitizer malloc hook), so a
// decoder that lets uninitialized heap memory into the pixels shows it
// every time, not only when the heap's history happens to differ; a decoded image passes
// check_image and has the requested channels (1 or 3 when 0 asked for the file's own); the decode
// budget bounds its pixels. scripts/fuzz.sh caps this target's allocations (-malloc_limit_mb) well
// above what the budget lets through, so an allocation that the budget should have prevented is a
// finding too.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "data/image.h"
#include "tests/fuzz/fuzz_util.h"

// The sanitizer runtime's allocation hooks (sanitizer/allocator_interface.h).
extern "C" int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void*,
                                                                             size_t),
                                                         void (*free_hook)(const volatile void*));

namespace {

// The byte new allocations of this thread are filled with; -1: none. Only
// the fuzzing thread fills (a runtime's own threads keep their allocations).
thread_local int t_fill = -1;

void fill_allocation(const volatile void* p, size_t n) {
  if (t_fill >= 0 && p != nullptr) std::memset(const_cast<void*>(p), t_fill, n);
}

void ignore_free(const volatile void*) {}  // the runtime takes both hooks or none

// Fills this thread's allocations with `byte` while it lives.
struct FillAllocations {
  explicit FillAllocations(uint8_t byte) { t_fill = byte; }
  ~FillAllocations() { t_fill = -1; }
  FillAllocations(const FillAllocations&) = delete;
  FillAllocations& operator=(const FillAllocations&) = delete;
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  __sanitizer_install_malloc_and_free_hooks(fill_allocation, ignore_free);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  constexpr int kChannels[3] = {0, 1, 3};
  const int desired = kChannels[size % 3];
  const std::string path = rz::fuzz::write_scratch_file("fuzz.img", data, size);

  rz::data::Image from_file, from_memory;
  const bool file_ok = rz::fuzz::rejects_only([&] {
    const FillAllocations fill(0x00);
    from_file = rz::data::decode_image(path, desired);
  });
  const bool memory_ok = rz::fuzz::rejects_only([&] {
    const FillAllocations fill(0xFF);
    from_memory =
        rz::data::decode_image_memory(std::span<const uint8_t>(data, size), "fuzz.img", desired);
  });
  FUZZ_REQUIRE(file_ok == memory_ok, "decode_image ", file_ok ? "accepted" : "rejected",
               " what decode_image_memory ", memory_ok ? "accepted" : "rejected");
  if (!file_ok) return 0;

  FUZZ_REQUIRE(rz::fuzz::rejects_only([&] { rz::data::check_image(from_file, "decode"); }),
               "the decoded image fails check_image");
  FUZZ_REQUIRE(desired == 0 ? (from_file.channels == 1 || from_file.channels == 3)
                            : from_file.channels == desired,
               "asked for ", desired, " channels, got ", from_file.channels);
  FUZZ_REQUIRE(from_file.height * from_file.width <= rz::data::max_image_pixels(), "decoded ",
               from_file.height, "x", from_file.width, " over the pixel budget");
  FUZZ_REQUIRE(from_file.height == from_memory.height && from_file.width == from_memory.width &&
                   from_file.channels == from_memory.channels &&
                   from_file.pixels == from_memory.pixels,
               "two decodes of the same bytes differ (pixels from uninitialized memory?)");
  return 0;
}
