// Tests of the config loader (postal/config_loader.hpp): good files, every way a file can be wrong (missing,
// a directory, unreadable, too large, empty, truncated, a syntax error, a wrong type, a missing key, a
// rejected or throwing validator, a throwing from_json) with the file, line, column and path a log line
// needs, CRLF and UTF-8 positions, overrides from the command line and the environment and their
// precedence, and detail::locate on the JSON pointers it must find. Files live in a fresh temporary directory
// per test.
#include <postal/config_loader.hpp>

#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace {

namespace fs = std::filesystem;
using postal::config_error;
using postal::config_invalid;
using postal::config_load_options;
using postal::config_override;
using postal::config_validator;
using postal::load_config;
using postal::parse_config;
using kind = postal::config_error::kind_type;

// --- the configuration of a small application ----------------------------------------------------------

struct feature_config {
  bool enabled = false;
  std::vector<std::string> names;
  friend bool operator==(const feature_config&, const feature_config&) = default;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(feature_config, enabled, names)

struct app_config {
  std::string host;
  int port = 0;
  feature_config feature;
  double ratio = 0;
  friend bool operator==(const app_config&, const app_config&) = default;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(app_config, host, port, feature, ratio)

const std::string good_text = R"({
  "host": "example.org",
  "port": 8080,
  "feature": {"enabled": true, "names": ["a", "b"]},
  "ratio": 0.5
})";
const app_config good_value{"example.org", 8080, {true, {"a", "b"}}, 0.5};

// The application's rules: a host, and a port a socket can bind.
std::optional<config_invalid> check_app_config(const app_config& config) {
  if (config.host.empty()) return config_invalid{"/host", "the host must not be empty"};
  if (config.port < 1 || config.port > 65535) return config_invalid{"/port", "the port must be in 1..65535"};
  return std::nullopt;
}
const config_validator<app_config> app_rules = check_app_config;

postal::expected<app_config, config_error> parse(std::string_view text,
                                                 const config_load_options& options = {},
                                                 const config_validator<app_config>& validate = app_rules) {
  return parse_config<app_config>(text, "app.json", options, validate);
}

// A fresh directory under the system's temporary directory, removed with everything in it.
class temp_dir {
 public:
  temp_dir() {
    static std::atomic<int> counter{0};
    const auto name = "postal_config_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) +
                      "_" + std::to_string(std::random_device{}());
    path_ = fs::temp_directory_path() / name;
    fs::create_directories(path_);
  }
  ~temp_dir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  const fs::path& path() const { return path_; }
  fs::path write(const std::string& name, const std::string& content) const {
    const fs::path file = path_ / name;
    std::ofstream out(file, std::ios::binary);
    out << content;
    return file;
  }

 private:
  fs::path path_;
};

// The error of a result that must have failed.
template <class T>
config_error error_of(const postal::expected<T, config_error>& result) {
  REQUIRE_FALSE(result.has_value());
  return result.error();
}

}  // namespace

// --- files ----------------------------------------------------------------------------------------------

TEST_CASE("a good file loads into the typed struct", "[config]") {
  temp_dir dir;
  const auto file = dir.write("app.json", good_text);
  auto loaded = load_config<app_config>(file, {}, app_rules);
  REQUIRE(loaded.has_value());
  CHECK(*loaded == good_value);
  SECTION("without a validator too") {
    auto unchecked = load_config<app_config>(file);
    REQUIRE(unchecked.has_value());
    CHECK(*unchecked == good_value);
  }
}

TEST_CASE("a missing file is a `missing` error naming the file, with no line", "[config]") {
  temp_dir dir;
  const auto file = dir.path() / "absent.json";
  const auto error = error_of(load_config<app_config>(file));
  CHECK(error.kind == kind::missing);
  CHECK(error.file == file.string());
  CHECK(error.line == 0);
  CHECK(error.describe() == file.string() + ": missing file: no such file");
}

TEST_CASE("a directory instead of a file is `unreadable`", "[config]") {
  temp_dir dir;
  fs::create_directory(dir.path() / "app.json");
  const auto error = error_of(load_config<app_config>(dir.path() / "app.json"));
  CHECK(error.kind == kind::unreadable);
  CHECK(error.reason == "is a directory");
}

