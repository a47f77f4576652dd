// json_depth: the nesting bound applied to JSON read from files.
#include <doctest/doctest.h>

#include <string>

#include "engine/error.h"
#include "engine/json_depth.h"
#include "engine/safetensors.h"
#include "tests/data/temp_dir.h"

TEST_CASE("json depth: counts arrays and objects, not brackets inside strings") {
  CHECK(rz::json_depth("") == 0);
  CHECK(rz::json_depth("1") == 0);
  CHECK(rz::json_depth("{}") == 1);
  CHECK(rz::json_depth(R"({"a":[1,[2,{"b":3}]]})") == 4);
  CHECK(rz::json_depth(R"({"a":"[[[[{{{{"})") == 1);
  CHECK(rz::json_depth(R"({"a":"\"[[[["})") == 1);  // an escaped quote does not end the string
  CHECK(rz::json_depth(R"(["\\", [[]]])") == 3);     // an escaped backslash does
  CHECK(rz::json_depth(std::string(100000, '[')) == 100000);
}

TEST_CASE("json depth: a safetensors header nested 40000 levels deep is refused, not parsed") {
  rz::test::TempDir t("json_depth");
  std::string header = "{\"__metadata__\":{\"x\":\"y\"},\"t\":{\"dtype\":\"F32\",\"shape\":" +
                       std::string(40000, '[') + std::string(40000, ']') +
                       ",\"data_offsets\":[0,0]}}";
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[static_cast<size_t>(i)] = static_cast<char>(header.size() >> (8 * i));
  const std::string path = t.write("deep.safetensors", bytes + header);
  const std::string msg = rz::test::error_message([&] { rz::load_safetensors(path); });
  CHECK(msg.find("deep.safetensors") != std::string::npos);
  CHECK(msg.find("nests deeper than 64 levels") != std::string::npos);
}
