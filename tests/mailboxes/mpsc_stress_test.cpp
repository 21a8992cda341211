// Stress and protocol tests of postal::mpsc beyond Tokio's test suite: many threads and many coroutines
// sending at once (every value arrives exactly once, in per-producer order), values destroyed exactly once
// when the channel goes away mid-stream, FIFO service of waiting senders, cancelled waits passing their slot
// on, timed sends, recv_many, and first sends racing on fresh channels (whose ring of slots the first claim
// allocates). Deterministic: coroutines run on the manual executor, threads meet through joins and atomics,
// never sleeps. Not a benchmark: sizes shrink under ThreadSanitizer.
#include <postal/mpsc.hpp>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include "support/counted.hpp"
#include "support/manual_executor.hpp"
#include "support/waker_census.hpp"

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define POSTAL_STRESS_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define POSTAL_STRESS_SANITIZED 1
#endif
#endif

namespace {

using namespace std::chrono_literals;
using postal::expected;
using postal::mpsc::channel;
using postal::mpsc::closed_error;
using postal::mpsc::permit;
using postal::mpsc::receiver;
using postal::mpsc::send_error;
using postal::mpsc::send_timeout_error;
using postal::mpsc::send_timeout_failure;
using postal::mpsc::sender;
using postal::mpsc::try_recv_error;
using postal::mpsc::try_reserve_error;
using postal::mpsc::try_send_failure;
using postal::mpsc::unbounded_channel;
using postal::mpsc::unbounded_receiver;
using postal::mpsc::unbounded_sender;
using postal::test::counted;
using postal::test::job;
using postal::test::manual_executor;
using postal::test::spawn;

#ifdef POSTAL_STRESS_SANITIZED
constexpr std::uint64_t per_thread = 20'000;
constexpr int coroutine_producers = 8;
constexpr int per_coroutine = 100;
constexpr std::uint64_t fresh_channels = 400;
#else
constexpr std::uint64_t per_thread = 50'000;
constexpr int coroutine_producers = 20;
constexpr int per_coroutine = 500;
constexpr std::uint64_t fresh_channels = 2000;
#endif
constexpr int producer_threads = 4;

// With capacity 1 nearly every message parks and wakes a thread: fewer messages keep the test short.
constexpr std::uint64_t per_thread_for(std::size_t capacity) {
  return capacity == 1 ? per_thread / 10 : per_thread;
}

// A value that says who sent it and its place in that sender's sequence.
constexpr std::uint64_t encode(std::uint64_t producer, std::uint64_t sequence) {
  return producer << 32 | sequence;
}

// Checks arrivals: each producer's values arrive once each, in order.
class arrival_check {
 public:
  explicit arrival_check(std::size_t producers) : next_(producers, 0) {}
  void see(std::uint64_t value) {
    const std::uint64_t producer = value >> 32;
    if (producer >= next_.size() || (value & 0xffffffffu) != next_[producer]) {
      ++errors_;
      return;
    }
    ++next_[producer];
  }
  std::size_t errors() const { return errors_; }
  bool complete(std::uint64_t per_producer) const {
    for (std::uint64_t n : next_)
      if (n != per_producer) return false;
    return true;
  }

