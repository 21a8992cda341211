// The cluster's pattern scenarios: groups, configuration and membership across three nodes, this process
// and two members it starts (this same program with --serve-member) and always stops by pid:
//   cluster_group_fanout  one publisher task here, 4 member actors on each of the 3 nodes, 1 M publishes of a
//                         uint64_t on a cluster topic (capacity 1024); the rate counts deliveries on all
//                         nodes. The publisher keeps at most two windows of 512 in flight: before it
//                         publishes a window it waits until every member on every node has taken the one
//                         before the last (so nothing may be dropped, and nothing is: checked). Beside the
//                         local group_fanout (4 members, one process, a publisher that never waits)
//   cluster_config_push   this node shares a configuration, the two members follow it with 10 watcher tasks
//                         each; a new file is renamed over the old one 20 times, each timed until every
//                         watcher on both members saw it; median_ms= on the MEDIAN line, as config_reload
//   cluster_join          with three members up, a fourth process joins through this node, 10 times; each
//                         timed from its join call until every member's view has it up; median_ms=
// The clocks of all processes are the machine's monotonic clock, so a member's "seen at" compares directly.
// Every scenario checks what arrived.
#include <postal/actor.hpp>
#include <postal/cluster.hpp>
#include <postal/config.hpp>
#include <postal/time.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unistd.h>
#include <variant>
#include <vector>

#include "bench.hpp"
#include "process.hpp"

namespace bench_cluster {

constexpr std::uint64_t fanout_messages = 1'000'000;
constexpr std::size_t fanout_capacity = 1024;
constexpr std::size_t members_per_node = 4;
constexpr std::uint64_t fanout_window = 512;  // a multiple of progress_step
constexpr std::uint64_t progress_step = 256;  // a member reports its progress every this many values
constexpr std::size_t watchers_per_node = 10;
constexpr int pushes = 20;
constexpr int joins = 10;
const std::string cookie = "postal-bench-cookie";

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(bench::clock::now().time_since_epoch()).count();
}

// The configuration pushed: a generation and a payload of the size config_reload uses.
struct push_config {
  std::int64_t generation = 0;
  std::string payload;
  friend bool operator==(const push_config&, const push_config&) = default;
};
inline void from_json(const nlohmann::json& j, push_config& x) {
  j.at("generation").get_to(x.generation);
  j.at("payload").get_to(x.payload);
}
template <class Inspector>
auto inspect(Inspector& f, push_config& x) {
  return f(x.generation, x.payload);
}

// What this process asks of a member: each answer comes when the thing happened, with the time it happened.
struct fanout_done {  // (delivered, skipped) over its 4 members, once each has seen the last message
  using reply_type = std::pair<std::uint64_t, std::uint64_t>;
};
struct fanout_reached {  // once every member of the node has taken the values below `upto`
  std::uint64_t upto = 0;
  using reply_type = bool;
};
struct generation_seen {  // when every watcher of the member saw `generation`
  std::int64_t generation = 0;
  using reply_type = std::int64_t;
};
struct member_seen {  // when the member's view first had `name` up
  std::string name;
  using reply_type = std::int64_t;
};
using probe_message = std::variant<fanout_done, fanout_reached, generation_seen, member_seen>;
template <class Inspector>
auto inspect(Inspector& f, fanout_done&) {
  return f();
}
template <class Inspector>
auto inspect(Inspector& f, fanout_reached& x) {
  return f(x.upto);
}
template <class Inspector>
auto inspect(Inspector& f, generation_seen& x) {
  return f(x.generation);
}
template <class Inspector>
auto inspect(Inspector& f, member_seen& x) {
  return f(x.name);
}

// A member actor of the fanout topic: values come in order; a value past the next expected one counts the
// ones between as skipped (a link or the topic dropped them). It reports once it has the last value.
using fanout_message = std::variant<std::uint64_t, postal::group_lagged>;
class fanout_member : public postal::actor<fanout_message> {
 public:
  using done_sender = std::shared_ptr<postal::oneshot::sender<std::pair<std::uint64_t, std::uint64_t>>>;
  fanout_member(done_sender done, postal::watch::sender<std::uint64_t> progress)
      : done_(std::move(done)), progress_(std::move(progress)) {}
  void handle(std::uint64_t& value) {
    bench::check(value >= next_, "cluster_group_fanout: a member saw a value out of order or twice");
    skipped_ += value - next_;
    next_ = value + 1;
    ++got_;
    if (next_ % progress_step == 0 || next_ == fanout_messages) (void)progress_.send_replace(next_);
    if (next_ == fanout_messages) (void)done_->send({got_, skipped_});
  }
  void handle(postal::group_lagged&) {}  // the skipped values are counted when the next one comes

