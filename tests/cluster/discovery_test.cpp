// Tests of discovery (postal/cluster/discovery.hpp) against a real redis-server on 127.0.0.1: nodes find
// each other through the Redis registry; a live node's key is refreshed; a killed node drops out of the
// registry after its TTL, a node that leaves at once; a registry that cannot be reached fails the join; a
// static seed list joins through its seeds.
#include "support.hpp"

#include <postal/cluster.hpp>
#include <postal/redis.hpp>

#include <signal.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

using namespace cluster_test;

namespace {

// Waits (at most 10 s: a guard against a hang) until `holds` is true of what the registry lists.
template <class Predicate>
bool listing_reaches(postal::runtime& rt, postal::cluster::redis_registry& registry, Predicate holds) {
  const auto deadline = clock_type::now() + 10s;
  while (clock_type::now() < deadline) {
    auto listed = rt.block_on(registry.seeds());
    if (listed && holds(*listed)) return true;
    std::this_thread::yield();
  }
  return false;
}

bool lists(const std::vector<std::string>& listed, const std::string& address) {
  return std::find(listed.begin(), listed.end(), address) != listed.end();
}

std::int64_t pttl(postal::redis::connection& redis, const std::string& key) {
  auto answer = postal::redis::blocking_query(redis, postal::redis::raw{{"PTTL", key}, {}});
  return answer ? answer->integer : -100;
}

}  // namespace

TEST_CASE("nodes find each other through a Redis registry; a killed node drops out after its TTL, one that "
          "leaves at once",
          "[cluster][discovery]") {
  test_support::redis_server redis_server;
  const std::string redis_port = std::to_string(redis_server.port());
  // a: a short TTL (it is killed: the TTL is how long it stays listed); b: a long one (it leaves: it must be
  // unlisted at once, not after a minute).
  auto a = std::make_unique<node_process>(
      std::vector<std::string>{"--name", "a", "--registry-port", redis_port, "--registry-ttl-ms", "600"});
  auto b = std::make_unique<node_process>(
      std::vector<std::string>{"--name", "b", "--registry-port", redis_port, "--registry-ttl-ms", "60000"});
  const std::string a_address = address_of(*a), b_address = address_of(*b);

  local_node here;
  auto redis = postal::redis::spawn_connection_manager(here.rt, {.host = "127.0.0.1", .port = redis_server.port()});
  postal::cluster::redis_registry registry(here.rt, redis, {.cluster = "tests", .ttl = 60s});
  REQUIRE(postal::cluster::blocking_join(here.rt, here.node, registry));
  CHECK(view_reaches(here.node, [](const cluster_view& view) { return exactly_up(view, {"a", "b", "tester"}); }));
  CHECK(listing_reaches(here.rt, registry, [&](const std::vector<std::string>& listed) {
    return listed.size() == 3 && lists(listed, a_address) && lists(listed, b_address) &&
           lists(listed, here.node.address());
  }));

  // a's key is refreshed while a runs: its remaining time goes back up.
  const std::string a_key = "postal:cluster:tests:node:a";
  const std::int64_t first = pttl(redis, a_key);
  REQUIRE(first > 0);
  const auto deadline = clock_type::now() + 10s;
  while (pttl(redis, a_key) <= first && clock_type::now() < deadline) std::this_thread::yield();
  CHECK(pttl(redis, a_key) > first);

  a->process->kill(SIGKILL);
  a.reset();
  CHECK(listing_reaches(here.rt, registry, [&](const std::vector<std::string>& listed) { return !lists(listed, a_address); }));
  b->process->signal(SIGTERM);  // b leaves: its 60 s key is removed as it goes
  CHECK(listing_reaches(here.rt, registry, [&](const std::vector<std::string>& listed) { return !lists(listed, b_address); }));
  CHECK(listing_reaches(here.rt, registry, [&](const std::vector<std::string>& listed) {
    return listed == std::vector<std::string>{here.node.address()};
  }));
}

TEST_CASE("a Redis registry that cannot be reached fails the join with unreachable", "[cluster][discovery]") {
  local_node here;
  auto redis = postal::redis::spawn_connection_manager(
      here.rt, {.host = "127.0.0.1", .port = test_support::free_port(), .connect_timeout = 200ms});
  postal::cluster::redis_registry registry(here.rt, redis, {.cluster = "tests"});
  auto joined = postal::cluster::blocking_join(here.rt, here.node, registry);
  REQUIRE_FALSE(joined);
  CHECK(joined.error().kind == cluster_error::kind_type::unreachable);
  CHECK(joined.error().message.find("Redis registry") != std::string::npos);
  CHECK(to_string(joined.error()) == "cluster: unreachable: " + joined.error().message);  // printable, as every error
  CHECK_THROWS_AS(postal::cluster::redis_registry(here.rt, redis, {.cluster = ""}), std::invalid_argument);
}

TEST_CASE("a static seed list joins through its seeds; the same list on every node, its own address included",
          "[cluster][discovery]") {
  node_process a({"--name", "a"});
  local_node here;
  const std::string own = here.node.address();
  postal::cluster::static_seeds seeds({own, address_of(a)});
  REQUIRE(postal::cluster::blocking_join(here.rt, here.node, seeds));
  CHECK(view_reaches(here.node, [](const cluster_view& view) { return exactly_up(view, {"a", "tester"}); }));
  CHECK(here.node.address() == "127.0.0.1:" + std::to_string(here.node.port()));
}
