// Tests of postal::broadcast: the counterparts of Tokio's tests/sync_broadcast.rs and sync_broadcast_weak.rs,
// plus values destroyed exactly once, cancelled waits, many waiters, blocking forms and races between
// threads. Not a benchmark: sizes are small enough for ThreadSanitizer.
//
// Tokio test (sync_broadcast.rs)             -> postal test (TEST_CASE name)
//   send_try_recv_bounded                    -> try_recv is empty, gets a sent value, then is empty again
//   send_two_recv                            -> two receivers each get every value, and send counts them
//   send_recv_bounded                        -> a waiting recv is woken by a send and gets the value
//   send_two_recv_bounded                    -> a send wakes every waiting receiver, and only waiting ones
//   change_tasks (Rust: one future polled by two tasks; a C++ awaitable is awaited once)
//                                            -> a cancelled recv is withdrawn; the next waiting task is woken
//   send_slow_rx                             -> a slow receiver still gets every value in order
//   drop_rx_while_values_remain              -> receivers dropped while values remain destroy them once
//   lagging_rx                               -> a receiver more than the capacity behind is told it lagged
//   send_no_rx                               -> send without receivers fails and hands the value back
//   zero_capacity, capacity_too_big          -> capacity 0 or above max_capacity throws invalid_argument
//   panic_in_clone                           -> a throwing copy skips that value, the next recv goes on
//   dropping_tx_notifies_rx                  -> waiting receivers get closed when the last sender goes
//   unconsumed_messages_are_dropped          -> values nobody will read are destroyed with the receiver
//   single_capacity_recvs, _after_drop_1/_2  -> capacity 1: recv, then closed; lag, then closed
//   dropping_sender_does_not_overwrite       -> the last sender going overwrites nothing
//   lagging_receiver_recovers_after_wrap_closed_1/_2, _open -> a lagged receiver recovers after a wrap
//   receiver_len_with_lagged                 -> a receiver's len counts the values it lagged past
//   resubscribe_points_to_tail               -> resubscribe starts at the tail and leaves the original alone
//   resubscribe_lagged                       -> resubscribe from a lagged receiver starts at the tail
//   resubscribe_to_closed_channel            -> resubscribe on a closed channel gives a closed receiver
//   sender_len                               -> sender len counts the values some receiver has not seen
//   sender_len_random (fixed-seed mt19937)  -> sender len matches the receivers' lens under random operations
//   send_in_waker_drop                       -> a waker that sends when dropped or woken does not deadlock
//   receiver_recv_is_cooperative (Rust-only: Tokio's coop budget; postal's runtime bounds inline runs)
//                                            -> a recv of a value already there does not suspend
//   broadcast_sender_closed                  -> closed() waits for the last receiver
//   broadcast_sender_closed_with_extra_subscribe -> closed() waits again after a new subscribe
//   receiver_same_position_as_cloned (only in some Tokio revisions, where Receiver is Clone; postal's
//                                    receivers are move-only)  -> replaced by the resubscribe tests
// Tokio test (sync_broadcast_weak.rs)        -> postal test
//   weak_sender                              -> a weak sender upgrades while a sender exists, then not
//   downgrade_upgrade_sender_failure, downgrade_drop_upgrade -> a weak sender does not keep the channel open
//   test_tx_count_weak_sender, sender_{strong,weak}_count_when_{cloned,downgraded,dropped},
//   sender_strong_and_weak_conut, test_rx_is_closed_when_dropping_all_senders_except_weak_senders
//                                            -> strong and weak counts seen from every side
#include <postal/broadcast.hpp>

#include <atomic>
#include <catch2/catch.hpp>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <random>
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
using postal::broadcast::channel;
using postal::broadcast::receiver;
using postal::broadcast::recv_error;
using postal::broadcast::sender;
using postal::broadcast::try_recv_error;
using postal::test::counted;
using postal::test::job;
using postal::test::manual_executor;
using postal::test::probe;
using postal::test::spawn;
using postal::test::waker_census;

template <class T>
job<expected<T, recv_error>> recv(receiver<T>& rx) {
  co_return co_await rx.recv();
}
template <class T>
job<bool> wait_closed(const sender<T>& tx) {
  co_await tx.closed();
  co_return true;
}

// The value try_recv() must give; fails the test otherwise.
template <class T>
T received(receiver<T>& rx) {
  auto result = rx.try_recv();
  REQUIRE(result.has_value());
  return std::move(*result);
}
template <class T>
bool is_empty(receiver<T>& rx) {
  auto result = rx.try_recv();
  return !result && result.error().is_empty();
}
template <class T>
bool is_closed(receiver<T>& rx) {
  auto result = rx.try_recv();
  return !result && result.error().is_closed();
}
// The number of values try_recv() reports missed; 0 if it did not report a lag.
template <class T>
std::uint64_t lagged_by(receiver<T>& rx) {
  auto result = rx.try_recv();
  return !result && result.error().is_lagged() ? result.error().missed : 0;
}

// A coroutine that starts at once and gets its wakers from the suspend_hooks given as its first argument.
struct hooked {
  struct promise_type {
    postal::suspend_hooks* hooks;
    template <class... Args>
    explicit promise_type(postal::suspend_hooks& h, Args&...) : hooks(&h) {}
    hooked get_return_object() { return hooked(std::coroutine_handle<promise_type>::from_promise(*this)); }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_always final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() { std::terminate(); }
    postal::suspend_hooks* postal_hooks() noexcept { return hooks; }
  };
  explicit hooked(std::coroutine_handle<promise_type> h) : handle(h) {}
  hooked(hooked&& other) noexcept : handle(std::exchange(other.handle, {})) {}
  hooked& operator=(hooked&& other) noexcept {
    if (this != &other) {
      if (handle) handle.destroy();
      handle = std::exchange(other.handle, {});
    }
    return *this;
  }
  ~hooked() {
    if (handle) handle.destroy();
  }
  std::coroutine_handle<promise_type> handle;
};