 private:
  done_sender done_;
  postal::watch::sender<std::uint64_t> progress_;
  std::uint64_t next_ = 0, got_ = 0, skipped_ = 0;
};

// A node's fanout members: joined to the topic, their tallies awaited together.
struct fanout_members {
  fanout_members(postal::runtime& rt, postal::cluster::topic<std::uint64_t>& topic) {
    for (std::size_t m = 0; m < members_per_node; ++m) {
      auto [done, tally] = postal::oneshot::channel<std::pair<std::uint64_t, std::uint64_t>>();
      auto [progress_tx, progress_rx] = postal::watch::channel<std::uint64_t>(0);
      memberships.push_back(topic.join(
          rt, postal::spawn_actor<fanout_member>(
                  rt, {}, std::make_shared<postal::oneshot::sender<std::pair<std::uint64_t, std::uint64_t>>>(std::move(done)),
                  std::move(progress_tx))));
      tallies.push_back(std::move(tally));
      progress.push_back(std::move(progress_rx));
    }
  }
  // Returns once every member has taken the values below `upto` (a multiple of progress_step, or the end).
  postal::task<bool> reached(std::uint64_t upto) {
    for (auto& one : progress) {
      auto member = one;  // a copy per wait: several waits may run at once
      while (*member.borrow_and_update() < upto)
        if (!co_await member.changed()) co_return false;
    }
    co_return true;
  }
  postal::task<std::pair<std::uint64_t, std::uint64_t>> all_done() {
    std::pair<std::uint64_t, std::uint64_t> total{0, 0};
    for (auto& tally : tallies) {
      auto one = co_await tally;
      bench::check(one.has_value(), "cluster_group_fanout: a member ended without reporting");
      total.first += one->first;
      total.second += one->second;
    }
    co_return total;
  }
  std::vector<postal::group_membership> memberships;
  std::vector<postal::oneshot::receiver<std::pair<std::uint64_t, std::uint64_t>>> tallies;
  std::vector<postal::watch::receiver<std::uint64_t>> progress;
};

// Watchers of a followed configuration: the time at which all of them have seen each generation.
struct watchers_state {
  std::mutex lock;
  std::map<std::int64_t, std::pair<std::size_t, std::int64_t>> seen;  // generation -> (watchers, last time)
  postal::watch::sender<std::int64_t> complete = postal::watch::channel<std::int64_t>(0).first;
};
postal::task<void> watch_generations(postal::watch::receiver<push_config> values, std::shared_ptr<watchers_state> state) {
  while (co_await values.changed()) {
    const std::int64_t generation = values.borrow_and_update()->generation;
    std::lock_guard guard(state->lock);
    auto& [count, at] = state->seen[generation];
    ++count;
    at = now_ns();
    if (count == watchers_per_node) (void)state->complete.send_replace(generation);
  }
}

// When `view` first has `name` up (the time this process saw it).
postal::task<std::int64_t> when_up(postal::watch::receiver<postal::cluster::cluster_view> view, std::string name) {
  for (;;) {
    {
      auto now = view.borrow_and_update();
      const auto* entry = now->find(name);
      if (entry != nullptr && entry->status == postal::cluster::member::status_type::up) co_return now_ns();
    }
    if (!co_await view.changed()) co_return 0;
  }
}

class probe : public postal::actor<probe_message> {
 public:
  probe(std::shared_ptr<fanout_members> fanout, std::shared_ptr<watchers_state> watchers,
        postal::watch::receiver<postal::cluster::cluster_view> view)
      : fanout_(std::move(fanout)), watchers_(std::move(watchers)), view_(std::move(view)) {}
  postal::task<std::pair<std::uint64_t, std::uint64_t>> handle(fanout_done&) { return fanout_->all_done(); }
  postal::task<bool> handle(fanout_reached& m) { return fanout_->reached(m.upto); }
  postal::task<std::int64_t> handle(generation_seen& m) { return when_seen(watchers_, m.generation); }
  postal::task<std::int64_t> handle(member_seen& m) { return when_up(view_, m.name); }

 private:
  static postal::task<std::int64_t> when_seen(std::shared_ptr<watchers_state> watchers, std::int64_t generation) {
    auto complete = watchers->complete.subscribe();
    while (*complete.borrow_and_update() < generation)
      if (!co_await complete.changed()) co_return 0;
    std::lock_guard guard(watchers->lock);
    co_return watchers->seen[generation].second;
  }
  std::shared_ptr<fanout_members> fanout_;
  std::shared_ptr<watchers_state> watchers_;
  postal::watch::receiver<postal::cluster::cluster_view> view_;
};

