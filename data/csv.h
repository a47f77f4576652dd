// CSV reading and writing (RFC 4180), the base of the RANZCR formats.
//
// Reader rules:
//   - fields are separated by ',' and records by "\r\n", "\n" or a lone "\r";
//   - a field that starts with '"' is quoted: it may hold ',', line breaks
//     (kept verbatim) and '""' for one '"'; after the closing quote only ',',
//     a line break or the end of the text may follow;
//   - a '"' inside an unquoted field is an error (RFC 4180 forbids it, and it
//     is almost always a broken quote that would silently shift columns);
//   - a UTF-8 byte order mark at the very start is skipped;
//   - empty lines (no characters at all) are skipped, a final line break is
//     optional;
//   - the first record is the header; its names must be unique (a column name
//     twice is an error naming both positions: a lookup by name would
//     silently pick one of them); every other record must have exactly as
//     many fields as the header.
// Every record remembers the 1-based physical line where it starts, so errors
// further up ("train.csv:1234: label 'x' ...") point at the right line even
// after quoted fields that span several lines.
// Errors throw rz::Error "<path>:<line>: <what>: <offending text>".
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace rz {

struct CsvRecord {
  int64_t line = 0;                 // 1-based physical line where the record starts
  std::vector<std::string> fields;  // unquoted field values
};

struct CsvTable {
  std::string path;         // for error messages
  int64_t header_line = 1;  // 1-based line of the header record
  std::vector<std::string> header;
  std::vector<CsvRecord> rows;  // data records (header excluded)

  // Index of the column named `name` in the header, or -1.
  int column(std::string_view name) const;
};

// Parses `text` (the whole file contents). `path_for_errors` names the source
// in error messages.
CsvTable parse_csv(std::string_view text, std::string path_for_errors);

// Reads and parses the file at `path`; throws when it cannot be read or is
// not a regular file (a folder, a FIFO, a device).
CsvTable read_csv(const std::string& path);

// Shortens `value` for an error message: at most `max_chars` characters
// (then "..." and the total length), line breaks shown as \n / \r.
std::string csv_excerpt(std::string_view value, size_t max_chars = 80);

// ---- writing ----

// The field as it must appear in a CSV file: quoted (with '"' doubled) when it
// contains ',', '"', '\r' or '\n', or starts or ends with a space; else as is.
std::string csv_escape(std::string_view field);

// Writes one record, fields escaped, terminated by "\n".
void write_csv_row(std::ostream& os, const std::vector<std::string>& fields);

// Writes `text` to `path` through a temporary file in the same folder that is
// then renamed, so a crash never leaves a half-written file. Throws on failure.
void write_text_file_atomic(const std::string& path, std::string_view text);

}  // namespace rz