TEST_CASE("a file without read permission is `unreadable` with the system's reason", "[config]") {
  if (::geteuid() == 0) {
    WARN("running as root, which reads any file: the unreadable-file check is skipped");
    return;
  }
  temp_dir dir;
  const auto file = dir.write("app.json", good_text);
  fs::permissions(file, fs::perms::none);
  const auto error = error_of(load_config<app_config>(file));
  CHECK(error.kind == kind::unreadable);
  CHECK(error.reason == std::error_code(EACCES, std::system_category()).message());
}

TEST_CASE("a file over max_bytes is `unreadable`; one of exactly max_bytes loads", "[config]") {
  temp_dir dir;
  const auto file = dir.write("app.json", good_text);
  config_load_options options;
  options.max_bytes = good_text.size() - 1;
  const auto error = error_of(load_config<app_config>(file, options));
  CHECK(error.kind == kind::unreadable);
  CHECK(error.reason == "larger than the limit of " + std::to_string(good_text.size() - 1) + " bytes");
  options.max_bytes = good_text.size();
  CHECK(load_config<app_config>(file, options).has_value());
}

// --- syntax errors: nlohmann's reason at our line and column --------------------------------------------

TEST_CASE("an empty file is a syntax error at 1:1", "[config]") {
  temp_dir dir;
  const auto file = dir.write("empty.json", "");
  const auto error = error_of(load_config<app_config>(file));
  CHECK(error.kind == kind::syntax);
  CHECK(error.line == 1);
  CHECK(error.column == 1);
  CHECK(error.reason ==
        "syntax error while parsing value - unexpected end of input; expected '[', '{', or a literal");
  CHECK(error.describe() == file.string() + ":1:1: syntax error: " + error.reason);
}

TEST_CASE("truncated JSON is a syntax error at the end of the input", "[config]") {
  SECTION("in the middle of a line") {
    const auto error = error_of(parse("{\n  \"host\": \"example.org\",\n  \"port\": 80"));
    CHECK(error.kind == kind::syntax);
    CHECK(error.line == 3);
    CHECK(error.column == 13);
    CHECK(error.reason == "syntax error while parsing object - unexpected end of input; expected '}'");
  }
  SECTION("after a line end") {
    const auto error = error_of(parse("{\n  \"host\": \"example.org\",\n"));
    CHECK(error.line == 3);
    CHECK(error.column == 1);
  }
  SECTION("inside a string") {
    const auto error = error_of(parse("{\"host\": \"exam"));
    CHECK(error.line == 1);
    CHECK(error.column == 15);
    CHECK(error.reason.find("missing closing quote") != std::string::npos);
  }
}

TEST_CASE("a syntax error on line 3 reports that line and the column of the offending character",
          "[config]") {
  const std::string text = "{\n  \"host\": \"example.org\",\n  \"port\" 80,\n  \"ratio\": 1\n}\n";
  const auto error = error_of(parse(text));
  CHECK(error.kind == kind::syntax);
  CHECK(error.file == "app.json");
  CHECK(error.line == 3);
  CHECK(error.column == 10);
  CHECK(error.path.empty());
  CHECK(error.reason ==
        "syntax error while parsing object separator - unexpected number literal; expected ':'");
  CHECK(
      error.describe() ==
      "app.json:3:10: syntax error: syntax error while parsing object separator - unexpected number literal; "
      "expected ':'");
  SECTION("on the first line") {
    const auto first = error_of(parse("{\"host\" \"x\"}"));
    CHECK(first.line == 1);
    CHECK(first.column == 9);
  }
  SECTION("a control character in a string is on the line it ends, not the next") {
    const auto newline = error_of(parse("{\"host\": \"exa\nmple\"}"));
    CHECK(newline.line == 1);
    CHECK(newline.column == 14);
  }
  SECTION("text after the document") {
    const auto trailing = error_of(parse("{}\n\n  x"));
    CHECK(trailing.line == 3);
    CHECK(trailing.column == 3);
  }
  SECTION("a number too large for a double is reported at its first digit") {
    const auto overflow = error_of(parse("{\n  \"ratio\": 1e999\n}"));
    CHECK(overflow.kind == kind::syntax);
    CHECK(overflow.line == 2);
    CHECK(overflow.column == 12);
    CHECK(overflow.reason == "number overflow parsing '1e999'");
  }
  SECTION("columns count characters, not bytes, and a byte order mark is not a column") {
    const auto utf8 = error_of(parse("{\"host\": \"\xC3\xA9t\xC3\xA9\" x}"));
    CHECK(utf8.column == 16);
    const auto bom = error_of(parse("\xEF\xBB\xBF{]"));
    CHECK(bom.line == 1);
    CHECK(bom.column == 2);
  }
}

