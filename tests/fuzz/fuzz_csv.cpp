// Fuzzes the CSV reader (data/csv.h): parse_csv on the input, read_csv on the
// same bytes through a file, and the writer's round trip.
//
// Invariants of a successful parse: a header, every row as wide as the
// header, record lines increasing from the header on; read_csv gives the same
// table as parse_csv; and writing the table back with write_csv_row and
// parsing that again gives the same fields. Two records cannot survive a
// write-read round trip by the format's own rules and are left out of that
// check: a record that is one empty field (written as an empty line, which
// the reader skips) and a first field that begins with a byte order mark
// (written back at the start of the file, where the reader drops it).
#include <cstddef>
#include <cstdint>
#include <sstream>

#include "data/csv.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

bool round_trip_applies(const rz::CsvTable& t) {
  if (t.header.size() == 1) {
    if (t.header[0].empty()) return false;
    for (const rz::CsvRecord& r : t.rows)
      if (r.fields[0].empty()) return false;
  }
  return !t.header[0].starts_with("\xEF\xBB\xBF");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text = rz::fuzz::as_text(data, size);
  rz::CsvTable table;
  const bool parsed = rz::fuzz::rejects_only([&] { table = rz::parse_csv(text, "fuzz.csv"); });

  // The file reader must agree with the in-memory one, rejections included.
  const std::string path = rz::fuzz::write_scratch_file("fuzz.csv", data, size);
  rz::CsvTable from_file;
  const bool read = rz::fuzz::rejects_only([&] { from_file = rz::read_csv(path); });
  FUZZ_REQUIRE(read == parsed, "read_csv ", read ? "accepted" : "rejected", " what parse_csv ",
               parsed ? "accepted" : "rejected");
  if (!parsed) return 0;
  FUZZ_REQUIRE(from_file.header == table.header && from_file.rows.size() == table.rows.size(),
               "read_csv and parse_csv disagree");

  FUZZ_REQUIRE(!table.header.empty(), "no header fields");
  FUZZ_REQUIRE(table.header_line >= 1, "header line ", table.header_line);
  int64_t last_line = table.header_line;
  for (const rz::CsvRecord& r : table.rows) {
    FUZZ_REQUIRE(r.fields.size() == table.header.size(), "row at line ", r.line, " has ",
                 r.fields.size(), " fields, header ", table.header.size());
    FUZZ_REQUIRE(r.line > last_line, "row line ", r.line, " after line ", last_line);
    last_line = r.line;
    (void)rz::csv_excerpt(r.fields.back(), 16);
  }
  for (const std::string& name : table.header) (void)table.column(name);

  if (!round_trip_applies(table)) return 0;
  std::ostringstream os;
  rz::write_csv_row(os, table.header);
  for (const rz::CsvRecord& r : table.rows) rz::write_csv_row(os, r.fields);
  rz::CsvTable again;
  const bool reparsed =
      rz::fuzz::rejects_only([&] { again = rz::parse_csv(os.str(), "again.csv"); });
  FUZZ_REQUIRE(reparsed, "the written table does not parse again");
  FUZZ_REQUIRE(again.header == table.header, "header changed in the round trip");
  FUZZ_REQUIRE(again.rows.size() == table.rows.size(), "rows ", table.rows.size(), " became ",
               again.rows.size());
  for (size_t i = 0; i < again.rows.size(); ++i)
    FUZZ_REQUIRE(again.rows[i].fields == table.rows[i].fields, "row ", i,
                 " changed in the round trip");
  return 0;
}
