// Tests of postal::oneshot: the counterparts of Tokio's tests/sync_oneshot.rs, plus cancellation, blocking
// forms, values destroyed exactly once, move-only values and sender/receiver races between threads.
// Not a benchmark: round counts are small enough for ThreadSanitizer.
//
// Tokio 1.x tokio/tests/sync_oneshot.rs -> postal TEST_CASE:
//   send_recv -> send wakes a receiver that waits, which then gets the value
//   async_send_recv -> a value sent before the receiver awaits is received without suspending
//   close_tx -> destroying the sender wakes a waiting receiver with recv_error
//   close_rx -> once the receiver is destroyed, send fails and closed() completes
//   async_rx_closed -> closed() completes when the receiver is destroyed on another thread
//   explicit_close_poll -> close() keeps a value sent before; without one, closed() completes and ...
//   explicit_close_try_recv -> try_recv after close() gets a value sent before, and closed without one
//   close_try_recv_poll (should_panic) -> awaiting a closed receiver after try_recv failed gives recv_error
//     (Tokio panics on a poll after completion; postal reports recv_error)
//   close_after_recv -> close() after the value was received is harmless
//   try_recv_after_completion, try_recv_after_completion_await -> try_recv after the value was taken ...
//   drops_tasks (waker_ref_count) -> every stored waker is released, woken or dropped, never leaked
//     (postal: an end must outlive its waits, so the waits are cancelled before the ends go)
//   receiver_changes_task -> a receive wait handed from one task to another wakes only the second
//   sender_changes_task -> a closed() wait handed from one task to another wakes only the second
//     (Rust re-polls with a new waker; in postal the first wait is cancelled, a concurrent second one throws)
//   receiver_is_terminated_{send,try_recv,drop,rx_close} -> receiver::is_terminated turns true once ...
//   receiver_is_closed_{send,drop,rx_close} -> receiver::is_closed turns true on send, on sender ...
//   receiver_is_empty_{send,try_recv,drop,rx_close} -> receiver::is_empty is false only while a sent ...
//   AssertSend (compile-time Send bound, Rust-only) -> the [threads] tests: both ends used from other
//     threads under ThreadSanitizer (a sender thread and a receiver thread race over many channels, ...)
#include <postal/oneshot.hpp>

#include <atomic>
#include <catch2/catch.hpp>
#include <coroutine>
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

namespace {

using postal::expected;
using postal::oneshot::channel;
using postal::oneshot::receiver;
using postal::oneshot::recv_error;
using postal::oneshot::sender;
using postal::oneshot::try_recv_error;
using postal::test::job;
using postal::test::manual_executor;
using postal::test::probe;
using postal::test::spawn;
using postal::test::waker_census;

template <class T>
job<expected<T, recv_error>> receive(receiver<T>& rx) {
  co_return co_await rx;
}
template <class T>
job<expected<T, recv_error>> receive_owned(receiver<T> rx) {
  co_return co_await std::move(rx);
}
template <class T>
job<bool> wait_closed(sender<T>& tx) {
  co_await tx.closed();
  co_return true;
}

probe probe_receive(receiver<int>& rx) {
  (void)co_await rx;
}
probe probe_receive_owned(receiver<postal::test::counted> rx) {
  (void)co_await std::move(rx);
}
probe probe_closed(sender<int>& tx) {
  co_await tx.closed();
}

}  // namespace

// --- Counterparts of tokio/tests/sync_oneshot.rs ---

TEST_CASE("send wakes a receiver that waits, which then gets the value", "[oneshot]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>();
  auto waiting = spawn(executor, receive(rx));
  REQUIRE_FALSE(waiting.done());
  CHECK(executor.wakes() == 0);

  REQUIRE(tx.send(1));
  CHECK(executor.wakes() == 1);
  CHECK(executor.run() == 1);
  REQUIRE(waiting.done());
  REQUIRE(waiting.result());
  CHECK(*waiting.result() == 1);
}

TEST_CASE("a value sent before the receiver awaits is received without suspending", "[oneshot]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>();
  REQUIRE(tx.send(1));
  auto received = spawn(executor, receive(rx));
  REQUIRE(received.done());
  CHECK(executor.wakes() == 0);
  CHECK(*received.result() == 1);
}