// Hooks whose wakers send on a channel when they are dropped (1) or woken (2), then remember the woken
// coroutine for the test to resume: a waker must be dropped and woken outside the channel's lock.
class sending_hooks final : public postal::suspend_hooks {
 public:
  explicit sending_hooks(sender<int> tx) : tx_(std::move(tx)) {}
  postal::waker waker_for(std::coroutine_handle<> handle) noexcept override {
    return postal::waker(new token{this, handle}, &vtable_);
  }
  bool wake_at(std::chrono::steady_clock::time_point, postal::waker&) override { return false; }

  std::coroutine_handle<> woken;
  int drops = 0;

 private:
  struct token {
    sending_hooks* self;
    std::coroutine_handle<> handle;
  };
  static void wake(void* data) noexcept {
    auto* t = static_cast<token*>(data);
    (void)t->self->tx_.send(2);
    t->self->woken = t->handle;
    delete t;
  }
  static void drop(void* data) noexcept {
    auto* t = static_cast<token*>(data);
    (void)t->self->tx_.send(1);
    ++t->self->drops;
    delete t;
  }
  static constexpr postal::waker::vtable vtable_{&sending_hooks::wake, &sending_hooks::drop};
  sender<int> tx_;
};

// Receives one value into `got` (-1 for an error), waking through `hooks`.
hooked receive_into(postal::suspend_hooks& hooks, receiver<int>& rx, int& got) {
  (void)hooks;
  auto result = co_await rx.recv();
  got = result ? *result : -1;
}

// A value whose copy throws for 0 (Tokio's panic_in_clone).
struct picky {
  int value;
  explicit picky(int v) : value(v) {}
  picky(const picky& other) : value(other.value) {
    if (other.value == 0) throw std::runtime_error("cannot copy 0");
  }
  picky(picky&&) noexcept = default;
};

}  // namespace

// --- Counterparts of tokio/tests/sync_broadcast.rs ---

TEST_CASE("try_recv is empty, gets a sent value, then is empty again", "[broadcast]") {
  auto [tx, rx] = channel<std::string>(16);
  CHECK(is_empty(rx));
  auto sent = tx.send("hello");
  REQUIRE(sent);
  CHECK(*sent == 1);
  CHECK(received(rx) == "hello");
  CHECK(is_empty(rx));
}

TEST_CASE("two receivers each get every value, and send counts them", "[broadcast]") {
  auto [tx, rx1] = channel<std::string>(16);
  auto rx2 = tx.subscribe();
  CHECK(is_empty(rx1));
  CHECK(is_empty(rx2));
  auto sent = tx.send("hello");
  REQUIRE(sent);
  CHECK(*sent == 2);
  CHECK(received(rx1) == "hello");
  CHECK(received(rx2) == "hello");
  CHECK(is_empty(rx1));
  CHECK(is_empty(rx2));
}

TEST_CASE("a waiting recv is woken by a send and gets the value", "[broadcast]") {
  manual_executor executor;
  auto [tx, rx] = channel<std::string>(16);
  auto waiting = spawn(executor, recv(rx));
  REQUIRE_FALSE(waiting.done());
  REQUIRE(tx.send("hello"));
  CHECK(executor.wakes() == 1);
  executor.run();
  REQUIRE(waiting.done());
  CHECK(*waiting.result() == "hello");
}

TEST_CASE("a send wakes every waiting receiver, and only waiting ones", "[broadcast]") {
  manual_executor executor;
  auto [tx, rx1] = channel<std::string>(16);
  auto rx2 = tx.subscribe();
  {
    auto first = spawn(executor, recv(rx1));
    auto second = spawn(executor, recv(rx2));
    REQUIRE_FALSE(first.done());
    REQUIRE_FALSE(second.done());
    REQUIRE(tx.send("hello"));
    CHECK(executor.wakes() == 2);
    executor.run();
    REQUIRE(first.done());
    REQUIRE(second.done());
    CHECK(*first.result() == "hello");
    CHECK(*second.result() == "hello");
  }
  auto first = spawn(executor, recv(rx1));
  REQUIRE_FALSE(first.done());
  REQUIRE(tx.send("world"));
  CHECK(executor.wakes() == 3);  // only the waiting one
  auto second = spawn(executor, recv(rx2));
  CHECK(second.done());  // did not wait: the value was there
  executor.run();
  REQUIRE(first.done());
  CHECK(*first.result() == "world");
  CHECK(*second.result() == "world");
}

TEST_CASE("a cancelled recv is withdrawn; the next waiting task is woken", "[broadcast]") {
  manual_executor executor;
  auto [tx, rx] = channel<std::string>(1);
  {
    auto cancelled = spawn(executor, recv(rx));
    REQUIRE_FALSE(cancelled.done());
  }  // destroyed while waiting
  auto waiting = spawn(executor, recv(rx));
  REQUIRE_FALSE(waiting.done());
  REQUIRE(tx.send("hello"));
  CHECK(executor.wakes() == 1);
  executor.run();
  REQUIRE(waiting.done());
  CHECK(*waiting.result() == "hello");
}

TEST_CASE("a slow receiver still gets every value in order", "[broadcast]") {
  manual_executor executor;
  auto [tx, rx1] = channel<std::string>(16);
  auto rx2 = tx.subscribe();
  {
    auto second = spawn(executor, recv(rx2));
    {
      auto first = spawn(executor, recv(rx1));
      REQUIRE_FALSE(first.done());
      REQUIRE_FALSE(second.done());
      REQUIRE(tx.send("one"));
      CHECK(executor.wakes() == 2);
      REQUIRE(tx.send("two"));
      CHECK(executor.wakes() == 2);
      executor.run();
      REQUIRE(first.done());
      CHECK(*first.result() == "one");
    }
    auto at_once = spawn(executor, recv(rx1));
    REQUIRE(at_once.done());
    CHECK(*at_once.result() == "two");
    auto first = spawn(executor, recv(rx1));
    REQUIRE_FALSE(first.done());
    REQUIRE(tx.send("three"));
    CHECK(executor.wakes() == 3);
    executor.run();
    REQUIRE(first.done());
    CHECK(*first.result() == "three");
    REQUIRE(second.done());
    CHECK(*second.result() == "one");
  }
  CHECK(received(rx2) == "two");
  CHECK(received(rx2) == "three");
}