 private:
  std::vector<std::uint64_t> next_;
  std::size_t errors_ = 0;
};

// How a producer thread sends: each way through the channel gets exercised against the others.
enum class send_way { blocking_send, reserve_then_send, try_send_then_block, send_timeout };

void produce_blocking(sender<std::uint64_t> tx, std::uint64_t producer, send_way way, std::uint64_t count,
                      std::atomic<int>& failures) {
  for (std::uint64_t i = 0; i < count; ++i) {
    const std::uint64_t value = encode(producer, i);
    bool ok = false;
    switch (way) {
      case send_way::blocking_send:
        ok = tx.blocking_send(value).has_value();
        break;
      case send_way::reserve_then_send: {
        auto slot = tx.blocking_reserve();
        if (slot) {
          slot->send(value);
          ok = true;
        }
        break;
      }
      case send_way::try_send_then_block: {
        auto tried = tx.try_send(value);
        ok = tried || (tried.error().is_full() && tx.blocking_send(value).has_value());
        break;
      }
      case send_way::send_timeout:
        ok = tx.blocking_send_timeout(value, 1h).has_value();
        break;
    }
    if (!ok) failures.fetch_add(1);
  }
}

job<bool> send_all(sender<std::uint64_t> tx, std::uint64_t producer, int count, bool through_permits) {
  for (int i = 0; i < count; ++i) {
    const std::uint64_t value = encode(producer, static_cast<std::uint64_t>(i));
    if (through_permits && i % 2 == 1) {
      auto slot = co_await tx.reserve();
      if (!slot) co_return false;
      slot->send(value);
    } else {
      auto sent = co_await tx.send(value);
      if (!sent) co_return false;
    }
  }
  co_return true;
}

template <class Receiver>
job<std::size_t> receive_all(Receiver& rx, arrival_check& check, bool in_batches) {
  std::size_t received = 0;
  std::vector<std::uint64_t> batch;
  for (;;) {
    if (in_batches) {
      batch.clear();
      const std::size_t n = co_await rx.recv_many(batch, 7);
      if (n == 0) co_return received;
      for (std::uint64_t v : batch) check.see(v);
      received += n;
    } else {
      auto value = co_await rx.recv();
      if (!value) co_return received;
      check.see(*value);
      ++received;
    }
  }
}

template <class T>
job<expected<void, send_error<T>>> send_one(sender<T>& tx, T value) {
  co_return co_await tx.send(std::move(value));
}
template <class T>
job<expected<void, send_timeout_error<T>>> send_one_timeout(sender<T>& tx, T value,
                                                            std::chrono::steady_clock::duration timeout) {
  co_return co_await tx.send_timeout(std::move(value), timeout);
}
template <class T>
job<bool> reserve_and_hold(sender<T>& tx, std::optional<permit<T>>& out) {
  auto slot = co_await tx.reserve();
  if (!slot) co_return false;
  out.emplace(std::move(*slot));
  co_return true;
}
template <class T>
job<std::optional<T>> receive_one(receiver<T>& rx) {
  co_return co_await rx.recv();
}
template <class Receiver, class T>
job<std::size_t> receive_many(Receiver& rx, std::vector<T>& out, std::size_t limit) {
  co_return co_await rx.recv_many(out, limit);
}

// A coroutine without suspend_hooks (so without timers): send_timeout must refuse it.
struct bare_task {
  struct promise_type {
    std::exception_ptr error;
    bare_task get_return_object() {
      return bare_task(std::coroutine_handle<promise_type>::from_promise(*this));
    }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_always final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() { error = std::current_exception(); }
  };
  explicit bare_task(std::coroutine_handle<promise_type> h) : handle(h) {}
  bare_task(bare_task&& other) noexcept : handle(std::exchange(other.handle, {})) {}
  ~bare_task() {
    if (handle) handle.destroy();
  }
  std::coroutine_handle<promise_type> handle;
};
bare_task send_timeout_without_timers(sender<int>& tx) {
  (void)co_await tx.send_timeout(1, 1s);
}

using postal::test::probe;
using postal::test::waker_census;

probe probe_send(sender<int>& tx, int value) {
  (void)co_await tx.send(value);
}
probe probe_reserve(sender<int>& tx) {
  auto slot = co_await tx.reserve();
  (void)slot;
}

}  // namespace

// --- Many threads ---

TEST_CASE("producer threads each send in order; every value arrives once, capacities 1 and 1024",
          "[mpsc][stress][threads]") {
  const std::size_t capacity = GENERATE(1, 1024);
  const bool in_batches = GENERATE(false, true);
  INFO("capacity " << capacity << (in_batches ? ", recv_many" : ", recv"));
  const std::uint64_t per_producer = per_thread_for(capacity);
  auto [tx, rx] = channel<std::uint64_t>(capacity);
  std::atomic<int> failures{0};
  std::vector<std::thread> producers;
  for (int p = 0; p < producer_threads; ++p)
    producers.emplace_back(produce_blocking, tx, static_cast<std::uint64_t>(p), static_cast<send_way>(p % 4),
                           per_producer, std::ref(failures));
  { auto last = std::move(tx); }
  arrival_check check(producer_threads);
  std::size_t received = 0;
  std::vector<std::uint64_t> batch;
  for (;;) {
    if (in_batches) {
      batch.clear();
      const std::size_t n = rx.blocking_recv_many(batch, 64);
      if (n == 0) break;
      for (std::uint64_t v : batch) check.see(v);
      received += n;
    } else {
      auto value = rx.blocking_recv();
      if (!value) break;
      check.see(*value);
      ++received;
    }
  }
  for (auto& t : producers) t.join();
  CHECK(failures.load() == 0);
  CHECK(check.errors() == 0);
  CHECK(received == producer_threads * per_producer);
  CHECK(check.complete(per_producer));
  auto after = rx.try_recv();
  REQUIRE_FALSE(after);
  CHECK(after.error() == try_recv_error::disconnected);
}