TEST_CASE("CRLF files load, and their errors have the same positions as with LF", "[config]") {
  auto crlf = [](std::string text) {
    std::string out;
    for (char c : text) {
      if (c == '\n') out += '\r';
      out += c;
    }
    return out;
  };
  temp_dir dir;
  auto good = load_config<app_config>(dir.write("good.json", crlf(good_text)), {}, app_rules);
  REQUIRE(good.has_value());
  CHECK(*good == good_value);

  const std::string bad = "{\n  \"host\": \"example.org\",\n  \"port\" 80,\n  \"ratio\": 1\n}\n";
  const auto error = error_of(load_config<app_config>(dir.write("bad.json", crlf(bad))));
  CHECK(error.line == 3);
  CHECK(error.column == 10);
  SECTION("an error at a line start") {
    const auto trailing = error_of(parse("{\r\n\"port\": 1,\r\n}\r\n"));
    CHECK(trailing.line == 3);
    CHECK(trailing.column == 1);
  }
  SECTION("type errors are located through CRLF too") {
    const auto type =
        error_of(parse(crlf("{\n  \"host\": \"h\",\n  \"port\": \"80\",\n  \"feature\": {\"enabled\": "
                            "true, \"names\": []},\n  \"ratio\": 1\n}")));
    CHECK(type.path == "/port");
    CHECK(type.line == 3);
    CHECK(type.column == 11);
  }
}

// --- type errors: the field, its line, and nlohmann's reason --------------------------------------------

TEST_CASE("a wrong type at a nested key reports its path and line", "[config]") {
  const std::string text = R"({
  "host": "example.org",
  "port": 8080,
  "feature": {
    "enabled": "yes",
    "names": []
  },
  "ratio": 0.5
})";
  const auto error = error_of(parse(text));
  CHECK(error.kind == kind::type);
  CHECK(error.path == "/feature/enabled");
  CHECK(error.line == 5);
  CHECK(error.column == 16);
  CHECK(error.reason == "type must be boolean, but is string");
  CHECK(error.describe() ==
        "app.json:5:16: type error at /feature/enabled: type must be boolean, but is string");

  SECTION("an element of an array") {
    const auto element = error_of(
        parse(R"({"host": "h", "port": 1, "feature": {"enabled": true, "names": ["a", 2]}, "ratio": 1})"));
    CHECK(element.path == "/feature/names/1");
    CHECK(element.line == 1);
    CHECK(element.column == 70);
    CHECK(element.reason == "type must be string, but is number");
  }
  SECTION("an object where a scalar belongs, and a scalar where an object belongs") {
    const auto object = error_of(parse(R"({"host": {"name": "h"}, "port": 1, "feature": {}, "ratio": 1})"));
    CHECK(object.path == "/host");
    CHECK(object.column == 10);
    const auto scalar = error_of(parse("{\"host\": \"h\", \"port\": 1,\n \"feature\": 7, \"ratio\": 1}"));
    CHECK(scalar.path == "/feature");
    CHECK(scalar.line == 2);
    CHECK(scalar.column == 13);
    CHECK(scalar.reason == "cannot use at() with number");
  }
  SECTION("of several wrong fields, the one nlohmann stopped at is named") {
    const auto first =
        error_of(parse(R"({"host": 1, "port": "x", "feature": {"enabled": true, "names": []}, "ratio": 1})"));
    CHECK(first.reason == "type must be string, but is number");
    CHECK(first.path == "/host");
  }
}

