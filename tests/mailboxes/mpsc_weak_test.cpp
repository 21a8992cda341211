// Tests of postal::mpsc's weak senders: the counterparts of every test in Tokio's tests/sync_mpsc_weak.rs
// (downgrade / upgrade, strong and weak counts, an actor that holds a weak sender to itself), plus copies of
// weak senders and an upgrade racing the last strong sender on another thread.
// Not for the rest of mpsc (mpsc_test.cpp). Round counts are small enough for ThreadSanitizer.
//
// Tokio's test (tokio/tests/sync_mpsc_weak.rs) -> postal TEST_CASE here, by its first words [/ SECTION]:
// weak_sender, weak_unbounded_sender      -> "a weak sender upgraded while a strong one" / both
// actor_weak_sender, actor_weak_unbounded_sender -> "an actor holding a weak sender to itself" / both
// test_msgs_dropped_on_rx_drop, test_msgs_dropped_on_unbounded_rx_drop -> "destroying the receiver"
// downgrade_upgrade_sender_success, downgrade_upgrade_unbounded_sender_success -> "upgrade succeeds while"
// downgrade_upgrade_sender_failure, downgrade_upgrade_unbounded_sender_failure
//                                         -> "upgrade fails once the last strong" / "... from that sender"
// downgrade_drop_upgrade, downgrade_drop_upgrade_unbounded
//                                         -> "upgrade fails once the last strong" / "... from a copy"
// downgrade_get_permit_upgrade_no_senders -> "upgrade succeeds while only a permit" / first section
// downgrade_upgrade_get_permit_no_senders -> "upgrade succeeds while only a permit" / second section
// test_tx_count_weak_sender, test_tx_count_weak_unbounded_sender -> "downgrade does not add a strong sender"
// test_rx_is_closed_when_dropping_all_senders_except_weak_senders and its unbounded twin
//                                         -> "the receiver is closed once only weak senders are left"
// sender_strong_count_when_cloned, sender_weak_count_when_downgraded, sender_strong_count_when_dropped,
// sender_weak_count_when_dropped, sender_strong_and_weak_conut, and the five unbounded_sender_* twins
//                                         -> "strong and weak counts follow" / 2 x 5 sections
#include <postal/mpsc.hpp>
#include <postal/oneshot.hpp>

#include <catch2/catch.hpp>
#include <cstddef>
#include <memory>
#include <optional>
#include <thread>
#include <type_traits>
#include <utility>

#include "support/counted.hpp"
#include "support/manual_executor.hpp"
#include "support/mpsc_jobs.hpp"