TEST_CASE("unbounded: producer threads each send in order; every value arrives once",
          "[mpsc][stress][threads][unbounded]") {
  const bool in_batches = GENERATE(false, true);
  auto [tx, rx] = unbounded_channel<std::uint64_t>();
  std::atomic<int> failures{0};
  std::vector<std::thread> producers;
  for (int p = 0; p < producer_threads; ++p)
    producers.emplace_back([p, &failures, tx = tx]() mutable {
      for (std::uint64_t i = 0; i < per_thread; ++i)
        if (!tx.send(encode(static_cast<std::uint64_t>(p), i))) failures.fetch_add(1);
    });
  { auto last = std::move(tx); }
  arrival_check check(producer_threads);
  std::size_t received = 0;
  std::vector<std::uint64_t> batch;
  for (;;) {
    if (in_batches) {
      batch.clear();
      const std::size_t n = rx.blocking_recv_many(batch, 100);
      if (n == 0) break;
      for (std::uint64_t v : batch) check.see(v);
      received += n;
    } else {
      auto value = rx.blocking_recv();
      if (!value) break;
      check.see(*value);
      ++received;
    }
  }
  for (auto& t : producers) t.join();
  CHECK(failures.load() == 0);
  CHECK(check.errors() == 0);
  CHECK(received == producer_threads * per_thread);
  CHECK(check.complete(per_thread));
}

// --- Many coroutines ---

TEST_CASE("producer coroutines on one executor; every value arrives once, in order, permits mixed in",
          "[mpsc][stress][coroutines]") {
  const std::size_t capacity = GENERATE(1, 8, 1024);
  const bool in_batches = GENERATE(false, true);
  INFO("capacity " << capacity << (in_batches ? ", recv_many" : ", recv"));
  manual_executor executor;
  auto [tx, rx] = channel<std::uint64_t>(capacity);
  arrival_check check(coroutine_producers);
  auto consumer = spawn(executor, receive_all(rx, check, in_batches));
  std::vector<job<bool>> producers;
  for (int p = 0; p < coroutine_producers; ++p)
    producers.push_back(
        spawn(executor, send_all(tx, static_cast<std::uint64_t>(p), per_coroutine, p % 3 == 0)));
  { auto last = std::move(tx); }
  while (executor.run() != 0) {
  }
  for (auto& p : producers) {
    REQUIRE(p.done());
    CHECK(p.result());
  }
  producers.clear();  // their frames hold the last senders
  executor.run();
  REQUIRE(consumer.done());
  CHECK(consumer.result() == static_cast<std::size_t>(coroutine_producers * per_coroutine));
  CHECK(check.errors() == 0);
  CHECK(check.complete(per_coroutine));
}

TEST_CASE("producer threads wake a consumer coroutine; producer coroutines are woken by a consumer thread",
          "[mpsc][stress][coroutines][threads]") {
  const std::size_t capacity = GENERATE(1, 64);
  INFO("capacity " << capacity);
  SECTION("threads -> coroutine") {
    const std::uint64_t per_producer = per_thread_for(capacity);
    manual_executor executor;
    auto [tx, rx] = channel<std::uint64_t>(capacity);
    arrival_check check(producer_threads);
    auto consumer = spawn(executor, receive_all(rx, check, false));
    std::atomic<int> failures{0};
    std::vector<std::thread> producers;
    for (int p = 0; p < producer_threads; ++p)
      producers.emplace_back(produce_blocking, tx, static_cast<std::uint64_t>(p),
                             static_cast<send_way>(p % 4), per_producer, std::ref(failures));
    { auto last = std::move(tx); }
    while (!consumer.done()) {
      if (executor.run() == 0) std::this_thread::yield();
    }
    for (auto& t : producers) t.join();
    CHECK(failures.load() == 0);
    CHECK(check.errors() == 0);
    CHECK(check.complete(per_producer));
    CHECK(consumer.result() == producer_threads * per_producer);
  }
  SECTION("coroutines -> thread") {
    manual_executor executor;
    auto [tx, rx] = channel<std::uint64_t>(capacity);
    std::vector<job<bool>> producers;
    for (int p = 0; p < coroutine_producers; ++p)
      producers.push_back(
          spawn(executor, send_all(tx, static_cast<std::uint64_t>(p), per_coroutine, p % 2 == 0)));
    { auto last = std::move(tx); }
    arrival_check check(coroutine_producers);
    std::size_t received = 0;
    std::thread consumer([&] {
      while (auto value = rx.blocking_recv()) {
        check.see(*value);
        ++received;
      }
    });
    auto all_done = [&] {
      for (auto& p : producers)
        if (!p.done()) return false;
      return true;
    };
    while (!all_done()) {
      if (executor.run() == 0) std::this_thread::yield();
    }
    for (auto& p : producers) CHECK(p.result());
    producers.clear();  // their frames hold the last senders
    consumer.join();
    CHECK(check.errors() == 0);
    CHECK(received == static_cast<std::size_t>(coroutine_producers * per_coroutine));
  }
}

// --- Fresh channels: the ring of slots comes with the first claim ---

// Waits until all `participants` threads have arrived for round `round` (counting from 0).
void meet(std::atomic<std::uint64_t>& arrived, std::uint64_t participants, std::uint64_t round) {
  arrived.fetch_add(1);
  while (arrived.load() < participants * (round + 1)) std::this_thread::yield();
}

