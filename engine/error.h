// rz::Error: the one exception type of the library. It carries what went wrong,
// where (file:line of the check), and the offending value where there is one.
// Library code throws; only the CLI turns errors into a message and an exit code.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace rz {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
[[noreturn]] void throw_error(const char* file, int line, const std::string& msg,
                              const char* condition = nullptr);

template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace rz

// RZ_CHECK(cond, "message parts", value, ...): throws rz::Error with the
// message first (what the user reads), then the source location and the
// failed condition: "<message> [engine/ops.cpp:42: x.dim() == 4]".
#define RZ_CHECK(cond, ...)                                                                \
  do {                                                                                     \
    if (!(cond))                                                                           \
      ::rz::detail::throw_error(__FILE__, __LINE__, ::rz::detail::concat(__VA_ARGS__), #cond); \
  } while (0)

#define RZ_THROW(...) ::rz::detail::throw_error(__FILE__, __LINE__, ::rz::detail::concat(__VA_ARGS__))
