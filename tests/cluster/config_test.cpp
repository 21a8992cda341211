// Tests of configuration across nodes (postal/cluster/config.hpp), with real processes on 127.0.0.1: a node
// process shares the configuration "app" from its file, this process and other node processes follow it.
// Each good version reaches every node, in order; a bad file changes no value anywhere and its error shows
// on every node; a node that starts following late gets the current version at once; a restarted source is
// followed again; reload() on a follower reloads the source's file.
#include "support.hpp"

#include <postal/cluster.hpp>

#include "support/files.hpp"

#include <signal.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

using namespace cluster_test;

namespace {

std::string settings_json(const std::string& greeting, std::int64_t version) {
  return "{\"greeting\": \"" + greeting + "\", \"version\": " + std::to_string(version) + "}";
}

// Asks a node's "config" actor until `holds` is true of its report (see ask_until); the last report either way.
std::pair<bool, config_report> config_reaches(postal::actor_ref<config_message>& desk,
                                              const std::function<bool(const config_report&)>& holds) {
  return ask_until<config_query>(desk, holds);
}

postal::actor_ref<config_message> config_desk_of(local_node& here, const node_process& process) {
  auto at = must(here.node.blocking_connect("127.0.0.1", process.port));
  return must(here.node.blocking_lookup<config_message>(at, "config"));
}

// The next value of `settings` (at most 10 s).
std::optional<app_settings> next_value(postal::watch::receiver<app_settings>& settings) {
  auto changed = within(10s, [&settings] { return settings.blocking_changed().has_value(); });
  if (!changed || !*changed) return std::nullopt;
  return *settings.borrow_and_update();
}

}  // namespace

TEST_CASE("each good version of a shared configuration reaches every node; a bad file changes nothing anywhere",
          "[cluster][config]") {
  test_support::scratch_dir dir("postal-cluster-config");
  const auto file = dir.path / "app.json";
  test_support::write_in_place(file, settings_json("hello", 1));
  node_process source({"--name", "source", "--config-file", file.string()});
  node_process follower({"--name", "follower", "--seeds", address_of(source), "--follow-config", "source"});
  local_node here;
  REQUIRE(here.node.blocking_join({address_of(source)}));
  auto handle = must(postal::cluster::blocking_follow_config<app_settings>(here.rt, here.node, "app", "source"));
  CHECK(handle.get() == app_settings{"hello", 1});  // the current version at once
  CHECK(handle.file() == file);
  auto settings = handle.subscribe();
  auto follower_desk = config_desk_of(here, follower);

  // Three edits: every one is seen here, in order, and on the other follower.
  for (std::int64_t version = 2; version <= 4; ++version) {
    test_support::write_by_rename(file, settings_json("hello", version));
    auto seen = next_value(settings);
    REQUIRE(seen);
    CHECK(seen->version == version);
    auto [reached, report] =
        config_reaches(follower_desk, [&](const config_report& got) { return got.value.version == version; });
    CHECK(reached);
  }

  // A bad file: the value stays on every node, the error (file and line) is visible on every node.
  test_support::write_by_rename(file, "{\"greeting\": \"broken\",\n \"version\": }");
  auto status = handle.status();
  auto failed = within(10s, [&status] {
    return status.blocking_wait_for([](const postal::config_status& now) { return !now.ok(); }).has_value();
  });
  REQUIRE(failed);
  REQUIRE(*failed);
  CHECK(status.borrow()->error->line == 2);
  CHECK(status.borrow()->error->file == file.string());
  CHECK(handle.get() == app_settings{"hello", 4});
  auto [saw_error, report] = config_reaches(follower_desk, [](const config_report& got) { return !got.error.empty(); });
  CHECK(saw_error);
  CHECK(report.error.find("app.json:2") != std::string::npos);
  CHECK(report.value == app_settings{"hello", 4});

  // Fixed again: the new value everywhere, the error gone.
  test_support::write_by_rename(file, settings_json("fixed", 5));
  auto fixed = next_value(settings);
  REQUIRE(fixed);
  CHECK(*fixed == app_settings{"fixed", 5});
  CHECK(status.borrow()->ok());
  auto [recovered, after] =
      config_reaches(follower_desk, [](const config_report& got) { return got.error.empty() && got.value.version == 5; });
  CHECK(recovered);

  // reload() on a follower reloads the source's file.
  test_support::write_in_place(file, settings_json("reloaded", 6));
  auto reloaded = handle.blocking_reload();
  CHECK(reloaded);
  auto [reload_seen, reload_report] =
      config_reaches(follower_desk, [](const config_report& got) { return got.value.version == 6; });
  CHECK(reload_seen);
}

TEST_CASE("a node that follows late gets the current version at once; a restarted source is followed again",
          "[cluster][config][failure]") {
  test_support::scratch_dir dir("postal-cluster-config");
  const auto file = dir.path / "app.json";
  test_support::write_in_place(file, settings_json("first", 1));
  auto source = std::make_unique<node_process>(
      std::vector<std::string>{"--name", "source", "--config-file", file.string()});
  const std::uint16_t source_port = source->port;
  local_node here;
  REQUIRE(here.node.blocking_join({address_of(*source)}));
  auto handle = must(postal::cluster::blocking_follow_config<app_settings>(here.rt, here.node, "app", "source"));
  auto settings = handle.subscribe();
  test_support::write_by_rename(file, settings_json("second", 2));
  REQUIRE(next_value(settings) == app_settings{"second", 2});

  node_process late({"--name", "late", "--seeds", address_of(*source), "--follow-config", "source"});
  auto late_desk = config_desk_of(here, late);
  auto report = late_desk.blocking_ask(config_query{});  // it started with the current version
  REQUIRE(report);
  CHECK(report->value == app_settings{"second", 2});

  // The source is killed: followers keep the last version. Restarted on its port with a newer file, it is
  // followed again without anyone restarting.
  source->process->kill(SIGKILL);
  source.reset();
  REQUIRE(view_reaches(here.node, [](const cluster_view& view) { return has_status(view, "source", member::status_type::down); }));
  CHECK(handle.get() == app_settings{"second", 2});
  test_support::write_in_place(file, settings_json("third", 3));
  node_process restarted({"--name", "source", "--port", std::to_string(source_port), "--config-file", file.string(),
                          "--seeds", address_of(late)});
  auto third = next_value(settings);
  REQUIRE(third);
  CHECK(*third == app_settings{"third", 3});
  auto [reached, late_report] =
      config_reaches(late_desk, [](const config_report& got) { return got.value.version == 3; });
  CHECK(reached);
}

TEST_CASE("following a configuration nobody shares fails with timeout instead of waiting forever", "[cluster][config]") {
  local_node here;  // request_timeout shortened below through the environment would change every test: use a
                    // node that is alone, so the source is never up
  auto started = clock_type::now();
  auto followed = postal::cluster::blocking_follow_config<app_settings>(here.rt, here.node, "app", "nobody");
  REQUIRE_FALSE(followed);
  CHECK(followed.error().kind == cluster_error::kind_type::timeout);
  CHECK(followed.error().message.find("nobody") != std::string::npos);
  CHECK(clock_type::now() - started >= here.node.options().request_timeout);
}