// One racer: meets the others at each fresh channel, sends its value there (the ways to make a first claim
// take turns), then drops its sender.
void race_first_claims(std::vector<sender<std::uint64_t>>& mine, std::uint64_t producer,
                       std::atomic<std::uint64_t>& arrived, std::atomic<int>& failures) {
  for (std::uint64_t c = 0; c < mine.size(); ++c) {
    meet(arrived, producer_threads + 1, c);
    sender<std::uint64_t> tx = std::move(mine[c]);
    const std::uint64_t value = encode(producer, c);
    bool ok = false;
    switch ((producer + c) % 4) {
      case 0:
        ok = tx.blocking_send(value).has_value();
        break;
      case 1: {
        auto tried = tx.try_send(value);
        ok = tried || (tried.error().is_full() && tx.blocking_send(value).has_value());
        break;
      }
      case 2: {
        auto slot = tx.blocking_reserve();
        if (slot) {
          slot->send(value);
          ok = true;
        }
        break;
      }
      default: {
        std::optional<permit<std::uint64_t>> slot;
        if (auto tried = tx.try_reserve()) {
          slot.emplace(std::move(*tried));
        } else if (tried.error() == try_reserve_error::full) {
          if (auto blocked = tx.blocking_reserve()) slot.emplace(std::move(*blocked));
        }
        if (slot) {
          slot->send(value);
          ok = true;
        }
        break;
      }
    }
    if (!ok) failures.fetch_add(1);
  }
}

TEST_CASE("threads race to make the first claim on fresh channels; every value arrives once",
          "[mpsc][stress][threads][fresh]") {
  // Capacity 1: all racers but one queue up on a ring that was only just installed.
  const std::size_t capacity = GENERATE(1, 4, 1024);
  INFO("capacity " << capacity);
  std::vector<std::vector<sender<std::uint64_t>>> senders(producer_threads);
  std::vector<receiver<std::uint64_t>> receivers;
  for (std::uint64_t c = 0; c < fresh_channels; ++c) {
    auto [tx, rx] = channel<std::uint64_t>(capacity);
    for (int p = 0; p < producer_threads; ++p) senders[p].push_back(tx);
    receivers.push_back(std::move(rx));
  }
  std::atomic<std::uint64_t> arrived{0};
  std::atomic<int> failures{0};
  std::vector<std::thread> producers;
  for (int p = 0; p < producer_threads; ++p)
    producers.emplace_back(race_first_claims, std::ref(senders[p]), static_cast<std::uint64_t>(p),
                           std::ref(arrived), std::ref(failures));
  // This thread receives, racing the first claims too (a receive on a channel without a ring).
  std::size_t received = 0;
  std::size_t errors = 0;
  for (std::uint64_t c = 0; c < fresh_channels; ++c) {
    meet(arrived, producer_threads + 1, c);
    receiver<std::uint64_t> rx = std::move(receivers[c]);
    std::vector<bool> seen(producer_threads, false);
    while (auto value = rx.blocking_recv()) {  // ends once every racer dropped its sender
      const std::uint64_t producer = *value >> 32;
      if (producer >= producer_threads || (*value & 0xffffffffu) != c || seen[producer]) {
        ++errors;
        continue;
      }
      seen[producer] = true;
      ++received;
    }
  }  // each channel goes away with its last handle here or in a racer, its ring with it
  for (auto& t : producers) t.join();
  CHECK(failures.load() == 0);
  CHECK(errors == 0);
  CHECK(received == producer_threads * fresh_channels);
}

TEST_CASE("channels that never carried a value go away cleanly", "[mpsc][counted][fresh]") {
  const long before = counted::live.load();
  manual_executor executor;
  {  // never used
    auto [tx, rx] = channel<counted>(1024);
    auto weak = tx.downgrade();
  }
  {  // the receiver went first: sends fail before claiming and hand their values back
    auto [tx, rx] = channel<counted>(1024);
    { auto gone = std::move(rx); }
    auto tried = tx.try_send(counted(1));
    REQUIRE_FALSE(tried);
    CHECK(tried.error().is_closed());
    CHECK(tried.error().value.value == 1);
    auto blocked = tx.blocking_send(counted(2));
    REQUIRE_FALSE(blocked);
    CHECK(blocked.error().value.value == 2);
    auto sending = spawn(executor, send_one(tx, counted(3)));
    REQUIRE(sending.done());
    REQUIRE_FALSE(sending.result());
    CHECK(sending.result().error().value.value == 3);
    CHECK(tx.try_reserve().error() == try_reserve_error::closed);
  }
  {  // polled empty, closed, polled again
    auto [tx, rx] = channel<counted>(4);
    CHECK(rx.try_recv().error() == try_recv_error::empty);
    CHECK(rx.is_empty());
    CHECK(rx.len() == 0);
    CHECK(tx.capacity() == 4);
    rx.close();
    CHECK(rx.try_recv().error() == try_recv_error::disconnected);
    CHECK(tx.try_send(counted(4)).error().is_closed());
  }
  {  // a receive waits on the fresh channel until the last sender goes away
    auto [tx, rx] = channel<counted>(2);
    auto receiving = spawn(executor, receive_one(rx));
    REQUIRE_FALSE(receiving.done());
    { auto last = std::move(tx); }
    executor.run();
    REQUIRE(receiving.done());
    CHECK_FALSE(receiving.result());
  }
  {  // the only claim was a permit dropped unused: a ring, but never a value in it
    auto [tx, rx] = channel<counted>(2);
    {
      auto slot = tx.try_reserve();
      REQUIRE(slot);
      CHECK(tx.capacity() == 1);
    }
    CHECK(tx.capacity() == 2);
    CHECK(rx.try_recv().error() == try_recv_error::empty);
  }
  CHECK(counted::live.load() == before);
}

