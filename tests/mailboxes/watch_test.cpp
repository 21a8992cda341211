// Tests of postal::watch: the counterparts of Tokio's tests/sync_watch.rs, plus wait_for, cancellation,
// blocking forms, fan-out to many waiting tasks, values destroyed exactly once, move-only values and
// sender/receiver races between threads. Not a benchmark: sizes are small enough for ThreadSanitizer.
//
// Tokio 1.x tokio/tests/sync_watch.rs -> postal TEST_CASE:
//   single_rx_recv -> a receiver waits for a send, and fails once the sender is gone
//   rx_version_underflow -> mark_changed twice on the initial version still reports a change
//   rx_mark_changed -> mark_changed makes the current value unseen for that receiver only
//   rx_mark_unchanged -> mark_unchanged makes the current value count as seen
//   multi_rx -> every waiting receiver is woken by a send (the manual executor resumes a woken task at once,
//     so rx2's early wait completes on "two", and its next changed() is ready on "three")
//   rx_observes_final_value -> a receiver observes the final value before the closed channel fails
//   poll_close -> closed() completes when the last receiver goes, and send fails afterwards
//   borrow_and_update -> changed() and borrow_and_update() both mark the value seen
//   reopened_after_subscribe -> subscribe() reopens a channel whose receivers were all gone
//   send_modify_panic -> send_modify whose function throws leaves its change unannounced (panic -> throw)
//   multiple_sender -> sends from two senders reach the receiver in order
//   receiver_is_notified_when_last_sender_is_dropped -> receivers are woken only when the last sender goes
//   receiver_changed_is_cooperative(_ok), receiver_wait_for_is_cooperative(_ok), sender_closed_is_cooperative
//     (Tokio's coop budget makes such loops yield; Rust/Tokio-runtime only: postal's awaitables complete
//     inline and bounding inline work is the runtime's job) -> waits that are already satisfied complete
//     without suspending, however often repeated
//   changed_succeeds_on_closed_channel_with_unseen_value
//     -> changed() on a closed channel succeeds while an unseen value is left
//   changed_errors_on_closed_channel_with_seen_value
//     -> changed() on a closed channel fails when the value was seen
//   has_changed_errors_on_closed_channel_with_{unseen,seen}_value
//     -> has_changed() fails once the sender is gone, seen or not
//   wait_for_errors_on_closed_channel_true_predicate
//     -> wait_for on a closed channel succeeds when the last value satisfies the predicate
#include <postal/watch.hpp>

#include <atomic>
#include <catch2/catch.hpp>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "support/counted.hpp"
#include "support/manual_executor.hpp"
#include "support/waker_census.hpp"

namespace {

using postal::expected;
using postal::unexpected;
using postal::test::job;
using postal::test::manual_executor;
using postal::test::probe;
using postal::test::spawn;
using postal::test::waker_census;
using postal::watch::channel;
using postal::watch::receiver;
using postal::watch::recv_error;
using postal::watch::sender;

template <class T>
job<expected<void, recv_error>> changed(receiver<T>& rx) {
  co_return co_await rx.changed();
}
template <class T>
job<bool> wait_closed(const sender<T>& tx) {
  co_await tx.closed();
  co_return true;
}
// Waits for a value satisfying `predicate` and returns a copy of it (the ref is dropped before returning).
template <class T, class Predicate>
job<expected<T, recv_error>> wait_for(receiver<T>& rx, Predicate predicate) {
  auto found = co_await rx.wait_for(predicate);
  if (!found) co_return unexpected{found.error()};
  co_return T(**found);
}
// A coroutine without an executor: it starts at once, and a wake resumes it inline on the waking thread.
struct eager {
  struct promise_type {
    eager get_return_object() { return eager(std::coroutine_handle<promise_type>::from_promise(*this)); }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_always final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() { std::terminate(); }
  };
  eager() = default;
  explicit eager(std::coroutine_handle<promise_type> h) : handle(h) {}
  eager(eager&& other) noexcept : handle(std::exchange(other.handle, {})) {}
  eager& operator=(eager&& other) noexcept {
    if (this != &other) {
      if (handle) handle.destroy();
      handle = std::exchange(other.handle, {});
    }
    return *this;
  }
  ~eager() {
    if (handle) handle.destroy();
  }
  std::coroutine_handle<promise_type> handle;
};

probe probe_changed(receiver<int>& rx) {
  (void)co_await rx.changed();
}
probe probe_closed(const sender<int>& tx) {
  co_await tx.closed();
}

// Awaits two changes, reading the value after each.
job<std::pair<int, int>> two_changes(receiver<int>& rx) {
  (void)co_await rx.changed();
  const int first = *rx.borrow_and_update();
  (void)co_await rx.changed();
  const int second = *rx.borrow_and_update();
  co_return std::pair{first, second};
}

}  // namespace

// --- Counterparts of tokio/tests/sync_watch.rs ---