TEST_CASE("destroying the sender wakes a waiting receiver with recv_error", "[oneshot]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>();
  auto waiting = spawn(executor, receive(rx));
  REQUIRE_FALSE(waiting.done());
  { auto gone = std::move(tx); }
  CHECK(executor.wakes() == 1);
  executor.run();
  REQUIRE(waiting.done());
  REQUIRE_FALSE(waiting.result());
  CHECK(waiting.result().error() == recv_error{});
}

TEST_CASE("once the receiver is destroyed, send fails and closed() completes", "[oneshot]") {
  SECTION("send alone") {
    auto [tx, rx] = channel<int>();
    { auto gone = std::move(rx); }
    auto result = tx.send(1);
    REQUIRE_FALSE(result);
    CHECK(result.error() == 1);
  }
  SECTION("through closed()") {
    manual_executor executor;
    auto [tx, rx] = channel<int>();
    auto waiting = spawn(executor, wait_closed(tx));
    REQUIRE_FALSE(waiting.done());
    CHECK_FALSE(tx.is_closed());
    { auto gone = std::move(rx); }
    CHECK(executor.wakes() == 1);
    CHECK(tx.is_closed());
    executor.run();
    CHECK(waiting.done());
    auto result = tx.send(1);
    REQUIRE_FALSE(result);
    CHECK(result.error() == 1);
  }
}

TEST_CASE("closed() completes when the receiver is destroyed on another thread", "[oneshot]") {
  SECTION("awaiting") {
    manual_executor executor;
    auto [tx, rx] = channel<int>();
    auto waiting = spawn(executor, wait_closed(tx));
    std::thread other([moved = std::move(rx)]() mutable { auto gone = std::move(moved); });
    other.join();
    executor.run();
    CHECK(waiting.done());
  }
  SECTION("blocking") {
    for (int round = 0; round < 100; ++round) {
      auto [tx, rx] = channel<int>();
      std::thread other([moved = std::move(rx)]() mutable { auto gone = std::move(moved); });
      tx.blocking_closed();
      CHECK(tx.is_closed());
      other.join();
    }
  }
}

TEST_CASE("close() keeps a value sent before; without one, closed() completes and receiving fails",
          "[oneshot]") {
  manual_executor executor;
  SECTION("value sent, then close") {
    auto [tx, rx] = channel<int>();
    REQUIRE(tx.send(1));
    rx.close();
    auto received = spawn(executor, receive(rx));
    REQUIRE(received.done());
    CHECK(*received.result() == 1);
  }
  SECTION("close wakes closed(), then send fails and receiving fails") {
    auto [tx, rx] = channel<int>();
    auto waiting = spawn(executor, wait_closed(tx));
    REQUIRE_FALSE(waiting.done());
    rx.close();
    CHECK(executor.wakes() == 1);
    CHECK(tx.is_closed());
    executor.run();
    CHECK(waiting.done());
    auto result = tx.send(1);
    REQUIRE_FALSE(result);
    CHECK(result.error() == 1);
    auto received = spawn(executor, receive(rx));
    REQUIRE(received.done());
    CHECK_FALSE(received.result());
  }
  SECTION("close wakes closed(), and receiving fails while the sender still exists") {
    auto [tx, rx] = channel<int>();
    auto waiting = spawn(executor, wait_closed(tx));
    rx.close();
    CHECK(executor.wakes() == 1);
    CHECK(tx.is_closed());
    executor.run();
    CHECK(waiting.done());
    auto received = spawn(executor, receive(rx));
    REQUIRE(received.done());
    CHECK_FALSE(received.result());
  }
}

TEST_CASE("try_recv after close() gets a value sent before, and closed without one", "[oneshot]") {
  SECTION("value sent, then close") {
    auto [tx, rx] = channel<int>();
    REQUIRE(tx.send(1));
    rx.close();
    auto value = rx.try_recv();
    REQUIRE(value);
    CHECK(*value == 1);
  }
  SECTION("no value") {
    manual_executor executor;
    auto [tx, rx] = channel<int>();
    auto waiting = spawn(executor, wait_closed(tx));
    rx.close();
    CHECK(executor.wakes() == 1);
    CHECK(tx.is_closed());
    executor.run();
    CHECK(waiting.done());
    auto value = rx.try_recv();
    REQUIRE_FALSE(value);
    CHECK(value.error() == try_recv_error::closed);
  }
}

TEST_CASE("awaiting a closed receiver after try_recv failed gives recv_error (Tokio panics)", "[oneshot]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>();
  rx.close();
  auto value = rx.try_recv();
  REQUIRE_FALSE(value);
  CHECK(value.error() == try_recv_error::closed);
  auto received = spawn(executor, receive(rx));
  REQUIRE(received.done());
  CHECK_FALSE(received.result());
}