TEST_CASE("receivers dropped while values remain destroy them once", "[broadcast]") {
  const long before = counted::live.load();
  {
    auto [tx, rx1] = channel<counted>(16);
    auto rx2 = tx.subscribe();
    REQUIRE(tx.send(counted(1)));
    REQUIRE(tx.send(counted(2)));
    CHECK(received(rx1).value == 1);
    CHECK(received(rx2).value == 1);
    CHECK(counted::live.load() == before + 1);  // the first value is gone, the second is claimed twice
    { auto gone = std::move(rx2); }
    CHECK(counted::live.load() == before + 1);  // rx1 still claims it
    { auto gone = std::move(rx1); }
    CHECK(counted::live.load() == before);
  }
  CHECK(counted::live.load() == before);
}

TEST_CASE("a receiver more than the capacity behind is told it lagged", "[broadcast]") {
  auto [tx, rx1] = channel<std::string>(2);
  auto rx2 = tx.subscribe();
  REQUIRE(tx.send("one"));
  REQUIRE(tx.send("two"));
  CHECK(received(rx1) == "one");
  REQUIRE(tx.send("three"));
  CHECK(lagged_by(rx2) == 1);
  CHECK(received(rx2) == "two");  // the next call continues from the oldest value retained
  CHECK(received(rx1) == "two");
  CHECK(received(rx1) == "three");
  REQUIRE(tx.send("four"));
  REQUIRE(tx.send("five"));
  CHECK(lagged_by(rx2) == 1);
  REQUIRE(tx.send("six"));
  CHECK(lagged_by(rx2) == 1);
}

TEST_CASE("send without receivers fails and hands the value back", "[broadcast]") {
  auto [tx, first] = channel<std::string>(16);
  { auto gone = std::move(first); }
  auto failed = tx.send("hello");
  REQUIRE_FALSE(failed);
  CHECK(failed.error().value == "hello");
  auto rx = tx.subscribe();
  REQUIRE(tx.send("world"));
  CHECK(received(rx) == "world");
}

TEST_CASE("capacity 0 or above max_capacity throws invalid_argument", "[broadcast]") {
  CHECK_THROWS_AS(channel<int>(0), std::invalid_argument);
  CHECK_THROWS_AS(channel<int>(postal::broadcast::max_capacity + 1), std::invalid_argument);
  CHECK_THROWS_AS(channel<int>(~std::size_t{0}), std::invalid_argument);
}

TEST_CASE("a throwing copy skips that value, the next recv goes on", "[broadcast]") {
  auto [tx, rx] = channel<picky>(16);
  REQUIRE(tx.send(picky(0)));
  REQUIRE(tx.send(picky(1)));
  CHECK_THROWS_AS(rx.try_recv(), std::runtime_error);
  CHECK(received(rx).value == 1);
  CHECK(is_empty(rx));
  CHECK(tx.len() == 0);  // the skipped value was released too
}

TEST_CASE("waiting receivers get closed when the last sender goes", "[broadcast]") {
  manual_executor executor;
  auto [tx, rx1] = channel<int>(16);
  auto rx2 = tx.subscribe();
  auto tx2 = tx;
  auto first = spawn(executor, recv(rx1));
  auto second = spawn(executor, recv(rx2));
  { auto gone = std::move(tx); }
  CHECK(executor.wakes() == 0);
  CHECK_FALSE(rx1.is_closed());
  { auto gone = std::move(tx2); }
  CHECK(executor.wakes() == 2);
  executor.run();
  REQUIRE(first.done());
  REQUIRE(second.done());
  CHECK(first.result().error() == recv_error::closed());
  CHECK(second.result().error() == recv_error::closed());
  CHECK(rx1.is_closed());
}

TEST_CASE("values nobody will read are destroyed with the receiver", "[broadcast]") {
  auto [tx, rx] = channel<std::shared_ptr<int>>(16);
  auto message = std::make_shared<int>(7);
  REQUIRE(tx.send(message));
  CHECK(message.use_count() == 2);
  { auto gone = std::move(rx); }
  CHECK(message.use_count() == 1);
}

TEST_CASE("capacity 1: recv, then closed; lag, then closed", "[broadcast]") {
  SECTION("single_capacity_recvs") {
    auto [tx, rx] = channel<int>(1);
    REQUIRE(tx.send(1));
    CHECK(received(rx) == 1);
    CHECK(is_empty(rx));
  }
  SECTION("single_capacity_recvs_after_drop_1") {
    auto [tx, rx] = channel<int>(1);
    REQUIRE(tx.send(1));
    { auto gone = std::move(tx); }
    CHECK(received(rx) == 1);
    CHECK(is_closed(rx));
  }
  SECTION("single_capacity_recvs_after_drop_2") {
    auto [tx, rx] = channel<int>(1);
    REQUIRE(tx.send(1));
    REQUIRE(tx.send(2));
    { auto gone = std::move(tx); }
    CHECK(lagged_by(rx) == 1);
    CHECK(received(rx) == 2);
    CHECK(is_closed(rx));
  }
}

TEST_CASE("the last sender going overwrites nothing", "[broadcast]") {
  auto [tx, rx] = channel<int>(2);
  REQUIRE(tx.send(1));
  REQUIRE(tx.send(2));
  { auto gone = std::move(tx); }
  CHECK(received(rx) == 1);
  CHECK(received(rx) == 2);
  CHECK(is_closed(rx));
}

TEST_CASE("a lagged receiver recovers after a wrap", "[broadcast]") {
  SECTION("closed_1") {
    auto [tx, rx] = channel<int>(2);
    for (int i = 1; i <= 3; ++i) REQUIRE(tx.send(i));
    { auto gone = std::move(tx); }
    CHECK(lagged_by(rx) == 1);
    CHECK(received(rx) == 2);
    CHECK(received(rx) == 3);
    CHECK(is_closed(rx));
  }
  SECTION("closed_2") {
    auto [tx, rx] = channel<int>(2);
    for (int i = 1; i <= 4; ++i) REQUIRE(tx.send(i));
    { auto gone = std::move(tx); }
    CHECK(lagged_by(rx) == 2);
    CHECK(received(rx) == 3);
    CHECK(received(rx) == 4);
    CHECK(is_closed(rx));
  }
  SECTION("open") {
    auto [tx, rx] = channel<int>(2);
    for (int i = 1; i <= 3; ++i) REQUIRE(tx.send(i));
    CHECK(lagged_by(rx) == 1);
    CHECK(received(rx) == 2);
    CHECK(received(rx) == 3);
    CHECK(is_empty(rx));
  }
}

