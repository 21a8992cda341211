// What the cluster tests share: node processes (cluster_node.cpp) started and always stopped by pid, this
// process as a node, and waits on views with a bound (a guard against a hang, not a timing check).
#pragma once

#include "messages.hpp"

#include <postal/actor.hpp>
#include <postal/cluster.hpp>
#include <postal/runtime.hpp>

#include "support/processes.hpp"

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <future>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace cluster_test {

using namespace std::chrono_literals;
using postal::ask_error;
using postal::task;
using postal::cluster::cluster_error;
using clock_type = std::chrono::steady_clock;
using postal::cluster::cluster_view;
using postal::cluster::member;

inline const std::string cookie = "test-cookie-4b1d";

// AddressSanitizer keeps freed memory in quarantine (256 MB by default), so resident memory says nothing
// about what the code holds there: the memory bounds are checked in the other builds.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool memory_is_measurable = false;
#else
constexpr bool memory_is_measurable = true;
#endif

// A node process; stopped (SIGKILL) with this object.
struct node_process {
  explicit node_process(std::vector<std::string> extra = {}, std::string secret = cookie) {
    std::vector<std::string> argv{CLUSTER_TEST_NODE, "--cookie", secret, "--heartbeat-ms", "100", "--timeout-ms", "500"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    process = std::make_unique<test_support::child_process>(argv);
    if (!process->wait_for_line("port=")) throw std::runtime_error("the node process did not start");
    for (auto& line : process->lines())
      if (line.rfind("port=", 0) == 0) port = static_cast<std::uint16_t>(std::stoi(line.substr(5)));
  }
  std::unique_ptr<test_support::child_process> process;
  std::uint16_t port = 0;
};

// This process as a node, with the same failure detection as the node processes.
struct local_node {
  explicit local_node(std::string secret = cookie, std::size_t proxy_capacity = 1024)
      : rt(postal::cluster::enable({.workers = 2}, {100ms, 500ms})),
        node(rt, {.name = "tester", .cookie = std::move(secret), .proxy_capacity = proxy_capacity}) {}
  postal::runtime rt;
  postal::cluster::node node;
};

inline std::size_t resident_kb(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stoul(line.substr(6));
  return 0;
}

template <class T>
T must(postal::expected<T, cluster_error> result) {
  if (!result) FAIL("cluster error: " << result.error().message);
  return std::move(*result);
}

// A node process, this process as a node connected to it, and a ref to the "kv" it publishes.
struct connected_kv {
  node_process server;
  local_node here;
  postal::cluster::peer at = must(here.node.blocking_connect("127.0.0.1", server.port));
  postal::actor_ref<kv_message> kv = must(here.node.blocking_lookup<kv_message>(at, "kv"));
};

// A task asking `kv` to hold its request unanswered, and a wait until the remote actor holds `count`.
inline postal::join_handle<postal::expected<std::int64_t, ask_error>> held_ask(postal::runtime& rt,
                                                                       postal::actor_ref<kv_message> kv) {
  return rt.spawn([](postal::actor_ref<kv_message> kv) -> task<postal::expected<std::int64_t, ask_error>> {
    hold request;
    co_return co_await kv.ask(std::move(request));
  }(std::move(kv)));
}
inline void wait_until_held(postal::actor_ref<kv_message>& kv, std::uint64_t count) {
  for (;;) {
    auto waiting = kv.blocking_ask(held{});
    REQUIRE(waiting);
    if (*waiting == count) return;
    std::this_thread::yield();
  }
}





// `work()` run on a thread of its own, given at most `limit` (a guard against a hang, not a timing check).
template <class Work>
auto within(std::chrono::milliseconds limit, Work work) -> std::optional<decltype(work())> {
  auto done = std::make_shared<std::promise<decltype(work())>>();
  auto result = done->get_future();
  std::thread([work = std::move(work), done]() mutable { done->set_value(work()); }).detach();
  if (result.wait_for(limit) != std::future_status::ready) return std::nullopt;
  return result.get();
}

// Waits (at most 10 s) until this node's view satisfies `holds`.
template <class Predicate>
bool view_reaches(postal::cluster::node& node, Predicate holds) {
  auto reached = within(10s, [view = node.view(), holds]() mutable {
    return view.blocking_wait_for([&holds](const cluster_view& current) { return holds(current); }).has_value();
  });
  return reached && *reached;
}

inline bool has_status(const cluster_view& view, const std::string& name, member::status_type status) {
  const member* entry = view.find(name);
  return entry != nullptr && entry->status == status;
}

// Asks a node process's "members" actor until its view lists `entry` ("name=status"), for at most 10 s.
// Asks `ref` a `Query` until `holds` is true of the answer, for at most 10 s (a guard against a hang, not a
// timing check): whether it held, and the last answer (a default one if no ask was answered).
template <class Query, class Message, class Predicate>
auto ask_until(postal::actor_ref<Message>& ref, Predicate holds) {
  using reply = postal::detail::reply_of<Query>;
  std::pair<bool, reply> outcome{false, reply{}};
  const auto deadline = clock_type::now() + 10s;
  while (clock_type::now() < deadline) {
    auto answer = ref.blocking_ask(Query{});
    if (!answer) return outcome;
    outcome.second = std::move(*answer);
    if (holds(outcome.second)) {
      outcome.first = true;
      return outcome;
    }
    std::this_thread::yield();
  }
  return outcome;
}

inline bool remote_view_lists(postal::actor_ref<members_message>& members, const std::string& entry) {
  return ask_until<members_query>(members, [&entry](const std::vector<std::string>& list) {
           return std::find(list.begin(), list.end(), entry) != list.end();
         }).first;
}

inline std::string address_of(const node_process& process) { return "127.0.0.1:" + std::to_string(process.port); }

// Whether exactly `names` are up in `view`.
inline bool exactly_up(const cluster_view& view, std::initializer_list<const char*> names) {
  if (view.up() != names.size()) return false;
  for (const char* name : names)
    if (!has_status(view, name, member::status_type::up)) return false;
  return true;
}

// The "members" actor of a node process, through a direct connection from this node.
inline postal::actor_ref<members_message> members_of(local_node& here, const node_process& process) {
  auto at = must(here.node.blocking_connect("127.0.0.1", process.port));
  return must(here.node.blocking_lookup<members_message>(at, "members"));
}


}  // namespace cluster_test
