// postal::resp: the Redis protocol (RESP2). An incremental parser that takes bytes as they arrive (frames
// split across reads, several frames in one read) and gives whole values, with limits that make bad input a
// protocol error instead of a crash or an unbounded allocation; a request parser for servers (arrays of
// bulk strings, and inline commands as redis-cli and telnet send them); and the encoder for both directions.
//
// Why not hiredis: Debian bookworm ships hiredis 0.14.1, whose reader has no limit on a multi-bulk's element
// count or a bulk string's length (it allocates what the header announces, and buffers any bulk whole), and
// it parses no inline commands. Limits are the point here, so postal parses RESP itself, and fuzzes it
// (tests/fuzz/resp_parser_fuzz.cpp compares every chunking of the input with parsing it whole).
// Standard library only.
#pragma once

#include <postal/expected.hpp>

#include <charconv>
#include <cstddef>
#include <cstdint>
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
  std::optional<std::vector<std::string>> take_bulk_array() {
    if (failed_ || !stack_.empty() || pending_bulk_) return std::nullopt;
    const std::string_view rest = std::string_view(buffer_).substr(start_);
    std::size_t at = 0;
    auto header = [&](char type) -> std::optional<std::int64_t> {
      if (at >= rest.size() || rest[at] != type) return std::nullopt;
      const std::size_t end = rest.find("\r\n", at);
      if (end == std::string_view::npos || end - at > limits_.max_line) return std::nullopt;
      auto number = integer_of(rest.substr(at + 1, end - at - 1));
      at = end + 2;
      return number;
    };
    const auto count = header('*');
    if (!count || *count < 1 || static_cast<std::uint64_t>(*count) > limits_.max_elements) return std::nullopt;
    std::vector<std::string> strings;
    strings.reserve(static_cast<std::size_t>(*count));
    for (std::int64_t i = 0; i < *count; ++i) {
      const auto length = header('$');
      if (!length || *length < 0 || static_cast<std::uint64_t>(*length) > limits_.max_bulk) return std::nullopt;
      const auto size = static_cast<std::size_t>(*length);
      if (rest.size() - at < size + 2 || rest.compare(at + size, 2, "\r\n") != 0) return std::nullopt;
      strings.emplace_back(rest.substr(at, size));
      at += size + 2;
    }
    if (at > limits_.max_value) return std::nullopt;
    start_ += at;
    value_bytes_ = 0;
    compact();
    return strings;
  }

  /// The next byte received and not yet parsed, if any.
  std::optional<char> peek() const noexcept {
    if (start_ == buffer_.size()) return std::nullopt;
    return buffer_[start_];
  }
  /// Between values (no value partly parsed), hands back the bytes received after the last value.
  std::string take_buffered() {
    std::string rest = buffer_.substr(start_);
    buffer_.clear();
    start_ = 0;
    return rest;
  }


  expected<std::optional<value>, protocol_error> next() {
    if (failed_) return unexpected{*failed_};
    for (;;) {
      const std::size_t before = start_;
      auto step = parse_one();
      value_bytes_ += start_ - before;
      compact();
      if (!step) return fail(std::move(step.error()));
      if (!*step) return std::optional<value>();  // more bytes needed
      value done = std::move(**step);
      // Complete the arrays it belongs to.
      while (!stack_.empty()) {
        stack_.back().elements.push_back(std::move(done));
        if (stack_.back().elements.size() < stack_.back().expected) break;
        done = value::array(std::move(stack_.back().elements));
        stack_.pop_back();
      }
      if (stack_.empty()) {
        value_bytes_ = 0;
        return std::optional<value>(std::move(done));
      }
    }
  }

 private:
  struct partial_array {
    std::size_t expected;
    std::vector<value> elements;
  };

  expected<std::optional<value>, protocol_error> fail(protocol_error error) {
    failed_ = error;
    return unexpected{std::move(error)};
  }

  // The line starting at start_ without its CRLF, or nothing if it has not fully arrived.
  expected<std::optional<std::string_view>, protocol_error> line() {
    const std::string_view rest = std::string_view(buffer_).substr(start_);
    const std::size_t end = rest.find("\r\n");
    if (end == std::string_view::npos) {
      // (max_line bytes and a CR may be a whole line whose LF has not arrived)
      if (rest.size() > limits_.max_line + 1) return unexpected{protocol_error{"line too long"}};
      return std::optional<std::string_view>();
    }
    if (end > limits_.max_line) return unexpected{protocol_error{"line too long"}};
    return std::optional<std::string_view>(rest.substr(0, end));
  }

  static std::optional<std::int64_t> integer_of(std::string_view text) {
    std::int64_t result = 0;
    if (text.empty() || text.front() == '+') return std::nullopt;
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), result);
    if (error != std::errc() || end != text.data() + text.size()) return std::nullopt;
    return result;
  }

  // Parses one scalar or array header at start_. An array header pushes a partial array and, when it has
  // elements, asks for the next value (returns a value only for empty and null arrays).
  expected<std::optional<value>, protocol_error> parse_one() {
    const std::size_t call_start = start_;
    for (;;) {
      if (pending_bulk_) {
        const std::size_t length = *pending_bulk_;
        if (buffer_.size() - start_ < length + 2) return std::optional<value>();
        if (buffer_.compare(start_ + length, 2, "\r\n") != 0)
          return unexpected{protocol_error{"bulk string not followed by CRLF"}};
        value bulk = value::bulk(buffer_.substr(start_, length));
        start_ += length + 2;
        pending_bulk_.reset();
        return std::optional<value>(std::move(bulk));
      }
      if (start_ == buffer_.size()) return std::optional<value>();
      auto header = line();
      if (!header) return unexpected{std::move(header.error())};
      if (!*header) return std::optional<value>();
      const std::string_view text = **header;
      if (text.empty()) return unexpected{protocol_error{"empty line where a value was expected"}};
      const char type = text.front();
      const std::string_view body = text.substr(1);
      const std::size_t consumed = text.size() + 2;
      switch (type) {
        case '+':
          start_ += consumed;
          return std::optional<value>(value::simple(std::string(body)));
        case '-':
          start_ += consumed;
          return std::optional<value>(value::error_reply(std::string(body)));
        case ':': {
          auto n = integer_of(body);
          if (!n) return unexpected{protocol_error{"bad integer"}};
          start_ += consumed;
          return std::optional<value>(value::number(*n));
        }
        case '$': {
          auto n = integer_of(body);
          if (!n || *n < -1) return unexpected{protocol_error{"bad bulk string length"}};
          start_ += consumed;
          if (*n == -1) return std::optional<value>(value::nil());
          if (static_cast<std::uint64_t>(*n) > limits_.max_bulk)
            return unexpected{protocol_error{"bulk string longer than the limit"}};
          if (value_bytes_ + (start_ - call_start) + static_cast<std::uint64_t>(*n) > limits_.max_value)
            return unexpected{protocol_error{"value larger than the limit"}};
          pending_bulk_ = static_cast<std::size_t>(*n);
          continue;
        }
        case '*': {
          auto n = integer_of(body);
          if (!n || *n < -1) return unexpected{protocol_error{"bad array length"}};
          start_ += consumed;
          if (*n == -1) return std::optional<value>(value{value::kind_type::null_array, {}, 0, {}});
          if (*n == 0) return std::optional<value>(value::array({}));
          if (static_cast<std::uint64_t>(*n) > limits_.max_elements)
            return unexpected{protocol_error{"array longer than the limit"}};
          if (stack_.size() >= limits_.max_depth) return unexpected{protocol_error{"arrays nested too deep"}};
          stack_.push_back({static_cast<std::size_t>(*n), {}});
          continue;
        }
        default:
          return unexpected{protocol_error{std::string("unknown type byte '") + printable(type) + "'"}};
      }
    }
  }

  static std::string printable(char c) {
    if (c >= 0x20 && c < 0x7f) return std::string(1, c);
    static constexpr char digits[] = "0123456789abcdef";
    const auto byte = static_cast<unsigned char>(c);
    return std::string("\\x") + digits[byte >> 4] + digits[byte & 15];
  }

  // Drops consumed bytes once they are the larger part of the buffer (amortised O(1) per byte).
  void compact() {
    if (start_ == buffer_.size()) {
      buffer_.clear();
      start_ = 0;
    } else if (start_ > 4096 && start_ * 2 > buffer_.size()) {
      buffer_.erase(0, start_);
      start_ = 0;
    }
  }

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

  void feed(std::string_view bytes) {
    if (mode_ == mode_type::unknown && !bytes.empty()) mode_ = bytes.front() == '*' ? mode_type::resp : mode_type::inline_;
    if (mode_ == mode_type::resp) {
      values_.feed(bytes);
    } else {
      inline_.append(bytes);
    }
  }

  /// The next request's arguments, nothing while more bytes are needed, or a protocol error.
  expected<std::optional<std::vector<std::string>>, protocol_error> next() {
    for (;;) {
      if (mode_ == mode_type::unknown) return std::optional<std::vector<std::string>>();
      if (mode_ == mode_type::inline_) {
        auto request = next_inline();
        if (!request || !*request || !(*request)->empty()) return request;
        continue;  // an empty line: skip it
      }
      if (auto fast = values_.take_bulk_array()) {
        after_request();
        return std::optional<std::vector<std::string>>(std::move(*fast));
      }
      auto parsed = values_.next();
      if (!parsed) return unexpected{std::move(parsed.error())};
      if (!*parsed) return std::optional<std::vector<std::string>>();  // more bytes needed
      value& request = **parsed;
      after_request();
      if (request.kind != value::kind_type::array || request.elements.empty())
        return unexpected{protocol_error{"a request must be a non-empty array of bulk strings"}};
      std::vector<std::string> arguments;
      arguments.reserve(request.elements.size());
      for (value& argument : request.elements) {
        if (argument.kind != value::kind_type::bulk_string)
          return unexpected{protocol_error{"a request must be a non-empty array of bulk strings"}};
        arguments.push_back(std::move(argument.text));
      }
      return std::optional<std::vector<std::string>>(std::move(arguments));
    }
  }

 private:
  enum class mode_type { unknown, resp, inline_ };

  // What follows a RESP request may be an inline command: then it is handed over (RESP requests follow
  // each other without copying).
  void after_request() {
    const auto following = values_.peek();
    if (!following) {
      mode_ = mode_type::unknown;
    } else if (*following != '*') {
      std::string rest = values_.take_buffered();
      mode_ = mode_type::unknown;
      feed(rest);
    }
  }

  expected<std::optional<std::vector<std::string>>, protocol_error> next_inline() {
    const std::size_t end = inline_.find('\n');
    if (end == std::string::npos) {
      if (inline_.size() > limits_.max_line) return unexpected{protocol_error{"inline command too long"}};
      return std::optional<std::vector<std::string>>();
    }
    if (end > limits_.max_line) return unexpected{protocol_error{"inline command too long"}};
    std::string_view text(inline_.data(), end);
    if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
    std::vector<std::string> words;
    for (std::size_t at = 0; at < text.size();) {
      const std::size_t begin = text.find_first_not_of(" \t", at);
      if (begin == std::string_view::npos) break;
      const std::size_t stop = std::min(text.find_first_of(" \t", begin), text.size());
      words.emplace_back(text.substr(begin, stop - begin));
      at = stop;
    }
    std::string rest = inline_.substr(end + 1);
    inline_.clear();
    mode_ = mode_type::unknown;
    if (!rest.empty()) feed(rest);
    return std::optional<std::vector<std::string>>(std::move(words));
  }

  parser values_;
  limits limits_;
  std::string inline_;
  mode_type mode_ = mode_type::unknown;
};

