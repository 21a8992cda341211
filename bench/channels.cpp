// The channel scenarios of postal-bench, each doing exactly the work of its Tokio peer
// (the Tokio 1.24 peer, see bench/README.md) on postal's runtime with 2 workers, and checking its result.
#include <postal/broadcast.hpp>
#include <postal/mpsc.hpp>
#include <postal/oneshot.hpp>
#include <postal/runtime.hpp>
#include <postal/task.hpp>
#include <postal/watch.hpp>

#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bench.hpp"

namespace {

constexpr std::uint64_t mpsc_messages = 10'000'000;
constexpr std::size_t mpsc_capacity = 1024;
constexpr std::uint64_t round_trips = 1'000'000;
constexpr std::uint64_t broadcast_messages = 1'000'000;
constexpr std::size_t broadcast_capacity = 1024;
constexpr std::size_t broadcast_receivers = 4;
constexpr std::uint64_t watch_updates = 10'000;
constexpr std::size_t watch_receivers = 100;

postal::runtime_options bench_runtime() {
  return postal::runtime_options{.workers = bench::workers()};
}

// Checks what a consumer saw from `producers` producers that each sent per = total / producers values
// p * per + i in order: every value exactly once, in per-producer order.
class arrival_check {
 public:
  explicit arrival_check(std::uint64_t producers, std::uint64_t total)
      : per_(total / producers), next_(producers) {
    for (std::uint64_t p = 0; p < producers; ++p) next_[p] = p * per_;
  }
  void see(std::uint64_t value) {
    std::uint64_t producer = value / per_;
    if (producer >= next_.size() || next_[producer] != value) ordered_ = false;
    if (producer < next_.size()) next_[producer] = value + 1;
    ++count_;
  }
  void verify(const char* scenario) const {
    bench::check(ordered_, std::string(scenario) + ": a value arrived twice, out of order or was lost");
    for (std::uint64_t p = 0; p < next_.size(); ++p)
      bench::check(next_[p] == (p + 1) * per_,
                   std::string(scenario) + ": a producer's values did not all arrive");
    bench::check(count_ == per_ * next_.size(), std::string(scenario) + ": wrong number of values received");
  }
  std::uint64_t count() const { return count_; }

