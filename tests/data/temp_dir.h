// A fresh directory under the system temp dir, removed with everything in it
// when the object goes out of scope. For tests that need files on disk.
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>

#include <unistd.h>

#include "engine/error.h"

namespace rz::test {

class TempDir {
 public:
  explicit TempDir(std::string_view tag) {
    static std::atomic<int> counter{0};
    const auto ticks = std::chrono::steady_clock::now().time_since_epoch().count();
    path_ = std::filesystem::temp_directory_path() /
            ("rz_" + std::string(tag) + "_" + std::to_string(::getpid()) + "_" +
             std::to_string(ticks) + "_" + std::to_string(counter++));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);  // never throw from a destructor
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }

  // Writes `text` byte for byte to <dir>/<name> and returns the full path.
  std::string write(const std::string& name, std::string_view text) const {
    const std::filesystem::path p = path_ / name;
    std::ofstream out(p, std::ios::binary);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    return p.string();
  }

 private:
  std::filesystem::path path_;
};

// The bytes of a file ("" when it cannot be read), and a file written byte
// for byte (replaced when it exists).
inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
inline void write_file(const std::filesystem::path& p, std::string_view bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// The message of the rz::Error that f() throws, or "<no error>" (any other
// exception propagates and fails the test).
template <typename F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const rz::Error& e) {
    return e.what();
  }
  return "<no error>";
}

inline bool contains(const std::string& s, std::string_view part) {
  return s.find(part) != std::string::npos;
}

}  // namespace rz::test