// A member process: joins through 127.0.0.1:<seed>, makes the fanout topic and its members, follows the
// configuration (with "config"), publishes its probe, prints "join_started_ns=" and "port=", serves until
// its standard input closes.
int serve_member(const std::string& name, std::uint16_t seed, bool follow) {
  postal::runtime rt(postal::cluster::enable({.workers = bench::workers()}));
  postal::cluster::node node(rt, {.name = name, .cookie = cookie});
  postal::cluster::groups groups(rt, node);
  auto topic = groups.topic<std::uint64_t>("fanout", fanout_capacity);
  auto fanout = std::make_shared<fanout_members>(rt, topic);
  auto watchers = std::make_shared<watchers_state>();
  std::printf("join_started_ns=%lld\n", static_cast<long long>(now_ns()));
  if (!node.blocking_join({"127.0.0.1:" + std::to_string(seed)})) return 1;
  std::optional<postal::config_handle<push_config>> config;
  if (follow) {
    auto followed = postal::cluster::blocking_follow_config<push_config>(rt, node, "bench", "bench-main");
    if (!followed) return 1;
    config = std::move(*followed);
    for (std::size_t w = 0; w < watchers_per_node; ++w) rt.spawn_detached(watch_generations(config->subscribe(), watchers));
  }
  node.publish("probe", postal::spawn_actor<probe>(rt, postal::actor_options{}, fanout, watchers, node.view()));
  bench::report_port_and_serve(node.port());
  return 0;
}

const bool serve_hook = [] {
  bench::serve_hooks().push_back([](int argc, char** argv) -> int {
    if (argc >= 5 && std::strcmp(argv[1], "--serve-member") == 0)
      return serve_member(argv[2], static_cast<std::uint16_t>(std::stoul(argv[3])), std::strcmp(argv[4], "config") == 0);
    return -1;
  });
  return true;
}();

// This process as the cluster's first member, "bench-main".
struct main_member {
  postal::runtime rt{postal::cluster::enable({.workers = bench::workers()})};
  postal::cluster::node node{rt, {.name = "bench-main", .cookie = cookie}};
  bench::node_process start(const std::string& name, bool follow) {
    return bench::node_process({"--serve-member", name, std::to_string(node.port()), follow ? "config" : "plain"});
  }
  postal::actor_ref<probe_message> probe_of(const std::string& name) {
    auto view = node.view();
    auto found = view.blocking_wait_for([&](const postal::cluster::cluster_view& now) {
      const auto* entry = now.find(name);
      return entry != nullptr && entry->status == postal::cluster::member::status_type::up;
    });
    bench::check(found.has_value(), "cluster: a member did not come up");
    postal::cluster::peer at{name, (*found)->find(name)->id};
    auto ref = node.blocking_lookup<probe_message>(at, "probe");
    if (!ref) bench::fail("cluster: no probe on " + name + ": " + ref.error().message);
    return *ref;
  }
};

