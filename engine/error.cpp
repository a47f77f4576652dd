#include "engine/error.h"

#include <cstring>

namespace rz::detail {

void throw_error(const char* file, int line, const std::string& msg, const char* condition) {
  // Keep the path short: from the project's top-level folder on.
  const char* short_file = file;
  for (const char* top : {"engine/", "kernels/", "models/", "data/", "train/", "tests/"}) {
    if (const char* p = std::strstr(file, top)) {
      short_file = p;
      break;
    }
  }
  std::string where = std::string(short_file) + ":" + std::to_string(line);
  if (condition) where += ": " + std::string(condition);
  throw Error(msg + " [" + where + "]");
}

}  // namespace rz::detail