TEST_CASE("a missing key reports its path and the line of the object that lacks it", "[config]") {
  const std::string text =
      "{\n  \"host\": \"example.org\",\n  \"port\": 8080,\n  \"feature\": {\n    \"enabled\": "
      "true\n  },\n  \"ratio\": 0.5\n}";
  const auto error = error_of(parse(text));
  CHECK(error.kind == kind::type);
  CHECK(error.path == "/feature/names");
  CHECK(error.line == 4);
  CHECK(error.column == 14);
  CHECK(error.reason == "key 'names' not found");
  SECTION("at the top level") {
    const auto top =
        error_of(parse(R"({"host": "h", "port": 1, "feature": {"enabled": true, "names": []}})"));
    CHECK(top.path == "/ratio");
    CHECK(top.line == 1);
    CHECK(top.column == 1);
  }
}

TEST_CASE("a number with a fraction where the struct holds an integer is a type error", "[config]") {
  const auto error = error_of(
      parse(R"({"host": "h", "port": 80.5, "feature": {"enabled": true, "names": []}, "ratio": 1})"));
  CHECK(error.kind == kind::type);
  CHECK(error.path == "/port");
  CHECK(error.column == 23);
  CHECK(error.reason == "type must be integer, but is number 80.5");
  SECTION("out of the integer's range (converting it would be undefined behaviour)") {
    const auto huge = error_of(
        parse(R"({"host": "h", "port": 1e300, "feature": {"enabled": true, "names": []}, "ratio": 1})"));
    CHECK(huge.path == "/port");
  }
  SECTION("an integer where the struct holds a double is fine") {
    auto loaded =
        parse(R"({"host": "h", "port": 80, "feature": {"enabled": true, "names": []}, "ratio": 1})");
    REQUIRE(loaded.has_value());
    CHECK(loaded->ratio == 1.0);
  }
}

namespace {
// A struct whose from_json throws its own exception, and which has no to_json.
struct strict_port {
  int port = 0;
};
void from_json(const nlohmann::json& j, strict_port& value) {
  value.port = j.at("port").get<int>();
  if (value.port % 2 != 0) throw std::runtime_error("strict_port: the port must be even");
}
}  // namespace

TEST_CASE("an exception from from_json is a type error with its what(); without to_json, no path",
          "[config]") {
  const auto thrown = error_of(parse_config<strict_port>(R"({"port": 81})", "strict.json"));
  CHECK(thrown.kind == kind::type);
  CHECK(thrown.reason == "strict_port: the port must be even");
  CHECK(thrown.path.empty());
  CHECK(thrown.line == 0);

  const auto wrong = error_of(parse_config<strict_port>(R"({"port": "x"})", "strict.json"));
  CHECK(wrong.kind == kind::type);
  CHECK(wrong.reason == "type must be number, but is string");
  CHECK(wrong.path.empty());
  CHECK(wrong.describe() == "strict.json: type error: type must be number, but is string");

  auto good = parse_config<strict_port>(R"({"port": 80})", "strict.json");
  REQUIRE(good.has_value());
  CHECK(good->port == 80);
}

namespace {
// A type that is not default-constructible, converted by nlohmann's adl_serializer.
struct endpoint {
  endpoint(std::string host_name, int port_number) : host(std::move(host_name)), port(port_number) {}
  std::string host;
  int port;
};
}  // namespace
template <>
struct nlohmann::adl_serializer<endpoint> {
  static endpoint from_json(const json& j) {
    return {j.at("host").get<std::string>(), j.at("port").get<int>()};
  }
};

TEST_CASE("a type without a default constructor loads through adl_serializer::from_json", "[config]") {
  auto loaded = parse_config<endpoint>(R"({"host": "h", "port": 5})", "endpoint.json");
  REQUIRE(loaded.has_value());
  CHECK(loaded->host == "h");
  CHECK(loaded->port == 5);
  const auto error = error_of(parse_config<endpoint>(R"({"host": "h"})", "endpoint.json"));
  CHECK(error.kind == kind::type);
  CHECK(error.reason == "key 'port' not found");
  CHECK(error.line == 0);
}

// --- validators -----------------------------------------------------------------------------------------

