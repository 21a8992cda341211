// postal config loader: a JSON configuration file (or text) in, a typed struct out, through nlohmann/json
// (T's from_json), the overrides the application collected and a validator it supplies. Synchronous and
// CAF-free: every failure is a config_error value naming the file, the line and the reason, never an
// exception, and a half-converted value is never returned. The config actor builds on it to reload a file and
// publish the good values through a watch channel. Not for: watching files, publishing, or writing
// configuration back.
//
// Precedence, lowest first: the file < environment overrides < command-line overrides. Overrides are
// applied in order and the later wins, so pass the environment's first and the command line's after them:
//
//   postal::config_load_options options;
//   options.overrides = postal::config_overrides_from_env("APP_");        // APP_SERVER__PORT=8080
//   for (auto& o : postal::config_overrides_from_args(argc, argv)) options.overrides.push_back(o);
//   auto loaded = postal::load_config<app_config>("app.json", options, check_app_config);
//   if (!loaded) std::cerr << loaded.error().describe() << '\n';   // app.json:3:13: type error at ...
//
// Positions are 1-based; a line ends at '\n' (a CRLF ends one line), and a column counts characters (UTF-8
// code points) from the start of its line.
//
// The loader's steps that do not depend on T (reading, syntax, overrides, positions, error messages) are
// compiled in the patterns library (src/config_loader.cpp); here are the declarations and the templates.
#pragma once

#include <postal/expected.hpp>

#include <cstddef>
#include <exception>
#include <filesystem>
#include <functional>
#include <iosfwd>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace postal {

/// Why a configuration could not be loaded. describe() gives the one-line form for logs:
/// "<file>:<line>:<column>: <kind words>[ at <path>]: <reason>" (line/column omitted when 0).
struct config_error {
  enum class kind_type {
    missing,     // the file does not exist
    unreadable,  // it exists but cannot be read (permissions, a directory, an I/O error, over max_bytes)
    syntax,      // not valid JSON (line and column of the error)
    type,        // valid JSON that from_json rejects: a wrong type or a missing key
    invalid,     // the validator rejected the value
    override,    // a command-line or environment override could not be applied
  };
  kind_type kind;
  std::string file;        // the file name as given ("<text>" or similar when parsing a string with no file)
  std::size_t line = 0;    // 1-based; 0 when unknown or not applicable (a value that came from an override)
  std::size_t column = 0;  // 1-based; 0 when unknown
  std::string path;        // JSON pointer of the offending value when known ("/server/port"), else empty
  std::string reason;      // ends with "(<override source>)" when the offending value came from an override
  std::string describe() const;
  friend bool operator==(const config_error&, const config_error&) = default;
};
// Printing, as every postal error: describe()'s line.
inline std::string to_string(const config_error& error) { return error.describe(); }
inline std::ostream& operator<<(std::ostream& out, const config_error& error) { return out << error.describe(); }

/// What a validator returns to reject a value: the JSON pointer of the offending field (may be empty)
/// and why. The loader turns it into a config_error of kind invalid, with the line of that field.
struct config_invalid {
  std::string path;
  std::string reason;
};

/// Checks a converted value: std::nullopt accepts it. A validator that throws rejects it with what().
template <class T>
using config_validator = std::function<std::optional<config_invalid>(const T&)>;

/// One override: a JSON pointer and a value. The value is parsed as JSON when it is valid JSON
/// ("8080", "true", "[1,2]", "\"x\"") and taken as a plain string otherwise ("localhost").
/// It may add keys (and objects on the way) that the file lacks; "-" as the last token appends to an array.
struct config_override {
  std::string pointer;
  std::string value;
  std::string source;  // where it came from, for error messages ("--set /port=80", "environment APP_PORT")
};

/// Overrides from the command line: every `--set /a/b=value` (two arguments) or `--set=/a/b=value`, in
/// order. (`flag` replaces "--set".) A pointer without the leading '/' gets one. argv[0] (the program) is
/// skipped, other arguments are ignored, and scanning stops at "--". Malformed ones (no '=', an empty
/// pointer, the flag last with no value) throw std::invalid_argument naming the argument.
/// Precedence: file < environment < command line; apply these after config_overrides_from_env's.
std::vector<config_override> config_overrides_from_args(int argc, const char* const* argv,
                                                        std::string_view flag = "--set");

/// Overrides from environment variables named PREFIX + path segments joined by "__", lower-cased:
/// with prefix "APP_", APP_SERVER__PORT=8080 overrides /server/port and APP_MAX_USERS=3 /max_users.
/// `env` is an environ-style array (nullptr-terminated "NAME=value" strings); the default reads the
/// process environment. Sorted by variable name, so a parent (APP_SERVER) comes before its children
/// (APP_SERVER__PORT). Names with an empty segment (APP_A____B) are ignored; an empty prefix throws
/// std::invalid_argument (it would take every variable).
/// Precedence: file < environment < command line; apply these before config_overrides_from_args's.
std::vector<config_override> config_overrides_from_env(std::string_view prefix,
                                                       const char* const* env = nullptr);

struct config_load_options {
  std::vector<config_override> overrides;    // applied in order, the later wins
  std::size_t max_bytes = 16 * 1024 * 1024;  // a larger file is `unreadable` (no unbounded allocation)
};