// --- Values destroyed exactly once ---

TEST_CASE("counted values are destroyed exactly once when the receiver goes away mid-stream",
          "[mpsc][stress][threads][counted]") {
  const long before = counted::live.load();
  const std::size_t capacity = GENERATE(1, 16);
  {
    auto [tx, rx] = channel<counted>(capacity);
    std::atomic<int> handed_back{0};
    std::vector<std::thread> producers;
    for (int p = 0; p < producer_threads; ++p)
      producers.emplace_back([p, &handed_back, tx = tx]() mutable {
        for (int i = 0;; ++i) {
          if (p == 0) {  // permits, some of them dropped unused
            auto slot = tx.blocking_reserve();
            if (!slot) return;
            if (i % 3 != 2) slot->send(counted(i));
          } else {
            auto sent = tx.blocking_send(counted(i));
            if (!sent) {
              if (sent.error().value.value == i) handed_back.fetch_add(1);
              return;
            }
          }
        }
      });
    { auto last = std::move(tx); }
    for (int i = 0; i < 500; ++i) REQUIRE(rx.blocking_recv());
    { auto gone = std::move(rx); }  // senders are blocked or racing into the ring right now
    for (auto& t : producers) t.join();
    CHECK(handed_back.load() == producer_threads - 1);
  }
  CHECK(counted::live.load() == before);
}

TEST_CASE("unbounded: counted values are destroyed exactly once when the receiver goes away mid-stream",
          "[mpsc][stress][threads][counted][unbounded]") {
  const long before = counted::live.load();
  {
    auto [tx, rx] = unbounded_channel<counted>();
    std::vector<std::thread> producers;
    std::atomic<int> handed_back{0};
    for (int p = 0; p < producer_threads; ++p)
      producers.emplace_back([&handed_back, tx = tx]() mutable {
        for (int i = 0;; ++i) {
          auto sent = tx.send(counted(i));
          if (!sent) {
            if (sent.error().value.value == i) handed_back.fetch_add(1);
            return;
          }
          if (i % 64 == 0) std::this_thread::yield();
        }
      });
    { auto last = std::move(tx); }
    for (int i = 0; i < 500; ++i) REQUIRE(rx.blocking_recv());
    { auto gone = std::move(rx); }
    for (auto& t : producers) t.join();
    CHECK(handed_back.load() == producer_threads);
  }
  CHECK(counted::live.load() == before);
}

TEST_CASE("values in the buffer, in granted slots and in permits die with the channel, once each",
          "[mpsc][counted]") {
  const long before = counted::live.load();
  manual_executor executor;
  {
    auto [tx, rx] = channel<counted>(3);
    REQUIRE(tx.try_send(counted(1)));
    std::optional<permit<counted>> held;
    auto reserving = spawn(executor, reserve_and_hold(tx, held));
    REQUIRE(reserving.done());
    REQUIRE(tx.try_send(counted(2)));
    auto waiting = spawn(executor, send_one(tx, counted(3)));  // full: waits
    REQUIRE_FALSE(waiting.done());
    const long with_buffer = counted::live.load();
    { auto gone = std::move(rx); }
    CHECK(counted::live.load() == with_buffer - 2);  // the buffer is gone; the waiting send keeps its value
    executor.run();
    REQUIRE(waiting.done());
    REQUIRE_FALSE(waiting.result());
    CHECK(waiting.result().error().value.value == 3);
    held->send(counted(4));  // receiver gone: destroyed
    held.reset();
  }
  CHECK(counted::live.load() == before);
}

// --- FIFO service of waiting senders ---