double median_of(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

const bench::scenario group_fanout("cluster_group_fanout", [] {
  main_member here;
  postal::cluster::groups groups(here.rt, here.node);
  auto topic = groups.topic<std::uint64_t>("fanout", fanout_capacity);
  fanout_members local(here.rt, topic);
  auto a = here.start("member-a", false);
  auto b = here.start("member-b", false);
  auto probe_a = here.probe_of("member-a");
  auto probe_b = here.probe_of("member-b");
  while (topic.stats().nodes < 2) std::this_thread::yield();  // both members' relays are looked up
  const auto start = bench::clock::now();
  // Publishes window after window; before each, waits until every node's members took the one before last.
  here.rt.block_on([](postal::cluster::topic<std::uint64_t> topic, fanout_members& local,
                      postal::actor_ref<probe_message> a, postal::actor_ref<probe_message> b) -> postal::task<void> {
    for (std::uint64_t first = 0; first < fanout_messages; first += fanout_window) {
      if (first >= 2 * fanout_window) {
        const std::uint64_t upto = first - fanout_window;
        bench::check(co_await local.reached(upto), "cluster_group_fanout: a local member ended");
        fanout_reached on_a{upto}, on_b{upto};
        auto a_reached = co_await a.ask(std::move(on_a));
        auto b_reached = co_await b.ask(std::move(on_b));
        bench::check(a_reached && *a_reached && b_reached && *b_reached, "cluster_group_fanout: a member ended");
      }
      for (std::uint64_t i = first; i < std::min(first + fanout_window, fanout_messages); ++i) topic.publish(i);
    }
  }(topic, local, probe_a, probe_b));
  auto here_total = here.rt.block_on(local.all_done());
  auto a_total = probe_a.blocking_ask(fanout_done{});
  auto b_total = probe_b.blocking_ask(fanout_done{});
  const double seconds = bench::seconds_since(start);
  bench::check(a_total.has_value() && b_total.has_value(), "cluster_group_fanout: a member did not report");
  const std::uint64_t delivered = here_total.first + a_total->first + b_total->first;
  const std::uint64_t skipped = here_total.second + a_total->second + b_total->second;
  bench::check(delivered + skipped == 3 * members_per_node * fanout_messages,
               "cluster_group_fanout: delivered + skipped != published, per member");
  bench::check(skipped == 0, "cluster_group_fanout: values were dropped although the publisher waited");
  char extra[128];
  std::snprintf(extra, sizeof extra, "skipped=%llu link_missed=%llu", static_cast<unsigned long long>(skipped),
                static_cast<unsigned long long>(topic.stats().missed_by_links));
  return bench::outcome{delivered, seconds, extra};
});

void write_generation(const std::filesystem::path& file, std::int64_t generation) {
  std::filesystem::path temporary = file;
  temporary += ".new";
  {
    std::ofstream out(temporary, std::ios::trunc);
    out << "{\"generation\": " << generation << ", \"payload\": \"" << std::string(256, 'x') << "\"}";
  }
  std::filesystem::rename(temporary, file);  // as editors save
}

const bench::scenario config_push("cluster_config_push", [] {
  main_member here;
  const auto dir = std::filesystem::temp_directory_path() / ("postal-bench-push-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto file = dir / "config.json";
  write_generation(file, 0);
  std::vector<double> times_ms;
  {
    auto config = postal::spawn_config<push_config>(here.rt, {.file = file});
    bench::check(config.has_value(), "cluster_config_push: the first load failed");
    postal::cluster::share_config(here.rt, here.node, "bench", *config);
    auto a = here.start("member-a", true);
    auto b = here.start("member-b", true);
    std::vector<postal::actor_ref<probe_message>> probes{here.probe_of("member-a"), here.probe_of("member-b")};
    for (std::int64_t generation = 1; generation <= pushes; ++generation) {
      const std::int64_t renamed = now_ns();
      write_generation(file, generation);
      std::int64_t last = 0;
      for (auto& one : probes) {
        auto seen = one.blocking_ask(generation_seen{generation});
        bench::check(seen.has_value() && *seen > 0, "cluster_config_push: a member did not see a generation");
        last = std::max(last, *seen);
      }
      times_ms.push_back(static_cast<double>(last - renamed) / 1e6);
    }
  }
  std::filesystem::remove_all(dir);
  double total_seconds = 0;
  for (double ms : times_ms) total_seconds += ms / 1000;
  char extra[64];
  std::snprintf(extra, sizeof extra, "median_ms=%.2f", median_of(times_ms));
  return bench::outcome{static_cast<std::uint64_t>(pushes), total_seconds, extra};
});

const bench::scenario join("cluster_join", [] {
  main_member here;
  auto a = here.start("member-a", false);
  auto b = here.start("member-b", false);
  std::vector<postal::actor_ref<probe_message>> probes{here.probe_of("member-a"), here.probe_of("member-b")};
  std::vector<double> times_ms;
  for (int round = 0; round < joins; ++round) {
    const std::string name = "joiner-" + std::to_string(round);
    auto seen_here = here.rt.spawn(when_up(here.node.view(), name));
    auto joiner = here.start(name, false);
    const std::int64_t started = std::stoll(joiner.value("join_started_ns"));
    std::int64_t last = 0;
    for (auto& one : probes) {
      auto seen = one.blocking_ask(member_seen{name});
      bench::check(seen.has_value() && *seen > 0, "cluster_join: a member did not see the joiner");
      last = std::max(last, *seen);
    }
    const std::int64_t here_at = seen_here.blocking_join();
    bench::check(here_at > 0, "cluster_join: this node did not see the joiner");
    last = std::max(last, here_at);
    times_ms.push_back(static_cast<double>(last - started) / 1e6);
    joiner.finish();
    joiner.wait();
  }
  double total_seconds = 0;
  for (double ms : times_ms) total_seconds += ms / 1000;
  char extra[64];
  std::snprintf(extra, sizeof extra, "median_ms=%.2f", median_of(times_ms));
  return bench::outcome{static_cast<std::uint64_t>(joins), total_seconds, extra};
});

}  // namespace bench_cluster