TEST_CASE("close() after the value was received is harmless", "[oneshot]") {
  auto [tx, rx] = channel<int>();
  REQUIRE(tx.send(17));
  CHECK(*rx.try_recv() == 17);
  rx.close();
  CHECK(rx.is_closed());
}

TEST_CASE("try_recv after the value was taken reports closed", "[oneshot]") {
  SECTION("taken by try_recv") {
    auto [tx, rx] = channel<int>();
    REQUIRE(tx.send(17));
    CHECK(*rx.try_recv() == 17);
    auto again = rx.try_recv();
    REQUIRE_FALSE(again);
    CHECK(again.error() == try_recv_error::closed);
    rx.close();
  }
  SECTION("taken by co_await") {
    manual_executor executor;
    auto [tx, rx] = channel<int>();
    REQUIRE(tx.send(17));
    auto received = spawn(executor, receive(rx));
    REQUIRE(received.done());
    CHECK(*received.result() == 17);
    auto again = rx.try_recv();
    REQUIRE_FALSE(again);
    CHECK(again.error() == try_recv_error::closed);
    auto awaited_again = spawn(executor, receive(rx));
    REQUIRE(awaited_again.done());
    CHECK_FALSE(awaited_again.result());
    rx.close();
  }
}

TEST_CASE("try_recv before anything happened reports empty", "[oneshot]") {
  auto [tx, rx] = channel<int>();
  auto value = rx.try_recv();
  REQUIRE_FALSE(value);
  CHECK(value.error() == try_recv_error::empty);
  { auto gone = std::move(tx); }
  value = rx.try_recv();
  REQUIRE_FALSE(value);
  CHECK(value.error() == try_recv_error::closed);
}

TEST_CASE("every stored waker is released, woken or dropped, never leaked", "[oneshot]") {
  waker_census census;
  SECTION("both waits cancelled, then both ends destroyed") {
    auto [tx, rx] = channel<int>();
    {
      probe closed_wait = probe_closed(tx);
      probe receive_wait = probe_receive(rx);
      closed_wait.start(census);
      receive_wait.start(census);
      CHECK(census.live == 2);
    }
    CHECK(census.live == 0);
    CHECK(census.woken == 0);
  }
  SECTION("sender destroyed while the receiver waits: its waker is woken") {
    auto [tx, rx] = channel<int>();
    probe receive_wait = probe_receive(rx);
    receive_wait.start(census);
    { auto gone = std::move(tx); }
    CHECK(census.woken == 1);
    CHECK(census.live == 0);
  }
}

TEST_CASE("a receive wait handed from one task to another wakes only the second", "[oneshot]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>();
  {
    auto first = spawn(executor, receive(rx));
    REQUIRE_FALSE(first.done());
  }  // the first task is cancelled while it waits
  auto second = spawn(executor, receive(rx));
  REQUIRE_FALSE(second.done());
  REQUIRE(tx.send(1));
  CHECK(executor.wakes() == 1);
  CHECK(executor.run() == 1);
  REQUIRE(second.done());
  CHECK(*second.result() == 1);
}

TEST_CASE("a closed() wait handed from one task to another wakes only the second", "[oneshot]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>();
  {
    auto first = spawn(executor, wait_closed(tx));
    REQUIRE_FALSE(first.done());
  }
  auto second = spawn(executor, wait_closed(tx));
  REQUIRE_FALSE(second.done());
  { auto gone = std::move(rx); }
  CHECK(executor.wakes() == 1);
  CHECK(executor.run() == 1);
  CHECK(second.done());
}

TEST_CASE("receiver::is_closed turns true on send, on sender destruction and on close()", "[oneshot]") {
  SECTION("send") {
    auto [tx, rx] = channel<int>();
    CHECK_FALSE(rx.is_closed());
    REQUIRE(tx.send(17));
    CHECK(rx.is_closed());
  }
  SECTION("sender destroyed") {
    auto [tx, rx] = channel<int>();
    CHECK_FALSE(rx.is_closed());
    { auto gone = std::move(tx); }
    CHECK(rx.is_closed());
  }
  SECTION("close") {
    auto [tx, rx] = channel<int>();
    CHECK_FALSE(rx.is_closed());
    rx.close();
    CHECK(rx.is_closed());
  }
}