namespace {

using postal::expected;
using postal::mpsc::channel;
using postal::mpsc::receiver;
using postal::mpsc::send_error;
using postal::mpsc::sender;
using postal::mpsc::try_recv_error;
using postal::mpsc::unbounded_channel;
using postal::mpsc::unbounded_sender;
using postal::test::completed;
using postal::test::counted;
using postal::test::error_of;
using postal::test::job;
using postal::test::manual_executor;
using postal::test::receive;
using postal::test::recv_now;
using postal::test::send_value;
using postal::test::spawn;

// Tokio's weak_sender task: downgrades a copy that is dropped at once, sends 0..9, upgrades the weak sender
// (a strong one still lives) to send 20, and returns a weak sender made from the upgraded one. Every strong
// sender it held is gone when it finishes.
template <class Sender>
auto send_ten_then_upgrade(Sender tx) -> job<std::optional<decltype(tx.downgrade())>> {
  std::optional<decltype(tx.downgrade())> result;
  {
    Sender owned = std::move(tx);
    auto weak = Sender(owned).downgrade();
    bool all_sent = true;
    for (int i = 0; i < 10; ++i) {
      if constexpr (std::is_same_v<Sender, sender<int>>) {
        if (!(co_await owned.send(i))) all_sent = false;
      } else {
        if (!owned.send(i)) all_sent = false;
      }
    }
    if (all_sent) {
      auto upgraded = weak.upgrade();
      if (upgraded) {
        if constexpr (std::is_same_v<Sender, sender<int>>) {
          (void)co_await upgraded->send(20);
        } else {
          (void)upgraded->send(20);
        }
        result.emplace(upgraded->downgrade());
      }
    }
  }
  co_return result;
}

template <class Sender, template <class> class Receiver>
void check_weak_sender_flow(Sender tx, Receiver<int>& rx) {
  manual_executor executor;
  auto task = spawn(executor, send_ten_then_upgrade(std::move(tx)));
  REQUIRE(task.done());
  REQUIRE(task.result());
  auto weak = *task.result();
  for (int i = 0; i < 12; ++i) {
    auto value = recv_now(rx);
    if (i < 10) {
      CHECK(value == std::optional<int>(i));
    } else if (i == 10) {
      CHECK(value == std::optional<int>(20));
    } else {
      CHECK(value == std::nullopt);  // only weak senders are left
    }
  }
  CHECK_FALSE(weak.upgrade());
}

// --- Tokio's actor_weak_sender: an actor whose only way to reach itself is a weak sender ---

// A request for a unique id, answered on `respond_to`, or (no responder) the message the actor sends itself.
// The responder is held by pointer: held by value in a std::variant or std::optional, g++ 12 -O2 reports a
// false -Wmaybe-uninitialized inside mpsc's send_with_permit, which stops a -Werror build.
struct actor_message {
  std::unique_ptr<postal::oneshot::sender<unsigned>> respond_to;
};

// Runs the actor until its channel ends; returns whether it received the message it sent itself.
template <class Receiver, class WeakSender>
job<bool> run_actor(Receiver rx, WeakSender self) {
  unsigned next_id = 0;
  bool received_self_message = false;
  int handled = 0;
  for (;;) {
    auto message = co_await rx.recv();
    if (!message) break;
    if (message->respond_to) {
      (void)message->respond_to->send(++next_id);
    } else {
      received_self_message = true;
    }
    if (handled++ == 0) {
      if (auto strong = self.upgrade()) {
        actor_message to_self{nullptr};
        if constexpr (std::is_same_v<Receiver, receiver<actor_message>>) {
          (void)co_await strong->send(std::move(to_self));
        } else {
          (void)strong->send(std::move(to_self));
        }
        self = strong->downgrade();
      }
    }
  }
  co_return received_self_message;
}

// The actor's handle: asks for a unique id, waits for the answer, then the handle (the last strong sender)
// goes away.
template <class Sender>
job<unsigned> ask_unique_id_then_drop(Sender handle) {
  unsigned id = 0;
  {
    Sender owned = std::move(handle);
    auto [reply_tx, reply_rx] = postal::oneshot::channel<unsigned>();
    actor_message ask{std::make_unique<postal::oneshot::sender<unsigned>>(std::move(reply_tx))};
    if constexpr (std::is_same_v<Sender, sender<actor_message>>) {
      (void)co_await owned.send(std::move(ask));
    } else {
      (void)owned.send(std::move(ask));
    }
    auto reply = co_await reply_rx;
    if (reply) id = *reply;
  }
  co_return id;
}

template <class Sender, class Receiver>
void check_actor_with_weak_self(Sender handle, Receiver rx) {
  manual_executor executor;
  auto weak_self = Sender(handle).downgrade();
  auto actor = spawn(executor, run_actor(std::move(rx), std::move(weak_self)));
  REQUIRE_FALSE(actor.done());
  auto asking = spawn(executor, ask_unique_id_then_drop(std::move(handle)));
  REQUIRE_FALSE(asking.done());
  executor.run();
  REQUIRE(asking.done());
  CHECK(asking.result() == 1);
  REQUIRE(actor.done());  // the actor's weak sender did not keep its channel open
  CHECK(actor.result());
}

}  // namespace

// --- Counterparts of tokio/tests/sync_mpsc_weak.rs ---

TEST_CASE("a weak sender upgraded while a strong one lives can send; once they are gone it cannot upgrade",
          "[mpsc][weak]") {
  SECTION("bounded") {
    auto [tx, rx] = channel<int>(11);
    check_weak_sender_flow(std::move(tx), rx);
  }
  SECTION("unbounded") {
    auto [tx, rx] = unbounded_channel<int>();
    check_weak_sender_flow(std::move(tx), rx);
  }
}