TEST_CASE("a receiver's len counts the values it lagged past", "[broadcast]") {
  auto [tx, rx] = channel<int>(3);  // rounded up to 4
  for (int value : {10, 20, 30, 40}) REQUIRE(tx.send(value));
  CHECK(rx.len() == 4);
  CHECK(received(rx) == 10);
  REQUIRE(tx.send(50));
  REQUIRE(tx.send(60));
  CHECK(rx.len() == 5);
  CHECK(lagged_by(rx) == 1);
  CHECK(rx.len() == 4);
  CHECK_FALSE(rx.is_empty());
}

TEST_CASE("resubscribe starts at the tail and leaves the original alone", "[broadcast]") {
  auto [tx, rx] = channel<int>(3);
  REQUIRE(tx.send(1));
  auto resubscribed = rx.resubscribe();
  CHECK(rx.same_channel(resubscribed));
  CHECK(is_empty(resubscribed));
  CHECK(received(rx) == 1);
  REQUIRE(tx.send(2));
  CHECK(received(resubscribed) == 2);
  REQUIRE(tx.send(3));
  CHECK(received(rx) == 2);
  CHECK(received(rx) == 3);
  CHECK(is_empty(rx));
  CHECK(received(resubscribed) == 3);
  CHECK(is_empty(resubscribed));
}

TEST_CASE("resubscribe from a lagged receiver starts at the tail", "[broadcast]") {
  auto [tx, rx] = channel<int>(1);
  REQUIRE(tx.send(1));
  REQUIRE(tx.send(2));
  auto resubscribed = rx.resubscribe();
  CHECK(lagged_by(rx) == 1);
  CHECK(is_empty(resubscribed));
  CHECK(received(rx) == 2);
  CHECK(is_empty(rx));
  CHECK(is_empty(resubscribed));
}

TEST_CASE("resubscribe on a closed channel gives a closed receiver", "[broadcast]") {
  auto [tx, rx] = channel<std::uint32_t>(2);
  { auto gone = std::move(tx); }
  auto resubscribed = rx.resubscribe();
  CHECK(is_closed(resubscribed));
  CHECK(resubscribed.is_closed());
}

TEST_CASE("sender len counts the values some receiver has not seen", "[broadcast]") {
  auto [tx, rx1] = channel<int>(4);
  auto rx2 = tx.subscribe();
  CHECK(tx.len() == 0);
  CHECK(tx.is_empty());
  for (int i = 1; i <= 3; ++i) REQUIRE(tx.send(i));
  CHECK(tx.len() == 3);
  CHECK_FALSE(tx.is_empty());
  (void)received(rx1);
  (void)received(rx1);
  CHECK(tx.len() == 3);
  (void)received(rx2);
  CHECK(tx.len() == 2);
  for (int i = 4; i <= 6; ++i) REQUIRE(tx.send(i));
  CHECK(tx.len() == 4);
  CHECK_FALSE(tx.is_empty());
}

TEST_CASE("sender len matches the receivers' lens under random operations", "[broadcast]") {
  auto [tx, rx1] = channel<int>(16);
  auto rx2 = tx.subscribe();
  std::mt19937 random(12345);  // fixed seed: the same sequence every run
  for (int i = 0; i < 1000; ++i) {
    switch (random() % 4) {
      case 0:
        (void)rx1.try_recv();
        break;
      case 1:
        (void)rx2.try_recv();
        break;
      default:
        REQUIRE(tx.send(0));
    }
    const std::size_t expected_len = std::min<std::size_t>(std::max(rx1.len(), rx2.len()), 16);
    REQUIRE(tx.len() == expected_len);
  }
}

TEST_CASE("a waker that sends when dropped or woken does not deadlock", "[broadcast]") {
  auto [tx, rx] = channel<int>(16);
  sending_hooks hooks(tx);
  int got = 0;
  {
    auto cancelled = receive_into(hooks, rx, got);
    REQUIRE_FALSE(cancelled.handle.done());
  }  // the waker is dropped: it sends 1
  CHECK(hooks.drops == 1);
  CHECK(received(rx) == 1);
  auto waiting = receive_into(hooks, rx, got);
  REQUIRE_FALSE(waiting.handle.done());
  REQUIRE(tx.send(0));  // wakes the waiter, whose waker sends 2
  REQUIRE(hooks.woken);
  hooks.woken.resume();
  REQUIRE(waiting.handle.done());
  CHECK(got == 0);
  CHECK(received(rx) == 2);
  CHECK(is_empty(rx));
}

TEST_CASE("a recv of a value already there does not suspend", "[broadcast]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>(8);
  auto loop = [](sender<int>& s, receiver<int>& r) -> job<int> {
    int sum = 0;
    for (int i = 0; i < 1000; ++i) {
      if (!s.send(i)) co_return -1;
      auto value = co_await r.recv();
      if (!value) co_return -1;
      sum += *value;
    }
    co_return sum;
  };
  auto running = spawn(executor, loop(tx, rx));
  REQUIRE(running.done());
  CHECK(running.result() == 999 * 1000 / 2);
  CHECK(executor.wakes() == 0);
}

TEST_CASE("closed() waits for the last receiver", "[broadcast]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>(1);
  auto rx2 = tx.subscribe();
  auto waiting = spawn(executor, wait_closed(tx));
  REQUIRE_FALSE(waiting.done());
  { auto gone = std::move(rx); }
  CHECK(executor.wakes() == 0);
  executor.run();
  REQUIRE_FALSE(waiting.done());
  { auto gone = std::move(rx2); }
  CHECK(executor.wakes() == 1);
  executor.run();
  CHECK(waiting.done());
}

