// AtomicFile, fault points and FirstError: the pieces every durable write and
// every parallel loop that can throw are built on.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "engine/atomic_file.h"
#include "engine/error.h"
#include "engine/fault.h"
#include "engine/parallel.h"
#include "tests/data/temp_dir.h"

namespace fs = std::filesystem;

namespace {
int count_entries(const fs::path& dir) {
  int n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++n;
  return n;
}
}  // namespace

TEST_CASE("atomic file: commit replaces the file; no commit leaves the old one and no temporary") {
  rz::test::TempDir t("atomic");
  const fs::path p = t.path() / "a.txt";
  rz::write_file_atomic(p.string(), "first");
  CHECK(rz::test::read_file(p) == "first");
  {
    rz::AtomicFile f(p.string(), "test file");
    f.write("second, never committed");
    CHECK(fs::exists(f.temp_path()));
    CHECK(fs::path(f.temp_path()).parent_path() == t.path());
  }
  CHECK(rz::test::read_file(p) == "first");
  CHECK(count_entries(t.path()) == 1);
  rz::write_file_atomic(p.string(), "third");
  CHECK(rz::test::read_file(p) == "third");
  struct stat st {};
  REQUIRE(::stat(p.c_str(), &st) == 0);
  const mode_t mask = ::umask(0);
  ::umask(mask);
  CHECK((st.st_mode & 0777) == (0666 & ~mask));
}

TEST_CASE("atomic file: a link planted at a temporary-looking name is never followed") {
  rz::test::TempDir t("atomic_link");
  const fs::path victim = t.path() / "victim.txt";
  { std::ofstream(victim) << "precious"; }
  // Links at the names older versions used ("<out>.tmp", "<out>.tmp.<pid>").
  fs::create_symlink(victim, t.path() / "out.csv.tmp");
  fs::create_symlink(victim, t.path() / ("out.csv.tmp." + std::to_string(::getpid())));
  rz::write_file_atomic((t.path() / "out.csv").string(), "new");
  CHECK(rz::test::read_file(victim) == "precious");
  CHECK(rz::test::read_file(t.path() / "out.csv") == "new");
  // A link at the destination itself is replaced by the file, not written through.
  fs::create_symlink(victim, t.path() / "dest.txt");
  rz::write_file_atomic((t.path() / "dest.txt").string(), "mine");
  CHECK(rz::test::read_file(victim) == "precious");
  CHECK_FALSE(fs::is_symlink(t.path() / "dest.txt"));
}

TEST_CASE("atomic file: errors name the file and the step") {
  rz::test::TempDir t("atomic_err");
  try {
    rz::write_file_atomic((t.path() / "no_such_dir" / "x.ckpt").string(), "x", "checkpoint");
    FAIL("expected an error");
  } catch (const rz::Error& e) {
    const std::string m = e.what();
    CHECK(m.find("checkpoint") != std::string::npos);
    CHECK(m.find("no_such_dir/x.ckpt") != std::string::npos);
    CHECK(m.find("temporary") != std::string::npos);
  }
}

TEST_CASE("atomic file: stale temporaries are removed, other files and links kept") {
  rz::test::TempDir t("atomic_stale");
  const fs::path keep = t.path() / "keep.txt";
  { std::ofstream(keep) << "k"; }
  { std::ofstream(t.path() / ".last.ckpt.tmp-Ab12Cd") << "stale"; }
  { std::ofstream(t.path() / ".best.safetensors.tmp-ZZZZZZ") << "stale"; }
  { std::ofstream(t.path() / ".hidden.tmp-short") << "not ours"; }
  fs::create_symlink(keep, t.path() / ".link.tmp-Qwerty");
  CHECK(rz::remove_stale_temporaries(t.path().string()) == 2);
  CHECK(fs::exists(keep));
  CHECK(fs::exists(t.path() / ".hidden.tmp-short"));
  CHECK(fs::is_symlink(t.path() / ".link.tmp-Qwerty"));
  CHECK(rz::test::read_file(keep) == "k");
}

TEST_CASE("fault points: the armed point ends the process as a kill would") {
  rz::test::TempDir t("fault");
  const fs::path p = t.path() / "f.bin";
  rz::write_file_atomic(p.string(), "old");
  // Count the points of one write, then stop a child at each of them.
  rz::arm_fault_after(INT64_MAX);
  rz::write_file_atomic(p.string(), "new");
  const int64_t points = rz::fault_points_passed();
  rz::arm_fault_after(0);
  CHECK(points == 5);  // create, write, fsync, rename, fsync of the folder
  for (int64_t k = 1; k <= points; ++k) {
    rz::write_file_atomic(p.string(), "old");
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      rz::arm_fault_after(k);
      rz::write_file_atomic(p.string(), "new");
      std::_Exit(0);
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == rz::kFaultExitCode);
    const std::string now = rz::test::read_file(p);
    CAPTURE(k);
    CHECK((now == "old" || now == "new"));       // never a mix, never empty
    CHECK(now == (k <= 4 ? "old" : "new"));  // point 4 comes just before the rename
  }
}

TEST_CASE("FirstError: the lowest failing index is rethrown after an OpenMP loop") {
  for (int rep = 0; rep < 5; ++rep) {
    rz::FirstError err;
    int ran = 0;
#pragma omp parallel for schedule(dynamic) reduction(+ : ran)
    for (int64_t i = 0; i < 64; ++i)
      err.run(i, [&] {
        ++ran;
        if (i == 40 || i == 17 || i == 63) throw rz::Error("item " + std::to_string(i));
      });
    CHECK(ran == 64);
    try {
      err.rethrow();
      FAIL("expected the error");
    } catch (const rz::Error& e) {
      CHECK(std::string(e.what()) == "item 17");
    }
  }
  rz::FirstError none;
  none.run(0, [] {});
  CHECK_NOTHROW(none.rethrow());
}
