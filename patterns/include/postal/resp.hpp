// postal::resp: the Redis protocol (RESP2). An incremental parser that takes bytes as they arrive (frames
// split across reads, several frames in one read) and gives whole values, with limits that make bad input a
// protocol error instead of a crash or an unbounded allocation; a request parser for servers (arrays of
// bulk strings, and inline commands as redis-cli and telnet send them); and the encoder for both directions.
//
// Why not hiredis: Debian bookworm ships hiredis 0.14.1, whose reader has no limit on a multi-bulk's element
// count or a bulk string's length (it allocates what the header announces, and buffers any bulk whole), and
// it parses no inline commands. Limits are the point here, so postal parses RESP itself, and fuzzes it
// (tests/fuzz/resp_parser_fuzz.cpp compares every chunking of the input with parsing it whole).
// Standard library only; the parser and the encoder are compiled in the patterns library (src/resp.cpp).
#pragma once

#include <postal/expected.hpp>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <iosfwd>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace postal::resp {

/// One RESP2 value.
struct value {
  enum class kind_type { simple_string, error, integer, bulk_string, null, array, null_array };
  kind_type kind = kind_type::null;
  std::string text;           // simple_string, error, bulk_string
  std::int64_t integer = 0;   // integer
  std::vector<value> elements;  // array

  static value simple(std::string s) { return {kind_type::simple_string, std::move(s), 0, {}}; }
  static value error_reply(std::string s) { return {kind_type::error, std::move(s), 0, {}}; }
  static value number(std::int64_t n) { return {kind_type::integer, {}, n, {}}; }
  static value bulk(std::string s) { return {kind_type::bulk_string, std::move(s), 0, {}}; }
  static value nil() { return {}; }
  static value array(std::vector<value> items) { return {kind_type::array, {}, 0, std::move(items)}; }

  bool is_error() const noexcept { return kind == kind_type::error; }
  bool is_null() const noexcept { return kind == kind_type::null || kind == kind_type::null_array; }
  friend bool operator==(const value&, const value&) = default;
};

/// What a parser accepts. Anything beyond is a protocol error (the connection should be closed).
struct limits {
  std::size_t max_bulk = 512 * 1024 * 1024;  // bytes in one bulk string (Redis's proto-max-bulk-len)
  std::size_t max_elements = 1024 * 1024;    // elements in one array (Redis's limit for a request)
  std::size_t max_depth = 16;                // arrays nested in arrays
  std::size_t max_line = 64 * 1024;          // a header, simple string, error, integer or inline command line
  std::size_t max_value = 1024 * 1024 * 1024;  // bytes of one whole value (Redis's client-query-buffer-limit)
};

/// Why the input is not RESP (or exceeds the limits). After one, the parser stays failed.
struct protocol_error {
  std::string reason;
  friend bool operator==(const protocol_error&, const protocol_error&) = default;
};
// Printing, as every postal error.
inline std::string to_string(const protocol_error& error) { return "RESP protocol error: " + error.reason; }
inline std::ostream& operator<<(std::ostream& out, const protocol_error& error) { return out << to_string(error); }

/// Parses a stream of RESP2 values incrementally. feed() the bytes as they arrive; next() gives the next
/// whole value, nothing while more bytes are needed, or a protocol_error. Work done on a partial value is
/// kept (a large array arriving in many reads is parsed once). Memory stays within the limits: a declared
/// length or count is checked before anything is allocated for it.
class parser {
 public:
  explicit parser(limits limits = {}) : limits_(limits) {}

  void feed(std::string_view bytes) { buffer_.append(bytes); }
  /// Bytes received and not yet part of a returned value.
  std::size_t buffered() const noexcept { return buffer_.size() - start_; }
  /// A fast path for servers: when no value is partly parsed and the buffered bytes begin with a whole,
  /// non-empty array of bulk strings within the limits, takes it and gives its strings without building
  /// values. Otherwise gives nothing and consumes nothing: next() then parses (or rejects) the input as
  /// usual, so both paths accept exactly the same requests.
  std::optional<std::vector<std::string>> take_bulk_array();

  /// The next byte received and not yet parsed, if any.
  std::optional<char> peek() const noexcept {
    if (start_ == buffer_.size()) return std::nullopt;
    return buffer_[start_];
  }
  /// Between values (no value partly parsed), hands back the bytes received after the last value.
  std::string take_buffered();

  /// The next whole value, nothing while more bytes are needed, or a protocol_error (given again by every
  /// later call). One call parses the buffered bytes until a value is whole, not byte by byte.
  expected<std::optional<value>, protocol_error> next();

 private:
  struct partial_array {
    std::size_t expected;
    std::vector<value> elements;
  };

  expected<std::optional<value>, protocol_error> fail(protocol_error error);
  // The line starting at start_ without its CRLF, or nothing if it has not fully arrived.
  expected<std::optional<std::string_view>, protocol_error> line();
  // Parses one scalar or array header at start_. An array header pushes a partial array and, when it has
  // elements, asks for the next value (returns a value only for empty and null arrays).
  expected<std::optional<value>, protocol_error> parse_one();
  // Drops consumed bytes once they are the larger part of the buffer (amortised O(1) per byte).
  void compact();

  limits limits_;
  std::string buffer_;
  std::size_t start_ = 0;
  std::optional<std::size_t> pending_bulk_;
  std::size_t value_bytes_ = 0;  // bytes of the value being parsed, consumed before this parse_one() call
  std::vector<partial_array> stack_;
  std::optional<protocol_error> failed_;
};

/// Parses client requests for a server: each request is an array of bulk strings (what Redis clients send)
/// or an inline command (a line of words separated by spaces, as typed into telnet). Gives the arguments.
class request_parser {
 public:
  explicit request_parser(limits limits = {}) : values_(limits), limits_(limits) {}

  void feed(std::string_view bytes);

  /// The next request's arguments, nothing while more bytes are needed, or a protocol error.
  expected<std::optional<std::vector<std::string>>, protocol_error> next();

 private:
  enum class mode_type { unknown, resp, inline_ };

  // What follows a RESP request may be an inline command: then it is handed over (RESP requests follow
  // each other without copying).
  void after_request();
  expected<std::optional<std::vector<std::string>>, protocol_error> next_inline();

  parser values_;
  limits limits_;
  std::string inline_;
  mode_type mode_ = mode_type::unknown;
};

// --- encoding ------------------------------------------------------------------------------------------
// Each call appends one whole item to `out`; a reply of many elements is an array header and one call per
// element (an out-of-line call each, small next to the append it does).

/// The decimal digits of `n`, as RESP writes lengths and integers.
void append_integer_text(std::string& out, std::int64_t n);

/// A command as clients send it: an array of bulk strings.
void append_command(std::string& out, std::span<const std::string_view> arguments);
void append_command(std::string& out, std::initializer_list<std::string_view> arguments);

/// Replies, as servers send them. Simple strings and errors must not contain CR or LF (they are replaced
/// by spaces).
void append_simple(std::string& out, std::string_view text, char type = '+');
void append_error(std::string& out, std::string_view text);
void append_integer(std::string& out, std::int64_t n);
void append_bulk(std::string& out, std::string_view text);
void append_null(std::string& out);
void append_array_header(std::string& out, std::size_t count);

/// Any value, as a server would send it.
void append_value(std::string& out, const value& v);

}  // namespace postal::resp
