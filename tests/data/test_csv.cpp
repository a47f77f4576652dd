#include <doctest/doctest.h>

#include <sstream>

#include "data/csv.h"
#include "tests/data/temp_dir.h"

using rz::test::error_message;

namespace {

bool contains(const std::string& s, std::string_view part) {
  return s.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("data: csv reads a plain table with line numbers") {
  const rz::CsvTable t = rz::parse_csv("a,b,c\n1,2,3\n4,,6\n", "t.csv");
  CHECK(t.path == "t.csv");
  CHECK(t.header == std::vector<std::string>{"a", "b", "c"});
  REQUIRE(t.rows.size() == 2);
  CHECK(t.rows[0].line == 2);
  CHECK(t.rows[0].fields == std::vector<std::string>{"1", "2", "3"});
  CHECK(t.rows[1].line == 3);
  CHECK(t.rows[1].fields == std::vector<std::string>{"4", "", "6"});
  CHECK(t.column("b") == 1);
  CHECK(t.column("z") == -1);
}

TEST_CASE("data: csv quoted fields hold commas, doubled quotes and empty strings") {
  const rz::CsvTable t = rz::parse_csv(
      "x,y,z\n\"a,b\",\"he said \"\"hi\"\"\",\"\"\n\"\"\"\",plain,\" sp \"\n", "q.csv");
  REQUIRE(t.rows.size() == 2);
  CHECK(t.rows[0].fields == std::vector<std::string>{"a,b", "he said \"hi\"", ""});
  CHECK(t.rows[1].fields == std::vector<std::string>{"\"", "plain", " sp "});
}

TEST_CASE("data: csv embedded newlines keep later line numbers right") {
  // Line 1 header; record 1 spans lines 2-4; record 2 is on line 5; a CRLF
  // inside quotes counts as one line; record 3 starts on line 7.
  const std::string text =
      "id,note\n"
      "1,\"first\nsecond\nthird\"\n"
      "2,x\n"
      "3,\"a\r\nb\"\n";
  const rz::CsvTable t = rz::parse_csv(text, "n.csv");
  REQUIRE(t.rows.size() == 3);
  CHECK(t.rows[0].line == 2);
  CHECK(t.rows[0].fields[1] == "first\nsecond\nthird");
  CHECK(t.rows[1].line == 5);
  CHECK(t.rows[2].line == 6);
  CHECK(t.rows[2].fields[1] == "a\r\nb");
  // An error after them names the right line.
  const std::string msg = error_message([&] { rz::parse_csv(text + "4,y,extra\n", "n.csv"); });
  CHECK(contains(msg, "n.csv:8: expected 2 fields"));
  CHECK(contains(msg, "4,y,extra"));
}

TEST_CASE("data: csv CRLF, lone CR, BOM, empty lines and a missing final newline") {
  const rz::CsvTable crlf = rz::parse_csv("a,b\r\n1,2\r\n3,4", "crlf.csv");
  REQUIRE(crlf.rows.size() == 2);
  CHECK(crlf.rows[0].fields == std::vector<std::string>{"1", "2"});
  CHECK(crlf.rows[1].fields == std::vector<std::string>{"3", "4"});
  CHECK(crlf.rows[1].line == 3);

  const rz::CsvTable cr = rz::parse_csv("a,b\r1,2\r", "cr.csv");
  REQUIRE(cr.rows.size() == 1);
  CHECK(cr.rows[0].fields[1] == "2");

  const rz::CsvTable bom = rz::parse_csv("\xEF\xBB\xBFStudyInstanceUID,b\nu,1\n", "bom.csv");
  CHECK(bom.header[0] == "StudyInstanceUID");

  const rz::CsvTable blank = rz::parse_csv("\na,b\n\n1,2\r\n\r\n3,4\n\n", "blank.csv");
  CHECK(blank.header_line == 2);
  REQUIRE(blank.rows.size() == 2);
  CHECK(blank.rows[0].line == 4);
  CHECK(blank.rows[1].line == 6);
}

TEST_CASE("data: csv errors name the file, the line and the value") {
  std::string msg = error_message([] { rz::parse_csv("a,b,c\n1,2,3\n4,5\n", "count.csv"); });
  CHECK(contains(msg, "count.csv:3:"));
  CHECK(contains(msg, "expected 3 fields"));
  CHECK(contains(msg, "found 2"));
  CHECK(contains(msg, "4,5"));

  msg = error_message([] { rz::parse_csv("a,b\n1,2\n3,\"open\nand never closed\n", "open.csv"); });
  CHECK(contains(msg, "open.csv:3:"));
  CHECK(contains(msg, "unterminated quoted field"));
  CHECK(contains(msg, "\"open\\nand never closed"));

  msg = error_message([] { rz::parse_csv("a,b\n\"x\"y,2\n", "after.csv"); });
  CHECK(contains(msg, "after.csv:2:"));
  CHECK(contains(msg, "after the closing quote"));
  CHECK(contains(msg, "\"x\"y"));

  msg = error_message([] { rz::parse_csv("a,b\n1,ab\"c\n", "stray.csv"); });
  CHECK(contains(msg, "stray.csv:2:"));
  CHECK(contains(msg, "ab\"c"));

  msg = error_message([] { rz::parse_csv("", "empty.csv"); });
  CHECK(contains(msg, "empty.csv"));
  CHECK(contains(msg, "empty file"));
  CHECK(contains(error_message([] { rz::parse_csv("\xEF\xBB\xBF\r\n\n", "bomonly.csv"); }),
                 "bomonly.csv: empty file"));
}

TEST_CASE("data: csv excerpt shortens long values and shows line breaks") {
  CHECK(rz::csv_excerpt("a\nb\rc") == "a\\nb\\rc");
  const std::string long_value(500, 'x');
  const std::string e = rz::csv_excerpt(long_value, 20);
  CHECK(e == std::string(20, 'x') + "... (500 chars)");
  // Never cuts a UTF-8 sequence in half.
  CHECK(rz::csv_excerpt("ab\xC3\xA9z", 3) == "ab... (5 chars)");
}

TEST_CASE("data: csv writer quotes when needed and reads back") {
  CHECK(rz::csv_escape("plain") == "plain");
  CHECK(rz::csv_escape("") == "");
  CHECK(rz::csv_escape("a,b") == "\"a,b\"");
  CHECK(rz::csv_escape("say \"x\"") == "\"say \"\"x\"\"\"");
  CHECK(rz::csv_escape("two\nlines") == "\"two\nlines\"");
  CHECK(rz::csv_escape(" padded") == "\" padded\"");

  const std::vector<std::string> header{"k", "v"};
  const std::vector<std::vector<std::string>> rows{
      {"1", "a,b"}, {"2", "q\"uote"}, {"3", "multi\r\nline"}, {"4", ""}};
  std::ostringstream os;
  rz::write_csv_row(os, header);
  for (const auto& r : rows) rz::write_csv_row(os, r);
  const rz::CsvTable t = rz::parse_csv(os.str(), "roundtrip.csv");
  CHECK(t.header == header);
  REQUIRE(t.rows.size() == rows.size());
  for (size_t i = 0; i < rows.size(); ++i) CHECK(t.rows[i].fields == rows[i]);
  CHECK(t.rows[3].line == 6);  // the quoted CRLF took a line
}

TEST_CASE("data: csv files are read from disk and written atomically") {
  const rz::test::TempDir dir("csv");
  const std::string path = dir.write("in.csv",
                                     "\xEF\xBB\xBF"
                                     "a,b\r\n1,\"x,y\"\r\n");
  const rz::CsvTable t = rz::read_csv(path);
  CHECK(t.path == path);
  REQUIRE(t.rows.size() == 1);
  CHECK(t.rows[0].fields[1] == "x,y");

  const std::string missing = (dir.path() / "missing.csv").string();
  const std::string msg = error_message([&] { rz::read_csv(missing); });
  CHECK(contains(msg, missing));
  CHECK(contains(msg, "cannot open"));

  const std::string out = (dir.path() / "out.csv").string();
  rz::write_text_file_atomic(out, "k,v\n1,2\n");
  rz::write_text_file_atomic(out, "k,v\n3,4\n");  // replaces
  CHECK(rz::read_csv(out).rows[0].fields[0] == "3");
  CHECK(!std::filesystem::exists(out + ".tmp"));
  CHECK(contains(error_message([&] {
                   rz::write_text_file_atomic((dir.path() / "no/such/dir/x.csv").string(), "x");
                 }),
                 "no/such/dir/x.csv"));
}