TEST_CASE("a validator's rejection is an `invalid` error at the line of the field it names", "[config]") {
  const std::string text =
      "{\n  \"host\": \"example.org\",\n  \"port\": 0,\n  \"feature\": {\"enabled\": true, "
      "\"names\": []},\n  \"ratio\": 0.5\n}";
  const auto error = error_of(parse(text));
  CHECK(error.kind == kind::invalid);
  CHECK(error.path == "/port");
  CHECK(error.line == 3);
  CHECK(error.column == 11);
  CHECK(error.reason == "the port must be in 1..65535");
  CHECK(error.describe() == "app.json:3:11: invalid value at /port: the port must be in 1..65535");
  SECTION("a path that is not in the file has no line") {
    config_validator<app_config> elsewhere = [](const app_config&) {
      return std::optional<config_invalid>(config_invalid{"/nowhere", "no"});
    };
    const auto unlocated = error_of(parse(good_text, {}, elsewhere));
    CHECK(unlocated.path == "/nowhere");
    CHECK(unlocated.line == 0);
  }
  SECTION("an empty path is the whole document") {
    config_validator<app_config> whole = [](const app_config&) {
      return std::optional<config_invalid>(config_invalid{"", "not today"});
    };
    const auto document = error_of(parse("\n\n  " + good_text, {}, whole));
    CHECK(document.line == 3);
    CHECK(document.column == 3);
    CHECK(document.describe() == "app.json:3:3: invalid value: not today");
  }
}

TEST_CASE("a validator that throws rejects the value with what()", "[config]") {
  config_validator<app_config> throwing = [](const app_config&) -> std::optional<config_invalid> {
    throw std::runtime_error("validator failed");
  };
  const auto error = error_of(parse(good_text, {}, throwing));
  CHECK(error.kind == kind::invalid);
  CHECK(error.reason == "validator failed");
  CHECK(error.path.empty());
  CHECK(error.line == 0);
}

// --- overrides ------------------------------------------------------------------------------------------

TEST_CASE("command-line overrides: both spellings, in order, with sources", "[config]") {
  const char* argv[] = {"app",   "--set",    "/port=80", "--verbose", "--set=/feature/enabled=false",
                        "--set", "host=a=b", "--",       "--set",     "/ratio=2"};
  const auto overrides = postal::config_overrides_from_args(static_cast<int>(std::size(argv)), argv);
  REQUIRE(overrides.size() == 3);
  CHECK(overrides[0].pointer == "/port");
  CHECK(overrides[0].value == "80");
  CHECK(overrides[0].source == "--set /port=80");
  CHECK(overrides[1].pointer == "/feature/enabled");
  CHECK(overrides[1].value == "false");
  CHECK(overrides[1].source == "--set=/feature/enabled=false");
  CHECK(overrides[2].pointer == "/host");  // a pointer without '/' gets one; the value keeps its '='
  CHECK(overrides[2].value == "a=b");

  SECTION("another flag") {
    const char* other[] = {"app", "-D", "/port=1", "--set", "/port=2"};
    const auto custom = postal::config_overrides_from_args(5, other, "-D");
    REQUIRE(custom.size() == 1);
    CHECK(custom[0].source == "-D /port=1");
  }
  SECTION("malformed ones throw, naming the argument") {
    const char* no_equals[] = {"app", "--set", "/port"};
    CHECK_THROWS_WITH(postal::config_overrides_from_args(3, no_equals), Catch::Contains("--set /port"));
    const char* joined_no_equals[] = {"app", "--set=/port"};
    CHECK_THROWS_AS(postal::config_overrides_from_args(2, joined_no_equals), std::invalid_argument);
    const char* empty_pointer[] = {"app", "--set", "=80"};
    CHECK_THROWS_AS(postal::config_overrides_from_args(3, empty_pointer), std::invalid_argument);
    const char* last[] = {"app", "--set"};
    CHECK_THROWS_AS(postal::config_overrides_from_args(2, last), std::invalid_argument);
  }
}