TEST_CASE("receiver::is_empty is false only while a sent value waits to be received", "[oneshot]") {
  manual_executor executor;
  SECTION("send") {
    auto [tx, rx] = channel<int>();
    CHECK(rx.is_empty());
    REQUIRE(tx.send(17));
    CHECK_FALSE(rx.is_empty());
    auto received = spawn(executor, receive(rx));
    REQUIRE(received.done());
    CHECK(*received.result() == 17);
    CHECK(rx.is_empty());
  }
  SECTION("send, then try_recv") {
    auto [tx, rx] = channel<int>();
    CHECK(rx.is_empty());
    REQUIRE(tx.send(17));
    CHECK_FALSE(rx.is_empty());
    CHECK(*rx.try_recv() == 17);
    CHECK(rx.is_empty());
  }
  SECTION("sender destroyed") {
    auto [tx, rx] = channel<int>();
    CHECK(rx.is_empty());
    { auto gone = std::move(tx); }
    CHECK(rx.is_empty());
    auto received = spawn(executor, receive(rx));
    REQUIRE(received.done());
    CHECK_FALSE(received.result());
    CHECK(rx.is_empty());
  }
  SECTION("close") {
    auto [tx, rx] = channel<int>();
    CHECK(rx.is_empty());
    rx.close();
    CHECK(rx.is_empty());
  }
}

TEST_CASE("receiver::is_terminated turns true once the outcome was received, not before", "[oneshot]") {
  manual_executor executor;
  SECTION("value received by co_await") {
    auto [tx, rx] = channel<int>();
    CHECK_FALSE(rx.is_terminated());
    REQUIRE(tx.send(17));
    CHECK_FALSE(rx.is_terminated());
    auto received = spawn(executor, receive(rx));
    REQUIRE(received.done());
    CHECK(*received.result() == 17);
    CHECK(rx.is_terminated());
  }
  SECTION("value received by try_recv") {
    auto [tx, rx] = channel<int>();
    CHECK_FALSE(rx.is_terminated());
    REQUIRE(tx.send(17));
    CHECK_FALSE(rx.is_terminated());
    CHECK(*rx.try_recv() == 17);
    CHECK(rx.is_terminated());
  }
  SECTION("sender destroyed, then co_await") {
    auto [tx, rx] = channel<int>();
    CHECK_FALSE(rx.is_terminated());
    { auto gone = std::move(tx); }
    CHECK_FALSE(rx.is_terminated());
    auto received = spawn(executor, receive(rx));
    REQUIRE(received.done());
    CHECK_FALSE(received.result());
    CHECK(rx.is_terminated());
  }
  SECTION("close, then co_await") {
    auto [tx, rx] = channel<int>();
    CHECK_FALSE(rx.is_terminated());
    rx.close();
    CHECK_FALSE(rx.is_terminated());
    auto received = spawn(executor, receive(rx));
    REQUIRE(received.done());
    CHECK_FALSE(received.result());
    CHECK(rx.is_terminated());
    CHECK_FALSE(tx.send(1));  // the value comes back; the terminated receiver never holds one
  }
  SECTION("try_recv: empty does not terminate, closed does") {
    auto [tx, rx] = channel<int>();
    CHECK(rx.try_recv().error() == try_recv_error::empty);
    CHECK_FALSE(rx.is_terminated());
    { auto gone = std::move(tx); }
    CHECK(rx.try_recv().error() == try_recv_error::closed);
    CHECK(rx.is_terminated());
  }
  SECTION("blocking_recv") {
    auto [tx, rx] = channel<int>();
    REQUIRE(tx.send(3));
    CHECK(*rx.blocking_recv() == 3);
    CHECK(rx.is_terminated());
    CHECK_FALSE(rx.blocking_recv());
  }
}

// --- Beyond Tokio's tests ---

TEST_CASE("awaiting an rvalue receiver moves it into the wait", "[oneshot]") {
  manual_executor executor;
  SECTION("the value arrives") {
    auto [tx, rx] = channel<int>();
    auto waiting = spawn(executor, receive_owned(std::move(rx)));
    REQUIRE(tx.send(5));
    executor.run();
    REQUIRE(waiting.done());
    CHECK(*waiting.result() == 5);
  }
  SECTION("cancelling the wait destroys the receiver, which closes the channel") {
    auto [tx, rx] = channel<int>();
    {
      auto waiting = spawn(executor, receive_owned(std::move(rx)));
      REQUIRE_FALSE(waiting.done());
      CHECK_FALSE(tx.is_closed());
    }
    CHECK(tx.is_closed());
    CHECK_FALSE(tx.send(5));
  }
}