TEST_CASE("closed() waits again after a new subscribe", "[broadcast]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>(1);
  auto rx2 = tx.subscribe();
  auto waiting = spawn(executor, wait_closed(tx));
  { auto gone = std::move(rx); }
  CHECK(executor.wakes() == 0);
  { auto gone = std::move(rx2); }
  CHECK(executor.wakes() == 1);
  auto rx3 = tx.subscribe();
  executor.run();
  REQUIRE_FALSE(waiting.done());  // a receiver exists again when it looks
  { auto gone = std::move(rx3); }
  CHECK(executor.wakes() == 2);
  executor.run();
  REQUIRE(waiting.done());
  auto second = spawn(executor, wait_closed(tx));
  CHECK(second.done());
  auto rx4 = tx.subscribe();
  auto third = spawn(executor, wait_closed(tx));
  REQUIRE_FALSE(third.done());
  { auto gone = std::move(rx4); }
  executor.run();
  CHECK(third.done());
}

// --- Counterparts of tokio/tests/sync_broadcast_weak.rs ---

TEST_CASE("a weak sender upgrades while a sender exists, then not", "[broadcast]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>(11);
  auto weak = tx.downgrade();
  for (int i = 0; i < 10; ++i) REQUIRE(tx.send(i));
  {
    auto upgraded = weak.upgrade();
    REQUIRE(upgraded);
    REQUIRE(upgraded->send(20));
    weak = upgraded->downgrade();
  }
  { auto gone = std::move(tx); }
  for (int i = 0; i < 11; ++i) {
    auto got = spawn(executor, recv(rx));
    REQUIRE(got.done());
    CHECK(*got.result() == (i == 10 ? 20 : i));
  }
  auto last = spawn(executor, recv(rx));
  REQUIRE(last.done());
  CHECK(last.result().error().is_closed());
  CHECK_FALSE(weak.upgrade());
}

TEST_CASE("a weak sender does not keep the channel open", "[broadcast]") {
  SECTION("downgrade_upgrade_sender_failure") {
    auto [tx, rx] = channel<int>(1);
    auto weak = tx.downgrade();
    { auto gone = std::move(tx); }
    CHECK_FALSE(weak.upgrade());
    CHECK(rx.is_closed());
    CHECK(is_closed(rx));
  }
  SECTION("downgrade_drop_upgrade") {
    auto [tx, rx] = channel<int>(1);
    auto weak = sender<int>(tx).downgrade();  // the copy is gone right away
    { auto gone = std::move(tx); }
    CHECK_FALSE(weak.upgrade());
  }
}

TEST_CASE("strong and weak counts seen from every side", "[broadcast]") {
  auto [tx, rx] = channel<int>(1);
  auto weak = tx.downgrade();
  auto weak2 = tx.downgrade();
  CHECK(tx.strong_count() == 1);
  CHECK(tx.weak_count() == 2);
  {
    auto tx2 = tx;
    CHECK(tx.strong_count() == 2);
    CHECK(tx2.strong_count() == 2);
    CHECK(weak.strong_count() == 2);
    CHECK(rx.sender_strong_count() == 2);
    CHECK(rx.sender_weak_count() == 2);
    CHECK(tx.same_channel(tx2));
  }
  CHECK(tx.strong_count() == 1);
  CHECK(rx.sender_strong_count() == 1);
  { auto gone = std::move(weak2); }
  CHECK(tx.weak_count() == 1);
  CHECK(weak.weak_count() == 1);
  CHECK(rx.sender_weak_count() == 1);
  { auto gone = std::move(tx); }
  CHECK(weak.strong_count() == 0);
  CHECK(weak.weak_count() == 1);
  CHECK(rx.is_closed());
  CHECK_FALSE(weak.upgrade());
}

// --- Beyond Tokio's tests ---

TEST_CASE("errors compare and tell their kind", "[broadcast]") {
  CHECK(recv_error::lagged(3) == recv_error{recv_error::kind_type::lagged, 3});
  CHECK(recv_error::lagged(3) != recv_error::lagged(4));
  CHECK(recv_error::closed().is_closed());
  CHECK_FALSE(recv_error::closed().is_lagged());
  CHECK(try_recv_error::empty().is_empty());
  CHECK(try_recv_error::lagged(2).is_lagged());
  CHECK(try_recv_error::lagged(2).missed == 2);
  CHECK(try_recv_error::closed() != try_recv_error::empty());
}

TEST_CASE("capacity rounds up to a power of two", "[broadcast]") {
  auto [tx, rx] = channel<int>(5);  // 8
  for (int i = 0; i < 8; ++i) REQUIRE(tx.send(i));
  CHECK(tx.len() == 8);
  CHECK(received(rx) == 0);
  for (int i = 8; i < 10; ++i) REQUIRE(tx.send(i));
  CHECK(lagged_by(rx) == 1);
  CHECK(received(rx) == 2);
}

TEST_CASE("recv reports a lag, then continues from the oldest value", "[broadcast]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>(2);
  for (int i = 0; i < 5; ++i) REQUIRE(tx.send(i));
  auto lagged = spawn(executor, recv(rx));
  REQUIRE(lagged.done());
  CHECK(lagged.result().error() == recv_error::lagged(3));
  auto next = spawn(executor, recv(rx));
  REQUIRE(next.done());
  CHECK(*next.result() == 3);
}

TEST_CASE("subscribe sees only values sent after it", "[broadcast]") {
  auto [tx, rx] = channel<int>(4);
  REQUIRE(tx.send(1));
  auto late = tx.subscribe();
  CHECK(tx.receiver_count() == 2);
  CHECK(late.len() == 0);
  CHECK(is_empty(late));
  REQUIRE(tx.send(2));
  CHECK(received(late) == 2);
  CHECK(received(rx) == 1);
  CHECK(received(rx) == 2);
}