TEST_CASE("a receiver waits for a send, and fails once the sender is gone", "[watch]") {
  manual_executor executor;
  auto [tx, rx] = channel<std::string>("one");
  {
    auto waiting = spawn(executor, changed(rx));
    CHECK_FALSE(waiting.done());  // the initial value counts as seen
  }
  CHECK(*rx.borrow() == "one");
  {
    auto waiting = spawn(executor, changed(rx));
    REQUIRE_FALSE(waiting.done());
    REQUIRE(tx.send("two"));
    CHECK(executor.wakes() == 1);
    executor.run();
    REQUIRE(waiting.done());
    CHECK(waiting.result());
  }
  CHECK(*rx.borrow() == "two");
  {
    auto waiting = spawn(executor, changed(rx));
    REQUIRE_FALSE(waiting.done());
    { auto gone = std::move(tx); }
    CHECK(executor.wakes() == 2);
    executor.run();
    REQUIRE(waiting.done());
    CHECK_FALSE(waiting.result());
  }
  CHECK(*rx.borrow() == "two");
}

TEST_CASE("mark_changed twice on the initial version still reports a change", "[watch]") {
  manual_executor executor;
  auto [tx, rx] = channel<std::string>("one");
  rx.mark_changed();
  rx.mark_changed();
  CHECK(*rx.has_changed());
  auto waiting = spawn(executor, changed(rx));
  REQUIRE(waiting.done());
  CHECK(waiting.result());
  CHECK_FALSE(*rx.has_changed());
}

TEST_CASE("mark_changed makes the current value unseen for that receiver only", "[watch]") {
  manual_executor executor;
  auto [tx, rx] = channel<std::string>("one");
  auto rx2 = rx;
  auto rx3 = rx;
  auto rx4 = rx;
  {
    rx.mark_changed();
    CHECK(*rx.has_changed());
    auto waiting = spawn(executor, changed(rx));
    REQUIRE(waiting.done());
    CHECK(waiting.result());
  }
  {
    CHECK_FALSE(*rx2.has_changed());
    auto waiting = spawn(executor, changed(rx2));
    CHECK_FALSE(waiting.done());
  }
  {
    rx3.mark_changed();
    CHECK(*rx3.borrow() == "one");
    CHECK(*rx3.has_changed());
    CHECK(*rx3.borrow_and_update() == "one");
    CHECK_FALSE(*rx3.has_changed());
    auto waiting = spawn(executor, changed(rx3));
    CHECK_FALSE(waiting.done());
  }
  {
    REQUIRE(tx.send("two"));
    CHECK(*rx4.has_changed());
    CHECK(*rx4.borrow_and_update() == "two");
    rx4.mark_changed();
    CHECK(*rx4.has_changed());
    CHECK(*rx4.borrow_and_update() == "two");
  }
  CHECK(*rx.borrow() == "two");
}

TEST_CASE("mark_unchanged makes the current value count as seen", "[watch]") {
  manual_executor executor;
  auto [tx, rx] = channel<std::string>("one");
  auto rx2 = rx;
  {
    CHECK_FALSE(*rx.has_changed());
    rx.mark_changed();
    CHECK(*rx.has_changed());
    rx.mark_unchanged();
    CHECK_FALSE(*rx.has_changed());
    auto waiting = spawn(executor, changed(rx));
    CHECK_FALSE(waiting.done());
  }
  {
    CHECK_FALSE(*rx2.has_changed());
    REQUIRE(tx.send("two"));
    CHECK(*rx2.has_changed());
    rx2.mark_unchanged();
    CHECK_FALSE(*rx2.has_changed());
    CHECK(*rx2.borrow_and_update() == "two");
  }
  CHECK(*rx.borrow() == "two");
}

TEST_CASE("every waiting receiver is woken by a send", "[watch]") {
  manual_executor executor;
  auto [tx, rx1] = channel<std::string>("one");
  auto rx2 = rx1;
  {
    auto t1 = spawn(executor, changed(rx1));
    auto t2 = spawn(executor, changed(rx2));
    CHECK_FALSE(t1.done());
    CHECK_FALSE(t2.done());
  }
  CHECK(*rx1.borrow() == "one");
  CHECK(*rx2.borrow() == "one");

  auto t2 = spawn(executor, changed(rx2));
  {
    auto t1 = spawn(executor, changed(rx1));
    REQUIRE_FALSE(t1.done());
    REQUIRE_FALSE(t2.done());
    REQUIRE(tx.send("two"));
    CHECK(executor.wakes() == 2);
    executor.run();
    CHECK(t1.done());
    CHECK(t1.result());
  }
  CHECK(*rx1.borrow() == "two");
  {
    auto t1 = spawn(executor, changed(rx1));
    REQUIRE_FALSE(t1.done());
    REQUIRE(tx.send("three"));
    CHECK(executor.wakes() == 3);  // t2 finished already; it is not woken again
    executor.run();
    CHECK(t1.result());
    CHECK(t2.result());
  }
  CHECK(*rx1.borrow() == "three");
  CHECK(*rx2.borrow() == "three");
  {
    // rx2 consumed "two" only: "three" is still unseen, so its next change is ready at once
    auto t2_again = spawn(executor, changed(rx2));
    CHECK(t2_again.done());
    auto t1 = spawn(executor, changed(rx1));
    auto t2_third = spawn(executor, changed(rx2));
    REQUIRE_FALSE(t1.done());
    REQUIRE_FALSE(t2_third.done());
    REQUIRE(tx.send("four"));
    executor.run();
    CHECK(t1.result());
    CHECK(t2_third.result());
  }
  CHECK(*rx1.borrow() == "four");
  CHECK(*rx2.borrow() == "four");
}