TEST_CASE("a cancelled receive leaves a later value in the channel", "[oneshot]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>();
  {
    auto waiting = spawn(executor, receive(rx));
    REQUIRE_FALSE(waiting.done());
  }
  REQUIRE(tx.send(3));
  CHECK(executor.wakes() == 0);
  CHECK_FALSE(rx.is_empty());
  CHECK(*rx.try_recv() == 3);
}

TEST_CASE("a wait cancelled after its wake, before it resumed, loses nothing", "[oneshot]") {
  waker_census census;
  manual_executor executor;
  SECTION("receive: the value stays for a later receive") {
    auto [tx, rx] = channel<int>();
    {
      probe receive_wait = probe_receive(rx);
      receive_wait.start(census);
      REQUIRE(tx.send(8));
      CHECK(census.woken == 1);
    }
    CHECK(census.live == 0);
    CHECK_FALSE(rx.is_terminated());
    auto received = spawn(executor, receive(rx));
    REQUIRE(received.done());
    CHECK(*received.result() == 8);
  }
  SECTION("receive: the sender's departure is still reported") {
    auto [tx, rx] = channel<int>();
    {
      probe receive_wait = probe_receive(rx);
      receive_wait.start(census);
      { auto gone = std::move(tx); }
      CHECK(census.woken == 1);
    }
    CHECK(census.live == 0);
    CHECK(rx.try_recv().error() == try_recv_error::closed);
  }
  SECTION("closed(): a later closed() completes at once") {
    auto [tx, rx] = channel<int>();
    {
      probe closed_wait = probe_closed(tx);
      closed_wait.start(census);
      rx.close();
      CHECK(census.woken == 1);
    }
    CHECK(census.live == 0);
    CHECK(spawn(executor, wait_closed(tx)).done());
    CHECK_FALSE(tx.send(1));
  }
  CHECK(executor.wakes() == 0);
}

TEST_CASE("cancelling a wait while another thread completes it loses nothing", "[oneshot][threads]") {
  constexpr int rounds = 4000;
  waker_census census;
  int lost = 0;
  for (int round = 0; round < rounds; ++round) {
    auto ends = channel<int>();  // not a structured binding: clang 14 cannot capture those in lambdas
    sender<int>& tx = ends.first;
    receiver<int>& rx = ends.second;
    const bool receive_round = round % 2 == 0;
    std::optional<probe> waiting;
    waiting.emplace(receive_round ? probe_receive(rx) : probe_closed(tx));
    waiting->start(census);
    std::atomic<bool> go{false};
    bool sent = true;
    std::thread other([&, receive_round] {
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      if (receive_round)
        sent = tx.send(round).has_value();
      else
        rx.close();
    });
    go.store(true, std::memory_order_release);
    waiting.reset();  // the cancellation races the send, resp. the close
    other.join();
    if (receive_round) {
      auto value = rx.try_recv();
      if (!sent || !value || *value != round) ++lost;
    } else if (!tx.is_closed()) {
      ++lost;
    }
  }
  CHECK(lost == 0);
  CHECK(census.live == 0);
}

// The sender leaves the block in the same step that completes it while the receiver waits, and then still
// takes the receiver's waker out: a receiver that withdraws its wait and goes away meanwhile must not free
// the block under it (ASan and TSan watch this test).
TEST_CASE("a receiver cancelled and destroyed while another thread sends or leaves frees the block once",
          "[oneshot][threads]") {
  constexpr int rounds = 4000;
  using postal::test::counted;
  waker_census census;
  const long live_before = counted::live.load();
  for (int round = 0; round < rounds; ++round) {
    auto ends = channel<counted>();
    sender<counted> tx = std::move(ends.first);
    std::optional<probe> waiting;
    waiting.emplace(probe_receive_owned(std::move(ends.second)));  // the wait owns the receiver
    waiting->start(census);
    std::atomic<bool> go{false};
    const bool send_round = round % 2 == 0;
    std::thread other([&, send_round] {
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      if (send_round)
        (void)tx.send(counted(round));
      else
        tx = sender<counted>();  // leaves without sending
    });
    go.store(true, std::memory_order_release);
    waiting.reset();  // withdraws the wait and destroys the receiver, racing the send, resp. the leave
    other.join();
  }
  CHECK(census.live == 0);
  CHECK(counted::live.load() == live_before);
}