TEST_CASE("every value is destroyed exactly once", "[broadcast]") {
  const long before = counted::live.load();
  SECTION("when overwritten") {
    auto [tx, rx] = channel<counted>(2);
    for (int i = 0; i < 5; ++i) REQUIRE(tx.send(counted(i)));
    CHECK(counted::live.load() == before + 2);
    CHECK(lagged_by(rx) == 3);
    CHECK(received(rx).value == 3);
    CHECK(counted::live.load() == before + 1);
    CHECK(received(rx).value == 4);
    CHECK(counted::live.load() == before);
  }
  SECTION("when receivers leave, lagged or not") {
    auto [tx, rx1] = channel<counted>(4);
    auto rx2 = tx.subscribe();
    auto rx3 = tx.subscribe();
    for (int i = 0; i < 6; ++i) REQUIRE(tx.send(counted(i)));  // rx1..rx3 lag by 2
    CHECK(counted::live.load() == before + 4);
    CHECK(lagged_by(rx1) == 2);
    for (int i = 2; i < 6; ++i) CHECK(received(rx1).value == i);
    CHECK(counted::live.load() == before + 4);  // rx2 and rx3 still claim them
    { auto gone = std::move(rx2); }
    CHECK(counted::live.load() == before + 4);
    CHECK(lagged_by(rx3) == 2);
    CHECK(received(rx3).value == 2);
    CHECK(counted::live.load() == before + 3);
    { auto gone = std::move(rx3); }
    CHECK(counted::live.load() == before);
    REQUIRE(tx.send(counted(6)));
    CHECK(counted::live.load() == before + 1);
    CHECK(received(rx1).value == 6);
    CHECK(counted::live.load() == before);
  }
  SECTION("when the channel goes away") {
    {
      auto [tx, rx] = channel<counted>(4);
      for (int i = 0; i < 3; ++i) REQUIRE(tx.send(counted(i)));
      auto weak = tx.downgrade();
      { auto gone = std::move(tx); }
      CHECK(counted::live.load() == before + 3);
    }
    CHECK(counted::live.load() == before);
  }
  SECTION("when send fails or a later receiver never claimed them") {
    auto [tx, rx] = channel<counted>(4);
    REQUIRE(tx.send(counted(1)));
    auto late = rx.resubscribe();
    { auto gone = std::move(rx); }
    CHECK(counted::live.load() == before);
    { auto gone = std::move(late); }
    auto failed = tx.send(counted(2));
    REQUIRE_FALSE(failed);
    CHECK(failed.error().value.value == 2);
    CHECK(counted::live.load() == before + 1);
  }
  CHECK(counted::live.load() == before);
}

TEST_CASE("cancelled waits lose nothing", "[broadcast]") {
  manual_executor executor;
  SECTION("recv") {
    auto [tx, rx] = channel<int>(4);
    for (int i = 0; i < 100; ++i) {
      auto cancelled = spawn(executor, recv(rx));
      REQUIRE_FALSE(cancelled.done());
    }
    REQUIRE(tx.send(1));
    CHECK(executor.wakes() == 0);
    CHECK(received(rx) == 1);
  }
  SECTION("closed") {
    auto [tx, rx] = channel<int>(4);
    for (int i = 0; i < 100; ++i) {
      auto cancelled = spawn(executor, wait_closed(tx));
      REQUIRE_FALSE(cancelled.done());
    }
    { auto gone = std::move(rx); }
    CHECK(executor.wakes() == 0);
    CHECK(spawn(executor, wait_closed(tx)).done());
  }
}

TEST_CASE("one send wakes a hundred waiting tasks, each getting the value", "[broadcast]") {
  manual_executor executor;
  auto [tx, first] = channel<int>(4);
  std::vector<receiver<int>> receivers;
  for (int i = 0; i < 100; ++i) receivers.push_back(tx.subscribe());
  std::vector<job<expected<int, recv_error>>> waiting;
  for (auto& r : receivers) waiting.push_back(spawn(executor, recv(r)));
  auto sent = tx.send(9);
  REQUIRE(sent);
  CHECK(*sent == 101);
  CHECK(executor.wakes() == 100);
  CHECK(executor.run() == 100);
  for (auto& w : waiting) {
    REQUIRE(w.done());
    CHECK(*w.result() == 9);
  }
  CHECK(received(first) == 9);
}

TEST_CASE("a task woken first may cancel a task that the same send has not woken yet", "[broadcast]") {
  struct eager {
    struct promise_type {
      eager get_return_object() { return eager{std::coroutine_handle<promise_type>::from_promise(*this)}; }
      std::suspend_never initial_suspend() noexcept { return {}; }
      std::suspend_always final_suspend() noexcept { return {}; }
      void return_void() noexcept {}
      void unhandled_exception() { std::terminate(); }
    };
    std::coroutine_handle<promise_type> handle;
  };
  constexpr int count = 100;  // more waiters than one batch of wakers, so the send wakes them in several
  auto [tx, first] = channel<int>(4);
  std::vector<receiver<int>> receivers;
  for (int i = 0; i < count; ++i) receivers.push_back(tx.subscribe());
  std::vector<std::coroutine_handle<>> tasks(count);
  int finished = 0;
  auto cancel_the_last = [](receiver<int>& r, std::vector<std::coroutine_handle<>>& all, int& done) -> eager {
    (void)co_await r.recv();
    ++done;
    all.back().destroy();  // destroys the last task's frame while it waits in a later batch
    all.back() = {};
  };
  auto plain = [](receiver<int>& r, int& done) -> eager {
    (void)co_await r.recv();
    ++done;
  };
  tasks[0] = cancel_the_last(receivers[0], tasks, finished).handle;
  for (int i = 1; i < count; ++i) tasks[i] = plain(receivers[i], finished).handle;
  CHECK(finished == 0);
  REQUIRE(tx.send(1));
  CHECK(finished == count - 1);
  CHECK_FALSE(tasks.back());
  for (int i = 0; i < count - 1; ++i) {
    REQUIRE(tasks[i].done());
    tasks[i].destroy();
  }
}

TEST_CASE("blocking forms are refused on runtime worker threads", "[broadcast]") {
  auto [tx, rx] = channel<int>(4);
  postal::detail::on_executor_thread = true;
  CHECK_THROWS_AS(rx.blocking_recv(), std::logic_error);
  CHECK_THROWS_AS(tx.blocking_closed(), std::logic_error);
  postal::detail::on_executor_thread = false;
}