TEST_CASE("an actor holding a weak sender to itself stops once its last outside handle is gone",
          "[mpsc][weak]") {
  SECTION("bounded") {
    auto [tx, rx] = channel<actor_message>(8);
    check_actor_with_weak_self(std::move(tx), std::move(rx));
  }
  SECTION("unbounded") {
    auto [tx, rx] = unbounded_channel<actor_message>();
    check_actor_with_weak_self(std::move(tx), std::move(rx));
  }
}

TEST_CASE("destroying the receiver destroys buffered values, and later sends hand theirs back",
          "[mpsc][weak]") {
  const long before = counted::live.load();
  SECTION("bounded") {
    auto [tx, rx] = channel<counted>(3);
    REQUIRE(completed(send_value(tx, counted(1))));
    REQUIRE(completed(send_value(tx, counted(2))));
    REQUIRE(recv_now(rx));
    REQUIRE(recv_now(rx));
    REQUIRE(completed(send_value(tx, counted(3))));
    CHECK(counted::live.load() == before + 1);
    { auto gone = std::move(rx); }
    CHECK(counted::live.load() == before);
    {
      auto refused = completed(send_value(tx, counted(4)));
      REQUIRE_FALSE(refused);
      CHECK(refused.error().value.value == 4);  // not put into the channel: handed back
    }
    CHECK(counted::live.load() == before);
  }
  SECTION("unbounded") {
    auto [tx, rx] = unbounded_channel<counted>();
    REQUIRE(tx.send(counted(1)));
    REQUIRE(tx.send(counted(2)));
    REQUIRE(recv_now(rx));
    REQUIRE(recv_now(rx));
    REQUIRE(tx.send(counted(3)));
    CHECK(counted::live.load() == before + 1);
    { auto gone = std::move(rx); }
    CHECK(counted::live.load() == before);
    {
      auto refused = tx.send(counted(4));
      REQUIRE_FALSE(refused);
      CHECK(refused.error().value.value == 4);
    }
    CHECK(counted::live.load() == before);
  }
}

TEST_CASE("upgrade succeeds while a strong sender lives", "[mpsc][weak]") {
  SECTION("bounded") {
    auto [tx, rx] = channel<int>(1);
    auto weak = tx.downgrade();
    auto upgraded = weak.upgrade();
    REQUIRE(upgraded);
    CHECK(upgraded->same_channel(tx));
  }
  SECTION("unbounded") {
    auto [tx, rx] = unbounded_channel<int>();
    auto weak = tx.downgrade();
    auto upgraded = weak.upgrade();
    REQUIRE(upgraded);
    CHECK(upgraded->same_channel(tx));
  }
}

TEST_CASE("upgrade fails once the last strong sender is gone", "[mpsc][weak]") {
  SECTION("bounded, downgraded from that sender") {
    auto [tx, rx] = channel<int>(1);
    auto weak = tx.downgrade();
    { auto gone = std::move(tx); }
    CHECK_FALSE(weak.upgrade());
  }
  SECTION("bounded, downgraded from a copy that is already gone") {
    auto [tx, rx] = channel<int>(1);
    auto weak = sender<int>(tx).downgrade();
    CHECK(weak.upgrade());  // tx still lives
    { auto gone = std::move(tx); }
    CHECK_FALSE(weak.upgrade());
  }
  SECTION("unbounded, downgraded from that sender") {
    auto [tx, rx] = unbounded_channel<int>();
    auto weak = tx.downgrade();
    { auto gone = std::move(tx); }
    CHECK_FALSE(weak.upgrade());
  }
  SECTION("unbounded, downgraded from a copy that is already gone") {
    auto [tx, rx] = unbounded_channel<int>();
    auto weak = unbounded_sender<int>(tx).downgrade();
    CHECK(weak.upgrade());
    { auto gone = std::move(tx); }
    CHECK_FALSE(weak.upgrade());
  }
}

