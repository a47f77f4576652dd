#include "data/paths.h"

#include <filesystem>

#include "data/csv.h"
#include "engine/error.h"

namespace rz::data {

namespace {

bool uid_char(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '.' ||
         c == '_' || c == '-';
}

// A byte as the message shows it: printable ASCII as is, others as \xNN.
std::string show_byte(char c) {
  const auto u = static_cast<unsigned char>(c);
  if (u >= 0x20 && u < 0x7f) return std::string("'") + c + "'";
  static const char kHex[] = "0123456789abcdef";
  return std::string("byte \\x") + kHex[u >> 4] + kHex[u & 15];
}

// A value for a message: shortened, with control bytes made visible.
std::string show_value(std::string_view v) {
  std::string out;
  for (char c : csv_excerpt(v, 80)) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      static const char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

std::string uid_problem(std::string_view name) {
  if (name.empty()) return "is empty";
  if (name.size() > kMaxNameLength)
    return "is " + std::to_string(name.size()) + " characters long (at most " +
           std::to_string(kMaxNameLength) + ")";
  if (name.front() == '.') return "starts with '.'";
  if (name.find("..") != std::string_view::npos) return "contains \"..\"";
  for (size_t i = 0; i < name.size(); ++i)
    if (!uid_char(name[i]))
      return "contains " + show_byte(name[i]) + " at character " + std::to_string(i + 1) +
             " (a UID may hold only letters, digits, '.', '_' and '-')";
  return {};
}

void check_uid(std::string_view name, const std::string& where) {
  const std::string problem = uid_problem(name);
  if (!problem.empty())
    RZ_THROW(where, ": StudyInstanceUID '", show_value(name), "' ", problem,
             " (it names a file inside the data folder)");
}

std::string file_name_problem(std::string_view name) {
  if (name.empty()) return "is empty";
  if (name == "." || name == "..") return "is a reference to a folder";
  if (name.size() > kMaxNameLength)
    return "is " + std::to_string(name.size()) + " characters long (at most " +
           std::to_string(kMaxNameLength) + ")";
  for (size_t i = 0; i < name.size(); ++i) {
    if (name[i] == '/' || name[i] == '\\') return "contains a path separator " + show_byte(name[i]);
    if (name[i] == '\0') return "contains a NUL byte";
  }
  return {};
}

std::string path_in_folder(const std::string& dir, std::string_view name, std::string_view suffix,
                           std::string_view what) {
  std::string file(name);
  file += suffix;
  const std::string problem = file_name_problem(file);
  if (!problem.empty())
    RZ_THROW("refusing the ", what, " name '", show_value(file), "' in '", dir, "': it ", problem,
             " (a name read from a data file must stay inside its folder)");
  return (std::filesystem::path(dir) / file).string();
}

}  // namespace rz::data