TEST_CASE("a cancelled closed() wait is not woken by the receiver going away", "[oneshot]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>();
  {
    auto waiting = spawn(executor, wait_closed(tx));
    REQUIRE_FALSE(waiting.done());
  }
  rx.close();
  CHECK(executor.wakes() == 0);
  CHECK(tx.is_closed());
}

TEST_CASE("closed() on a sender that already sent completes at once", "[oneshot]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>();
  REQUIRE(tx.send(1));
  CHECK(tx.is_closed());
  auto waiting = spawn(executor, wait_closed(tx));
  CHECK(waiting.done());
  CHECK(*rx.try_recv() == 1);
}

TEST_CASE("misuse throws: a second send, a second concurrent wait", "[oneshot]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>();
  SECTION("send twice") {
    REQUIRE(tx.send(1));
    CHECK_THROWS_AS((void)tx.send(2), std::logic_error);
    CHECK(*rx.try_recv() == 1);
  }
  SECTION("two tasks await one receiver") {
    auto first = spawn(executor, receive(rx));
    auto second = spawn(executor, receive(rx));
    REQUIRE(second.done());
    CHECK_THROWS_AS(second.result(), std::logic_error);
    REQUIRE(tx.send(1));
    executor.run();
    REQUIRE(first.done());
    CHECK(*first.result() == 1);
  }
  SECTION("two tasks await closed() on one sender") {
    auto first = spawn(executor, wait_closed(tx));
    auto second = spawn(executor, wait_closed(tx));
    REQUIRE(second.done());
    CHECK_THROWS_AS(second.result(), std::logic_error);
    rx.close();
    executor.run();
    CHECK(first.done());
  }
}

TEST_CASE("blocking forms are refused on runtime worker threads", "[oneshot]") {
  auto [tx, rx] = channel<int>();
  postal::detail::on_executor_thread = true;
  CHECK_THROWS_AS(rx.blocking_recv(), std::logic_error);
  CHECK_THROWS_AS(tx.blocking_closed(), std::logic_error);
  postal::detail::on_executor_thread = false;
  REQUIRE(tx.send(4));
  CHECK(*rx.blocking_recv() == 4);
}

TEST_CASE("blocking_recv gets a value sent from another thread", "[oneshot]") {
  for (int round = 0; round < 200; ++round) {
    auto [tx, rx] = channel<int>();
    bool sent = false;
    std::thread other(
        [moved = std::move(tx), round, &sent]() mutable { sent = moved.send(round).has_value(); });
    auto value = rx.blocking_recv();
    other.join();
    REQUIRE(sent);
    REQUIRE(value);
    CHECK(*value == round);
  }
}

TEST_CASE("blocking_recv returns recv_error when the sender is destroyed on another thread", "[oneshot]") {
  for (int round = 0; round < 200; ++round) {
    auto [tx, rx] = channel<int>();
    std::thread other([moved = std::move(tx)]() mutable { auto gone = std::move(moved); });
    auto value = rx.blocking_recv();
    other.join();
    REQUIRE_FALSE(value);
  }
}

TEST_CASE("move-only values go through", "[oneshot]") {
  manual_executor executor;
  auto [tx, rx] = channel<std::unique_ptr<int>>();
  auto waiting = spawn(executor, receive(rx));
  REQUIRE(tx.send(std::make_unique<int>(42)));
  executor.run();
  REQUIRE(waiting.done());
  REQUIRE(waiting.result());
  CHECK(**waiting.result() == 42);

  auto [tx2, rx2] = channel<std::unique_ptr<int>>();
  { auto gone = std::move(rx2); }
  auto failed = tx2.send(std::make_unique<int>(7));
  REQUIRE_FALSE(failed);
  REQUIRE(failed.error());
  CHECK(*failed.error() == 7);
}