 private:
  std::uint64_t per_;
  std::vector<std::uint64_t> next_;
  std::uint64_t count_ = 0;
  bool ordered_ = true;
};

// --- mpsc1 / mpsc4: bounded mpsc, capacity 1024, N producer tasks -> 1 consumer task, 10 M values ---

postal::task<void> bounded_producer(postal::mpsc::sender<std::uint64_t> tx, std::uint64_t first,
                                    std::uint64_t count) {
  for (std::uint64_t i = 0; i < count; ++i) {
    auto sent = co_await tx.send(first + i);
    bench::check(sent.has_value(), "mpsc: send failed while the receiver was alive");
  }
}

postal::task<std::uint64_t> bounded_consumer(postal::mpsc::receiver<std::uint64_t> rx, arrival_check* check) {
  while (auto value = co_await rx.recv()) check->see(*value);
  co_return check->count();
}

bench::outcome bounded_mpsc(std::uint64_t producers, const char* name) {
  postal::runtime runtime(bench_runtime());
  return runtime.block_on([](std::uint64_t producers, const char* name) -> postal::task<bench::outcome> {
    auto [tx, rx] = postal::mpsc::channel<std::uint64_t>(mpsc_capacity);
    arrival_check check(producers, mpsc_messages);
    std::uint64_t per = mpsc_messages / producers;
    auto start = bench::clock::now();
    for (std::uint64_t p = 0; p < producers; ++p) postal::spawn(bounded_producer(tx, p * per, per));
    { auto last = std::move(tx); }
    std::uint64_t received = co_await postal::spawn(bounded_consumer(std::move(rx), &check));
    double seconds = bench::seconds_since(start);
    check.verify(name);
    co_return bench::outcome{received, seconds, {}};
  }(producers, name));
}

const bench::scenario mpsc1("mpsc1", [] { return bounded_mpsc(1, "mpsc1"); });
const bench::scenario mpsc4("mpsc4", [] { return bounded_mpsc(4, "mpsc4"); });

// --- umpsc1 / umpsc4: unbounded mpsc, producers yield every 1024 sends (as the Tokio peer does) ---

postal::task<void> unbounded_producer(postal::mpsc::unbounded_sender<std::uint64_t> tx, std::uint64_t first,
                                      std::uint64_t count) {
  for (std::uint64_t i = 0; i < count; ++i) {
    bench::check(tx.send(first + i).has_value(), "umpsc: send failed while the receiver was alive");
    if (i % 1024 == 1023) co_await postal::yield_now();
  }
}

postal::task<std::uint64_t> unbounded_consumer(postal::mpsc::unbounded_receiver<std::uint64_t> rx,
                                               arrival_check* check) {
  while (auto value = co_await rx.recv()) check->see(*value);
  co_return check->count();
}

bench::outcome unbounded_mpsc(std::uint64_t producers, const char* name) {
  postal::runtime runtime(bench_runtime());
  return runtime.block_on([](std::uint64_t producers, const char* name) -> postal::task<bench::outcome> {
    auto [tx, rx] = postal::mpsc::unbounded_channel<std::uint64_t>();
    arrival_check check(producers, mpsc_messages);
    std::uint64_t per = mpsc_messages / producers;
    auto start = bench::clock::now();
    for (std::uint64_t p = 0; p < producers; ++p) postal::spawn(unbounded_producer(tx, p * per, per));
    { auto last = std::move(tx); }
    std::uint64_t received = co_await postal::spawn(unbounded_consumer(std::move(rx), &check));
    double seconds = bench::seconds_since(start);
    check.verify(name);
    co_return bench::outcome{received, seconds, {}};
  }(producers, name));
}

const bench::scenario umpsc1("umpsc1", [] { return unbounded_mpsc(1, "umpsc1"); });
const bench::scenario umpsc4("umpsc4", [] { return unbounded_mpsc(4, "umpsc4"); });

// --- oneshot: the command pattern; a manager task owns a counter, a client awaits each reply ---

struct command {
  std::uint64_t value;
  postal::oneshot::sender<std::uint64_t> reply;
};

postal::task<std::uint64_t> counter_manager(postal::mpsc::receiver<command> commands) {
  std::uint64_t state = 0;
  while (auto cmd = co_await commands.recv()) {
    state += cmd->value;
    (void)cmd->reply.send(state);
  }
  co_return state;
}

postal::task<std::uint64_t> counter_client(postal::mpsc::sender<command> commands) {
  std::uint64_t expected = 0;
  for (std::uint64_t i = 0; i < round_trips; ++i) {
    auto [reply_tx, reply_rx] = postal::oneshot::channel<std::uint64_t>();
    command cmd{i, std::move(reply_tx)};  // a named local: see the g++ 12 note in notes-caf-0.17.6.md
    bench::check((co_await commands.send(std::move(cmd))).has_value(), "oneshot: the manager is gone");
    auto reply = co_await reply_rx;
    expected += i;
    bench::check(reply.has_value() && *reply == expected, "oneshot: a reply was lost or wrong");
  }
  co_return round_trips;
}

const bench::scenario oneshot("oneshot", [] {
  postal::runtime runtime(bench_runtime());
  return runtime.block_on([]() -> postal::task<bench::outcome> {
    auto [tx, rx] = postal::mpsc::channel<command>(mpsc_capacity);
    auto manager = postal::spawn(counter_manager(std::move(rx)));
    auto start = bench::clock::now();
    std::uint64_t done = co_await postal::spawn(counter_client(std::move(tx)));
    double seconds = bench::seconds_since(start);
    std::uint64_t state = co_await manager;
    bench::check(state == round_trips * (round_trips - 1) / 2, "oneshot: the manager's sum is wrong");
    co_return bench::outcome{done, seconds, {}};
  }());
});

// --- bcast / bcast_lossless: 1 sender, 4 receiver tasks, capacity 1024, 1 M messages ---

struct receiver_tally {
  std::uint64_t got = 0;
  std::uint64_t lagged = 0;
};

// Receives until closed; every value must be the next one expected, after skipping what it lagged by.
postal::task<receiver_tally> broadcast_receiver(postal::broadcast::receiver<std::uint64_t> rx,
                                                std::atomic<std::uint64_t>* progress) {
  receiver_tally tally;
  std::uint64_t next = 0;
  for (;;) {
    auto value = co_await rx.recv();
    if (value) {
      bench::check(*value == next, "bcast: a receiver saw a value out of order or twice");
      ++next;
      ++tally.got;
      if (progress) progress->store(tally.got, std::memory_order_release);
    } else if (value.error().is_lagged()) {
      tally.lagged += value.error().missed;
      next += value.error().missed;
    } else {
      break;
    }
  }
  bench::check(next == broadcast_messages, "bcast: a receiver ended before the last value");
  co_return tally;
}

bench::outcome broadcast_run(bool lossless) {
  postal::runtime runtime(bench_runtime());
  return runtime.block_on([](bool lossless) -> postal::task<bench::outcome> {
    auto [tx, first_rx] = postal::broadcast::channel<std::uint64_t>(broadcast_capacity);
    std::vector<postal::broadcast::receiver<std::uint64_t>> receivers;
    receivers.push_back(std::move(first_rx));
    while (receivers.size() < broadcast_receivers) receivers.push_back(tx.subscribe());
    auto progress = std::make_unique<std::atomic<std::uint64_t>[]>(broadcast_receivers);
    auto start = bench::clock::now();
    std::vector<postal::join_handle<receiver_tally>> tallies;
    for (std::size_t r = 0; r < broadcast_receivers; ++r)
      tallies.push_back(
          postal::spawn(broadcast_receiver(std::move(receivers[r]), lossless ? &progress[r] : nullptr)));
    receivers.clear();
    auto sender = postal::spawn([](postal::broadcast::sender<std::uint64_t> tx, bool lossless,
                                   std::atomic<std::uint64_t>* progress) -> postal::task<void> {
      const std::uint64_t window = broadcast_capacity - 1;
      for (std::uint64_t i = 0; i < broadcast_messages; ++i) {
        if (lossless) {
          for (;;) {
            std::uint64_t slowest = progress[0].load(std::memory_order_acquire);
            for (std::size_t r = 1; r < broadcast_receivers; ++r)
              slowest = std::min(slowest, progress[r].load(std::memory_order_acquire));
            if (i - slowest < window) break;
            co_await postal::yield_now();
          }
        }
        bench::check(tx.send(i).has_value(), "bcast: send failed while receivers were alive");
        if (!lossless && i % 256 == 255) co_await postal::yield_now();
      }
    }(std::move(tx), lossless, progress.get()));
    co_await sender;
    receiver_tally total;
    for (auto& tally : tallies) {
      receiver_tally one = co_await tally;
      bench::check(one.got + one.lagged == broadcast_messages, "bcast: received + lagged != sent");
      total.got += one.got;
      total.lagged += one.lagged;
    }
    double seconds = bench::seconds_since(start);
    if (lossless) bench::check(total.lagged == 0, "bcast_lossless: a receiver lagged");
    co_return bench::outcome{total.got, seconds, "lagged=" + std::to_string(total.lagged)};
  }(lossless));
}

const bench::scenario bcast("bcast", [] { return broadcast_run(false); });
const bench::scenario bcast_lossless("bcast_lossless", [] { return broadcast_run(true); });

// --- threads_mpsc1: bounded mpsc, capacity 1024, between two plain threads (compare with spsc-limit) ---

const bench::scenario threads_mpsc1("threads_mpsc1", [] {
  auto [tx, rx] = postal::mpsc::channel<std::uint64_t>(mpsc_capacity);
  arrival_check check(1, mpsc_messages);
  auto start = bench::clock::now();
  std::thread producer([tx = std::move(tx)]() mutable {
    for (std::uint64_t i = 0; i < mpsc_messages; ++i)
      bench::check(tx.blocking_send(i).has_value(),
                   "threads_mpsc1: send failed while the receiver was alive");
  });
  while (auto value = rx.blocking_recv()) check.see(*value);
  double seconds = bench::seconds_since(start);
  producer.join();
  check.verify("threads_mpsc1");
  return bench::outcome{check.count(), seconds, {}};
});

// --- watch_fanout: 1 sender, 100 receiver tasks awaiting changed() and reading, 10 k updates ---

postal::task<std::uint64_t> watch_reader(postal::watch::receiver<std::uint64_t> rx) {
  std::uint64_t observed = 0;
  std::uint64_t last = 0;
  while (last < watch_updates) {
    auto changed = co_await rx.changed();
    bench::check(changed.has_value(), "watch_fanout: the sender went away early");
    std::uint64_t value = *rx.borrow_and_update();
    bench::check(value > last, "watch_fanout: a receiver saw an old value as new");
    last = value;
    ++observed;
  }
  co_return observed;
}

const bench::scenario watch_fanout("watch_fanout", [] {
  postal::runtime runtime(bench_runtime());
  return runtime.block_on([]() -> postal::task<bench::outcome> {
    auto [tx, rx] = postal::watch::channel<std::uint64_t>(0);
    std::vector<postal::join_handle<std::uint64_t>> readers;
    auto start = bench::clock::now();
    for (std::size_t r = 0; r < watch_receivers; ++r) readers.push_back(postal::spawn(watch_reader(rx)));
    for (std::uint64_t update = 1; update <= watch_updates; ++update) {
      tx.send_replace(update);
      co_await postal::yield_now();  // let the readers run, as a real producer of state changes would
    }
    std::uint64_t observed = 0;
    for (auto& reader : readers) observed += co_await reader;
    double seconds = bench::seconds_since(start);
    bench::check(observed >= watch_receivers && observed <= watch_receivers * watch_updates,
                 "watch_fanout: impossible number of observations");
    co_return bench::outcome{observed, seconds, {}};
  }());
});

}  // namespace
