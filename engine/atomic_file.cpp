#include "engine/atomic_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <random>

#include "engine/error.h"
#include "engine/fault.h"

namespace rz {
namespace fs = std::filesystem;

namespace {

std::string errno_text(int e) { return std::strerror(e); }

std::string folder_of(const std::string& path) {
  const fs::path dir = fs::path(path).parent_path();
  return dir.empty() ? std::string(".") : dir.string();
}

// Six characters from [A-Za-z0-9]: a per-process random stream, seeded from
// the clock, the pid and a counter, so two processes or threads never agree.
std::string random_suffix() {
  static std::atomic<uint64_t> counter{0};
  static const char kChars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::seed_seq seq{static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()),
                    static_cast<uint64_t>(::getpid()), counter.fetch_add(1)};
  std::mt19937_64 gen(seq);
  std::string s(6, 'x');
  for (char& c : s) c = kChars[gen() % (sizeof kChars - 1)];
  return s;
}

// The permissions a plain create would give: 0666 under the umask.
mode_t default_mode() {
  const mode_t mask = ::umask(0);
  ::umask(mask);
  return 0666 & ~mask;
}

}  // namespace

std::string atomic_temp_prefix(const std::string& file_name) { return "." + file_name + ".tmp-"; }

AtomicFile::AtomicFile(std::string path, std::string what) : path_(std::move(path)), what_(std::move(what)) {
  RZ_CHECK(!path_.empty(), "cannot write a ", what_, " to an empty path");
  const std::string name = fs::path(path_).filename().string();
  RZ_CHECK(!name.empty() && name != "." && name != "..", "cannot write a ", what_, " to '", path_,
           "': not a file name");
  const std::string dir = folder_of(path_);
  label_ = what_ + " " + name;
  fault_point("create", label_);
  for (int attempt = 0; attempt < 100; ++attempt) {
    tmp_ = (fs::path(dir) / (atomic_temp_prefix(name) + random_suffix())).string();
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd_ >= 0) break;
    if (errno != EEXIST) fail("cannot create the temporary file '" + tmp_ + "': " + errno_text(errno));
  }
  if (fd_ < 0) fail("cannot create a unique temporary file in '" + dir + "'");
  // Created 0600 so nobody reads it half written; the final file gets the
  // permissions a plain create would have given.
  if (::fchmod(fd_, default_mode()) != 0) fail("chmod of '" + tmp_ + "' failed: " + errno_text(errno));
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !tmp_.empty()) ::unlink(tmp_.c_str());
}

void AtomicFile::fail(const std::string& step) const {
  RZ_THROW("cannot write ", what_, " '", path_, "': ", step);
}

void AtomicFile::write(const void* data, size_t n) {
  RZ_CHECK(fd_ >= 0 && !committed_, "AtomicFile: write after commit to '", path_, "'");
  fault_point("write", label_);
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd_, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) fail("write to '" + tmp_ + "' failed: " + errno_text(errno));
    p += w;
    n -= static_cast<size_t>(w);
    bytes_ += static_cast<int64_t>(w);
  }
}

void AtomicFile::commit() {
  RZ_CHECK(fd_ >= 0 && !committed_, "AtomicFile: commit twice to '", path_, "'");
  const std::string name = fs::path(path_).filename().string();
  fault_point("fsync", label_);
  if (::fsync(fd_) != 0) fail("fsync of '" + tmp_ + "' failed: " + errno_text(errno));
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) fail("close of '" + tmp_ + "' failed: " + errno_text(errno));
  fault_point("rename", label_);
  if (::rename(tmp_.c_str(), path_.c_str()) != 0)
    fail("rename from '" + tmp_ + "' failed: " + errno_text(errno));
  committed_ = true;
  fault_point("fsync the folder of", label_);
  // Make the rename itself durable; best effort (some filesystems refuse).
  const int dfd = ::open(folder_of(path_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void write_file_atomic(const std::string& path, std::string_view bytes, const std::string& what) {
  AtomicFile f(path, what);
  f.write(bytes);
  f.commit();
}

int remove_stale_temporaries(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return 0;
  int removed = 0;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    // ".<name>.tmp-XXXXXX": a leading dot, the marker, six suffix characters.
    const size_t mark = name.rfind(".tmp-");
    if (name.size() < 2 || name[0] != '.' || mark == std::string::npos || mark == 0 ||
        name.size() != mark + 5 + 6)
      continue;
    const std::string full = (fs::path(dir) / name).string();
    struct stat st {};
    if (::lstat(full.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (::unlink(full.c_str()) == 0) ++removed;
  }
  ::closedir(d);
  return removed;
}

}  // namespace rz
