// libFuzzer target for the config loader (postal/config_loader.hpp): any bytes as a configuration file, and
// as an override. It aborts when the loader returns a value its validator rejects or an error whose position
// is outside the text, and when, on text nlohmann accepts, detail::locate misses a key or an element of the
// document or points at a value of another type. ASan and UBSan catch the rest. Not a test of nlohmann.
#include <postal/config_loader.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

struct feature_config {
  bool enabled = false;
  std::vector<std::string> names;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(feature_config, enabled, names)

struct app_config {
  std::string host;
  int port = 0;
  feature_config feature;
  double ratio = 0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(app_config, host, port, feature, ratio)

std::optional<postal::config_invalid> check_app_config(const app_config& config) {
  if (config.host.empty()) return postal::config_invalid{"/host", "the host must not be empty"};
  if (config.port < 1 || config.port > 65535)
    return postal::config_invalid{"/port", "the port must be in 1..65535"};
  for (std::size_t i = 0; i < config.feature.names.size(); ++i) {
    if (config.feature.names[i].empty())
      return postal::config_invalid{"/feature/names/" + std::to_string(i), "a name must not be empty"};
  }
  return std::nullopt;
}

[[noreturn]] void fail(const char* what, std::string_view detail) {
  std::fprintf(stderr, "config_loader_fuzz: %s: %.*s\n", what, static_cast<int>(detail.size()),
               detail.data());
  std::abort();
}

// Loads `text` with `options`: a value must pass the validator, an error must have a position in the text.
void load(std::string_view text, const postal::config_load_options& options) {
  const postal::config_validator<app_config> validator = check_app_config;
  auto result = postal::parse_config<app_config>(text, "fuzz.json", options, validator);
  if (result) {
    if (check_app_config(*result)) fail("returned a value the validator rejects", text);
    return;
  }
  const postal::config_error& error = result.error();
  const std::string description = error.describe();
  if (error.kind == postal::config_error::kind_type::missing ||
      error.kind == postal::config_error::kind_type::unreadable) {
    fail("a file error from text", description);
  }
  if ((error.line == 0) != (error.column == 0)) fail("a line without a column, or the reverse", description);
  if (error.kind == postal::config_error::kind_type::syntax && error.line == 0)
    fail("no syntax position", description);
  if (error.line == 0) return;
  // The line exists, and the column is at most one past its last character.
  std::size_t line_start = 0;
  for (std::size_t line = 1; line < error.line; ++line) {
    line_start = text.find('\n', line_start);
    if (line_start == std::string_view::npos) fail("an error line past the end", description);
    ++line_start;
  }
  const std::string_view line_text = text.substr(line_start, text.find('\n', line_start) - line_start);
  if (error.column > line_text.size() + 1) fail("an error column past the end of its line", description);
}

// The first character of a value of `value`'s type.
bool starts_like(char first, const nlohmann::json& value) {
  switch (value.type()) {
    case nlohmann::json::value_t::object:
      return first == '{';
    case nlohmann::json::value_t::array:
      return first == '[';
    case nlohmann::json::value_t::string:
      return first == '"';
    case nlohmann::json::value_t::boolean:
      return first == (value.get<bool>() ? 't' : 'f');
    case nlohmann::json::value_t::null:
      return first == 'n';
    default:
      return first == '-' || (first >= '0' && first <= '9');
  }
}

// locate() must find every value of `value` (at `pointer`), a few levels and pointers deep.
void check_locate(std::string_view text, const nlohmann::json& value, const std::string& pointer, int depth,
                  int& budget) {
  if (--budget < 0) return;
  const auto offset = postal::detail::find_value(text, pointer);
  if (!offset) fail("locate missed a value", pointer);
  if (*offset >= text.size() || !starts_like(text[*offset], value))
    fail("locate found another value", pointer);
  const auto position = postal::detail::locate(text, pointer);
  if (!position || position->offset != *offset) fail("locate and find_value disagree", pointer);
  if (depth == 0) return;
  if (value.is_object()) {
    for (const auto& [key, sub] : value.items()) {
      check_locate(text, sub, pointer + "/" + postal::detail::escape_pointer_token(key), depth - 1, budget);
    }
  } else if (value.is_array()) {
    for (std::size_t i = 0; i < value.size() && budget > 0; ++i) {
      check_locate(text, value[i], pointer + "/" + std::to_string(i), depth - 1, budget);
    }
  }
}

const std::string good_document =
    R"({"host": "example.org", "port": 8080, "feature": {"enabled": true, "names": ["a"]}, "ratio": 0.5})";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  // The input as a file, alone and under overrides that fix its port and add a name.
  load(text, {});
  postal::config_load_options overrides;
  overrides.overrides = {{"/port", "8080", "fuzz port"}, {"/feature/names/-", "\"x\"", "fuzz name"}};
  load(text, overrides);

  // The input as an override of a good document: "<pointer>\n<value>" when it starts with '/', else the
  // value of /feature.
  postal::config_load_options from_input;
  const auto newline = text.find('\n');
  if (text.starts_with('/') && newline != std::string_view::npos) {
    from_input.overrides = {
        {std::string(text.substr(0, newline)), std::string(text.substr(newline + 1)), "fuzz"}};
  } else {
    from_input.overrides = {{"/feature", std::string(text), "fuzz"}};
  }
  load(good_document, from_input);

  // The scanner, on text nlohmann accepts: every value it finds, and a few pointers that may not be there.
  const auto document = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!document.is_discarded()) {
    int budget = 256;
    check_locate(text, document, "", 3, budget);
    for (const char* pointer : {"/host", "/feature/names/0", "/a~1b", "/0/0", "/-", "/~2"}) {
      (void)postal::detail::locate(text, pointer);
    }
  }
  return 0;
}
