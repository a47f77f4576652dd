// AtomicFile: the one way ranzcr writes a file that must never be seen half
// written. The bytes go to a temporary file created exclusively (O_CREAT |
// O_EXCL | O_NOFOLLOW, a unique random name) in the destination's own folder,
// so a link planted at any predictable name is never followed or
// overwritten; commit() flushes it to disk (fsync), renames it over the
// destination and makes the rename durable (fsync of the folder). Destroyed
// without commit() (an exception, an early return), it removes its
// temporary. A process killed mid-write leaves a temporary named
// ".<destination name>.tmp-XXXXXX" behind; remove_stale_temporaries() clears
// those when the owner of the folder starts again.
//
// Fault points: every step of a write (create, each write, fsync, rename,
// folder fsync) passes through rz::fault_point(), so a test can stop the
// process at any of them (engine/fault.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace rz {

class AtomicFile {
 public:
  // Creates the temporary for `path`. `what` names the file in errors
  // ("checkpoint", "prep shard", ...).
  explicit AtomicFile(std::string path, std::string what = "file");
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t n);
  void write(std::string_view s) { write(s.data(), s.size()); }
  // fsync, close, rename over the destination, fsync of the folder.
  void commit();

  int64_t bytes() const { return bytes_; }
  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return tmp_; }

 private:
  [[noreturn]] void fail(const std::string& step) const;
  std::string path_, tmp_, what_, label_;  // label_: "<what> <file name>", for fault points
  int fd_ = -1;
  int64_t bytes_ = 0;
  bool committed_ = false;
};

// Writes `bytes` to `path` through an AtomicFile.
void write_file_atomic(const std::string& path, std::string_view bytes, const std::string& what = "file");

// The temporary-name prefix AtomicFile uses for `file_name` (".<name>.tmp-").
std::string atomic_temp_prefix(const std::string& file_name);

// Removes, in `dir`, the temporaries an interrupted AtomicFile left for any
// destination (names ".<x>.tmp-XXXXXX"); returns how many were removed. Only
// regular files are removed, never what a link points to. Call it only where
// this process owns the folder (a run folder, a prep cache being built).
int remove_stale_temporaries(const std::string& dir);

}  // namespace rz
