// The actor scenarios of postal-bench, each next to its twin written with plain CAF 0.17.6 actors:
// actor_tell, actor_ask, thread_ask (suffix _caf for CAF). The twins run on an actor system configured as
// a CAF user gets it (CAF's defaults, 2 workers), not on postal's tuned runtime. Every scenario checks its
// count and sum and fails loudly when a message is lost or duplicated.
#include <postal/actor.hpp>
#include <postal/runtime.hpp>

#include <caf/all.hpp>

#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "bench.hpp"

namespace {

constexpr std::uint64_t tell_messages = 10'000'000;
constexpr std::uint64_t ask_round_trips = 1'000'000;
constexpr std::uint64_t thread_round_trips = 100'000;
constexpr std::uint64_t expected_sum(std::uint64_t n) {
  return n * (n - 1) / 2;
}

postal::runtime_options bench_runtime() {
  return postal::runtime_options{.workers = bench::workers()};
}

// Resident memory of this process, from /proc/self/statm.
std::size_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::size_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
}
// "rss_growth_mb=<n>": how much resident memory a scenario added (a bounded mailbox keeps it flat).
std::string rss_growth(std::size_t before) {
  const std::size_t after = resident_bytes();
  return "rss_growth_mb=" + std::to_string(after > before ? (after - before) >> 20 : 0);
}

// The actor system of the CAF twins: CAF's own defaults, with the same worker count as postal's runtime.
struct plain_caf_config {
  plain_caf_config() { config.set("scheduler.max-threads", static_cast<std::int64_t>(bench::workers())); }
  caf::actor_system_config config;
};
struct plain_caf : plain_caf_config {  // the base is built first: the config is complete before the system
  caf::actor_system system{config};
};

// --- actor_tell: one actor tells another 10 M u64 (postal: bounded mailbox 1024) ---

struct number {
  std::uint64_t value = 0;
};
using sink_message = std::variant<number>;

class sink : public postal::actor<sink_message> {
 public:
  sink(std::uint64_t expected, std::shared_ptr<postal::oneshot::sender<std::uint64_t>> done)
      : expected_(expected), done_(std::move(done)) {}
  void handle(number& m) {
    sum_ += m.value;
    if (++count_ == expected_) (void)done_->send(sum_);
  }

 private:
  std::uint64_t expected_;
  std::shared_ptr<postal::oneshot::sender<std::uint64_t>> done_;
  std::uint64_t count_ = 0;
  std::uint64_t sum_ = 0;
};

struct pour {
  std::uint64_t count = 0;
};
using source_message = std::variant<pour>;

class source : public postal::actor<source_message> {
 public:
  explicit source(postal::actor_ref<sink_message> target) : target_(std::move(target)) {}
  postal::task<void> handle(pour& m) {
    for (std::uint64_t i = 0; i < m.count; ++i) {
      number n{i};
      auto sent = co_await target_.tell(std::move(n));
      bench::check(sent.has_value(), "actor_tell: the sink stopped early");
    }
  }

 private:
  postal::actor_ref<sink_message> target_;
};

const bench::scenario actor_tell("actor_tell", [] {
  postal::runtime rt(bench_runtime());
  auto [done_tx, done_rx] = postal::oneshot::channel<std::uint64_t>();
  auto target =
      postal::spawn_actor<sink>(rt, postal::actor_options{.mailbox_capacity = 1024}, tell_messages,
                                std::make_shared<postal::oneshot::sender<std::uint64_t>>(std::move(done_tx)));
  auto from = postal::spawn_actor<source>(rt, postal::actor_options{}, target);
  const std::size_t before = resident_bytes();
  auto start = bench::clock::now();
  bench::check(from.blocking_tell(pour{tell_messages}).has_value(), "actor_tell: the source is gone");
  auto sum = done_rx.blocking_recv();
  double seconds = bench::seconds_since(start);
  bench::check(sum.has_value() && *sum == expected_sum(tell_messages),
               "actor_tell: wrong sum: lost or duplicated");
  return bench::outcome{tell_messages, seconds, rss_growth(before)};
});

