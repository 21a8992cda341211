// The pattern scenarios of postal-bench: group_fanout and group_fanout100 (one publisher task, 4 or 100
// subscriber actors joined to a pub/sub group, 1 M messages; deliveries per second, lagged messages counted
// as in bcast) and config_reload (see below). Every scenario checks what arrived and fails loudly when a
// message is lost, duplicated or out of order.
#include <postal/config.hpp>
#include <postal/group.hpp>
#include <postal/redis.hpp>
#include <postal/runtime.hpp>

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "bench.hpp"
#include "support/processes.hpp"  // the redis-server the tests start, for a run without REDIS_PORT

namespace {

constexpr std::uint64_t fanout_messages = 1'000'000;
constexpr std::size_t fanout_capacity = 1024;  // the topic's, as bcast's channel

struct fanout_tally {
  std::uint64_t got = 0;
  std::uint64_t lagged = 0;
};

using fanout_message = std::variant<std::uint64_t, postal::group_lagged>;

// A subscriber actor: every value must be the next one expected, after skipping what it lagged by. It
// reports when it has accounted for the last value (the newest message is never overwritten, so it comes).
class fanout_member : public postal::actor<fanout_message> {
 public:
  explicit fanout_member(std::shared_ptr<postal::oneshot::sender<fanout_tally>> done) : done_(std::move(done)) {}
  void handle(std::uint64_t& value) {
    bench::check(value == next_, "group_fanout: a member saw a value out of order or twice");
    ++next_;
    ++tally_.got;
    finish_if_done();
  }
  void handle(postal::group_lagged& lagged) {
    tally_.lagged += lagged.missed;
    next_ += lagged.missed;
    finish_if_done();
  }