// --- encoding ------------------------------------------------------------------------------------------

inline void append_integer_text(std::string& out, std::int64_t n) {
  char digits[24];
  auto [end, error] = std::to_chars(digits, digits + sizeof digits, n);
  (void)error;
  out.append(digits, end);
}

/// A command as clients send it: an array of bulk strings.
inline void append_command(std::string& out, std::span<const std::string_view> arguments) {
  out += '*';
  append_integer_text(out, static_cast<std::int64_t>(arguments.size()));
  out += "\r\n";
  for (std::string_view argument : arguments) {
    out += '$';
    append_integer_text(out, static_cast<std::int64_t>(argument.size()));
    out += "\r\n";
    out += argument;
    out += "\r\n";
  }
}
inline void append_command(std::string& out, std::initializer_list<std::string_view> arguments) {
  append_command(out, std::span<const std::string_view>(arguments.begin(), arguments.size()));
}

/// Replies, as servers send them. Simple strings and errors must not contain CR or LF (they are replaced
/// by spaces).
inline void append_simple(std::string& out, std::string_view text, char type = '+') {
  out += type;
  for (char c : text) out += (c == '\r' || c == '\n') ? ' ' : c;
  out += "\r\n";
}
inline void append_error(std::string& out, std::string_view text) { append_simple(out, text, '-'); }
inline void append_integer(std::string& out, std::int64_t n) {
  out += ':';
  append_integer_text(out, n);
  out += "\r\n";
}
inline void append_bulk(std::string& out, std::string_view text) {
  out += '$';
  append_integer_text(out, static_cast<std::int64_t>(text.size()));
  out += "\r\n";
  out += text;
  out += "\r\n";
}
inline void append_null(std::string& out) { out += "$-1\r\n"; }
inline void append_array_header(std::string& out, std::size_t count) {
  out += '*';
  append_integer_text(out, static_cast<std::int64_t>(count));
  out += "\r\n";
}

/// Any value, as a server would send it.
inline void append_value(std::string& out, const value& v) {
  switch (v.kind) {
    case value::kind_type::simple_string: append_simple(out, v.text); break;
    case value::kind_type::error: append_error(out, v.text); break;
    case value::kind_type::integer: append_integer(out, v.integer); break;
    case value::kind_type::bulk_string: append_bulk(out, v.text); break;
    case value::kind_type::null: append_null(out); break;
    case value::kind_type::null_array: out += "*-1\r\n"; break;
    case value::kind_type::array:
      append_array_header(out, v.elements.size());
      for (const value& element : v.elements) append_value(out, element);
      break;
  }
}

}  // namespace postal::resp