TEST_CASE("every value is destroyed exactly once, whoever ends up with it", "[oneshot]") {
  using postal::test::counted;
  const long before = counted::live.load();
  SECTION("received") {
    auto [tx, rx] = channel<counted>();
    REQUIRE(tx.send(counted(1)));
    {
      auto value = rx.try_recv();
      REQUIRE(value);
      CHECK(value->value == 1);
    }
    CHECK(counted::live.load() == before);
  }
  SECTION("left in the channel when the receiver goes") {
    {
      auto [tx, rx] = channel<counted>();
      REQUIRE(tx.send(counted(2)));
      CHECK(counted::live.load() == before + 1);
    }
    CHECK(counted::live.load() == before);
  }
  SECTION("handed back by a failed send") {
    auto [tx, rx] = channel<counted>();
    rx.close();
    {
      auto result = tx.send(counted(4));
      REQUIRE_FALSE(result);
      CHECK(result.error().value == 4);
      CHECK(counted::live.load() == before + 1);
    }
    CHECK(counted::live.load() == before);
  }
  SECTION("a send after the receiver closed and reported recv_error hands the value back") {
    auto [tx, rx] = channel<counted>();
    rx.close();
    CHECK_FALSE(rx.blocking_recv());
    REQUIRE(rx.is_terminated());
    {
      auto result = tx.send(counted(6));
      REQUIRE_FALSE(result);
      CHECK(result.error().value == 6);
    }
    { auto gone = std::move(rx); }
    CHECK(counted::live.load() == before);
  }
  SECTION("a receiver closed after the send keeps the value until it goes") {
    auto [tx, rx] = channel<counted>();
    REQUIRE(tx.send(counted(5)));
    rx.close();
    CHECK(counted::live.load() == before + 1);
    { auto gone = std::move(rx); }
    CHECK(counted::live.load() == before);
  }
}

TEST_CASE("a sender thread and a receiver thread race over many channels", "[oneshot][threads]") {
  using postal::test::counted;
  constexpr int rounds = 20000;
  std::vector<sender<counted>> senders;
  std::vector<receiver<counted>> receivers;
  for (int i = 0; i < rounds; ++i) {
    auto [tx, rx] = channel<counted>();
    senders.push_back(std::move(tx));
    receivers.push_back(std::move(rx));
  }
  // Per round, by round % 4: 0 send / blocking_recv; 1 sender destroyed / blocking_recv; 2 send / close then
  // try_recv; 3 send / receiver destroyed.
  std::vector<char> sent(rounds, 0);
  std::vector<char> received(rounds, 0);
  std::vector<char> wrong_on_send(rounds, 0);
  std::vector<char> wrong_on_receive(rounds, 0);
  std::atomic<int> receiver_round{0};  // lockstep, so that both threads work on the same channel at once
  std::thread sending([&] {
    for (int i = 0; i < rounds; ++i) {
      while (receiver_round.load(std::memory_order_acquire) <= i) std::this_thread::yield();
      if (i % 4 == 1) {
        auto gone = std::move(senders[i]);
      } else {
        auto result = senders[i].send(counted(i));
        sent[i] = result.has_value();
        if (!result && result.error().value != i) wrong_on_send[i] = 1;
      }
    }
  });
  std::thread receiving([&] {
    for (int i = 0; i < rounds; ++i) {
      receiver_round.store(i + 1, std::memory_order_release);
      switch (i % 4) {
        case 0:
        case 1: {
          auto value = receivers[i].blocking_recv();
          received[i] = value.has_value();
          if (value && value->value != i) wrong_on_receive[i] = 1;
          break;
        }
        case 2: {
          receivers[i].close();
          auto value = receivers[i].try_recv();
          received[i] = value.has_value();
          if (value && value->value != i) wrong_on_receive[i] = 1;
          if (!value && value.error() != try_recv_error::closed && value.error() != try_recv_error::empty)
            wrong_on_receive[i] = 1;
          break;
        }
        default: {
          auto gone = std::move(receivers[i]);
          break;
        }
      }
    }
  });
  sending.join();
  receiving.join();
  for (int i = 0; i < rounds; ++i) {
    INFO("round " << i);
    REQUIRE_FALSE(wrong_on_send[i]);
    REQUIRE_FALSE(wrong_on_receive[i]);
    switch (i % 4) {
      case 0:
        REQUIRE(sent[i]);
        REQUIRE(received[i]);
        break;
      case 1:
        REQUIRE_FALSE(received[i]);
        break;
      case 2:
        REQUIRE(sent[i] == received[i]);  // a successful send is never lost to close()
        break;
      default:
        break;
    }
  }
  senders.clear();
  receivers.clear();
  CHECK(counted::live.load() == 0);
}

