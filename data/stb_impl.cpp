// The stb_image and stb_image_write implementations, compiled here from
// Debian's libstb-dev headers rather than taken from its prebuilt libstb, so
// that stb's heap memory is zero-initialized: a corrupt file (a zlib stream
// that ends early, a distance before the window's start) must not turn into
// pixels made of whatever the heap held, which would differ from one decode
// to the next. data/image.cpp refuses what it can recognize first; this is
// the floor under everything it cannot.
#include <cstdlib>
#include <cstring>

namespace {
void* zeroing_realloc(void* p, size_t old_size, size_t new_size) {
  void* q = std::realloc(p, new_size);
  if (q != nullptr && new_size > old_size)
    std::memset(static_cast<char*>(q) + old_size, 0, new_size - old_size);
  return q;
}
}  // namespace

#define STBI_MALLOC(sz) std::calloc(1, sz)
#define STBI_REALLOC_SIZED(p, oldsz, newsz) zeroing_realloc(p, oldsz, newsz)
#define STBI_FREE(p) std::free(p)
#define STB_IMAGE_IMPLEMENTATION
#include <stb/stb_image.h>

#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>