TEST_CASE("a receiver observes the final value before the closed channel fails", "[watch]") {
  manual_executor executor;
  SECTION("initial value only") {
    auto [tx, rx] = channel<std::string>("one");
    { auto gone = std::move(tx); }
    auto waiting = spawn(executor, changed(rx));
    REQUIRE(waiting.done());
    CHECK_FALSE(waiting.result());
    CHECK(*rx.borrow() == "one");
  }
  SECTION("sent values") {
    auto [tx, rx] = channel<std::string>("one");
    REQUIRE(tx.send("two"));
    {
      auto waiting = spawn(executor, changed(rx));
      REQUIRE(waiting.done());
      CHECK(waiting.result());
    }
    CHECK(*rx.borrow() == "two");
    {
      auto waiting = spawn(executor, changed(rx));
      REQUIRE_FALSE(waiting.done());
      REQUIRE(tx.send("three"));
      { auto gone = std::move(tx); }
      CHECK(executor.wakes() == 1);
      executor.run();
      REQUIRE(waiting.done());
      CHECK(waiting.result());
    }
    CHECK(*rx.borrow() == "three");
    {
      auto waiting = spawn(executor, changed(rx));
      REQUIRE(waiting.done());
      CHECK_FALSE(waiting.result());
    }
    CHECK(*rx.borrow() == "three");
  }
}

TEST_CASE("closed() completes when the last receiver goes, and send fails afterwards", "[watch]") {
  manual_executor executor;
  auto [tx, rx] = channel<std::string>("one");
  {
    auto waiting = spawn(executor, wait_closed(tx));
    REQUIRE_FALSE(waiting.done());
    { auto gone = std::move(rx); }
    CHECK(executor.wakes() == 1);
    executor.run();
    CHECK(waiting.done());
  }
  auto result = tx.send("two");
  REQUIRE_FALSE(result);
  CHECK(result.error().value == "two");
}

TEST_CASE("changed() and borrow_and_update() both mark the value seen", "[watch]") {
  manual_executor executor;
  auto [tx, rx] = channel<std::string>("one");
  CHECK_FALSE(*rx.has_changed());

  REQUIRE(tx.send("two"));
  CHECK(*rx.has_changed());
  CHECK(spawn(executor, changed(rx)).done());
  CHECK_FALSE(spawn(executor, changed(rx)).done());
  CHECK_FALSE(*rx.has_changed());

  REQUIRE(tx.send("three"));
  CHECK(*rx.has_changed());
  CHECK(*rx.borrow_and_update() == "three");
  CHECK_FALSE(spawn(executor, changed(rx)).done());
  CHECK_FALSE(*rx.has_changed());

  { auto gone = std::move(tx); }
  CHECK(*rx.borrow_and_update() == "three");
  auto closed = spawn(executor, changed(rx));
  REQUIRE(closed.done());
  CHECK_FALSE(closed.result());
  CHECK_FALSE(rx.has_changed());
}

TEST_CASE("subscribe() reopens a channel whose receivers were all gone", "[watch]") {
  auto [tx, rx] = channel<std::string>("one");
  CHECK_FALSE(tx.is_closed());
  { auto gone = std::move(rx); }
  CHECK(tx.is_closed());
  {
    auto again = tx.subscribe();
    CHECK_FALSE(tx.is_closed());
  }
  CHECK(tx.is_closed());
}

TEST_CASE("send_modify whose function throws leaves its change unannounced", "[watch]") {
  manual_executor executor;
  auto [tx, rx] = channel<std::string>("one");
  tx.send_modify([](std::string& value) { value = "two"; });
  CHECK(*rx.borrow_and_update() == "two");

  auto rx2 = rx;
  CHECK(*rx2.borrow_and_update() == "two");
  auto waiting = spawn(executor, changed(rx2));
  REQUIRE_FALSE(waiting.done());

  CHECK_THROWS_AS(tx.send_modify([](std::string& value) {
    value = "panicked";
    throw std::runtime_error("modify failed");
  }),
                  std::runtime_error);
  CHECK(executor.wakes() == 0);
  CHECK_FALSE(waiting.done());
  CHECK(*rx.borrow() == "panicked");  // the lock was released

  tx.send_modify([](std::string& value) { value = "three"; });
  executor.run();
  REQUIRE(waiting.done());
  CHECK(waiting.result());
  CHECK(*rx.borrow_and_update() == "three");
}