TEST_CASE("upgrade succeeds while only a permit keeps the sender side alive", "[mpsc][weak]") {
  SECTION("downgraded before the permit was taken") {
    auto [tx, rx] = channel<int>(1);
    auto weak = tx.downgrade();
    auto reserved = tx.try_reserve();
    REQUIRE(reserved);
    { auto gone = std::move(tx); }  // Tokio's reserve_owned consumes the sender into the permit
    CHECK(weak.upgrade());
  }
  SECTION("downgraded from another sender after the permit was taken") {
    auto [tx, rx] = channel<int>(1);
    auto tx2 = tx;
    auto reserved = tx.try_reserve();
    REQUIRE(reserved);
    { auto gone = std::move(tx); }
    auto weak = tx2.downgrade();
    { auto gone = std::move(tx2); }
    CHECK(weak.upgrade());
  }
}

TEST_CASE("downgrade does not add a strong sender", "[mpsc][weak]") {
  SECTION("bounded") {
    auto [tx, rx] = channel<int>(1);
    auto weak = tx.downgrade();
    auto weak2 = tx.downgrade();
    { auto gone = std::move(tx); }
    CHECK_FALSE(weak.upgrade());
    CHECK_FALSE(weak2.upgrade());
  }
  SECTION("unbounded") {
    auto [tx, rx] = unbounded_channel<int>();
    auto weak = tx.downgrade();
    auto weak2 = tx.downgrade();
    { auto gone = std::move(tx); }
    CHECK_FALSE(weak.upgrade());
    CHECK_FALSE(weak2.upgrade());
  }
}

TEST_CASE("the receiver is closed once only weak senders are left", "[mpsc][weak]") {
  SECTION("bounded") {
    auto [tx, rx] = channel<int>(10);
    [[maybe_unused]] auto weak = sender<int>(tx).downgrade();
    { auto gone = std::move(tx); }
    CHECK(rx.is_closed());
    CHECK(recv_now(rx) == std::nullopt);
    CHECK(error_of(rx.try_recv()) == try_recv_error::disconnected);
  }
  SECTION("unbounded") {
    auto [tx, rx] = unbounded_channel<int>();
    [[maybe_unused]] auto weak = unbounded_sender<int>(tx).downgrade();
    { auto gone = std::move(tx); }
    CHECK(rx.is_closed());
    CHECK(recv_now(rx) == std::nullopt);
    CHECK(error_of(rx.try_recv()) == try_recv_error::disconnected);
  }
}

namespace {
// Tokio's five *_count_* tests, for either kind of sender.
template <class Sender, class Receiver>
void check_counts(Sender tx, Receiver& rx) {
  SECTION("a copy adds a strong sender") {
    auto tx2 = tx;
    CHECK(tx.strong_count() == 2);
    CHECK(tx2.strong_count() == 2);
    CHECK(rx.sender_strong_count() == 2);
  }
  SECTION("downgrade adds a weak sender") {
    auto weak = tx.downgrade();
    CHECK(tx.weak_count() == 1);
    CHECK(weak.weak_count() == 1);
    CHECK(rx.sender_weak_count() == 1);
  }
  SECTION("a dropped copy is no longer counted") {
    { auto tx2 = tx; }
    CHECK(tx.strong_count() == 1);
    CHECK(rx.sender_strong_count() == 1);
  }
  SECTION("a dropped weak sender is no longer counted") {
    { [[maybe_unused]] auto weak = tx.downgrade(); }
    CHECK(tx.weak_count() == 0);
    CHECK(rx.sender_weak_count() == 0);
  }
  SECTION("strong and weak counts together") {
    std::optional<Sender> tx2(tx);
    auto weak = tx.downgrade();
    std::optional<decltype(tx.downgrade())> weak2(tx2->downgrade());
    CHECK(tx.strong_count() == 2);
    CHECK(tx2->strong_count() == 2);
    CHECK(weak.strong_count() == 2);
    CHECK(weak2->strong_count() == 2);
    CHECK(rx.sender_strong_count() == 2);
    CHECK(tx.weak_count() == 2);
    CHECK(tx2->weak_count() == 2);
    CHECK(weak.weak_count() == 2);
    CHECK(weak2->weak_count() == 2);
    CHECK(rx.sender_weak_count() == 2);

    tx2.reset();
    weak2.reset();
    CHECK(tx.strong_count() == 1);
    CHECK(weak.strong_count() == 1);
    CHECK(rx.sender_strong_count() == 1);
    CHECK(tx.weak_count() == 1);
    CHECK(weak.weak_count() == 1);
    CHECK(rx.sender_weak_count() == 1);
  }
}
}  // namespace