 private:
  void finish_if_done() {
    if (next_ == fanout_messages) (void)done_->send(tally_);
  }
  std::shared_ptr<postal::oneshot::sender<fanout_tally>> done_;
  std::uint64_t next_ = 0;
  fanout_tally tally_;
};

bench::outcome group_fanout(std::size_t members) {
  postal::runtime rt(postal::runtime_options{.workers = bench::workers()});
  postal::groups groups;
  auto topic = groups.topic<std::uint64_t>("fanout", fanout_capacity);
  std::vector<postal::oneshot::receiver<fanout_tally>> tallies;
  std::vector<postal::group_membership> memberships;
  std::vector<postal::actor_ref<fanout_message>> refs;
  for (std::size_t m = 0; m < members; ++m) {
    auto [done, tally] = postal::oneshot::channel<fanout_tally>();
    refs.push_back(postal::spawn_actor<fanout_member>(
        rt, {}, std::make_shared<postal::oneshot::sender<fanout_tally>>(std::move(done))));
    memberships.push_back(topic.join(rt, refs.back()));
    tallies.push_back(std::move(tally));
  }
  auto start = bench::clock::now();
  rt.block_on([](postal::topic<std::uint64_t> topic, std::size_t members) -> postal::task<void> {
    for (std::uint64_t i = 0; i < fanout_messages; ++i) {
      bench::check(topic.publish(i) == members, "group_fanout: a publish missed a member");
      if (i % 256 == 255) co_await postal::yield_now();
    }
  }(topic, members));
  fanout_tally total;
  for (auto& tally : tallies) {
    auto one = tally.blocking_recv();
    bench::check(one.has_value(), "group_fanout: a member ended without reporting");
    bench::check(one->got + one->lagged == fanout_messages, "group_fanout: received + lagged != published");
    total.got += one->got;
    total.lagged += one->lagged;
  }
  double seconds = bench::seconds_since(start);
  return bench::outcome{total.got, seconds, "lagged=" + std::to_string(total.lagged)};
}

const bench::scenario fanout4("group_fanout", [] { return group_fanout(4); });
const bench::scenario fanout100("group_fanout100", [] { return group_fanout(100); });

// --- config_reload: 100 subscriber tasks watch a config actor; a new file is renamed over the old one ---
// The time from the rename to the moment the 100th subscriber has seen the new value, over 20 reloads;
// the rate counts reloads per second of that time, and median_ms is the median of the 20.

constexpr std::size_t reload_subscribers = 100;
constexpr int reloads = 20;

struct reload_config {
  int generation = 0;
  std::string payload;
  friend bool operator==(const reload_config&, const reload_config&) = default;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(reload_config, generation, payload)

void write_generation(const std::filesystem::path& file, int generation) {
  std::filesystem::path temporary = file;
  temporary += ".new";
  {
    std::ofstream out(temporary, std::ios::trunc);
    out << nlohmann::json(reload_config{generation, std::string(256, 'x')}).dump(2);
  }
  std::filesystem::rename(temporary, file);  // as editors save
}

// A subscriber: reports every generation it sees to the benchmark's main thread.
postal::task<void> reload_subscriber(postal::watch::receiver<reload_config> values,
                                     postal::mpsc::sender<int> seen) {
  while (co_await values.changed()) {
    const int generation = values.borrow_and_update()->generation;
    if (!co_await seen.send(generation)) co_return;
  }
}

bench::outcome config_reload() {
  postal::runtime rt(postal::runtime_options{.workers = bench::workers()});
  const auto dir = std::filesystem::temp_directory_path() / ("postal-bench-config-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto file = dir / "config.json";
  write_generation(file, 0);
  std::vector<double> times_ms;
  {
    auto config = postal::spawn_config<reload_config>(rt, {.file = file});
    bench::check(config.has_value(), "config_reload: the first load failed");
    bench::check(config->watching() == postal::watch_mode::inotify, "config_reload: inotify is not in use");
    auto [seen_tx, seen_rx] = postal::mpsc::channel<int>(reload_subscribers * 2);
    for (std::size_t s = 0; s < reload_subscribers; ++s) rt.spawn_detached(reload_subscriber(config->subscribe(), seen_tx));
    { auto unused = std::move(seen_tx); }
    for (int generation = 1; generation <= reloads; ++generation) {
      const auto start = bench::clock::now();
      write_generation(file, generation);
      for (std::size_t seen = 0; seen < reload_subscribers;) {
        auto next = seen_rx.blocking_recv();
        bench::check(next.has_value(), "config_reload: a subscriber ended");
        bench::check(*next == generation, "config_reload: a subscriber saw a generation out of order");
        ++seen;
      }
      times_ms.push_back(bench::seconds_since(start) * 1000);
    }
  }
  std::filesystem::remove_all(dir);
  double total_seconds = 0;
  for (double ms : times_ms) total_seconds += ms / 1000;
  std::sort(times_ms.begin(), times_ms.end());
  const double median = (times_ms[reloads / 2 - 1] + times_ms[reloads / 2]) / 2;
  char extra[64];
  std::snprintf(extra, sizeof extra, "median_ms=%.2f", median);
  return bench::outcome{static_cast<std::uint64_t>(reloads), total_seconds, extra};
}

const bench::scenario reload("config_reload", [] { return config_reload(); });

// --- conn_manager: 50 tasks do SET then GET through one connection manager to a real redis-server ---
// The server is the one at 127.0.0.1:$REDIS_PORT, or, when that is unset, one started here on a free port
// (no persistence) and stopped after. Operations per second count SETs and GETs. conn_manager runs with the
// I/O driver busy polling for 200 us after each event (the manager then does not poll for replies itself);
// conn_manager_default with postal's defaults (no busy polling; the manager's reply polling).

constexpr int manager_clients = 50;
constexpr int manager_rounds = 10'000;  // per client: SET then GET, 1 M operations in all

postal::task<std::uint64_t> manager_client(postal::redis::connection manager, int client) {
  std::uint64_t done = 0;
  const std::string key = "bench:" + std::to_string(client);
  for (int i = 0; i < manager_rounds; ++i) {
    postal::redis::set store{key, std::to_string(i), {}};
    auto stored = co_await postal::redis::query(manager, std::move(store));
    bench::check(stored.has_value(), "conn_manager: a SET failed");
    postal::redis::get load{key, {}};
    auto loaded = co_await postal::redis::query(manager, std::move(load));
    bench::check(loaded.has_value() && *loaded == std::optional<std::string>(std::to_string(i)),
                 "conn_manager: a GET did not return what was set");
    done += 2;
  }
  co_return done;
}

bench::outcome conn_manager(std::chrono::microseconds busy_poll) {
  postal::net::set_busy_poll(busy_poll);
  std::optional<test_support::redis_server> own;
  std::uint16_t port = 0;
  if (const char* given = std::getenv("REDIS_PORT")) {
    port = static_cast<std::uint16_t>(std::strtoul(given, nullptr, 10));
  } else {
    own.emplace();
    port = own->port();
  }
  postal::runtime rt(postal::runtime_options{.workers = bench::workers()});
  postal::redis::connection_options options;
  options.port = port;
  auto manager = postal::redis::spawn_connection_manager(rt, options);
  bench::check(postal::redis::blocking_query(manager, postal::redis::get{"warm-up", {}}).has_value(),
               "conn_manager: cannot reach redis-server");
  const auto start = bench::clock::now();
  std::vector<postal::join_handle<std::uint64_t>> clients;
  for (int c = 0; c < manager_clients; ++c) clients.push_back(rt.spawn(manager_client(manager, c)));
  std::uint64_t operations = 0;
  for (auto& client : clients) operations += client.blocking_join();
  const double seconds = bench::seconds_since(start);
  postal::net::set_busy_poll(std::chrono::microseconds(0));
  return bench::outcome{operations, seconds,
                        "busy_poll_us=" + std::to_string(busy_poll.count()) + " redis_port=" + std::to_string(port)};
}

// With the I/O driver's busy polling (postal::net::set_busy_poll), as a latency-bound client would run, and
// with the defaults.
const bench::scenario manager_scenario("conn_manager", [] { return conn_manager(std::chrono::microseconds(200)); });
const bench::scenario manager_default("conn_manager_default", [] { return conn_manager(std::chrono::microseconds(0)); });

}  // namespace