TEST_CASE("environment overrides: prefix, '__' nesting, lower case, JSON or plain string values",
          "[config]") {
  const char* env[] = {"PATH=/usr/bin",
                       "APP_SERVER__PORT=8080",
                       "APP_HOST=localhost",
                       "APP_MAX_USERS=3",
                       "APP_FEATURE__NAMES=[\"x\",\"y\"]",
                       "APP_QUOTED=\"7\"",
                       "APP_=ignored",
                       "APP_A____B=ignored",
                       "OTHER_PORT=1",
                       "APP_TILDE~/=1",
                       nullptr};
  const auto overrides = postal::config_overrides_from_env("APP_", env);
  std::vector<std::string> pointers;
  for (const auto& o : overrides) pointers.push_back(o.pointer);
  CHECK(pointers == std::vector<std::string>{"/feature/names", "/host", "/max_users", "/quoted",
                                             "/server/port", "/tilde~0~1"});
  CHECK(overrides[1].source == "environment APP_HOST");
  CHECK(overrides[1].value == "localhost");

  SECTION("values are JSON when they parse as JSON, strings otherwise") {
    const char* values[] = {"APP_HOST=localhost",         "APP_PORT=81",    "APP_FEATURE__ENABLED=false",
                            "APP_FEATURE__NAMES=[\"x\"]", "APP_RATIO=0.25", nullptr};
    config_load_options options;
    options.overrides = postal::config_overrides_from_env("APP_", values);
    auto loaded = parse(good_text, options);
    REQUIRE(loaded.has_value());
    CHECK(*loaded == app_config{"localhost", 81, {false, {"x"}}, 0.25});
    const char* quoted[] = {"APP_HOST=\"80\"", nullptr};
    options.overrides = postal::config_overrides_from_env("APP_", quoted);
    auto string_host = parse(good_text, options);
    REQUIRE(string_host.has_value());
    CHECK(string_host->host == "80");
  }
  SECTION("the process environment by default") {
    ::setenv("POSTAL_CONFIG_TEST_PORT", "99", 1);
    const auto from_process = postal::config_overrides_from_env("POSTAL_CONFIG_TEST_");
    ::unsetenv("POSTAL_CONFIG_TEST_PORT");
    REQUIRE(from_process.size() == 1);
    CHECK(from_process[0].pointer == "/port");
    CHECK(from_process[0].value == "99");
  }
  SECTION("an empty prefix throws") {
    CHECK_THROWS_AS(postal::config_overrides_from_env("", env), std::invalid_argument);
  }
}

TEST_CASE("precedence: file < environment < command line", "[config]") {
  const char* env[] = {"APP_PORT=81", "APP_HOST=from-env", nullptr};
  const char* argv[] = {"app", "--set", "/port=82"};
  config_load_options options;
  options.overrides = postal::config_overrides_from_env("APP_", env);
  auto env_only = parse(good_text, options);
  REQUIRE(env_only.has_value());
  CHECK(env_only->port == 81);
  CHECK(env_only->host == "from-env");

  for (auto& o : postal::config_overrides_from_args(3, argv)) options.overrides.push_back(o);
  auto both = parse(good_text, options);
  REQUIRE(both.has_value());
  CHECK(both->port == 82);
  CHECK(both->host == "from-env");
  CHECK(both->ratio == 0.5);
}

TEST_CASE("an override may add keys and objects that the file lacks", "[config]") {
  config_load_options options;
  options.overrides = {{"/feature/enabled", "true", "--set /feature/enabled=true"},
                       {"/feature/names", "[]", "test"},
                       {"/feature/names/-", "appended", "test"}};
  auto loaded = parse(R"({"host": "h", "port": 1, "ratio": 1})", options);
  REQUIRE(loaded.has_value());
  CHECK(loaded->feature == feature_config{true, {"appended"}});
  SECTION("the empty pointer replaces the whole document") {
    options.overrides = {
        {"", R"({"host": "o", "port": 2, "feature": {"enabled": false, "names": []}, "ratio": 3})", "test"}};
    auto replaced = parse("[]", options);
    REQUIRE(replaced.has_value());
    CHECK(replaced->host == "o");
  }
}

