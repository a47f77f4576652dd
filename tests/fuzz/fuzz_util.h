// Shared by the libFuzzer targets of tests/fuzz (one program per fuzz_*.cpp,
// built with -DRZ_FUZZ=ON and run by scripts/fuzz.sh).
//
// The contract every target checks: a parser given arbitrary bytes either
// returns a result that satisfies its documented invariants, or throws
// rz::Error. Anything else is a finding that stops the run: a crash, an
// ASan/UBSan report, a libFuzzer timeout or out-of-memory, an exception of
// another type (reported by rejects_only with its type and message), or a
// broken invariant (FUZZ_REQUIRE).
//
// Parsers that only read files get the input through a file in a folder
// private to the process, under $RZ_FUZZ_SCRATCH when set, else /dev/shm
// when it exists (no disk traffic per input), else $TMPDIR or /tmp. The
// folder is removed at a normal exit (a crash leaves it for the caller).
#pragma once

#include <cxxabi.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <typeinfo>

#include "engine/error.h"

namespace rz::fuzz {

// Prints a finding and aborts (libFuzzer then saves the input as crash-*).
[[noreturn]] inline void fail(const char* file, int line, const std::string& what) {
  std::fprintf(stderr, "\nfuzz finding at %s:%d: %s\n", file, line, what.c_str());
  std::fflush(stderr);
  std::abort();
}

// An invariant of a successful parse.
#define FUZZ_REQUIRE(cond, ...)                                                             \
  do {                                                                                      \
    if (!(cond))                                                                            \
      ::rz::fuzz::fail(                                                                     \
          __FILE__, __LINE__,                                                               \
          std::string("invariant failed: " #cond " ") + ::rz::detail::concat(__VA_ARGS__)); \
  } while (0)

inline std::string demangled_type(const std::exception& e) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> name(
      abi::__cxa_demangle(typeid(e).name(), nullptr, nullptr, &status), std::free);
  return status == 0 && name ? name.get() : typeid(e).name();
}

// Runs f(); rz::Error is the expected rejection of a bad input. Returns
// whether f completed. Any other exception is a finding. With
// RZ_FUZZ_VERBOSE=1 in the environment rejections are printed (to see what
// the seeds exercise).
template <typename F>
bool rejects_only(F&& f) {
  static const bool verbose = std::getenv("RZ_FUZZ_VERBOSE") != nullptr;
  try {
    f();
    if (verbose) std::fprintf(stderr, "accepted\n");
    return true;
  } catch (const rz::Error& e) {
    if (verbose) std::fprintf(stderr, "rejected: %s\n", e.what());
    return false;
  } catch (const std::exception& e) {
    fail(__FILE__, __LINE__,
         "exception other than rz::Error escaped: " + demangled_type(e) + ": " + e.what());
  } catch (...) {
    fail(__FILE__, __LINE__, "exception of unknown type escaped");
  }
}

// The per-process scratch folder, created on first use.
class ScratchDir {
 public:
  static const std::filesystem::path& get() {
    static ScratchDir dir;
    return dir.path_;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }

 private:
  ScratchDir() {
    namespace fs = std::filesystem;
    const char* scratch = std::getenv("RZ_FUZZ_SCRATCH");
    fs::path base = scratch && *scratch ? scratch : "/dev/shm";
    std::error_code ec;
    fs::create_directories(base, ec);
    if (!fs::is_directory(base, ec) || ::access(base.c_str(), W_OK) != 0) {
      const char* tmp = std::getenv("TMPDIR");
      base = tmp && *tmp ? tmp : "/tmp";
    }
    path_ = base / ("rz-fuzz-" + std::to_string(::getpid()));
    fs::remove_all(path_, ec);
    fs::create_directories(path_);
  }
  std::filesystem::path path_;
};

// <scratch>/<name>: overwritten with the bytes; returns its path.
inline std::string write_scratch_file(const std::string& name, const uint8_t* data, size_t size) {
  const std::string path = (ScratchDir::get() / name).string();
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) fail(__FILE__, __LINE__, "cannot create scratch file " + path);
  if (size > 0 && std::fwrite(data, 1, size, f) != size) fail(__FILE__, __LINE__, "short write");
  if (std::fclose(f) != 0) fail(__FILE__, __LINE__, "cannot close scratch file " + path);
  return path;
}

inline std::string write_scratch_file(const std::string& name, std::string_view text) {
  return write_scratch_file(name, reinterpret_cast<const uint8_t*>(text.data()), text.size());
}

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

}  // namespace rz::fuzz