const bench::scenario actor_tell_caf("actor_tell_caf", [] {
  plain_caf caf_runtime;
  caf::actor_system& system = caf_runtime.system;
  std::promise<std::uint64_t> done;
  auto target = system.spawn(
      [](caf::event_based_actor*, std::promise<std::uint64_t>* done) -> caf::behavior {
        auto state = std::make_shared<std::pair<std::uint64_t, std::uint64_t>>(0, 0);  // count, sum
        return {[=](std::uint64_t value) {
          state->second += value;
          if (++state->first == tell_messages) done->set_value(state->second);
        }};
      },
      &done);
  auto from = system.spawn(
      [](caf::event_based_actor* self, caf::actor target) -> caf::behavior {
        return {[=](caf::ok_atom) {
          for (std::uint64_t i = 0; i < tell_messages; ++i) self->send(target, i);
        }};
      },
      target);
  const std::size_t before = resident_bytes();
  auto start = bench::clock::now();
  caf::anon_send(from, caf::ok_atom::value);
  std::uint64_t sum = done.get_future().get();
  const std::string growth = rss_growth(before);
  double seconds = bench::seconds_since(start);
  bench::check(sum == expected_sum(tell_messages), "actor_tell_caf: wrong sum");
  caf::anon_send_exit(from, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(target, caf::exit_reason::user_shutdown);
  return bench::outcome{tell_messages, seconds, growth};
});

// --- actor_ask: an actor asks another and awaits each reply, 1 M sequential round trips ---

struct increment {
  std::uint64_t value = 0;
  postal::responder<std::uint64_t> reply;
};
using counter_message = std::variant<increment>;

class counter : public postal::actor<counter_message> {
 public:
  void handle(increment& m) {
    total_ += m.value;
    (void)m.reply.send(total_);
  }

 private:
  std::uint64_t total_ = 0;
};

struct run_asks {
  std::uint64_t count = 0;
  postal::responder<std::uint64_t> reply;
};
using asker_message = std::variant<run_asks>;

class asker : public postal::actor<asker_message> {
 public:
  explicit asker(postal::actor_ref<counter_message> target) : target_(std::move(target)) {}
  postal::task<void> handle(run_asks& m) {
    std::uint64_t last = 0;
    for (std::uint64_t i = 0; i < m.count; ++i) {
      increment request{i, {}};  // a named local: g++ 12 miscompiles braced temporaries in co_await
      auto answer = co_await target_.ask(std::move(request));
      bench::check(answer.has_value(), "actor_ask: a request got no reply");
      last = *answer;
    }
    (void)m.reply.send(last);
  }

 private:
  postal::actor_ref<counter_message> target_;
};

const bench::scenario actor_ask("actor_ask", [] {
  postal::runtime rt(bench_runtime());
  auto target = postal::spawn_actor<counter>(rt, postal::actor_options{});
  auto client = postal::spawn_actor<asker>(rt, postal::actor_options{}, target);
  auto start = bench::clock::now();
  auto last = client.blocking_ask(run_asks{ask_round_trips, {}});
  double seconds = bench::seconds_since(start);
  bench::check(last.has_value() && *last == expected_sum(ask_round_trips), "actor_ask: wrong final total");
  return bench::outcome{ask_round_trips, seconds, {}};
});

const bench::scenario actor_ask_caf("actor_ask_caf", [] {
  plain_caf caf_runtime;
  caf::actor_system& system = caf_runtime.system;
  auto target = system.spawn([]() -> caf::behavior {
    auto total = std::make_shared<std::uint64_t>(0);
    return {[=](std::uint64_t value) { return *total += value; }};
  });
  std::promise<std::uint64_t> done;
  auto client = system.spawn(
      [](caf::event_based_actor* self, caf::actor target,
         std::promise<std::uint64_t>* done) -> caf::behavior {
        auto next = std::make_shared<std::function<void(std::uint64_t)>>();
        *next = [=](std::uint64_t i) {
          self->request(target, caf::infinite, i).then([=](std::uint64_t total) {
            if (i + 1 == ask_round_trips)
              done->set_value(total);
            else
              (*next)(i + 1);
          });
        };
        return {[=](caf::ok_atom) { (*next)(0); }};
      },
      target, &done);
  auto start = bench::clock::now();
  caf::anon_send(client, caf::ok_atom::value);
  std::uint64_t last = done.get_future().get();
  double seconds = bench::seconds_since(start);
  bench::check(last == expected_sum(ask_round_trips), "actor_ask_caf: wrong final total");
  caf::anon_send_exit(client, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(target, caf::exit_reason::user_shutdown);
  return bench::outcome{ask_round_trips, seconds, {}};
});

// --- thread_ask: the main thread asks an actor and blocks for each reply, 100 k round trips ---

const bench::scenario thread_ask("thread_ask", [] {
  postal::runtime rt(bench_runtime());
  auto target = postal::spawn_actor<counter>(rt, postal::actor_options{});
  std::uint64_t last = 0;
  auto start = bench::clock::now();
  for (std::uint64_t i = 0; i < thread_round_trips; ++i) {
    auto answer = target.blocking_ask(increment{i, {}});
    bench::check(answer.has_value(), "thread_ask: a request got no reply");
    last = *answer;
  }
  double seconds = bench::seconds_since(start);
  bench::check(last == expected_sum(thread_round_trips), "thread_ask: wrong final total");
  return bench::outcome{thread_round_trips, seconds, {}};
});

const bench::scenario thread_ask_caf("thread_ask_caf", [] {
  plain_caf caf_runtime;
  caf::actor_system& system = caf_runtime.system;
  auto target = system.spawn([]() -> caf::behavior {
    auto total = std::make_shared<std::uint64_t>(0);
    return {[=](std::uint64_t value) { return *total += value; }};
  });
  std::uint64_t last = 0;
  bool failed = false;
  auto start = bench::clock::now();
  {
    caf::scoped_actor self{system};
    for (std::uint64_t i = 0; i < thread_round_trips && !failed; ++i) {
      self->request(target, caf::infinite, i)
          .receive([&](std::uint64_t total) { last = total; }, [&](caf::error&) { failed = true; });
    }
  }
  double seconds = bench::seconds_since(start);
  bench::check(!failed && last == expected_sum(thread_round_trips), "thread_ask_caf: wrong final total");
  caf::anon_send_exit(target, caf::exit_reason::user_shutdown);
  return bench::outcome{thread_round_trips, seconds, {}};
});

}  // namespace

// --- spawn: spawn 1 M idle actors, then stop them all; also bytes_per_actor (resident growth / count) ---

namespace {

std::size_t spawn_count() {
  if (const char* value = std::getenv("POSTAL_BENCH_SPAWN")) return std::strtoul(value, nullptr, 10);
  return 1'000'000;
}

struct nothing {};
using idle_message = std::variant<nothing>;
std::atomic<std::size_t> idle_started{0};
class idle : public postal::actor<idle_message> {
 public:
  void on_start() override { idle_started.fetch_add(1, std::memory_order_relaxed); }
  void handle(nothing&) {}
};

std::string per_actor(std::size_t before, std::size_t after, std::size_t count) {
  return "bytes_per_actor=" + std::to_string(after > before ? (after - before) / count : 0);
}

}  // namespace

const bench::scenario spawn("spawn", [] {
  const std::size_t count = spawn_count();
  postal::runtime rt(bench_runtime());
  std::vector<postal::actor_ref<idle_message>> refs;
  refs.reserve(count);
  const std::size_t before = resident_bytes();
  auto start = bench::clock::now();
  idle_started = 0;
  for (std::size_t i = 0; i < count; ++i)
    refs.push_back(postal::spawn_actor<idle>(rt, postal::actor_options{}));
  while (idle_started.load(std::memory_order_relaxed) < count) std::this_thread::yield();  // all are running
  const std::size_t after = resident_bytes();
  refs.clear();  // every ref gone: each actor stops normally
  rt.shutdown();
  double seconds = bench::seconds_since(start);
  bench::check(rt.live_tasks() == 0, "spawn: an actor did not stop");
  bench::check(refs.empty(), "spawn: refs left");
  return bench::outcome{count, seconds, per_actor(before, after, count)};
});

const bench::scenario spawn_caf("spawn_caf", [] {
  const std::size_t count = spawn_count();
  plain_caf caf_runtime;
  caf::actor_system& system = caf_runtime.system;
  std::vector<caf::actor> actors;
  actors.reserve(count);
  const std::size_t before = resident_bytes();
  auto start = bench::clock::now();
  for (std::size_t i = 0; i < count; ++i)
    actors.push_back(
        system.spawn([](caf::event_based_actor*, int) -> caf::behavior { return {[](int) {}}; }, 0));
  const std::size_t after = resident_bytes();
  for (auto& a : actors) caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  actors.clear();
  system.await_all_actors_done();
  double seconds = bench::seconds_since(start);
  return bench::outcome{count, seconds, per_actor(before, after, count)};
});