TEST_CASE("blocking_recv gets values and closed from another thread", "[broadcast][threads]") {
  auto [tx, rx] = channel<int>(4);
  std::thread sending([moved = std::move(tx)]() mutable {
    for (int i = 0; i < 3; ++i) (void)moved.send(i);
  });
  std::vector<int> got;
  for (;;) {
    auto value = rx.blocking_recv();
    if (!value) {
      CHECK(value.error().is_closed());
      break;
    }
    got.push_back(*value);
  }
  sending.join();
  CHECK(got == std::vector<int>{0, 1, 2});
}

TEST_CASE("blocking_closed returns when the last receiver goes on another thread", "[broadcast][threads]") {
  auto [tx, rx] = channel<int>(4);
  std::thread leaving([moved = std::move(rx)]() mutable { auto gone = std::move(moved); });
  tx.blocking_closed();
  CHECK(tx.receiver_count() == 0);
  leaving.join();
  tx.blocking_closed();  // at once now
}

TEST_CASE("blocking receivers on several threads see increasing values, got + lagged == sent",
          "[broadcast][threads]") {
  constexpr int messages = 50000;
  constexpr int receiver_threads = 3;
  const long before = counted::live.load();
  {
    auto [tx, rx] = channel<counted>(16);
    struct tally {
      long got = 0;
      long lagged = 0;
      long out_of_order = 0;
    };
    std::vector<tally> tallies(receiver_threads);
    std::vector<std::thread> threads;
    for (int r = 0; r < receiver_threads; ++r) {
      threads.emplace_back([in = r == 0 ? std::move(rx) : tx.subscribe(), &t = tallies[r]]() mutable {
        long next = 0;
        for (;;) {
          auto value = in.blocking_recv();
          if (value) {
            if (value->value != next) ++t.out_of_order;
            next = value->value + 1;
            ++t.got;
          } else if (value.error().is_lagged()) {
            t.lagged += static_cast<long>(value.error().missed);
            next += static_cast<long>(value.error().missed);
          } else {
            break;
          }
        }
      });
    }
    std::thread sending([moved = std::move(tx)]() mutable {
      for (int i = 0; i < messages; ++i) {
        (void)moved.send(counted(i));
        if (i % 32 == 31) std::this_thread::yield();  // let the receivers catch up (and wait) now and then
      }
    });
    sending.join();
    for (auto& t : threads) t.join();
    for (const tally& t : tallies) {
      CHECK(t.out_of_order == 0);
      CHECK(t.got + t.lagged == messages);
    }
  }
  CHECK(counted::live.load() == before);
}

TEST_CASE("tasks on other threads receive every value sent from another", "[broadcast][threads]") {
  constexpr int messages = 4000;
  constexpr int receiver_threads = 2;
  auto [tx, rx] = channel<int>(8);
  std::vector<receiver<int>> receivers;
  receivers.push_back(std::move(rx));
  for (int r = 1; r < receiver_threads; ++r) receivers.push_back(tx.subscribe());
  std::vector<long> results(receiver_threads, -1);
  std::vector<std::thread> threads;
  for (int r = 0; r < receiver_threads; ++r) {
    threads.emplace_back([&r_rx = receivers[r], &result = results[r]] {
      manual_executor executor;
      auto follow = [](receiver<int>& in) -> job<long> {
        long next = 0;
        long got = 0;
        long lagged = 0;
        for (;;) {
          auto value = co_await in.recv();
          if (value) {
            if (*value != next) co_return -2;
            ++next;
            ++got;
          } else if (value.error().is_lagged()) {
            next += static_cast<long>(value.error().missed);
            lagged += static_cast<long>(value.error().missed);
          } else {
            co_return got + lagged;
          }
        }
      };
      auto following = spawn(executor, follow(r_rx));
      while (!following.done()) {
        executor.run();
        std::this_thread::yield();
      }
      result = following.result();
    });
  }
  std::thread sending([moved = std::move(tx)]() mutable {
    for (int i = 0; i < messages; ++i) {
      (void)moved.send(i);
      if (i % 32 == 31) std::this_thread::yield();
    }
  });
  sending.join();
  for (auto& t : threads) t.join();
  for (long result : results) CHECK(result == messages);
}

TEST_CASE("closed() in a task completes when the receivers leave on other threads", "[broadcast][threads]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>(4);
  auto rx2 = tx.subscribe();
  auto waiting = spawn(executor, wait_closed(tx));
  REQUIRE_FALSE(waiting.done());
  std::thread first([moved = std::move(rx)]() mutable { auto gone = std::move(moved); });
  std::thread second([moved = std::move(rx2)]() mutable { auto gone = std::move(moved); });
  first.join();
  second.join();
  executor.run();
  CHECK(waiting.done());
}

TEST_CASE("values of several words arrive whole while the ring is overwritten", "[broadcast][threads]") {
  struct triple {
    std::uint64_t a, b, c;
  };
  static_assert(postal::broadcast::detail::copied_as_words<triple>);
  struct large {  // too large to be copied as words: goes through the locked slot
    std::uint64_t words[12];
  };
  static_assert(!postal::broadcast::detail::copied_as_words<large>);
  constexpr std::uint64_t messages = 5000;
  auto run = [](auto make, auto whole, auto first_word) {
    using value_type = decltype(make(0));
    auto [tx, rx] = channel<value_type>(4);  // small: receivers read slots that the sender overwrites
    auto rx2 = tx.subscribe();
    auto follow = [&](receiver<value_type>& in, long& torn, std::uint64_t& seen) {
      std::uint64_t last = 0;
      for (;;) {
        auto value = in.blocking_recv();
        if (value) {
          if (!whole(*value) || (seen > 0 && first_word(*value) <= last)) ++torn;
          last = first_word(*value);
          ++seen;
        } else if (value.error().is_closed()) {
          break;
        }
      }
    };
    long torn1 = 0, torn2 = 0;
    std::uint64_t seen1 = 0, seen2 = 0;
    std::thread first([&] { follow(rx, torn1, seen1); });
    std::thread second([&] { follow(rx2, torn2, seen2); });
    std::thread sending([moved = std::move(tx), make]() mutable {
      for (std::uint64_t i = 1; i <= messages; ++i) {
        (void)moved.send(make(i));
        if (i % 32 == 0) std::this_thread::yield();
      }
    });
    sending.join();
    first.join();
    second.join();
    CHECK(torn1 == 0);
    CHECK(torn2 == 0);
    CHECK(seen1 > 0);
    CHECK(seen2 > 0);
  };
  run(
      [](std::uint64_t i) {
        return triple{i, i * 3, i * 7};
      },
      [](const triple& t) { return t.b == t.a * 3 && t.c == t.a * 7; }, [](const triple& t) { return t.a; });
  run(
      [](std::uint64_t i) {
        large l;
        for (std::uint64_t w = 0; w < 12; ++w) l.words[w] = i + w;
        return l;
      },
      [](const large& l) {
        for (std::uint64_t w = 0; w < 12; ++w)
          if (l.words[w] != l.words[0] + w) return false;
        return true;
      },
      [](const large& l) { return l.words[0]; });
}