/// Parses `text` as JSON, applies the overrides, converts with from_json (T's nlohmann conversion) and
/// runs `validate` (may be empty). Never throws for bad input: every failure is a config_error; an
/// exception thrown by from_json or by the validator becomes a `type` / `invalid` error with its what().
/// When T is default-constructible and has a to_json, `nlohmann::json(T{})` is the expected shape: it names
/// the field of a type error, and a number with a fraction or an exponent where that shape holds an integer
/// is a type error (nlohmann would truncate it, or, out of the integer's range, convert with undefined
/// behaviour). Duplicate keys: the last one counts, as in nlohmann.
template <class T>
expected<T, config_error> parse_config(std::string_view text, std::string_view file_name,
                                       const config_load_options& options = {},
                                       const config_validator<T>& validate = {});

/// Reads `file` (missing / unreadable errors as above) and parse_config's it.
template <class T>
expected<T, config_error> load_config(const std::filesystem::path& file,
                                      const config_load_options& options = {},
                                      const config_validator<T>& validate = {});

// ---------------------------------------------------------------------------------------------------------
// Implementation: the templates, over the library's non-template steps.

namespace detail {

using config_json = nlohmann::json;

/// Where something is in a text: 1-based line and column, and the 0-based byte offset.
struct text_position {
  std::size_t line = 0;
  std::size_t column = 0;
  std::size_t offset = 0;
  friend bool operator==(const text_position&, const text_position&) = default;
};

/// One reference token, escaped for a JSON pointer ('~' -> ~0, '/' -> ~1).
std::string escape_pointer_token(std::string_view token);

/// The byte offset where the value at JSON pointer `pointer` starts in the JSON `text`, or nullopt when
/// there is none (or the pointer or the text is malformed). Keys compare after unescaping; of duplicate
/// keys the last counts, as in nlohmann.
std::optional<std::size_t> find_value(std::string_view text, std::string_view pointer);

/// The line and column where the value at JSON pointer `pointer` starts in the JSON `text`, or nullopt.
std::optional<text_position> locate(std::string_view text, std::string_view pointer);

/// Reads `file`, failing as soon as it turns out to be larger than `max_bytes`.
expected<std::string, config_error> read_config_file(const std::filesystem::path& file, std::size_t max_bytes);

/// One parse_config, step by step: the steps that do not depend on T. `text` and `file_name` must outlive it.
class config_parse {
 public:
  config_parse(std::string_view text, std::string_view file_name);
  ~config_parse();
  config_parse(const config_parse&) = delete;
  config_parse& operator=(const config_parse&) = delete;

  /// Steps 1 and 2: checks the syntax (the error names the position of the first error), parses the
  /// document and applies the overrides in order.
  std::optional<config_error> parse(const config_load_options& options);
  /// Step 3: compares the document with the shape T's values have (nlohmann::json(T{}), if known); a
  /// number with a fraction or an exponent where the shape holds an integer is a type error.
  std::optional<config_error> check_shape(const std::optional<config_json>& shape);
  /// The document, overrides applied.
  const config_json& document() const noexcept;
  /// Step 4 failed: the type error for nlohmann's exception message, naming the field it is about if known.
  config_error conversion_error(std::string_view what) const;
  /// Step 5 failed: the validator's rejection, at the line of the field it names.
  config_error rejection(config_invalid rejected) const;
  /// An error of `kind` with no position and no path.
  config_error error(config_error::kind_type kind, std::string reason) const;

 private:
  struct state;
  std::unique_ptr<state> state_;
};

/// The shape T's values have, nlohmann::json(T{}), when T is default-constructible and has a to_json.
template <class T>
std::optional<config_json> expected_shape() {
  if constexpr (std::is_default_constructible_v<T> && std::is_constructible_v<config_json, const T&>) {
    try {
      const T value{};
      return config_json(value);
    } catch (...) {
      return std::nullopt;
    }
  } else {
    return std::nullopt;
  }
}

}  // namespace detail

template <class T>
expected<T, config_error> parse_config(std::string_view text, std::string_view file_name,
                                       const config_load_options& options,
                                       const config_validator<T>& validate) {
  using kind = config_error::kind_type;
  detail::config_parse parse(text, file_name);
  // 1. Syntax, with the position of the first error; 2. overrides, in order.
  if (auto failed = parse.parse(options)) return unexpected{std::move(*failed)};
  // 3. The expected shape: integers where T holds integers, and the field a type error is about.
  if (auto failed = parse.check_shape(detail::expected_shape<T>())) return unexpected{std::move(*failed)};

  // 4. Conversion: the value exists only once from_json has finished.
  std::optional<T> value;
  try {
    value.emplace(parse.document().template get<T>());
  } catch (const detail::config_json::exception& error) {
    return unexpected{parse.conversion_error(error.what())};
  } catch (const std::exception& error) {
    return unexpected{parse.error(kind::type, error.what())};
  } catch (...) {
    return unexpected{parse.error(kind::type, "from_json threw an exception that is not a std::exception")};
  }

  // 5. Validation.
  if (validate) {
    try {
      if (std::optional<config_invalid> rejected = validate(*value)) {
        return unexpected{parse.rejection(std::move(*rejected))};
      }
    } catch (const std::exception& error) {
      return unexpected{parse.error(kind::invalid, error.what())};
    } catch (...) {
      return unexpected{parse.error(kind::invalid, "the validator threw an exception that is not a std::exception")};
    }
  }
  return std::move(*value);
}

template <class T>
expected<T, config_error> load_config(const std::filesystem::path& file, const config_load_options& options,
                                      const config_validator<T>& validate) {
  auto text = detail::read_config_file(file, options.max_bytes);
  if (!text) return unexpected{std::move(text.error())};
  return parse_config<T>(*text, file.string(), options, validate);
}

}  // namespace postal