TEST_CASE("sends from two senders reach the receiver in order", "[watch]") {
  manual_executor executor;
  auto [tx1, rx] = channel<int>(0);
  auto tx2 = tx1;
  CHECK(tx1.sender_count() == 2);
  CHECK(tx1.same_channel(tx2));
  auto reading = spawn(executor, two_changes(rx));
  REQUIRE(tx1.send(1));
  executor.run();
  REQUIRE_FALSE(reading.done());
  REQUIRE(tx2.send(2));
  executor.run();
  REQUIRE(reading.done());
  CHECK(reading.result() == std::pair{1, 2});
}

TEST_CASE("receivers are woken only when the last sender goes", "[watch]") {
  manual_executor executor;
  auto [tx1, rx] = channel<int>(0);
  auto tx2 = tx1;
  auto waiting = spawn(executor, changed(rx));
  REQUIRE_FALSE(waiting.done());
  { auto gone = std::move(tx1); }
  CHECK(executor.wakes() == 0);
  REQUIRE(rx.has_changed().has_value());  // still open
  CHECK_FALSE(*rx.has_changed());
  { auto gone = std::move(tx2); }
  CHECK(executor.wakes() == 1);
  executor.run();
  REQUIRE(waiting.done());
  CHECK_FALSE(waiting.result());
}

TEST_CASE("changed() on a closed channel succeeds while an unseen value is left", "[watch]") {
  manual_executor executor;
  auto [tx, rx] = channel<std::string>("A");
  REQUIRE(tx.send("B"));
  { auto gone = std::move(tx); }
  auto first = spawn(executor, changed(rx));
  REQUIRE(first.done());
  CHECK(first.result());
  auto second = spawn(executor, changed(rx));
  REQUIRE(second.done());
  CHECK_FALSE(second.result());
}

TEST_CASE("changed() on a closed channel fails when the value was seen", "[watch]") {
  manual_executor executor;
  auto [tx, rx] = channel<std::string>("A");
  { auto gone = std::move(tx); }
  auto waiting = spawn(executor, changed(rx));
  REQUIRE(waiting.done());
  CHECK_FALSE(waiting.result());
}

TEST_CASE("has_changed() fails once the sender is gone, seen or not", "[watch]") {
  SECTION("unseen value") {
    auto [tx, rx] = channel<std::string>("A");
    REQUIRE(tx.send("B"));
    { auto gone = std::move(tx); }
    CHECK_FALSE(rx.has_changed());
  }
  SECTION("seen value") {
    auto [tx, rx] = channel<std::string>("A");
    { auto gone = std::move(tx); }
    CHECK_FALSE(rx.has_changed());
  }
}

TEST_CASE("wait_for on a closed channel succeeds when the last value satisfies the predicate", "[watch]") {
  manual_executor executor;
  auto [tx, rx] = channel<std::string>("A");
  REQUIRE(tx.send("B"));
  { auto gone = std::move(tx); }
  auto waiting = spawn(executor, wait_for(rx, [](const std::string&) { return true; }));
  REQUIRE(waiting.done());
  REQUIRE(waiting.result());
  CHECK(*waiting.result() == "B");
}

TEST_CASE("wait_for completes when a sent value satisfies the predicate", "[watch]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>(0);
  int checks = 0;
  auto waiting = spawn(executor, wait_for(rx, [&checks](int value) {
                         ++checks;
                         return value == 3;
                       }));
  for (int i = 1; i <= 3; ++i) {
    REQUIRE_FALSE(waiting.done());
    REQUIRE(tx.send(i));
    executor.run();
  }
  REQUIRE(waiting.done());
  CHECK(*waiting.result() == 3);
  CHECK(checks == 4);  // the current value, then once per change
  CHECK_FALSE(*rx.has_changed());
}

TEST_CASE("a change sent from another thread wakes a waiting task", "[watch][threads]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>(0);
  auto waiting = spawn(executor, changed(rx));
  REQUIRE_FALSE(waiting.done());
  std::thread other([moved = std::move(tx)]() mutable { (void)moved.send(7); });
  other.join();
  executor.run();
  REQUIRE(waiting.done());
  CHECK(waiting.result());
  CHECK(*rx.borrow_and_update() == 7);
}

TEST_CASE("a sender destroyed on another thread closes the channel for a waiting task", "[watch][threads]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>(0);
  auto waiting = spawn(executor, changed(rx));
  std::thread other([moved = std::move(tx)]() mutable { auto gone = std::move(moved); });
  other.join();
  executor.run();
  REQUIRE(waiting.done());
  CHECK_FALSE(waiting.result());
}