TEST_CASE("waiting senders get freed slots in arrival order; try_send and try_reserve do not barge",
          "[mpsc][fifo]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>(1);
  REQUIRE(tx.try_send(0));
  std::vector<job<expected<void, send_error<int>>>> waiting;
  for (int i = 1; i <= 3; ++i) {
    waiting.push_back(spawn(executor, send_one(tx, i)));
    REQUIRE_FALSE(waiting.back().done());
  }
  CHECK(tx.capacity() == 0);
  for (int expected_value = 0; expected_value <= 3; ++expected_value) {
    // While senders wait, nobody jumps the queue.
    if (expected_value < 3) {
      auto tried = tx.try_send(100);
      REQUIRE_FALSE(tried);
      CHECK(tried.error().kind == try_send_failure::full);
      CHECK(tried.error().value == 100);
      auto reserved = tx.try_reserve();
      REQUIRE_FALSE(reserved);
      CHECK(reserved.error() == try_reserve_error::full);
    }
    const std::size_t wakes_before = executor.wakes();
    auto value = rx.try_recv();
    REQUIRE(value);
    CHECK(*value == expected_value);
    if (expected_value < 3) {
      CHECK(executor.wakes() == wakes_before + 1);  // exactly the oldest waiter was granted the slot
      CHECK(tx.capacity() == 0);                    // the slot is reserved for it
      executor.run();
      CHECK(waiting[static_cast<std::size_t>(expected_value)].done());
      for (std::size_t later = static_cast<std::size_t>(expected_value) + 1; later < waiting.size(); ++later)
        CHECK_FALSE(waiting[later].done());
    }
  }
  for (auto& w : waiting) CHECK(w.result());
  CHECK(tx.capacity() == 1);
  CHECK(tx.try_send(5));
}

TEST_CASE("a dropped permit goes to the oldest waiting sender, reserve waits in the same queue",
          "[mpsc][fifo]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>(1);
  auto slot = tx.try_reserve();
  REQUIRE(slot);
  auto first = spawn(executor, send_one(tx, 1));
  std::optional<permit<int>> second_permit;
  auto second = spawn(executor, reserve_and_hold(tx, second_permit));
  REQUIRE_FALSE(first.done());
  REQUIRE_FALSE(second.done());
  { auto unused = std::move(*slot); }
  CHECK(executor.wakes() == 1);
  executor.run();
  REQUIRE(first.done());
  CHECK_FALSE(second.done());
  CHECK(*rx.try_recv() == 1);
  executor.run();
  REQUIRE(second.done());
  REQUIRE(second_permit);
  second_permit->send(2);
  CHECK(*rx.try_recv() == 2);
}

// --- Cancellation ---

TEST_CASE("a cancelled send that had been granted a slot passes it on to the next waiter", "[mpsc][cancel]") {
  manual_executor executor;
  waker_census census;
  auto [tx, rx] = channel<int>(1);
  REQUIRE(tx.try_send(0));
  std::optional<probe> first(probe_send(tx, 1));
  first->start(census);
  REQUIRE_FALSE(first->done());
  auto second = spawn(executor, send_one(tx, 2));
  auto third = spawn(executor, send_one(tx, 3));
  CHECK(*rx.try_recv() == 0);  // grants the slot to `first`, which has not run yet
  CHECK(census.woken == 1);
  CHECK(executor.wakes() == 0);
  first.reset();  // cancelled after the grant: the slot must go to `second`
  CHECK(census.live == 0);
  CHECK(executor.wakes() == 1);
  executor.run();
  REQUIRE(second.done());
  CHECK(second.result());
  CHECK_FALSE(third.done());
  CHECK(*rx.try_recv() == 2);
  executor.run();
  REQUIRE(third.done());
  CHECK(*rx.try_recv() == 3);
  CHECK(tx.capacity() == 1);
}

TEST_CASE("a cancelled send still in the queue leaves the others in order", "[mpsc][cancel]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>(1);
  REQUIRE(tx.try_send(0));
  auto first = spawn(executor, send_one(tx, 1));
  std::optional<job<expected<void, send_error<int>>>> second(spawn(executor, send_one(tx, 2)));
  second.reset();
  CHECK(*rx.try_recv() == 0);
  executor.run();
  CHECK(first.done());
  CHECK(*rx.try_recv() == 1);
  CHECK(executor.wakes() == 1);
  // With the queue empty again, try_send goes straight in.
  CHECK(tx.try_send(4));
  CHECK(*rx.try_recv() == 4);
}

TEST_CASE("a cancelled reserve that had been granted a slot gives it back", "[mpsc][cancel]") {
  waker_census census;
  auto [tx, rx] = channel<int>(1);
  REQUIRE(tx.try_send(0));
  std::optional<probe> reserving(probe_reserve(tx));
  reserving->start(census);
  CHECK(*rx.try_recv() == 0);
  CHECK(census.woken == 1);
  CHECK(tx.capacity() == 0);
  reserving.reset();
  CHECK(tx.capacity() == 1);
  CHECK(tx.try_send(1));
}