TEST_CASE("coroutines resumed inline by the sending thread get every value in order",
          "[broadcast][threads]") {
  // Without an executor a wake resumes the coroutine at once on the sending thread, possibly while the
  // receiving thread is still inside await_suspend: the race the awaitable must tolerate.
  struct detached {
    struct promise_type {
      std::atomic<bool> finished{false};  // set once suspended at the end: the frame may be destroyed then
      detached get_return_object() { return {std::coroutine_handle<promise_type>::from_promise(*this)}; }
      std::suspend_never initial_suspend() noexcept { return {}; }
      auto final_suspend() noexcept {
        struct mark_finished {
          bool await_ready() const noexcept { return false; }
          void await_suspend(std::coroutine_handle<promise_type> self) noexcept {
            self.promise().finished.store(true, std::memory_order_release);
          }
          void await_resume() const noexcept {}
        };
        return mark_finished{};
      }
      void return_void() noexcept {}
      void unhandled_exception() { std::terminate(); }
    };
    std::coroutine_handle<promise_type> handle;
  };
  struct outcome {
    long got = 0;
    long lagged = 0;
    long out_of_order = 0;
  };
  constexpr int messages = 20000;
  auto follow = [](receiver<int>& in, outcome& out) -> detached {
    long next = 0;
    for (;;) {
      auto value = co_await in.recv();
      if (value) {
        if (*value != next) ++out.out_of_order;
        next = *value + 1;
        ++out.got;
      } else if (value.error().is_lagged()) {
        out.lagged += static_cast<long>(value.error().missed);
        next += static_cast<long>(value.error().missed);
      } else {
        break;
      }
    }
  };
  auto [tx, rx] = channel<int>(8);
  auto rx2 = tx.subscribe();
  outcome first_outcome;
  outcome second_outcome;
  auto start = [&](receiver<int>& in, outcome& out) {
    detached task = follow(in, out);
    while (!task.handle.promise().finished.load(std::memory_order_acquire)) std::this_thread::yield();
    task.handle.destroy();
  };
  std::thread first([&] { start(rx, first_outcome); });
  std::thread second([&] { start(rx2, second_outcome); });
  std::thread sending([moved = std::move(tx)]() mutable {
    for (int i = 0; i < messages; ++i) (void)moved.send(i);
  });
  sending.join();
  first.join();
  second.join();
  for (outcome* out : {&first_outcome, &second_outcome}) {
    CHECK(out->out_of_order == 0);
    CHECK(out->got + out->lagged == messages);
  }
}

namespace {
probe probe_recv(receiver<int>& rx) {
  (void)co_await rx.recv();
}
probe probe_closed(const sender<int>& tx) {
  co_await tx.closed();
}
}  // namespace

TEST_CASE("a wait withdrawn before a send is never woken; one cancelled after its wake loses nothing",
          "[broadcast]") {
  waker_census census;
  auto [tx, rx] = channel<int>(4);
  SECTION("cancelled before any wake: the wakers are dropped, never woken") {
    {
      probe recv_wait = probe_recv(rx);
      probe closed_wait = probe_closed(tx);
      recv_wait.start(census);
      closed_wait.start(census);
      REQUIRE_FALSE(recv_wait.done());
      REQUIRE_FALSE(closed_wait.done());
      CHECK(census.live == 2);
    }
    CHECK(census.live == 0);
    REQUIRE(tx.send(1));
    CHECK(census.woken == 0);
    CHECK(received(rx) == 1);
    { auto gone = std::move(rx); }
    CHECK(census.woken == 0);
  }
  SECTION("recv cancelled after its wake: the value stays for the next recv") {
    {
      probe recv_wait = probe_recv(rx);
      recv_wait.start(census);
      REQUIRE(tx.send(7));
      CHECK(census.woken == 1);
    }
    CHECK(census.live == 0);
    CHECK(received(rx) == 7);
    CHECK(is_empty(rx));
  }
  SECTION("recv cancelled after the last sender's wake: closed stays for the next recv") {
    {
      probe recv_wait = probe_recv(rx);
      recv_wait.start(census);
      { auto gone = std::move(tx); }
      CHECK(census.woken == 1);
    }
    CHECK(census.live == 0);
    CHECK(is_closed(rx));
  }
}

TEST_CASE("cancelling a recv while another thread sends loses nothing", "[broadcast][threads]") {
  constexpr int rounds = 4000;
  waker_census census;
  int lost = 0;
  for (int round = 0; round < rounds; ++round) {
    auto ends = channel<int>(2);  // not a structured binding: clang 14 cannot capture those in lambdas
    sender<int>& tx = ends.first;
    receiver<int>& rx = ends.second;
    std::optional<probe> waiting;
    waiting.emplace(probe_recv(rx));
    waiting->start(census);
    std::atomic<bool> go{false};
    std::thread other([&] {
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      (void)tx.send(round);
    });
    go.store(true, std::memory_order_release);
    waiting.reset();  // the cancellation races the send
    other.join();
    auto value = rx.try_recv();  // the cancelled recv took nothing
    if (!value || *value != round) ++lost;
  }
  CHECK(lost == 0);
  CHECK(census.live == 0);
}