TEST_CASE("closed() completes when the receiver is destroyed on another thread", "[watch][threads]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>(0);
  auto waiting = spawn(executor, wait_closed(tx));
  std::thread other([moved = std::move(rx)]() mutable { auto gone = std::move(moved); });
  other.join();
  executor.run();
  CHECK(waiting.done());
}

TEST_CASE("waits that are already satisfied complete without suspending, however often repeated", "[watch]") {
  manual_executor executor;
  SECTION("changed() and wait_for() on a closed channel fail at once") {
    auto [tx, rx] = channel<int>(0);
    { auto gone = std::move(tx); }
    for (int i = 0; i < 1000; ++i) {
      auto change = spawn(executor, changed(rx));
      REQUIRE(change.done());
      REQUIRE_FALSE(change.result());
      auto found = spawn(executor, wait_for(rx, [](int value) { return value == 1; }));
      REQUIRE(found.done());
      REQUIRE_FALSE(found.result());
    }
  }
  SECTION("changed() and wait_for() after a send succeed at once") {
    auto [tx, rx] = channel<int>(0);
    for (int i = 0; i < 1000; ++i) {
      REQUIRE(tx.send(1));
      auto change = spawn(executor, changed(rx));
      REQUIRE(change.done());
      REQUIRE(change.result());
      REQUIRE(tx.send(1));
      auto found = spawn(executor, wait_for(rx, [](int value) { return value == 1; }));
      REQUIRE(found.done());
      REQUIRE(*found.result() == 1);
    }
  }
  SECTION("closed() without receivers") {
    auto [tx, rx] = channel<int>(0);
    { auto gone = std::move(rx); }
    for (int i = 0; i < 1000; ++i) REQUIRE(spawn(executor, wait_closed(tx)).done());
  }
  CHECK(executor.wakes() == 0);
}

// --- Beyond Tokio's tests ---

TEST_CASE("wait_for checks the current value first and marks it seen", "[watch]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>(5);
  REQUIRE(tx.send(6));
  auto waiting = spawn(executor, wait_for(rx, [](int value) { return value > 5; }));
  REQUIRE(waiting.done());
  CHECK(*waiting.result() == 6);
  CHECK_FALSE(*rx.has_changed());
}

TEST_CASE("wait_for's ref tells whether the value was new, and holds the value", "[watch]") {
  auto [tx, rx] = channel<int>(1);
  auto found = rx.blocking_wait_for([](int value) { return value == 1; });
  REQUIRE(found);
  CHECK(**found == 1);
  CHECK_FALSE(found->has_changed());
}

TEST_CASE("wait_for fails when the sender goes before the predicate holds", "[watch]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>(0);
  auto waiting = spawn(executor, wait_for(rx, [](int value) { return value == 10; }));
  REQUIRE(tx.send(1));
  executor.run();
  REQUIRE_FALSE(waiting.done());
  { auto gone = std::move(tx); }
  executor.run();
  REQUIRE(waiting.done());
  CHECK_FALSE(waiting.result());
}

TEST_CASE("an exception from wait_for's predicate comes out of the co_await", "[watch]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>(0);
  auto waiting = spawn(executor, wait_for(rx, [](int value) {
                         if (value == 2) throw std::runtime_error("bad value");
                         return false;
                       }));
  REQUIRE_FALSE(waiting.done());
  REQUIRE(tx.send(2));
  executor.run();
  REQUIRE(waiting.done());
  CHECK_THROWS_AS(waiting.result(), std::runtime_error);
  REQUIRE(tx.send(3));  // the shared lock was released
  CHECK(*rx.borrow() == 3);
}

TEST_CASE("cancelled waits are withdrawn and mark nothing seen", "[watch]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>(0);
  SECTION("changed()") {
    { auto waiting = spawn(executor, changed(rx)); }
    REQUIRE(tx.send(1));
    CHECK(executor.wakes() == 0);
    CHECK(*rx.has_changed());
    CHECK(spawn(executor, changed(rx)).done());
  }
  SECTION("wait_for()") {
    {
      auto waiting = spawn(executor, wait_for(rx, [](int value) { return value == 1; }));
    }
    REQUIRE(tx.send(1));
    CHECK(executor.wakes() == 0);
    CHECK(*rx.has_changed());
  }
  SECTION("closed()") {
    { auto waiting = spawn(executor, wait_closed(tx)); }
    { auto gone = std::move(rx); }
    CHECK(executor.wakes() == 0);
    CHECK(tx.is_closed());
  }
}

