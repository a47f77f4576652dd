// Names read from data files, and the one way they become paths.
//
// A StudyInstanceUID from train.csv, an annotations CSV or a test listing is
// used as a file name (train/<uid>.jpg, a cache entry, a submission row). A
// name such as "../../x", "/etc/passwd" or "a/b" would read or write outside
// the data folder, so every such name is checked where it is read, and every
// join of a name from a file to its folder goes through path_in_folder().
//
// What a UID may be: real ones are dotted digits
// ("1.2.826.0.1.3680043.8.498.46923145579096002617106567297135160932"); we
// accept a little more: ASCII letters, digits, '.', '_' and '-', 1..255
// characters, not starting with '.' and without "..". Everything else (path
// separators, spaces, NUL and other control bytes, non-ASCII) is refused.
//
// Symbolic links inside the folder are not resolved: a link an
// administrator placed in the data folder is followed like any file.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace rz::data {

inline constexpr size_t kMaxNameLength = 255;  // a file name's limit on every common filesystem

// Why `name` cannot be a UID ("contains '/'", "is empty", ...), or "" if it can.
std::string uid_problem(std::string_view name);
inline bool is_valid_uid(std::string_view name) {
  return uid_problem(name).empty();
}

// Throws rz::Error "<where>: StudyInstanceUID '<name>' <problem>" unless
// is_valid_uid(name). `where` names the source: "train.csv:17".
void check_uid(std::string_view name, const std::string& where);

// Why `name` cannot be one file name inside a folder, or "" if it can:
// empty, ".", "..", a path separator ('/' or '\\'), a NUL byte, longer than
// kMaxNameLength. Looser than uid_problem (any other byte is allowed): it is
// the containment rule, not the UID syntax.
std::string file_name_problem(std::string_view name);

// `dir` joined with the single file name `name` (+ `suffix`, e.g. ".jpg").
// Throws rz::Error naming the folder and the name when name + suffix is not
// one plain file name inside `dir` (see file_name_problem): an absolute path,
// "..", "a/b" never leave the folder. `what` says what the name is, for the
// message ("image", "cache shard").
std::string path_in_folder(const std::string& dir, std::string_view name,
                           std::string_view suffix = {}, std::string_view what = "file");

}  // namespace rz::data
