// Tests of the config actor: a JSON file loaded into a typed struct and published through a watch channel;
// reloaded when the file is rewritten, renamed over (as editors save), deleted and recreated (inotify and
// polling), and on request; every bad case (invalid JSON, a wrong type, a failed validation, a missing file)
// keeps the last good value published and shows the error in the status channel. Changes are awaited
// through the channels themselves; the only time limit is a bound on a failing test, never a sleep.
#include "support/files.hpp"

#include <postal/config.hpp>
#include <postal/runtime.hpp>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using postal::config_error;
using postal::runtime;
using postal::runtime_options;

struct service_config {
  std::string greeting = "hello";
  int port = 8080;
  friend bool operator==(const service_config&, const service_config&) = default;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(service_config, greeting, port)

std::optional<postal::config_invalid> check_port(const service_config& c) {
  if (c.port < 1 || c.port > 65535) return postal::config_invalid{"/port", "must be between 1 and 65535"};
  return std::nullopt;
}

// A fresh directory per test, removed afterwards.
struct scratch_dir : test_support::scratch_dir {
  scratch_dir() : test_support::scratch_dir("postal-config-test") {}
};
using test_support::write_by_rename;
using test_support::write_in_place;

// Waits for the next change of a watch receiver on a plain thread; false if none came within the bound (a
// failing test ends instead of hanging). The bound is generous: success comes in milliseconds.
template <class T>
bool next_change(postal::watch::receiver<T>& rx, std::chrono::seconds bound = std::chrono::seconds(20)) {
  auto changed = std::async(std::launch::async, [&rx] { return rx.blocking_changed().has_value(); });
  if (changed.wait_for(bound) != std::future_status::ready) return false;
  return changed.get();
}

postal::config_options<service_config> options_for(const fs::path& file) {
  postal::config_options<service_config> options;
  options.file = file;
  options.validate = check_port;
  options.on_error = [](const config_error&) {};  // the status channel is checked instead
  return options;
}

TEST_CASE("the config actor publishes the file's value and follows edits", "[config]") {
  runtime rt(runtime_options{.workers = 2});
  scratch_dir dir;
  const fs::path file = dir.path / "service.json";
  write_in_place(file, R"({"greeting": "hi", "port": 80})");

  auto mode = GENERATE(postal::watch_mode::inotify, postal::watch_mode::poll);
  auto options = options_for(file);
  options.watch.mode = mode;
  options.watch.poll_interval = std::chrono::milliseconds(10);
  auto config = postal::spawn_config(rt, options);
  REQUIRE(config);
  CHECK(config->watching() == mode);
  CHECK(config->get() == service_config{"hi", 80});
  auto values = config->subscribe();
  auto status = config->status();
  CHECK(status.borrow()->ok());
  CHECK(status.borrow()->loads == 1);

  SECTION("a file renamed over the old one is a change, not a deletion") {
    write_by_rename(file, R"({"greeting": "renamed", "port": 81})");
    REQUIRE(next_change(values));
    CHECK(*values.borrow_and_update() == service_config{"renamed", 81});
    REQUIRE(next_change(status));
    CHECK(status.borrow()->ok());
    CHECK(status.borrow()->loads == 2);
    CHECK(status.borrow()->failures == 0);
  }
  SECTION("a file rewritten in place") {
    write_in_place(file, R"({"greeting": "rewritten", "port": 82})");
    REQUIRE(next_change(values));
    CHECK(*values.borrow_and_update() == service_config{"rewritten", 82});
  }
  SECTION("invalid JSON keeps the last good value and shows where the error is") {
    write_by_rename(file, "{\n  \"greeting\": \"broken\",\n  \"port\": \n}\n");
    REQUIRE(next_change(status));
    auto seen = *status.borrow_and_update();
    REQUIRE_FALSE(seen.ok());
    CHECK(seen.error->kind == config_error::kind_type::syntax);
    CHECK(seen.error->line == 4);
    CHECK(seen.failures == 1);
    CHECK(config->get() == service_config{"hi", 80});
    CHECK_FALSE(values.has_changed().value());
    // Fixing the file publishes again and clears the error.
    write_by_rename(file, R"({"greeting": "fixed", "port": 83})");
    REQUIRE(next_change(values));
    CHECK(values.borrow_and_update()->greeting == "fixed");
    REQUIRE(next_change(status));  // the status follows the value it reports on
    CHECK(status.borrow_and_update()->ok());
  }
  SECTION("a wrong type keeps the last good value") {
    write_by_rename(file, "{\"greeting\": \"x\",\n \"port\": \"eighty\"}");
    REQUIRE(next_change(status));
    auto seen = *status.borrow_and_update();
    REQUIRE_FALSE(seen.ok());
    CHECK(seen.error->kind == config_error::kind_type::type);
    CHECK(seen.error->path == "/port");
    CHECK(seen.error->line == 2);
    CHECK(config->get() == service_config{"hi", 80});
  }
  SECTION("a value the validator rejects is never published") {
    write_by_rename(file, "{\"greeting\": \"x\",\n \"port\": 70000}");
    REQUIRE(next_change(status));
    auto seen = *status.borrow_and_update();
    REQUIRE_FALSE(seen.ok());
    CHECK(seen.error->kind == config_error::kind_type::invalid);
    CHECK(seen.error->line == 2);
    CHECK(seen.error->reason == "must be between 1 and 65535");
    CHECK(config->get() == service_config{"hi", 80});
    CHECK_FALSE(values.has_changed().value());
  }
  SECTION("a deleted file is an error; recreating it loads it") {
    fs::remove(file);
    REQUIRE(next_change(status));
    auto seen = *status.borrow_and_update();
    REQUIRE_FALSE(seen.ok());
    CHECK(seen.error->kind == config_error::kind_type::missing);
    CHECK(config->get() == service_config{"hi", 80});
    write_by_rename(file, R"({"greeting": "back", "port": 84})");
    REQUIRE(next_change(values));
    CHECK(values.borrow_and_update()->greeting == "back");
  }
}

TEST_CASE("a first load that fails is an error, or publishes the fallback", "[config]") {
  runtime rt(runtime_options{.workers = 2});
  scratch_dir dir;
  const fs::path file = dir.path / "absent.json";
  auto options = options_for(file);
  auto failed = postal::spawn_config(rt, options);
  REQUIRE_FALSE(failed);
  CHECK(failed.error().kind == config_error::kind_type::missing);

  std::vector<config_error> logged;
  options.fallback = service_config{"fallback", 1};
  options.on_error = [&logged](const config_error& error) { logged.push_back(error); };
  auto config = postal::spawn_config(rt, options);
  REQUIRE(config);
  CHECK(config->get() == service_config{"fallback", 1});
  CHECK_FALSE(config->status().borrow()->ok());
  REQUIRE(logged.size() == 1);  // the error is reported, not only recorded
  CHECK(logged[0].kind == config_error::kind_type::missing);
  auto values = config->subscribe();
  write_by_rename(file, R"({"greeting": "created", "port": 85})");
  REQUIRE(next_change(values));
  CHECK(values.borrow_and_update()->greeting == "created");
}

TEST_CASE("reload on request, with overrides applied on every load", "[config]") {
  runtime rt(runtime_options{.workers = 2});
  scratch_dir dir;
  const fs::path file = dir.path / "service.json";
  write_in_place(file, R"({"greeting": "hi", "port": 80})");
  auto options = options_for(file);
  options.watch_file = false;
  options.overrides = {postal::config_override{"/port", "9000", "test"}};
  auto config = postal::spawn_config(rt, options);
  REQUIRE(config);
  CHECK_FALSE(config->watching());
  CHECK(config->get() == service_config{"hi", 9000});  // the override wins over the file

  write_in_place(file, R"({"greeting": "reloaded", "port": 80})");
  CHECK(config->get().greeting == "hi");  // not watched: nothing happens until asked
  REQUIRE(config->blocking_reload());
  CHECK(config->get() == service_config{"reloaded", 9000});

  write_in_place(file, "not json");
  auto failed = rt.block_on(config->reload());
  REQUIRE_FALSE(failed);
  CHECK(failed.error().kind == config_error::kind_type::syntax);
  CHECK(config->get() == service_config{"reloaded", 9000});
}

TEST_CASE("when the last handle goes, the actor stops and subscribers see the channel closed", "[config]") {
  runtime rt(runtime_options{.workers = 2});
  scratch_dir dir;
  const fs::path file = dir.path / "service.json";
  write_in_place(file, R"({"greeting": "hi", "port": 80})");
  std::optional<postal::watch::receiver<service_config>> values;
  {
    auto config = postal::spawn_config(rt, options_for(file));
    REQUIRE(config);
    values = config->subscribe();
  }
  CHECK(values->blocking_changed().error() == postal::watch::recv_error{});
  CHECK(values->borrow()->greeting == "hi");  // the last value stays readable
}

}  // namespace