TEST_CASE("an override that cannot be applied is an `override` error naming its source", "[config]") {
  config_load_options options;
  SECTION("through a value that is not an object or an array") {
    options.overrides = {{"/port/number", "1", "--set /port/number=1"}};
    const auto error = error_of(parse(good_text, options));
    CHECK(error.kind == kind::override);
    CHECK(error.path == "/port/number");
    CHECK(error.line == 0);
    CHECK(
        error.reason ==
        "cannot set /port/number: /port is a number value, not an object or an array (--set /port/number=1)");
    CHECK(error.describe() == "app.json: bad override at /port/number: " + error.reason);
  }
  SECTION("an array index that is not there") {
    options.overrides = {{"/feature/names/2", "\"c\"", "environment APP_FEATURE__NAMES__2"}};
    const auto error = error_of(parse(good_text, options));
    CHECK(error.kind == kind::override);
    CHECK(error.reason ==
          "cannot set /feature/names/2: '2' is not an index of /feature/names (2 elements) "
          "(environment APP_FEATURE__NAMES__2)");
    options.overrides = {{"/feature/names/x", "1", "test"}};
    CHECK(error_of(parse(good_text, options)).kind == kind::override);
    options.overrides = {{"/feature/names/01", "1", "test"}};
    CHECK(error_of(parse(good_text, options)).kind == kind::override);
  }
  SECTION("a malformed pointer") {
    options.overrides = {{"port", "1", "test"}};
    CHECK(error_of(parse(good_text, options)).kind == kind::override);
    options.overrides = {{"/a~2", "1", "test"}};
    const auto error = error_of(parse(good_text, options));
    CHECK(error.kind == kind::override);
    CHECK(error.path == "/a~2");
  }
  SECTION("a syntax error in the file comes first") {
    options.overrides = {{"port", "1", "test"}};
    CHECK(error_of(parse("{", options)).kind == kind::syntax);
  }
}

TEST_CASE("errors about values that came from an override have no line and name the override", "[config]") {
  config_load_options options;
  SECTION("rejected by the validator") {
    options.overrides = {{"/port", "0", "--set /port=0"}};
    const auto error = error_of(parse(good_text, options));
    CHECK(error.kind == kind::invalid);
    CHECK(error.path == "/port");
    CHECK(error.line == 0);
    CHECK(error.reason == "the port must be in 1..65535 (--set /port=0)");
  }
  SECTION("of the wrong type") {
    options.overrides = {{"/port", "abc", "environment APP_PORT"}};
    const auto error = error_of(parse(good_text, options));
    CHECK(error.kind == kind::type);
    CHECK(error.path == "/port");
    CHECK(error.line == 0);
    CHECK(error.reason == "type must be number, but is string (environment APP_PORT)");
  }
  SECTION("inside an object an override replaced") {
    options.overrides = {{"/feature", R"({"enabled": 1, "names": []})", "test"}};
    const auto error = error_of(parse(good_text, options));
    CHECK(error.path == "/feature/enabled");
    CHECK(error.line == 0);
  }
}

// --- describe() -----------------------------------------------------------------------------------------

TEST_CASE("describe() is file:line:column: kind at path: reason, leaving out what is unknown", "[config]") {
  CHECK(config_error{kind::syntax, "a.json", 3, 7, "", "oops"}.describe() ==
        "a.json:3:7: syntax error: oops");
  CHECK(config_error{kind::type, "a.json", 3, 7, "/x/y", "bad"}.describe() ==
        "a.json:3:7: type error at /x/y: bad");
  CHECK(config_error{kind::invalid, "a.json", 3, 0, "/x", "no"}.describe() ==
        "a.json:3: invalid value at /x: no");
  CHECK(config_error{kind::missing, "a.json", 0, 0, "", "gone"}.describe() == "a.json: missing file: gone");
  CHECK(config_error{kind::unreadable, "a.json", 0, 0, "", "r"}.describe() == "a.json: unreadable file: r");
  CHECK(config_error{kind::override, "<text>", 0, 0, "/p", "o"}.describe() ==
        "<text>: bad override at /p: o");
}

// --- detail::locate -------------------------------------------------------------------------------------