TEST_CASE("a cancelled receive leaves later values for the next one", "[mpsc][cancel]") {
  manual_executor executor;
  SECTION("bounded") {
    auto [tx, rx] = channel<int>(4);
    { auto waiting = spawn(executor, receive_one(rx)); }
    REQUIRE(tx.try_send(1));
    CHECK(executor.wakes() == 0);
    auto next = spawn(executor, receive_one(rx));
    REQUIRE(next.done());
    CHECK(next.result() == 1);
  }
  SECTION("unbounded") {
    auto [tx, rx] = unbounded_channel<int>();
    std::vector<int> out;
    { auto waiting = spawn(executor, receive_many(rx, out, 4)); }
    REQUIRE(tx.send(1));
    CHECK(executor.wakes() == 0);
    CHECK(*rx.try_recv() == 1);
  }
}

// --- Timed sends ---

TEST_CASE("send_timeout with the executor's fake clock", "[mpsc][timeout]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>(1);
  SECTION("times out and hands the value back; the queue is clean afterwards") {
    REQUIRE(tx.try_send(0));
    auto timed = spawn(executor, send_one_timeout(tx, 7, 10s));
    REQUIRE_FALSE(timed.done());
    executor.advance(1s);
    executor.run();
    CHECK_FALSE(timed.done());
    executor.advance(10s);
    executor.run();
    REQUIRE(timed.done());
    REQUIRE_FALSE(timed.result());
    CHECK(timed.result().error().is_timeout());
    CHECK(timed.result().error().value == 7);
    CHECK(*rx.try_recv() == 0);
    CHECK(tx.try_send(1));  // not full, nobody waits: goes in
  }
  SECTION("a slot freed before the deadline sends; the late timer is ignored") {
    REQUIRE(tx.try_send(0));
    auto timed = spawn(executor, send_one_timeout(tx, 7, 10s));
    CHECK(*rx.try_recv() == 0);
    executor.run();
    REQUIRE(timed.done());
    CHECK(timed.result());
    executor.advance(20s);
    CHECK(executor.run() == 0);
    CHECK(*rx.try_recv() == 7);
  }
  SECTION("room now: sends without waiting") {
    auto timed = spawn(executor, send_one_timeout(tx, 7, 10s));
    REQUIRE(timed.done());
    CHECK(timed.result());
    CHECK(*rx.try_recv() == 7);
  }
  SECTION("the receiver closes while it waits") {
    REQUIRE(tx.try_send(0));
    auto timed = spawn(executor, send_one_timeout(tx, 7, 10s));
    rx.close();
    executor.run();
    REQUIRE(timed.done());
    REQUIRE_FALSE(timed.result());
    CHECK(timed.result().error().is_closed());
    CHECK(timed.result().error().value == 7);
    executor.advance(20s);
    executor.run();
  }
  SECTION("cancelled while waiting: withdrawn, the timer finds nothing to wake") {
    REQUIRE(tx.try_send(0));
    { auto timed = spawn(executor, send_one_timeout(tx, 7, 10s)); }
    CHECK(*rx.try_recv() == 0);
    CHECK(executor.wakes() == 0);
    executor.advance(20s);
    CHECK(executor.run() == 0);
    CHECK(tx.try_send(1));
  }
}

TEST_CASE("send_timeout refuses a coroutine whose executor has no timers", "[mpsc][timeout]") {
  auto [tx, rx] = channel<int>(1);
  bare_task task = send_timeout_without_timers(tx);
  REQUIRE(task.handle.done());
  CHECK(task.handle.promise().error != nullptr);
  CHECK_THROWS_AS(std::rethrow_exception(task.handle.promise().error), std::logic_error);
}

TEST_CASE("blocking_send_timeout times out on a full channel and succeeds when a slot frees",
          "[mpsc][timeout][threads]") {
  auto [tx, rx] = channel<int>(1);
  REQUIRE(tx.try_send(0));
  auto timed_out = tx.blocking_send_timeout(1, 20ms);
  REQUIRE_FALSE(timed_out);
  CHECK(timed_out.error().kind == send_timeout_failure::timeout);
  CHECK(timed_out.error().value == 1);

  std::optional<int> first;
  std::optional<int> second;
  std::thread receiving([&first, &second, rx = std::move(rx)]() mutable {
    first = rx.blocking_recv();
    second = rx.blocking_recv();
  });
  CHECK(tx.blocking_send_timeout(2, 1h));
  receiving.join();
  CHECK(first == 0);
  CHECK(second == 2);
  auto closed = tx.blocking_send_timeout(3, 1h);
  REQUIRE_FALSE(closed);
  CHECK(closed.error().kind == send_timeout_failure::closed);
}

// --- recv_many ---

