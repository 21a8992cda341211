// postal::resp: the RESP2 parser, request parser and encoder declared in postal/resp.hpp. The parser works on
// whole buffers (feed() appends, next() parses until a value is whole), so nothing here is called per byte.
#include <postal/resp.hpp>

#include <algorithm>
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

namespace {

std::optional<std::int64_t> integer_of(std::string_view text) {
  std::int64_t result = 0;
  if (text.empty() || text.front() == '+') return std::nullopt;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), result);
  if (error != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return result;
}

std::string printable(char c) {
  if (c >= 0x20 && c < 0x7f) return std::string(1, c);
  static constexpr char digits[] = "0123456789abcdef";
  const auto byte = static_cast<unsigned char>(c);
  return std::string("\\x") + digits[byte >> 4] + digits[byte & 15];
}

}  // namespace

// --- parser --------------------------------------------------------------------------------------------

std::optional<std::vector<std::string>> parser::take_bulk_array() {
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

std::string parser::take_buffered() {
  std::string rest = buffer_.substr(start_);
  buffer_.clear();
  start_ = 0;
  return rest;
}

expected<std::optional<value>, protocol_error> parser::next() {
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

expected<std::optional<value>, protocol_error> parser::fail(protocol_error error) {
  failed_ = error;
  return unexpected{std::move(error)};
}

expected<std::optional<std::string_view>, protocol_error> parser::line() {
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

expected<std::optional<value>, protocol_error> parser::parse_one() {
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

void parser::compact() {
  if (start_ == buffer_.size()) {
    buffer_.clear();
    start_ = 0;
  } else if (start_ > 4096 && start_ * 2 > buffer_.size()) {
    buffer_.erase(0, start_);
    start_ = 0;
  }
}

// --- request_parser ------------------------------------------------------------------------------------

void request_parser::feed(std::string_view bytes) {
  if (mode_ == mode_type::unknown && !bytes.empty()) mode_ = bytes.front() == '*' ? mode_type::resp : mode_type::inline_;
  if (mode_ == mode_type::resp) {
    values_.feed(bytes);
  } else {
    inline_.append(bytes);
  }
}

expected<std::optional<std::vector<std::string>>, protocol_error> request_parser::next() {
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

void request_parser::after_request() {
  const auto following = values_.peek();
  if (!following) {
    mode_ = mode_type::unknown;
  } else if (*following != '*') {
    std::string rest = values_.take_buffered();
    mode_ = mode_type::unknown;
    feed(rest);
  }
}

expected<std::optional<std::vector<std::string>>, protocol_error> request_parser::next_inline() {
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

// --- encoding ------------------------------------------------------------------------------------------

void append_integer_text(std::string& out, std::int64_t n) {
  char digits[24];
  auto [end, error] = std::to_chars(digits, digits + sizeof digits, n);
  (void)error;
  out.append(digits, end);
}

void append_command(std::string& out, std::span<const std::string_view> arguments) {
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
void append_command(std::string& out, std::initializer_list<std::string_view> arguments) {
  append_command(out, std::span<const std::string_view>(arguments.begin(), arguments.size()));
}

void append_simple(std::string& out, std::string_view text, char type) {
  out += type;
  for (char c : text) out += (c == '\r' || c == '\n') ? ' ' : c;
  out += "\r\n";
}
void append_error(std::string& out, std::string_view text) { append_simple(out, text, '-'); }
void append_integer(std::string& out, std::int64_t n) {
  out += ':';
  append_integer_text(out, n);
  out += "\r\n";
}
void append_bulk(std::string& out, std::string_view text) {
  out += '$';
  append_integer_text(out, static_cast<std::int64_t>(text.size()));
  out += "\r\n";
  out += text;
  out += "\r\n";
}
void append_null(std::string& out) { out += "$-1\r\n"; }
void append_array_header(std::string& out, std::size_t count) {
  out += '*';
  append_integer_text(out, static_cast<std::int64_t>(count));
  out += "\r\n";
}

void append_value(std::string& out, const value& v) {
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