TEST_CASE("every stored waker is woken or dropped, and a wait cancelled after its wake loses nothing",
          "[watch]") {
  waker_census census;
  auto [tx, rx] = channel<int>(0);
  SECTION("cancelled before any wake: the wakers are dropped") {
    {
      probe change_wait = probe_changed(rx);
      probe closed_wait = probe_closed(tx);
      change_wait.start(census);
      closed_wait.start(census);
      CHECK(census.live == 2);
    }
    CHECK(census.live == 0);
    CHECK(census.woken == 0);
    REQUIRE(tx.send(1));
    { auto gone = std::move(rx); }
    CHECK(census.woken == 0);
  }
  SECTION("changed() cancelled after its wake: the change stays unseen") {
    {
      probe change_wait = probe_changed(rx);
      change_wait.start(census);
      REQUIRE(tx.send(1));
      CHECK(census.woken == 1);
    }
    CHECK(census.live == 0);
    CHECK(*rx.has_changed());
    manual_executor executor;
    CHECK(spawn(executor, changed(rx)).done());
    CHECK(*rx.borrow() == 1);
  }
  SECTION("closed() cancelled after its wake: a later closed() completes at once") {
    {
      probe closed_wait = probe_closed(tx);
      closed_wait.start(census);
      { auto gone = std::move(rx); }
      CHECK(census.woken == 1);
    }
    CHECK(census.live == 0);
    manual_executor executor;
    CHECK(spawn(executor, wait_closed(tx)).done());
  }
}

TEST_CASE("cancelling a wait while another thread completes it loses nothing", "[watch][threads]") {
  constexpr int rounds = 4000;
  waker_census census;
  int lost = 0;
  for (int round = 0; round < rounds; ++round) {
    auto ends = channel<int>(0);  // not a structured binding: clang 14 cannot capture those in lambdas
    sender<int>& tx = ends.first;
    receiver<int>& rx = ends.second;
    const bool change_round = round % 2 == 0;
    std::optional<probe> waiting;
    waiting.emplace(change_round ? probe_changed(rx) : probe_closed(tx));
    waiting->start(census);
    std::atomic<bool> go{false};
    std::optional<receiver<int>> moved_rx;
    if (!change_round) moved_rx.emplace(std::move(rx));
    std::thread other([&, change_round] {
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      if (change_round)
        (void)tx.send(round + 1);
      else
        moved_rx.reset();  // the last receiver goes
    });
    go.store(true, std::memory_order_release);
    waiting.reset();  // the cancellation races the send, resp. the last receiver's departure
    other.join();
    if (change_round) {
      auto unseen = rx.has_changed();  // the cancelled wait marked nothing seen
      if (!unseen || !*unseen || *rx.borrow() != round + 1) ++lost;
    } else if (!tx.is_closed()) {
      ++lost;
    }
  }
  CHECK(lost == 0);
  CHECK(census.live == 0);
}

TEST_CASE("closed() completes at once when no receiver exists", "[watch]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>(0);
  { auto gone = std::move(rx); }
  CHECK(spawn(executor, wait_closed(tx)).done());
  tx.blocking_closed();
}

TEST_CASE("send_if_modified notifies only when the function reports a change", "[watch]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>(1);
  auto waiting = spawn(executor, changed(rx));
  CHECK_FALSE(tx.send_if_modified([](int& value) { return value == 2; }));
  CHECK(executor.wakes() == 0);
  CHECK_FALSE(*rx.has_changed());
  CHECK(tx.send_if_modified([](int& value) {
    value = 2;
    return true;
  }));
  CHECK(executor.wakes() == 1);
  executor.run();
  CHECK(waiting.result());
  CHECK(*rx.borrow() == 2);
}

TEST_CASE("send_modify notifies even when nothing changed", "[watch]") {
  auto [tx, rx] = channel<int>(1);
  tx.send_modify([](int&) {});
  CHECK(*rx.has_changed());
}

TEST_CASE("send fails without receivers, send_replace stores anyway and returns the old value", "[watch]") {
  auto [tx, rx] = channel<std::string>("one");
  CHECK(tx.send_replace("two") == "one");
  CHECK(*rx.borrow_and_update() == "two");
  { auto gone = std::move(rx); }
  auto failed = tx.send("three");
  REQUIRE_FALSE(failed);
  CHECK(failed.error().value == "three");
  CHECK(*tx.borrow() == "two");
  CHECK(tx.send_replace("four") == "two");
  CHECK(*tx.borrow() == "four");
  CHECK(*tx.subscribe().borrow() == "four");
}

TEST_CASE("copies and subscriptions start from the right seen version", "[watch]") {
  auto [tx, rx] = channel<int>(0);
  REQUIRE(tx.send(1));
  auto copy = rx;  // has not seen 1 either
  CHECK(*copy.has_changed());
  auto fresh = tx.subscribe();  // has seen the current value
  CHECK_FALSE(*fresh.has_changed());
  CHECK(*rx.borrow_and_update() == 1);
  CHECK(*copy.has_changed());  // copies keep their own seen version
  CHECK(tx.receiver_count() == 3);
  CHECK(rx.same_channel(copy));
  CHECK(rx.same_channel(fresh));
  auto [other_tx, other_rx] = channel<int>(0);
  CHECK_FALSE(rx.same_channel(other_rx));
  receiver<int> assigned = other_rx;
  assigned = copy;
  CHECK(assigned.same_channel(rx));
  CHECK(*assigned.has_changed());
  CHECK(tx.receiver_count() == 4);
  CHECK(other_tx.receiver_count() == 1);
}