TEST_CASE("recv_many takes up to the limit, waits for at least one, and returns 0 only at the end",
          "[mpsc][recv_many]") {
  manual_executor executor;
  SECTION("bounded") {
    auto [tx, rx] = channel<int>(8);
    std::vector<int> out;
    for (int i = 0; i < 5; ++i) REQUIRE(tx.try_send(i));
    auto first = spawn(executor, receive_many(rx, out, 3));
    REQUIRE(first.done());
    CHECK(first.result() == 3);
    auto zero = spawn(executor, receive_many(rx, out, 0));
    REQUIRE(zero.done());
    CHECK(zero.result() == 0);
    auto rest = spawn(executor, receive_many(rx, out, 10));
    REQUIRE(rest.done());
    CHECK(rest.result() == 2);
    CHECK(out == std::vector<int>{0, 1, 2, 3, 4});
    auto waiting = spawn(executor, receive_many(rx, out, 10));
    REQUIRE_FALSE(waiting.done());
    REQUIRE(tx.try_send(5));
    executor.run();
    REQUIRE(waiting.done());
    CHECK(waiting.result() == 1);
    auto ending = spawn(executor, receive_many(rx, out, 10));
    REQUIRE_FALSE(ending.done());
    { auto gone = std::move(tx); }
    executor.run();
    REQUIRE(ending.done());
    CHECK(ending.result() == 0);
    CHECK(out.size() == 6);
  }
  SECTION("unbounded") {
    auto [tx, rx] = unbounded_channel<int>();
    std::vector<int> out;
    for (int i = 0; i < 5; ++i) REQUIRE(tx.send(i));
    CHECK(rx.len() == 5);
    auto first = spawn(executor, receive_many(rx, out, 3));
    REQUIRE(first.done());
    CHECK(first.result() == 3);
    CHECK(rx.len() == 2);
    auto rest = spawn(executor, receive_many(rx, out, 10));
    REQUIRE(rest.done());
    CHECK(rest.result() == 2);
    CHECK(out == std::vector<int>{0, 1, 2, 3, 4});
    auto waiting = spawn(executor, receive_many(rx, out, 10));
    REQUIRE_FALSE(waiting.done());
    REQUIRE(tx.send(5));
    executor.run();
    REQUIRE(waiting.done());
    CHECK(waiting.result() == 1);
    rx.close();
    auto ending = spawn(executor, receive_many(rx, out, 10));
    REQUIRE(ending.done());
    CHECK(ending.result() == 0);
  }
  SECTION("move-only values") {
    auto [tx, rx] = channel<std::unique_ptr<int>>(4);
    REQUIRE(tx.try_send(std::make_unique<int>(1)));
    REQUIRE(tx.try_send(std::make_unique<int>(2)));
    std::vector<std::unique_ptr<int>> out;
    CHECK(rx.blocking_recv_many(out, 5) == 2);
    REQUIRE(out.size() == 2);
    CHECK(*out[0] == 1);
    CHECK(*out[1] == 2);
  }
}

// --- Permits and the end of the stream ---

TEST_CASE("after close, recv drains the buffer and waits for outstanding permits before ending",
          "[mpsc][permit]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>(4);
  REQUIRE(tx.try_send(1));
  auto slot = tx.try_reserve();
  REQUIRE(slot);
  { auto gone = std::move(tx); }
  rx.close();
  auto first = spawn(executor, receive_one(rx));
  REQUIRE(first.done());
  CHECK(first.result() == 1);
  auto second = spawn(executor, receive_one(rx));
  REQUIRE_FALSE(second.done());  // the permit may still send
  slot->send(2);
  executor.run();
  REQUIRE(second.done());
  CHECK(second.result() == 2);
  auto empty = rx.try_recv();
  REQUIRE_FALSE(empty);
  CHECK(empty.error() == try_recv_error::disconnected);

  auto [tx2, rx2] = channel<int>(4);
  auto unused = tx2.try_reserve();
  REQUIRE(unused);
  { auto gone = std::move(tx2); }
  auto ending = spawn(executor, receive_one(rx2));
  REQUIRE_FALSE(ending.done());
  CHECK(rx2.try_recv().error() == try_recv_error::empty);
  { auto dropped = std::move(*unused); }  // the last permit goes unused: the stream ends
  executor.run();
  REQUIRE(ending.done());
  CHECK_FALSE(ending.result());
}

TEST_CASE("closed_error from reserve on a closed channel; permits of a dropped receiver destroy values",
          "[mpsc][permit]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>(1);
  REQUIRE(tx.try_send(0));
  std::optional<permit<int>> out;
  auto reserving = spawn(executor, reserve_and_hold(tx, out));
  REQUIRE_FALSE(reserving.done());
  { auto gone = std::move(rx); }
  executor.run();
  REQUIRE(reserving.done());
  CHECK_FALSE(reserving.result());
  auto tried = tx.try_reserve();
  REQUIRE_FALSE(tried);
  CHECK(tried.error() == try_reserve_error::closed);
  auto blocked = tx.blocking_reserve();
  REQUIRE_FALSE(blocked);
  CHECK(blocked.error() == closed_error{});
}
