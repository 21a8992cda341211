// postal config loader: the steps of parse_config and load_config that do not depend on the configured type
// (reading the file, syntax, overrides, the expected shape, positions and error messages), and the override
// sources. Declared in postal/config_loader.hpp. CAF-free: the fuzz target (tests/fuzz) compiles it too.
#include <postal/config_loader.hpp>

#include <unistd.h>  // environ

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace postal {

namespace detail {

namespace {

constexpr std::string_view utf8_bom = "\xEF\xBB\xBF";

/// The line and column of byte `offset` of `text` (an offset past the end is the end). A UTF-8 byte order
/// mark does not count as a column.
text_position position_at(std::string_view text, std::size_t offset) {
  offset = std::min(offset, text.size());
  const std::string_view before = text.substr(0, offset);
  text_position position{1, 1, offset};
  std::size_t line_start = 0;
  for (std::size_t i = 0; i < before.size(); ++i) {
    if (before[i] == '\n') {
      ++position.line;
      line_start = i + 1;
    }
  }
  if (line_start == 0 && before.starts_with(utf8_bom)) line_start = utf8_bom.size();
  for (std::size_t i = line_start; i < before.size(); ++i) {
    if ((static_cast<unsigned char>(before[i]) & 0xC0) != 0x80) ++position.column;  // not a continuation byte
  }
  return position;
}

/// The reference tokens of a JSON pointer, unescaped (~1 -> '/', ~0 -> '~'); nullopt if it is malformed.
std::optional<std::vector<std::string>> pointer_tokens(std::string_view pointer) {
  std::vector<std::string> tokens;
  if (pointer.empty()) return tokens;
  if (pointer.front() != '/') return std::nullopt;
  for (std::size_t i = 0; i < pointer.size(); ++i) {
    const char c = pointer[i];
    if (c == '/') {
      tokens.emplace_back();
    } else if (c != '~') {
      tokens.back() += c;
    } else if (i + 1 < pointer.size() && (pointer[i + 1] == '0' || pointer[i + 1] == '1')) {
      tokens.back() += pointer[++i] == '0' ? '~' : '/';
    } else {
      return std::nullopt;
    }
  }
  return tokens;
}

/// An array index token as RFC 6901 spells it ("0", or digits without a leading zero); nullopt otherwise.
std::optional<std::size_t> array_index(std::string_view token) {
  if (token.empty() || (token.size() > 1 && token.front() == '0')) return std::nullopt;
  std::size_t index = 0;
  const auto [end, error] = std::from_chars(token.data(), token.data() + token.size(), index);
  if (error != std::errc() || end != token.data() + token.size()) return std::nullopt;
  return index;
}

/// Appends code point `code` to `out` as UTF-8.
void append_utf8(std::string& out, std::uint32_t code) {
  if (code < 0x80) {
    out += static_cast<char>(code);
  } else if (code < 0x800) {
    out += static_cast<char>(0xC0 | (code >> 6));
    out += static_cast<char>(0x80 | (code & 0x3F));
  } else if (code < 0x10000) {
    out += static_cast<char>(0xE0 | (code >> 12));
    out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (code & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (code >> 18));
    out += static_cast<char>(0x80 | ((code >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (code & 0x3F));
  }
}

/// Walks JSON text that nlohmann accepted, to find where values are. Every read is bounds-checked, so
/// malformed text makes it fail (false) instead of reading past the end.
class json_scanner {
 public:
  explicit json_scanner(std::string_view text) : text_(text) {
    if (text_.starts_with(utf8_bom)) position_ = utf8_bom.size();
  }

  std::size_t offset() const noexcept { return position_; }
  void seek(std::size_t offset) noexcept { position_ = std::min(offset, text_.size()); }
  bool at_end() const noexcept { return position_ >= text_.size(); }
  bool peek(char c) const noexcept { return !at_end() && text_[position_] == c; }
  bool consume(char c) noexcept {
    if (!peek(c)) return false;
    ++position_;
    return true;
  }
  void skip_space() noexcept {
    while (!at_end() && is_space(text_[position_])) ++position_;
  }

  /// Reads the string that starts here into `out`, escapes decoded.
  bool read_string(std::string& out) {
    out.clear();
    if (!consume('"')) return false;
    while (!at_end()) {
      const char c = text_[position_++];
      if (c == '"') return true;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (at_end()) return false;
      const char escaped = text_[position_++];
      if (escaped != 'u') {
        const auto simple = std::string_view("\"\\/bfnrt").find(escaped);
        if (simple == std::string_view::npos) return false;
        out += std::string_view("\"\\/\b\f\n\r\t")[simple];
        continue;
      }
      auto code = read_hex4();
      if (!code) return false;
      if (*code >= 0xD800 && *code <= 0xDBFF) {  // a high surrogate: its low half must follow
        if (!consume('\\') || !consume('u')) return false;
        const auto low = read_hex4();
        if (!low || *low < 0xDC00 || *low > 0xDFFF) return false;
        code = 0x10000 + ((*code - 0xD800) << 10) + (*low - 0xDC00);
      } else if (*code >= 0xDC00 && *code <= 0xDFFF) {
        return false;
      }
      append_utf8(out, *code);
    }
    return false;
  }

  /// Skips the value that starts here (after any space).
  bool skip_value() noexcept {
    skip_space();
    if (at_end()) return false;
    const char first = text_[position_];
    if (first == '"') return skip_string();
    if (first == '{' || first == '[') {
      std::size_t depth = 0;  // containers are skipped by counting brackets, not by recursion
      while (!at_end()) {
        const char c = text_[position_];
        if (c == '"') {
          if (!skip_string()) return false;
          continue;
        }
        ++position_;
        if (c == '{' || c == '[') {
          ++depth;
        } else if (c == '}' || c == ']') {
          if (--depth == 0) return true;
        }
      }
      return false;
    }
    const std::size_t start = position_;  // a number or a literal
    while (!at_end() && !is_space(text_[position_]) &&
           std::string_view(",:]}").find(text_[position_]) == std::string_view::npos) {
      ++position_;
    }
    return position_ > start;
  }

 private:
  static bool is_space(char c) noexcept { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

  bool skip_string() noexcept {
    if (!consume('"')) return false;
    while (!at_end()) {
      const char c = text_[position_++];
      if (c == '"') return true;
      if (c == '\\') {
        if (at_end()) return false;
        ++position_;
      }
    }
    return false;
  }

  std::optional<std::uint32_t> read_hex4() noexcept {
    if (text_.size() - position_ < 4) return std::nullopt;
    std::uint32_t code = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = text_[position_++];
      code <<= 4;
      if (c >= '0' && c <= '9')
        code |= static_cast<std::uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f')
        code |= static_cast<std::uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        code |= static_cast<std::uint32_t>(c - 'A' + 10);
      else
        return std::nullopt;
    }
    return code;
  }

  std::string_view text_;
  std::size_t position_ = 0;
};

}  // namespace

std::string escape_pointer_token(std::string_view token) {
  std::string escaped;
  for (char c : token) {
    if (c == '~')
      escaped += "~0";
    else if (c == '/')
      escaped += "~1";
    else
      escaped += c;
  }
  return escaped;
}

std::optional<std::size_t> find_value(std::string_view text, std::string_view pointer) {
  const auto tokens = pointer_tokens(pointer);
  if (!tokens) return std::nullopt;
  json_scanner scanner(text);
  scanner.skip_space();
  std::string key;
  for (const std::string& token : *tokens) {
    if (scanner.consume('{')) {
      std::optional<std::size_t> found;
      scanner.skip_space();
      if (!scanner.consume('}')) {
        while (true) {
          scanner.skip_space();
          if (!scanner.read_string(key)) return std::nullopt;
          scanner.skip_space();
          if (!scanner.consume(':')) return std::nullopt;
          scanner.skip_space();
          if (key == token) found = scanner.offset();
          if (!scanner.skip_value()) return std::nullopt;
          scanner.skip_space();
          if (scanner.consume('}')) break;
          if (!scanner.consume(',')) return std::nullopt;
        }
      }
      if (!found) return std::nullopt;
      scanner.seek(*found);
    } else if (scanner.consume('[')) {
      const auto index = array_index(token);
      if (!index) return std::nullopt;
      scanner.skip_space();
      if (scanner.peek(']')) return std::nullopt;
      for (std::size_t i = 0; i < *index; ++i) {
        if (!scanner.skip_value()) return std::nullopt;
        scanner.skip_space();
        if (!scanner.consume(',')) return std::nullopt;
      }
      scanner.skip_space();
      if (scanner.at_end() || scanner.peek(']')) return std::nullopt;
    } else {
      return std::nullopt;
    }
  }
  if (scanner.at_end()) return std::nullopt;
  return scanner.offset();
}

std::optional<text_position> locate(std::string_view text, std::string_view pointer) {
  const auto offset = find_value(text, pointer);
  if (!offset) return std::nullopt;
  return position_at(text, *offset);
}

namespace {

/// nlohmann's exception message without its "[json.exception.<name>.<id>] " prefix.
std::string without_nlohmann_prefix(std::string_view message) {
  if (message.starts_with("[json.exception.")) {
    const auto end = message.find("] ");
    if (end != std::string_view::npos) message.remove_prefix(end + 2);
  }
  return std::string(message);
}

/// Records the first syntax error of a SAX parse: where it is and nlohmann's reason for it.
class syntax_error_catcher final : public config_json::json_sax_t {
 public:
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return true; }
  bool key(string_t&) override { return true; }
  bool end_object() override { return true; }
  bool start_array(std::size_t) override { return true; }
  bool end_array() override { return true; }
  bool parse_error(std::size_t byte, const std::string& last_token,
                   const config_json::exception& error) override {
    reason = without_nlohmann_prefix(error.what());
    if (reason.starts_with("parse error")) {  // "parse error at line 3, column 5: <reason>"
      const auto colon = reason.find(": ");
      if (colon != std::string::npos) reason.erase(0, colon + 2);
    }
    // `byte` is the 1-based offset of the last character read (one past the end at the end of input): the
    // offending character of an invalid token, the last character of an unexpected one. Point at the first
    // character of an unexpected token, whose length is known: nlohmann's last token is exactly the number
    // or the string it scanned (they hold no control characters, which it would spell <U+XXXX>).
    std::size_t length = 1;
    const auto unexpected_token = [&](std::string_view token) {
      return reason.find(" - unexpected " + std::string(token)) != std::string::npos;
    };
    if (error.id == 406 || unexpected_token("number literal") || unexpected_token("string literal"))
      length = std::max<std::size_t>(last_token.size(), 1);
    else if (unexpected_token("'true' literal") || unexpected_token("'null' literal"))
      length = 4;
    else if (unexpected_token("'false' literal"))
      length = 5;
    offset = byte >= length ? byte - length : 0;
    return false;
  }

  std::size_t offset = 0;
  std::string reason;
};

/// An override as applied: the pointer it resolved to ("-" replaced by the index) and its source.
struct applied_override {
  std::string pointer;
  std::string source;
};

/// Whether the value at `pointer` is `ancestor` or inside it (comparing whole reference tokens).
bool pointer_within(std::string_view pointer, std::string_view ancestor) {
  return pointer.starts_with(ancestor) &&
         (pointer.size() == ancestor.size() || pointer[ancestor.size()] == '/');
}

/// The latest override that set the value at `pointer` (or a value containing it), if any.
const applied_override* override_of(const std::vector<applied_override>& applied,
                                           std::string_view pointer) {
  for (auto it = applied.rbegin(); it != applied.rend(); ++it) {
    if (pointer_within(pointer, it->pointer)) return &*it;
  }
  return nullptr;
}

/// A config_error about the value at `pointer`, at the line of the value at `locate_pointer` in `text`; or,
/// when an override set that value, without a line and with the override's source appended to the reason.
config_error error_about(config_error::kind_type kind, std::string_view file, std::string_view text,
                                const std::vector<applied_override>& applied, std::string pointer,
                                std::string_view locate_pointer, std::string reason) {
  config_error error{kind, std::string(file), 0, 0, std::move(pointer), std::move(reason)};
  if (const applied_override* from = override_of(applied, locate_pointer)) {
    if (!from->source.empty()) error.reason += " (" + from->source + ")";
  } else if (const auto position = locate(text, locate_pointer)) {
    error.line = position->line;
    error.column = position->column;
  }
  return error;
}

/// The value of an override: its text as JSON when it is valid JSON, else the text as a string.
config_json override_value(const std::string& text) {
  config_json value = config_json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) return config_json(text);
  return value;
}

/// Sets the value at `o.pointer` in `document`, creating missing object keys on the way; the pointer it
/// resolved to, or why it cannot be applied.
expected<std::string, std::string> apply_override(config_json& document, const config_override& o) {
  const auto tokens = pointer_tokens(o.pointer);
  if (!tokens) {
    return unexpected{"'" + o.pointer +
                      "' is not a JSON pointer (it must be empty or start with '/', and '~' "
                      "must be followed by 0 or 1)"};
  }
  config_json value = override_value(o.value);
  config_json* current = &document;
  std::string resolved;
  for (std::size_t i = 0; i < tokens->size(); ++i) {
    const std::string& token = (*tokens)[i];
    const bool last = i + 1 == tokens->size();
    const std::string where = resolved.empty() ? std::string("the document") : resolved;
    if (current->is_object()) {
      auto& object = current->get_ref<config_json::object_t&>();
      resolved += "/" + escape_pointer_token(token);
      if (last) {
        object[token] = std::move(value);
        return resolved;
      }
      current = &object.try_emplace(token, config_json::object()).first->second;
    } else if (current->is_array()) {
      auto& array = current->get_ref<config_json::array_t&>();
      if (token == "-" && last) {
        array.push_back(std::move(value));
        return resolved + "/" + std::to_string(array.size() - 1);
      }
      const auto index = array_index(token);
      if (!index || *index >= array.size()) {
        return unexpected{"cannot set " + o.pointer + ": '" + token + "' is not an index of " + where + " (" +
                          std::to_string(array.size()) + " elements)"};
      }
      resolved += "/" + token;
      if (last) {
        array[*index] = std::move(value);
        return resolved;
      }
      current = &array[*index];
    } else {
      return unexpected{"cannot set " + o.pointer + ": " + where + " is a " + current->type_name() +
                        " value, not an object or an array"};
    }
  }
  document = std::move(value);  // the empty pointer: the whole document
  return resolved;
}

/// Where the document's shape differs from the expected one (nlohmann::json(T{})).
struct shape_difference {
  enum class kind_type {
    type,         // a value of another type than expected
    integer,      // a number with a fraction or an exponent where an integer is expected
    missing_key,  // a key of the expected object is missing
    too_short,    // an array shorter than the expected one
    element,      // an element of an array whose elements are unknown (empty in T{}): only a suspect
  };
  kind_type kind;
  std::string pointer;         // the offending value (for a missing key: where it should be)
  std::string locate_pointer;  // the value whose line to report (for a missing key: its object)
  std::string expected;        // type names as nlohmann's type_name() spells them; "integer" for integers
  std::string actual;
  std::string key;  // the missing key
};

/// The differences found, and the suspects: elements of arrays whose element type T{} does not show, named
/// only when nlohmann's reason names their type. Each list holds at most max_shape_differences.
struct shape_differences {
  std::vector<shape_difference> found;
  std::vector<shape_difference> suspects;
};
constexpr std::size_t max_shape_differences = 64;

/// Compares `actual` with `expected` along `expected`'s structure (so the recursion is only as deep as T's
/// shape). Numbers of all kinds are one type, except that an integer is expected where T holds one; null in
/// the expected shape (an empty optional) matches anything.
void collect_differences(const config_json& expected, const config_json& actual,
                                const std::string& pointer, shape_differences& out) {
  using kind = shape_difference::kind_type;
  if (out.found.size() >= max_shape_differences || expected.is_null()) return;
  if (std::string_view(expected.type_name()) != actual.type_name()) {
    out.found.push_back({kind::type, pointer, pointer, expected.type_name(), actual.type_name(), {}});
    return;
  }
  if (expected.is_number_integer() && actual.is_number_float()) {  // is_number_integer covers unsigned too
    out.found.push_back({kind::integer, pointer, pointer, "integer", "number " + actual.dump(), {}});
  } else if (expected.is_object()) {
    for (const auto& [key, sub] : expected.items()) {
      const std::string sub_pointer = pointer + "/" + escape_pointer_token(key);
      const auto found = actual.find(key);
      if (found == actual.end())
        out.found.push_back({kind::missing_key, sub_pointer, pointer, sub.type_name(), {}, key});
      else
        collect_differences(sub, *found, sub_pointer, out);
    }
  } else if (expected.is_array() && expected.empty()) {
    for (std::size_t i = 0; i < actual.size() && out.suspects.size() < max_shape_differences; ++i) {
      const std::string element = pointer + "/" + std::to_string(i);
      out.suspects.push_back({kind::element, element, element, {}, actual[i].type_name(), {}});
    }
  } else if (expected.is_array()) {
    if (actual.size() < expected.size()) out.found.push_back({kind::too_short, pointer, pointer, {}, {}, {}});
    for (std::size_t i = 0; i < actual.size() && out.found.size() < max_shape_differences; ++i) {
      collect_differences(expected[std::min(i, expected.size() - 1)], actual[i],
                          pointer + "/" + std::to_string(i), out);
    }
  }
}

/// The differences that match nlohmann's reason for failing ("type must be number, but is string", "cannot
/// use at() with number", "key 'port' not found", "array index 2 is out of range"): found ones first, then
/// suspects; when none matches, every difference found.
std::vector<shape_difference> matching_differences(const shape_differences& differences,
                                                          std::string_view reason) {
  using kind = shape_difference::kind_type;
  auto between = [&](std::string_view before, std::string_view after) -> std::optional<std::string> {
    const auto start = reason.find(before);
    if (start == std::string_view::npos) return std::nullopt;
    const std::string_view rest = reason.substr(start + before.size());
    return std::string(rest.substr(0, rest.find(after)));
  };
  std::function<bool(const shape_difference&)> matches;
  if (reason.starts_with("key '")) {
    matches = [key = between("key '", "' not found")](const shape_difference& d) {
      return d.kind == kind::missing_key && d.key == key;
    };
  } else if (reason.starts_with("array index")) {
    matches = [](const shape_difference& d) { return d.kind == kind::too_short; };
  } else if (reason.starts_with("type must be ")) {
    matches = [wanted = between("type must be ", ","),
               actual = between("but is ", " ")](const shape_difference& d) {
      return d.actual == actual &&
             ((d.kind == kind::type && d.expected == wanted) || d.kind == kind::element);
    };
  } else if (reason.starts_with("cannot use ")) {
    matches = [actual = std::string(reason.substr(reason.rfind(' ') + 1))](const shape_difference& d) {
      return d.actual == actual && (d.kind == kind::type || d.kind == kind::element);
    };
  }
  if (!matches) return differences.found;
  for (const auto* list : {&differences.found, &differences.suspects}) {
    std::vector<shape_difference> kept;
    std::copy_if(list->begin(), list->end(), std::back_inserter(kept), matches);
    if (!kept.empty()) return kept;
  }
  return differences.found;
}

/// The first of `differences` in document order (differences inside override values, which have no place
/// in the text, come after the located ones); nullptr if there are none.
const shape_difference* first_in_text(const std::vector<shape_difference>& differences,
                                             std::string_view text,
                                             const std::vector<applied_override>& applied) {
  const shape_difference* first = nullptr;
  std::optional<std::size_t> first_offset;
  for (const shape_difference& d : differences) {
    const auto offset =
        override_of(applied, d.locate_pointer) ? std::nullopt : find_value(text, d.locate_pointer);
    if (!first || (offset && (!first_offset || *offset < *first_offset))) {
      first = &d;
      first_offset = offset;
    }
  }
  return first;
}

std::string_view kind_words(config_error::kind_type kind) {
  switch (kind) {
    case config_error::kind_type::missing:
      return "missing file";
    case config_error::kind_type::unreadable:
      return "unreadable file";
    case config_error::kind_type::syntax:
      return "syntax error";
    case config_error::kind_type::type:
      return "type error";
    case config_error::kind_type::invalid:
      return "invalid value";
    case config_error::kind_type::override:
      return "bad override";
  }
  return "error";
}

/// The override that the command-line specification `spec` ("pointer=value") stands for.
config_override parse_override_argument(std::string_view spec, std::string source,
                                               std::string_view flag) {
  const auto equals = spec.find('=');
  if (equals == std::string_view::npos || equals == 0) {
    throw std::invalid_argument("postal config: '" + source + "' is not " + std::string(flag) +
                                " /pointer=value (" + (equals == 0 ? "empty pointer" : "no '='") + ")");
  }
  std::string pointer(spec.substr(0, equals));
  if (pointer.front() != '/') pointer.insert(0, 1, '/');
  return config_override{std::move(pointer), std::string(spec.substr(equals + 1)), std::move(source)};
}

struct file_closer {
  void operator()(std::FILE* stream) const noexcept { std::fclose(stream); }
};

}  // namespace

expected<std::string, config_error> read_config_file(const std::filesystem::path& file,
                                                            std::size_t max_bytes) {
  using kind = config_error::kind_type;
  auto fail = [&](kind k, std::string reason) {
    return unexpected{config_error{k, file.string(), 0, 0, {}, std::move(reason)}};
  };
  std::error_code error;
  const auto status = std::filesystem::status(file, error);
  if (status.type() == std::filesystem::file_type::not_found) return fail(kind::missing, "no such file");
  if (error) return fail(kind::unreadable, error.message());
  if (std::filesystem::is_directory(status)) return fail(kind::unreadable, "is a directory");
  // A FIFO, socket or device could block or never end: only regular files (symlinks followed) are read.
  if (!std::filesystem::is_regular_file(status)) return fail(kind::unreadable, "not a regular file");
  const auto too_large = [&] {
    return fail(kind::unreadable, "larger than the limit of " + std::to_string(max_bytes) + " bytes");
  };
  if (std::filesystem::is_regular_file(status)) {
    const auto size = std::filesystem::file_size(file, error);
    if (!error && size > max_bytes) return too_large();
  }
  const std::unique_ptr<std::FILE, file_closer> stream(std::fopen(file.c_str(), "rb"));
  if (!stream) {
    const int code = errno;
    if (code == ENOENT) return fail(kind::missing, "no such file");  // removed since the status check
    return fail(kind::unreadable, std::error_code(code, std::system_category()).message());
  }
  std::string text;
  constexpr std::size_t chunk = 64 * 1024;
  while (true) {
    const std::size_t old_size = text.size();
    text.resize(old_size + chunk);
    const std::size_t read = std::fread(text.data() + old_size, 1, chunk, stream.get());
    text.resize(old_size + read);
    if (text.size() > max_bytes) return too_large();  // it grew since the size check
    if (read < chunk) break;
  }
  if (std::ferror(stream.get())) {
    const int code = errno;
    return fail(kind::unreadable,
                code ? std::error_code(code, std::system_category()).message() : "read error");
  }
  return text;
}

// --- parse_config's steps -------------------------------------------------------------------------------

struct config_parse::state {
  std::string_view text;
  std::string file;
  config_json document;
  std::vector<applied_override> applied;
  shape_differences differences;

  config_error fail(config_error::kind_type kind, std::string path, std::string reason) const {
    return config_error{kind, file, 0, 0, std::move(path), std::move(reason)};
  }
  // A type error names the first difference (in the text) that explains it, if one does.
  config_error type_error(const std::vector<shape_difference>& candidates, std::string reason) const {
    const shape_difference* first = first_in_text(candidates, text, applied);
    if (!first) return fail(config_error::kind_type::type, {}, std::move(reason));
    return error_about(config_error::kind_type::type, file, text, applied, first->pointer, first->locate_pointer,
                       std::move(reason));
  }
};

config_parse::config_parse(std::string_view text, std::string_view file_name)
    : state_(std::make_unique<state>(state{text, std::string(file_name), {}, {}, {}})) {}

config_parse::~config_parse() = default;

std::optional<config_error> config_parse::parse(const config_load_options& options) {
  using kind = config_error::kind_type;
  const std::string_view text = state_->text;
  // 1. Syntax, with the position of the first error.
  syntax_error_catcher catcher;
  if (!config_json::sax_parse(text.begin(), text.end(), &catcher)) {
    const auto position = position_at(text, catcher.offset);
    return config_error{kind::syntax, state_->file, position.line, position.column, {}, catcher.reason};
  }
  state_->document = config_json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (state_->document.is_discarded()) return state_->fail(kind::syntax, {}, "not valid JSON");

  // 2. Overrides, in order.
  for (const config_override& o : options.overrides) {
    auto resolved = apply_override(state_->document, o);
    if (!resolved) {
      std::string reason = std::move(resolved.error());
      if (!o.source.empty()) reason += " (" + o.source + ")";
      return state_->fail(kind::override, o.pointer, std::move(reason));
    }
    state_->applied.push_back({std::move(*resolved), o.source});
  }
  return std::nullopt;
}

std::optional<config_error> config_parse::check_shape(const std::optional<config_json>& shape) {
  if (shape) collect_differences(*shape, state_->document, "", state_->differences);
  std::vector<shape_difference> integer_differences;
  std::copy_if(state_->differences.found.begin(), state_->differences.found.end(),
               std::back_inserter(integer_differences),
               [](const auto& d) { return d.kind == shape_difference::kind_type::integer; });
  if (const shape_difference* first = first_in_text(integer_differences, state_->text, state_->applied)) {
    return state_->type_error({*first}, "type must be integer, but is " + first->actual);
  }
  return std::nullopt;
}

const config_json& config_parse::document() const noexcept { return state_->document; }

config_error config_parse::conversion_error(std::string_view what) const {
  std::string reason = without_nlohmann_prefix(what);
  const auto candidates = matching_differences(state_->differences, reason);
  return state_->type_error(candidates, std::move(reason));
}

config_error config_parse::rejection(config_invalid rejected) const {
  return error_about(config_error::kind_type::invalid, state_->file, state_->text, state_->applied, rejected.path,
                     rejected.path, std::move(rejected.reason));
}

config_error config_parse::error(config_error::kind_type kind, std::string reason) const {
  return state_->fail(kind, {}, std::move(reason));
}

}  // namespace detail

std::string config_error::describe() const {
  std::string out = file;
  if (line != 0) {
    out += ":" + std::to_string(line);
    if (column != 0) out += ":" + std::to_string(column);
  }
  out += ": ";
  out += detail::kind_words(kind);
  if (!path.empty()) out += " at " + path;
  out += ": " + reason;
  return out;
}

std::vector<config_override> config_overrides_from_args(int argc, const char* const* argv,
                                                               std::string_view flag) {
  std::vector<config_override> overrides;
  const std::string joined = std::string(flag) + "=";
  for (int i = 1; i < argc && argv[i] != nullptr; ++i) {
    const std::string_view argument = argv[i];
    if (argument == "--") break;
    if (argument == flag) {
      if (i + 1 >= argc || argv[i + 1] == nullptr) {
        throw std::invalid_argument("postal config: '" + std::string(flag) +
                                    "' needs /pointer=value after it");
      }
      const std::string_view spec = argv[++i];
      overrides.push_back(
          detail::parse_override_argument(spec, std::string(flag) + " " + std::string(spec), flag));
    } else if (argument.starts_with(joined)) {
      overrides.push_back(
          detail::parse_override_argument(argument.substr(joined.size()), std::string(argument), flag));
    }
  }
  return overrides;
}

std::vector<config_override> config_overrides_from_env(std::string_view prefix,
                                                              const char* const* env) {
  if (prefix.empty())
    throw std::invalid_argument("postal config: an empty environment prefix takes every variable");
  if (env == nullptr) env = ::environ;
  std::vector<std::pair<std::string, config_override>> found;  // by variable name
  for (; env != nullptr && *env != nullptr; ++env) {
    const std::string_view entry = *env;
    const auto equals = entry.find('=');
    if (equals == std::string_view::npos) continue;
    const std::string_view name = entry.substr(0, equals);
    if (name.size() <= prefix.size() || !name.starts_with(prefix)) continue;
    std::string pointer;
    bool empty_segment = false;
    std::string_view rest = name.substr(prefix.size());
    while (true) {
      const auto separator = rest.find("__");
      std::string segment(rest.substr(0, separator));
      empty_segment = empty_segment || segment.empty();
      for (char& c : segment) {
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
      }
      pointer += "/" + detail::escape_pointer_token(segment);
      if (separator == std::string_view::npos) break;
      rest.remove_prefix(separator + 2);
    }
    if (empty_segment) continue;
    found.emplace_back(std::string(name),
                       config_override{std::move(pointer), std::string(entry.substr(equals + 1)),
                                       "environment " + std::string(name)});
  }
  std::stable_sort(found.begin(), found.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<config_override> overrides;
  for (auto& [name, o] : found) overrides.push_back(std::move(o));
  return overrides;
}

}  // namespace postal