TEST_CASE("refs tell whether the value was new when borrowed", "[watch]") {
  auto [tx, rx] = channel<int>(0);
  CHECK_FALSE(rx.borrow().has_changed());
  REQUIRE(tx.send(1));
  CHECK(rx.borrow().has_changed());  // borrow() does not mark seen
  CHECK(rx.borrow().has_changed());
  {
    auto value = rx.borrow_and_update();
    CHECK(value.has_changed());
    CHECK(*value == 1);
  }
  CHECK_FALSE(rx.borrow_and_update().has_changed());
  CHECK_FALSE(tx.borrow().has_changed());
  CHECK(*tx.borrow() == 1);
}

TEST_CASE("one send wakes a hundred waiting tasks, each reading the new value", "[watch]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>(0);
  std::vector<receiver<int>> receivers(100, rx);
  std::vector<job<int>> readers;
  auto read_after_change = [](receiver<int>& r) -> job<int> {
    if (!co_await r.changed()) co_return -1;
    co_return *r.borrow_and_update();
  };
  for (auto& r : receivers) readers.push_back(spawn(executor, read_after_change(r)));
  REQUIRE(tx.send(9));
  CHECK(executor.wakes() == 100);
  CHECK(executor.run() == 100);
  for (auto& reader : readers) {
    REQUIRE(reader.done());
    CHECK(reader.result() == 9);
  }
}

TEST_CASE("a task woken first may cancel a task that the same send has not woken yet", "[watch]") {
  constexpr int count = 1100;  // more waiters than one batch of wakers, so the send wakes them in two
  auto [tx, rx] = channel<int>(0);
  std::vector<receiver<int>> receivers(count, rx);
  std::vector<eager> tasks(count);
  int finished = 0;
  auto cancel_the_last = [](receiver<int>& r, std::vector<eager>& all, int& done) -> eager {
    (void)co_await r.changed();
    ++done;
    all.back() = eager();  // destroys the last task's frame while it waits in the second batch
  };
  auto plain = [](receiver<int>& r, int& done) -> eager {
    (void)co_await r.changed();
    ++done;
  };
  tasks[0] = cancel_the_last(receivers[0], tasks, finished);
  for (int i = 1; i < count; ++i) tasks[i] = plain(receivers[i], finished);
  CHECK(finished == 0);
  REQUIRE(tx.send(1));
  CHECK(finished == count - 1);
  CHECK_FALSE(tasks.back().handle);
  for (int i = 0; i < count - 1; ++i) REQUIRE(tasks[i].handle.done());
}

TEST_CASE("blocking_wait_for waits through changes until the predicate holds", "[watch][threads]") {
  auto [tx, rx] = channel<int>(0);
  std::thread sending([moved = std::move(tx)]() mutable {
    for (int i = 1; i <= 3; ++i) moved.send_replace(i);
  });
  {
    auto found = rx.blocking_wait_for([](int value) { return value == 3; });
    REQUIRE(found);
    CHECK(**found == 3);
  }
  sending.join();
  CHECK_FALSE(rx.blocking_wait_for([](int value) { return value == 4; }));  // every sender is gone
}

TEST_CASE("blocking forms are refused on runtime worker threads", "[watch]") {
  auto [tx, rx] = channel<int>(0);
  postal::detail::on_executor_thread = true;
  CHECK_THROWS_AS(rx.blocking_changed(), std::logic_error);
  CHECK_THROWS_AS(rx.blocking_wait_for([](int) { return true; }), std::logic_error);
  CHECK_THROWS_AS(tx.blocking_closed(), std::logic_error);
  postal::detail::on_executor_thread = false;
}

TEST_CASE("blocking_changed wakes for a send or a dropped sender on another thread", "[watch][threads]") {
  for (int round = 0; round < 200; ++round) {
    auto [tx, rx] = channel<int>(0);
    const bool drop_sender = round % 2 == 1;
    std::thread other([moved = std::move(tx), drop_sender, round]() mutable {
      if (drop_sender) {
        auto gone = std::move(moved);
      } else {
        (void)moved.send(round);
      }
    });
    auto result = rx.blocking_changed();
    other.join();
    if (drop_sender) {
      REQUIRE_FALSE(result);
    } else {
      REQUIRE(result);
      CHECK(*rx.borrow() == round);
    }
  }
}

TEST_CASE("blocking_closed returns when the last receiver goes on another thread", "[watch][threads]") {
  for (int round = 0; round < 100; ++round) {
    auto [tx, rx] = channel<int>(0);
    std::thread other([moved = std::move(rx)]() mutable { auto gone = std::move(moved); });
    tx.blocking_closed();
    CHECK(tx.is_closed());
    other.join();
  }
}

