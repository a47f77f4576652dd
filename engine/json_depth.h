// Nesting depth of JSON text read from files, checked before parsing. The
// parser itself is iterative, but copying, comparing or printing a parsed
// value recurses once per level, so a few kilobytes of "[[[[..." from a
// damaged or hostile file could exhaust the stack. Nothing ranzcr reads is
// nested more than a few levels; kMaxJsonDepth leaves ample room.
#pragma once

#include <cstddef>
#include <string_view>

namespace rz {

inline constexpr int kMaxJsonDepth = 64;

// The deepest nesting of arrays and objects in `text` (brackets inside
// strings do not count; the text need not be valid JSON).
inline int json_depth(std::string_view text) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > deepest) deepest = depth;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

}  // namespace rz