TEST_CASE("locate finds the value a JSON pointer names, or says it is not there", "[config][locate]") {
  using postal::detail::locate;
  using postal::detail::text_position;
  auto at = [](std::string_view text,
               std::string_view pointer) -> std::optional<std::pair<std::size_t, std::size_t>> {
    const auto position = locate(text, pointer);
    if (!position) return std::nullopt;
    return std::pair{position->line, position->column};
  };
  using pos = std::pair<std::size_t, std::size_t>;

  SECTION("objects, nested, and the root") {
    const std::string text = "{\n  \"a\": {\n    \"b\": 1,\n    \"c\": [true, null]\n  },\n  \"d\": \"x\"\n}";
    CHECK(at(text, "") == pos{1, 1});
    CHECK(at(text, "/a") == pos{2, 8});
    CHECK(at(text, "/a/b") == pos{3, 10});
    CHECK(at(text, "/a/c") == pos{4, 10});
    CHECK(at(text, "/d") == pos{6, 8});
  }
  SECTION("escaped keys compare after unescaping") {
    const std::string text =
        R"({"q\"uote": 1, "back\\slash": 2, "\u00e9": 3, "\ud83d\ude00": 4, "t\tab": 5, "a\/b": 6})";
    CHECK(at(text, "/q\"uote") == pos{1, 13});
    CHECK(at(text, "/back\\slash") == pos{1, 31});
    CHECK(at(text, "/\xC3\xA9") == pos{1, 44});
    CHECK(at(text, "/\xF0\x9F\x98\x80") == pos{1, 63});
    CHECK(at(text, "/t\tab") == pos{1, 75});
    CHECK(at(text, "/a~1b") == pos{1, 86});
  }
  SECTION("keys containing '/' and '~' are named with ~1 and ~0") {
    const std::string text = R"({"a/b": 1, "m~n": 2, "~1": 3})";
    CHECK(at(text, "/a~1b") == pos{1, 9});
    CHECK(at(text, "/m~0n") == pos{1, 19});
    CHECK(at(text, "/~01") == pos{1, 28});
    CHECK_FALSE(at(text, "/a/b"));
  }
  SECTION("arrays and nested arrays") {
    const std::string text = "[1, [2, [3, \"]\", {\"k\": [4]}]],\n  \"s\"]";
    CHECK(at(text, "/0") == pos{1, 2});
    CHECK(at(text, "/1") == pos{1, 5});
    CHECK(at(text, "/1/1/1") == pos{1, 13});
    CHECK(at(text, "/1/1/2/k/0") == pos{1, 25});
    CHECK(at(text, "/2") == pos{2, 3});
  }
  SECTION("strings and containers skipped on the way may hold brackets, quotes and escapes") {
    const std::string text = R"({"x": "}\"]{", "y": {"z": "\\"}, "w": [[], {}], "v": 5})";
    CHECK(at(text, "/v") == pos{1, 54});
  }
  SECTION("of duplicate keys the last counts, as in nlohmann") {
    CHECK(at(R"({"a": 1, "a": 2})", "/a") == pos{1, 15});
  }
  SECTION("pointers that are not there") {
    const std::string text = R"({"a": {"b": [1, 2]}, "c": 3})";
    CHECK_FALSE(at(text, "/x"));
    CHECK_FALSE(at(text, "/a/b/2"));
    CHECK_FALSE(at(text, "/a/b/-"));
    CHECK_FALSE(at(text, "/a/b/01"));
    CHECK_FALSE(at(text, "/c/d"));
    CHECK_FALSE(at(text, "a"));
    CHECK_FALSE(at(text, "/a~2"));
    CHECK_FALSE(at("[]", "/0"));
    CHECK_FALSE(at("{}", "/"));
    CHECK(at(R"({"": 1})", "/") == pos{1, 6});
  }
  SECTION("malformed text makes it fail, never read past the end") {
    CHECK_FALSE(at("", ""));
    CHECK_FALSE(at("{\"a", "/a"));
    CHECK_FALSE(at("{\"a\": ", "/a"));
    CHECK_FALSE(at("[1, ", "/1"));
    CHECK_FALSE(at("{\"a\\", "/a"));
    CHECK_FALSE(at("{\"\\u12", "/a"));
    CHECK_FALSE(at("{\"\\ud800\\u0041\": 1}", "/a"));
    CHECK_FALSE(at("[[[[", "/0/0/0/0/0"));
  }
}