TEST_CASE("receivers on several threads see every sender's values in order, and the last one",
          "[watch][threads]") {
  constexpr int per_sender = 20000;
  constexpr int reader_count = 4;
  struct stamp {
    int sender = 0;
    int sequence = -1;
  };
  auto [tx, rx] = channel<stamp>(stamp{0, -1});
  std::vector<receiver<stamp>> receivers(reader_count, rx);
  { auto unused = std::move(rx); }
  std::vector<int> out_of_order(reader_count, 0);
  std::vector<int> last_seen_a(reader_count, -1);
  std::vector<int> last_seen_b(reader_count, -1);
  std::vector<std::thread> readers;
  for (int r = 0; r < reader_count; ++r) {
    readers.emplace_back([&, r] {
      int last[2] = {-1, -1};
      receiver<stamp>& mine = receivers[r];
      while (mine.blocking_changed()) {
        const stamp seen = *mine.borrow_and_update();
        if (seen.sequence <= last[seen.sender]) ++out_of_order[r];
        last[seen.sender] = seen.sequence;
      }
      const stamp final_value = *mine.borrow();  // closed: the last value stays readable
      if (final_value.sequence > last[final_value.sender]) last[final_value.sender] = final_value.sequence;
      last_seen_a[r] = last[0];
      last_seen_b[r] = last[1];
    });
  }
  {
    sender<stamp> second = tx;
    std::thread a([moved = std::move(tx)]() mutable {
      for (int i = 0; i < per_sender; ++i) moved.send_replace(stamp{0, i});
    });
    std::thread b([moved = std::move(second)]() mutable {
      for (int i = 0; i < per_sender; ++i) moved.send_modify([i](stamp& value) { value = stamp{1, i}; });
    });
    a.join();
    b.join();
  }  // both senders are gone: every reader's blocking_changed fails after its last unseen value
  for (auto& reader : readers) reader.join();
  for (int r = 0; r < reader_count; ++r) {
    CHECK(out_of_order[r] == 0);
    const bool saw_a_last = last_seen_a[r] == per_sender - 1;
    const bool saw_b_last = last_seen_b[r] == per_sender - 1;
    INFO("reader " << r << " last a " << last_seen_a[r] << " last b " << last_seen_b[r]);
    CHECK((saw_a_last || saw_b_last));  // whichever sender wrote last, its final value was seen
  }
}

TEST_CASE("tasks on one thread wait for changes sent from another", "[watch][threads]") {
  constexpr int updates = 20000;
  manual_executor executor;
  auto [tx, rx] = channel<int>(0);
  std::thread sending([moved = std::move(tx)]() mutable {
    for (int i = 1; i <= updates; ++i) moved.send_replace(i);
  });
  auto follow = [](receiver<int>& r) -> job<int> {
    int last = 0;
    int out_of_order = 0;
    while (co_await r.changed()) {
      const int value = *r.borrow_and_update();
      if (value <= last) ++out_of_order;
      last = value;
    }
    co_return out_of_order == 0 ? last : -1;
  };
  auto following = spawn(executor, follow(rx));
  while (!following.done()) {
    executor.run();
    std::this_thread::yield();
  }
  sending.join();
  CHECK(following.result() == updates);
}

TEST_CASE("every value is destroyed exactly once", "[watch]") {
  using postal::test::counted;
  const long before = counted::live.load();
  {
    auto [tx, rx] = channel<counted>(counted(0));
    CHECK(counted::live.load() == before + 1);
    REQUIRE(tx.send(counted(1)));
    CHECK(counted::live.load() == before + 1);
    {
      counted old = tx.send_replace(counted(2));
      CHECK(old.value == 1);
      CHECK(counted::live.load() == before + 2);
    }
    CHECK(counted::live.load() == before + 1);
    { auto gone = std::move(rx); }
    auto failed = tx.send(counted(3));
    REQUIRE_FALSE(failed);
    CHECK(counted::live.load() == before + 2);
  }
  CHECK(counted::live.load() == before);
  {
    auto [tx, rx] = channel<counted>(counted(4));
    auto copy = rx;
    { auto gone = std::move(tx); }
    CHECK(counted::live.load() == before + 1);  // receivers keep the last value alive
    CHECK(copy.borrow()->value == 4);
  }
  CHECK(counted::live.load() == before);
}

TEST_CASE("move-only values go through send_replace and send", "[watch]") {
  auto [tx, rx] = channel<std::unique_ptr<int>>(std::make_unique<int>(1));
  std::unique_ptr<int> old = tx.send_replace(std::make_unique<int>(2));
  REQUIRE(old);
  CHECK(*old == 1);
  REQUIRE(tx.send(std::make_unique<int>(3)));
  CHECK(**rx.borrow_and_update() == 3);
  tx.send_modify([](std::unique_ptr<int>& value) { *value = 4; });
  CHECK(**rx.borrow() == 4);
  { auto gone = std::move(rx); }
  auto failed = tx.send(std::make_unique<int>(5));
  REQUIRE_FALSE(failed);
  CHECK(*failed.error().value == 5);
}