TEST_CASE("strong and weak counts follow copies, downgrades and drops", "[mpsc][weak]") {
  SECTION("bounded") {
    auto [tx, rx] = channel<int>(1);
    check_counts(std::move(tx), rx);
  }
  SECTION("unbounded") {
    auto [tx, rx] = unbounded_channel<int>();
    check_counts(std::move(tx), rx);
  }
}

// --- Beyond Tokio's tests ---

TEST_CASE("copies of a weak sender count as weak senders and upgrade alike", "[mpsc][weak]") {
  auto [tx, rx] = channel<int>(2);
  auto weak = tx.downgrade();
  auto weak_copy = weak;
  CHECK(tx.weak_count() == 2);
  CHECK(rx.sender_weak_count() == 2);
  {
    auto upgraded = weak_copy.upgrade();
    REQUIRE(upgraded);
    CHECK(tx.strong_count() == 2);  // an upgraded sender is a strong sender
    REQUIRE(upgraded->try_send(5));
  }
  CHECK(tx.strong_count() == 1);
  CHECK(rx.try_recv().value() == 5);
  { auto gone = std::move(tx); }
  CHECK_FALSE(weak.upgrade());
  CHECK_FALSE(weak_copy.upgrade());
  CHECK(weak.strong_count() == 0);
  CHECK(weak.weak_count() == 2);
  CHECK(rx.sender_strong_count() == 0);
}

TEST_CASE("a waiting recv ends when the last strong sender goes, even though weak senders remain",
          "[mpsc][weak]") {
  manual_executor executor;
  SECTION("bounded") {
    auto [tx, rx] = channel<int>(1);
    [[maybe_unused]] auto weak = tx.downgrade();
    auto receiving = spawn(executor, receive(rx));
    REQUIRE_FALSE(receiving.done());
    { auto gone = std::move(tx); }
    CHECK(executor.wakes() == 1);
    executor.run();
    REQUIRE(receiving.done());
    CHECK(receiving.result() == std::nullopt);
  }
  SECTION("unbounded") {
    auto [tx, rx] = unbounded_channel<int>();
    [[maybe_unused]] auto weak = tx.downgrade();
    auto receiving = spawn(executor, receive(rx));
    REQUIRE_FALSE(receiving.done());
    { auto gone = std::move(tx); }
    CHECK(executor.wakes() == 1);
    executor.run();
    REQUIRE(receiving.done());
    CHECK(receiving.result() == std::nullopt);
  }
}

TEST_CASE("a sender upgraded after the receiver is gone exists, but its sends fail", "[mpsc][weak]") {
  auto [tx, rx] = channel<int>(1);
  auto weak = tx.downgrade();
  { auto gone = std::move(rx); }
  auto upgraded = weak.upgrade();
  REQUIRE(upgraded);  // a strong sender still lives
  CHECK(upgraded->is_closed());
  auto refused = upgraded->try_send(1);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().is_closed());
}

TEST_CASE("an upgrade racing the last strong sender's destruction either fails or yields a working sender",
          "[mpsc][weak][threads]") {
  for (int round = 0; round < 1000; ++round) {
    auto [tx, rx] = channel<int>(1);
    auto weak = tx.downgrade();
    std::thread other([moved = std::move(tx)]() mutable { auto gone = std::move(moved); });
    bool sent = false;
    if (auto upgraded = weak.upgrade()) sent = upgraded->try_send(round).has_value();
    other.join();
    INFO("round " << round);
    if (sent) CHECK(rx.try_recv().value() == round);
    CHECK(error_of(rx.try_recv()) == try_recv_error::disconnected);
    CHECK_FALSE(weak.upgrade());
  }
}