TEST_CASE("tasks awaiting on one thread are woken by sends from another", "[oneshot][threads]") {
  constexpr int rounds = 10000;
  std::vector<sender<int>> senders;
  std::vector<receiver<int>> receivers;
  for (int i = 0; i < rounds; ++i) {
    auto [tx, rx] = channel<int>();
    senders.push_back(std::move(tx));
    receivers.push_back(std::move(rx));
  }
  manual_executor executor;
  std::atomic<int> next_to_send{0};
  int failed_sends = 0;
  std::thread sending([&] {
    for (int i = 0; i < rounds; ++i) {
      while (next_to_send.load(std::memory_order_acquire) <= i) std::this_thread::yield();
      if (!senders[i].send(i)) ++failed_sends;
    }
  });
  int correct = 0;
  for (int i = 0; i < rounds; ++i) {
    next_to_send.store(i + 1, std::memory_order_release);  // the send races the task's suspension
    auto waiting = spawn(executor, receive(receivers[i]));
    while (!waiting.done()) {
      executor.run();
      std::this_thread::yield();
    }
    if (waiting.result() && *waiting.result() == i) ++correct;
  }
  sending.join();
  CHECK(failed_sends == 0);
  CHECK(correct == rounds);
}

// --- Timed receive (postal's own; Tokio composes tokio::time::timeout with the receiver) ---

namespace {
job<expected<int, postal::oneshot::recv_timeout_error>> receive_until(receiver<int>& rx,
                                                                      std::chrono::milliseconds timeout) {
  co_return co_await rx.recv_until(std::chrono::steady_clock::now() + timeout);
}
}  // namespace

TEST_CASE("recv_until: the deadline passes first, and a value sent later stays for the next receive",
          "[oneshot][timeout]") {
  using namespace std::chrono_literals;
  manual_executor executor;
  auto [tx, rx] = channel<int>();
  auto waiting = spawn(executor, receive_until(rx, 10ms));
  REQUIRE_FALSE(waiting.done());
  CHECK(executor.pending_timers() == 1);
  executor.advance(20ms);
  executor.run();
  REQUIRE(waiting.done());
  REQUIRE_FALSE(waiting.result());
  CHECK(waiting.result().error().is_timeout());
  REQUIRE(tx.send(5));
  auto later = rx.try_recv();
  REQUIRE(later);
  CHECK(*later == 5);
}

TEST_CASE("recv_until: a value before the deadline wins, and the late timer wakes nobody",
          "[oneshot][timeout]") {
  using namespace std::chrono_literals;
  manual_executor executor;
  auto [tx, rx] = channel<int>();
  auto waiting = spawn(executor, receive_until(rx, 50ms));
  REQUIRE(tx.send(1));
  CHECK(executor.wakes() == 1);
  executor.run();
  REQUIRE(waiting.done());
  REQUIRE(waiting.result());
  CHECK(*waiting.result() == 1);
  executor.advance(100ms);  // the timer fires into a disarmed arbiter
  CHECK(executor.wakes() == 1);
}

TEST_CASE("recv_until: the sender going away ends the wait with closed", "[oneshot][timeout]") {
  using namespace std::chrono_literals;
  manual_executor executor;
  auto [tx, rx] = channel<int>();
  auto waiting = spawn(executor, receive_until(rx, 50ms));
  { auto gone = std::move(tx); }
  executor.run();
  REQUIRE(waiting.done());
  REQUIRE_FALSE(waiting.result());
  CHECK(waiting.result().error().is_closed());
}

TEST_CASE("blocking_recv_until: times out when nothing is sent, gets a value sent by another thread",
          "[oneshot][timeout][threads]") {
  using namespace std::chrono_literals;
  {
    auto [tx, rx] = channel<int>();
    auto result = rx.blocking_recv_until(std::chrono::steady_clock::now() + 2ms);
    REQUIRE_FALSE(result);
    CHECK(result.error().is_timeout());
    REQUIRE(tx.send(3));  // still receivable after the timeout
    CHECK(*rx.try_recv() == 3);
  }
  for (int round = 0; round < 200; ++round) {
    auto [tx, rx] = channel<int>();
    std::thread other([reply = std::move(tx)]() mutable { (void)reply.send(7); });
    auto result = rx.blocking_recv_until(std::chrono::steady_clock::now() + 10s);
    other.join();
    REQUIRE(result);
    CHECK(*result == 7);
  }
  for (int round = 0; round < 200; ++round) {  // a deadline racing the send: a value or a timeout, never lost
    auto [tx, rx] = channel<int>();
    std::thread other([reply = std::move(tx)]() mutable { (void)reply.send(9); });
    auto result = rx.blocking_recv_until(std::chrono::steady_clock::now() + 20us);
    other.join();
    if (result) {
      CHECK(*result == 9);
    } else {
      CHECK(result.error().is_timeout());
      CHECK(*rx.try_recv() == 9);
    }
  }
}
