#include "data/csv.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <unordered_map>

#include "engine/atomic_file.h"

#include "engine/error.h"

namespace rz {

namespace {

bool is_break(char c) {
  return c == '\n' || c == '\r';
}

// Length of the line break at text[i] ("\r\n" counts as one break), 0 if none.
size_t break_len(std::string_view text, size_t i) {
  if (i >= text.size()) return 0;
  if (text[i] == '\n') return 1;
  if (text[i] == '\r') return (i + 1 < text.size() && text[i + 1] == '\n') ? 2 : 1;
  return 0;
}

}  // namespace

int CsvTable::column(std::string_view name) const {
  for (size_t c = 0; c < header.size(); ++c)
    if (header[c] == name) return static_cast<int>(c);
  return -1;
}

std::string csv_excerpt(std::string_view value, size_t max_chars) {
  size_t cut = value.size();
  if (cut > max_chars) {
    cut = max_chars;
    // Do not split a UTF-8 sequence: back up over continuation bytes.
    while (cut > 0 && (static_cast<unsigned char>(value[cut]) & 0xC0) == 0x80) --cut;
  }
  std::string out;
  out.reserve(cut + 24);
  for (size_t i = 0; i < cut; ++i) {
    if (value[i] == '\n') {
      out += "\\n";
    } else if (value[i] == '\r') {
      out += "\\r";
    } else {
      out += value[i];
    }
  }
  if (cut < value.size()) out += "... (" + std::to_string(value.size()) + " chars)";
  return out;
}

CsvTable parse_csv(std::string_view text, std::string path_for_errors) {
  CsvTable table;
  table.path = std::move(path_for_errors);
  const std::string& path = table.path;
  const size_t n = text.size();
  size_t i = 0;
  if (text.substr(0, 3) == "\xEF\xBB\xBF") i = 3;  // UTF-8 byte order mark
  int64_t line = 1;

  std::vector<CsvRecord> records;
  while (i < n) {
    if (const size_t b = break_len(text, i)) {  // an empty line
      i += b;
      ++line;
      continue;
    }
    CsvRecord rec;
    rec.line = line;
    const size_t rec_start = i;
    for (;;) {
      std::string field;
      if (i < n && text[i] == '"') {
        const size_t field_start = i;
        const int64_t field_line = line;
        ++i;
        for (;;) {
          if (i >= n)
            RZ_THROW(path, ":", field_line, ": unterminated quoted field ", rec.fields.size() + 1,
                     " (no closing quote before the end of the file): ",
                     csv_excerpt(text.substr(field_start)));
          const char c = text[i];
          if (c == '"') {
            if (i + 1 < n && text[i + 1] == '"') {
              field += '"';
              i += 2;
              continue;
            }
            ++i;
            break;
          }
          if (const size_t b = break_len(text, i)) {  // kept verbatim, counted
            field.append(text.substr(i, b));
            i += b;
            ++line;
            continue;
          }
          field += c;
          ++i;
        }
        if (i < n && text[i] != ',' && !is_break(text[i]))
          RZ_THROW(path, ":", line, ": unexpected character '", text[i],
                   "' after the closing quote of field ", rec.fields.size() + 1, ": ",
                   csv_excerpt(text.substr(field_start, i + 1 - field_start)));
      } else {
        const size_t field_start = i;
        while (i < n && text[i] != ',' && !is_break(text[i])) {
          if (text[i] == '"') {
            size_t end = i;
            while (end < n && text[end] != ',' && !is_break(text[end])) ++end;
            RZ_THROW(path, ":", line, ": '\"' inside unquoted field ", rec.fields.size() + 1,
                     " (quote the whole field and double the quote): ",
                     csv_excerpt(text.substr(field_start, end - field_start)));
          }
          ++i;
        }
        field.assign(text.substr(field_start, i - field_start));
      }
      rec.fields.push_back(std::move(field));
      if (i < n && text[i] == ',') {
        ++i;
        continue;
      }
      break;  // end of text or a line break
    }
    const size_t rec_end = i;
    if (const size_t b = break_len(text, i)) {
      i += b;
      ++line;
    }
    if (!records.empty() && rec.fields.size() != records.front().fields.size())
      RZ_THROW(path, ":", rec.line, ": expected ", records.front().fields.size(),
               " fields (as in the header), found ", rec.fields.size(), ": ",
               csv_excerpt(text.substr(rec_start, rec_end - rec_start)));
    records.push_back(std::move(rec));
  }

  if (records.empty()) RZ_THROW(path, ": empty file: no header line");
  table.header_line = records.front().line;
  table.header = std::move(records.front().fields);
  // Two columns of one name: a lookup by name would silently pick one of them.
  std::unordered_map<std::string_view, size_t> seen;
  for (size_t c = 0; c < table.header.size(); ++c) {
    const auto [it, inserted] = seen.emplace(table.header[c], c);
    if (!inserted)
      RZ_THROW(path, ":", table.header_line, ": duplicate column name '",
               csv_excerpt(table.header[c]), "' in columns ", it->second + 1, " and ", c + 1);
  }
  table.rows.assign(std::make_move_iterator(records.begin() + 1),
                    std::make_move_iterator(records.end()));
  return table;
}

CsvTable read_csv(const std::string& path) {
  // O_NONBLOCK: a FIFO planted at the path must not block the open; only
  // regular files are read (a folder, a device or a FIFO is an error).
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) RZ_THROW(path, ": cannot open for reading: ", std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) RZ_THROW(path, ": cannot stat: ", std::strerror(errno));
  if (!S_ISREG(st.st_mode)) RZ_THROW(path, ": cannot read: not a regular file");
  std::string text;
  text.reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) RZ_THROW(path, ": read error: ", std::strerror(errno));
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  return parse_csv(text, path);
}

std::string csv_escape(std::string_view field) {
  const bool needs_quotes = field.find_first_of(",\"\r\n") != std::string_view::npos ||
                            (!field.empty() && (field.front() == ' ' || field.back() == ' '));
  if (!needs_quotes) return std::string(field);
  std::string out;
  out.reserve(field.size() + 2);
  out += '"';
  for (const char c : field) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

void write_csv_row(std::ostream& os, const std::vector<std::string>& fields) {
  for (size_t c = 0; c < fields.size(); ++c) {
    if (c) os << ',';
    os << csv_escape(fields[c]);
  }
  os << '\n';
}

void write_text_file_atomic(const std::string& path, std::string_view text) {
  write_file_atomic(path, text);
}

}  // namespace rz
