// Tests of postal::mpsc: the counterparts of every test in Tokio's tests/sync_mpsc.rs, plus the hand-over of
// freed slots to the oldest waiter, cancellation, timeouts on a fake clock, blocking forms, values destroyed
// exactly once, move-only values and races between threads. Weak senders: mpsc_weak_test.cpp.
// Not a benchmark: round counts are small enough for ThreadSanitizer.
//
// Tokio's test (tokio/tests/sync_mpsc.rs) -> the postal TEST_CASE here, by its first words [/ SECTION]:
// send_recv_with_buffer                   -> "values sent through a permit and through try_send arrive"
// reserve_disarm                          -> "a freed slot wakes only the oldest waiting reserve"
// async_send_recv_with_buffer             -> "a sending task and a receiving task exchange" / bounded
// async_send_recv_unbounded               -> "a sending task and a receiving task exchange" / unbounded
// send_recv_stream_with_buffer, send_recv_stream_unbounded: C++ has no Stream; same flow as the two above
// async_send_recv_many_with_buffer        -> "recv_many with limit 0 returns at once"
// start_send_past_cap                     -> "a cancelled reserve is never woken"
// buffer_gteq_one (a panic)               -> "capacity 0 or above max_channel_capacity throws"
// send_recv_unbounded                     -> "unbounded: sends never wait"
// send_recv_many_unbounded                -> "unbounded: recv_many takes up to the limit"
// send_recv_many_{bounded,unbounded}_capacity -> "recv_many takes up to the limit and waits" / both sections
//   (their Vec capacity checks are Rust allocation details, not part of postal's contract)
// recv_many_with_non_empty_buffer_{bounded,unbounded}_rx_closed_and_idle -> "recv_many on a closed, empty"
// no_t_bounds_buffer, no_t_bounds_unbounded -> "a value type that cannot be copied" (Debug: Rust formatting)
// send_recv_buffer_limited                -> "a slot freed while a reserve waits goes to it"
// recv_close_gets_none_idle               -> "after close() on an idle channel"
// recv_close_gets_none_reserved           -> "close() fails a waiting reserve"
// tx_close_gets_none                      -> "recv returns nothing once every sender is gone"
// try_send_fail, try_send_fail_with_try_recv -> "try_send on a full channel fails with full" / both sections
// try_reserve_fails                       -> "try_reserve fails with full while a permit holds the only slot"
// reserve_many_above_cap, try_reserve_many_zero, reserve_many_zero, try_reserve_many_edge_cases: postal has
//   no reserve_many, so no zero or oversized counts; what many permits do is checked by the next two lines
// reserve_many_and_send, try_reserve_many_and_send, try_reserve_many_full
//                                         -> "capacity() counts every outstanding permit and buffered value"
// drop_permit_iterator_releases_permits   -> "dropping several permits lets as many waiting reserves through"
// reserve_many_on_closed_channel, try_reserve_many_on_closed_channel -> "destroying the receiver destroys"
// drop_permit_releases_permit             -> "dropping an unused permit wakes a waiting reserve"
// dropping_rx_closes_channel              -> "destroying the receiver destroys buffered values" / awaiting
// dropping_rx_closes_channel_for_try      -> the same / try forms (try_reserve_owned: permits are owned here)
// unconsumed_messages_are_dropped         -> "values still buffered are destroyed when both ends go"
// blocking_recv                           -> "blocking_recv on a thread gets a value sent by a task"
// blocking_send                           -> "blocking_send on a thread reaches a receiving task"
// blocking_recv_async, blocking_send_async (panics) -> "blocking forms throw std::logic_error"
// ready_close_cancel_bounded              -> "after close(), recv waits for an outstanding permit"
// permit_available_not_acquired_close     -> "close() wakes a waiting reserve; cancelling it after the wake"
// try_recv_bounded                        -> "try_recv drains a bounded channel"
// try_recv_unbounded                      -> "unbounded: try_recv drains in order"
// try_recv_after_receiver_close           -> "try_recv reports disconnected after close()"
// try_recv_close_while_empty_{bounded,unbounded} -> "try_recv on an empty channel reports empty" / sections
// recv_timeout                            -> "send_timeout succeeds while there is room, times out when full"
// recv_timeout_panic (a panic)            -> "send_timeout in a coroutine without timers throws"
// test_tx_capacity                        -> "capacity() drops with each reserve and each buffered value"
// test_rx_is_{closed,not_closed}_* (7)   -> "receiver::is_closed is true" / one SECTION each
// test_rx_is_empty_*, test_rx_is_not_empty_* (6) -> "receiver::is_empty is true" / one SECTION each
// test_rx_len_* (8)                       -> "receiver::len counts buffered values" / one SECTION each
// test_rx_unbounded_is_{closed,not_closed}_* (5) -> "unbounded_receiver::is_closed is true" / a SECTION each
// test_rx_unbounded_is_{empty,not_empty}_* (5) -> "unbounded_receiver::is_empty is true" / one SECTION each
// test_rx_unbounded_len_* (8)             -> "unbounded_receiver::len counts buffered" / one SECTION each
// test_is_empty_32_msgs                   -> "is_empty holds after each send-then-receive"
// drop_all_elements_during_panic: a throwing destructor terminates in C++ (destructors are noexcept); that
//   every buffered value is destroyed is checked by "every value is destroyed exactly once"
// AssertRefUnwindSafe / AssertUnwindSafe impls: Rust unwind-safety markers, no C++ counterpart
#include <postal/detail/channel_access.hpp>
#include <postal/mpsc.hpp>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "support/counted.hpp"
#include "support/manual_executor.hpp"
#include "support/mpsc_jobs.hpp"

namespace {

using postal::expected;
using postal::mpsc::channel;
using postal::mpsc::closed_error;
using postal::mpsc::max_channel_capacity;
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
using postal::test::completed;
using postal::test::counted;
using postal::test::error_of;
using postal::test::job;
using postal::test::manual_executor;
using postal::test::receive;
using postal::test::recv_now;
using postal::test::send_value;
using postal::test::spawn;
using namespace std::chrono_literals;

template <class T>
using reserve_result = expected<permit<T>, closed_error>;

// --- Coroutines run on a manual_executor ---

// Receives until the channel reports its end.
template <template <class> class Receiver, class T>
job<std::vector<T>> receive_all(Receiver<T>& rx) {
  std::vector<T> values;
  for (;;) {
    auto value = co_await rx.recv();
    if (!value) break;
    values.push_back(std::move(*value));
  }
  co_return values;
}
template <template <class> class Receiver, class T>
job<std::size_t> receive_many(Receiver<T>& rx, std::vector<T>& out, std::size_t limit) {
  co_return co_await rx.recv_many(out, limit);
}
template <class T>
job<expected<void, send_timeout_error<T>>> send_with_timeout(sender<T>& tx, std::type_identity_t<T> value,
                                                             std::chrono::steady_clock::duration timeout) {
  co_return co_await tx.send_timeout(std::move(value), timeout);
}
template <class T>
job<reserve_result<T>> reserve_slot(sender<T>& tx) {
  co_return co_await tx.reserve();
}
template <class Sender>
job<bool> wait_closed(Sender& tx) {
  co_await tx.closed();
  co_return true;
}
// Sends every value in order, then destroys the sender before finishing (like a task that ends).
template <class T>
job<bool> send_all_then_drop(sender<T> tx, std::vector<T> values) {
  bool all_sent = true;
  {
    sender<T> owned = std::move(tx);
    for (auto& value : values)
      if (!(co_await owned.send(std::move(value)))) all_sent = false;
  }
  co_return all_sent;
}
template <class T>
job<bool> send_all_then_drop(unbounded_sender<T> tx, std::vector<T> values) {
  bool all_sent = true;
  {
    unbounded_sender<T> owned = std::move(tx);
    for (auto& value : values)
      if (!owned.send(std::move(value))) all_sent = false;
  }
  co_return all_sent;
}

// A spawned job that the test cancels (destroys) at a chosen point with reset().
template <class T>
std::unique_ptr<job<T>> spawn_cancellable(manual_executor& executor, job<T> j) {
  return std::make_unique<job<T>>(spawn(executor, std::move(j)));
}
// `co_await tx.reserve()` where a slot is free.
template <class T>
permit<T> reserve_now(sender<T>& tx) {
  auto reserved = completed(reserve_slot(tx));
  REQUIRE(reserved);
  return std::move(*reserved);
}

// --- A coroutine run under hooks chosen by the test (or none), for the "no timers" cases ---

// Suspend hooks without timers that count the wakers they handed out and that are still alive.
struct timerless_hooks final : postal::suspend_hooks {
  int live = 0;
  postal::waker waker_for(std::coroutine_handle<>) noexcept override {
    ++live;
    return postal::waker(this, &table);
  }
  bool wake_at(std::chrono::steady_clock::time_point, postal::waker&) override { return false; }
  static void wake(void* data) noexcept { --static_cast<timerless_hooks*>(data)->live; }
  static void drop(void* data) noexcept { --static_cast<timerless_hooks*>(data)->live; }
  static constexpr postal::waker::vtable table{&timerless_hooks::wake, &timerless_hooks::drop};
};

struct hooked_task {
  struct promise_type {
    postal::suspend_hooks* hooks = nullptr;
    std::exception_ptr error;
    hooked_task get_return_object() {
      return hooked_task(std::coroutine_handle<promise_type>::from_promise(*this));
    }
    std::suspend_always initial_suspend() noexcept { return {}; }
    std::suspend_always final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { error = std::current_exception(); }
    postal::suspend_hooks* postal_hooks() noexcept { return hooks; }  // null: no executor at all
  };
  explicit hooked_task(std::coroutine_handle<promise_type> h) : handle(h) {}
  hooked_task(hooked_task&& other) noexcept : handle(std::exchange(other.handle, {})) {}
  ~hooked_task() {
    if (handle) handle.destroy();
  }
  void start(postal::suspend_hooks* hooks) {
    handle.promise().hooks = hooks;
    handle.resume();
  }
  bool done() const { return handle.done(); }
  void rethrow() const {
    if (handle.promise().error) std::rethrow_exception(handle.promise().error);
  }
  std::coroutine_handle<promise_type> handle;
};

hooked_task send_timeout_under_hooks(sender<int>& tx, int value) {
  (void)co_await tx.send_timeout(value, 1h);
}

// No copy, no comparison, no default constructor.
struct bare_value {
  explicit bare_value(int v) : value(v) {}
  bare_value(bare_value&&) noexcept = default;
  bare_value& operator=(bare_value&&) noexcept = default;
  int value;
};

}  // namespace

// --- Counterparts of tokio/tests/sync_mpsc.rs ---

TEST_CASE("values sent through a permit and through try_send arrive in order, then recv ends", "[mpsc]") {
  auto [tx, rx] = channel<int>(16);
  {
    auto reserved = reserve_now(tx);
    std::move(reserved).send(1);
  }
  REQUIRE(tx.try_send(2));
  { auto gone = std::move(tx); }
  CHECK(recv_now(rx) == std::optional<int>(1));
  CHECK(recv_now(rx) == std::optional<int>(2));
  CHECK(recv_now(rx) == std::nullopt);
}

TEST_CASE("a freed slot wakes only the oldest waiting reserve; a dropped permit frees a slot too", "[mpsc]") {
  auto [tx, rx] = channel<int>(2);
  auto tx1 = tx;
  auto tx2 = tx;
  auto tx3 = tx;
  auto tx4 = std::move(tx);
  auto permit1 = reserve_now(tx1);
  auto permit2 = reserve_now(tx2);

  manual_executor executor3, executor4, executor1;  // one each, so that wakes() tells who was woken
  auto reserve3 = spawn(executor3, reserve_slot(tx3));
  REQUIRE_FALSE(reserve3.done());
  auto reserve4 = spawn(executor4, reserve_slot(tx4));
  REQUIRE_FALSE(reserve4.done());

  std::move(permit1).send(1);
  CHECK(executor3.wakes() == 0);  // the value still occupies the slot
  CHECK(recv_now(rx) == std::optional<int>(1));
  CHECK(executor3.wakes() == 1);
  CHECK(executor4.wakes() == 0);

  { auto dropped = std::move(permit2); }
  CHECK(executor4.wakes() == 1);

  auto reserve1 = spawn(executor1, reserve_slot(tx1));  // both slots now belong to the woken reserves
  CHECK_FALSE(reserve1.done());
  CHECK(tx1.capacity() == 0);

  executor3.run();
  executor4.run();
  REQUIRE(reserve3.done());
  CHECK(reserve3.result());
  REQUIRE(reserve4.done());
  CHECK(reserve4.result());
  CHECK(executor1.wakes() == 0);
}

TEST_CASE("a sending task and a receiving task exchange values, then recv ends when the sender goes",
          "[mpsc]") {
  manual_executor executor;
  SECTION("bounded") {
    auto [tx, rx] = channel<int>(16);
    auto receiving = spawn(executor, receive_all(rx));
    REQUIRE_FALSE(receiving.done());
    auto sending = spawn(executor, send_all_then_drop(std::move(tx), std::vector<int>{1, 2}));
    REQUIRE(sending.done());
    CHECK(sending.result());
    CHECK(executor.wakes() == 1);
    executor.run();
    REQUIRE(receiving.done());
    CHECK(receiving.result() == std::vector<int>{1, 2});
  }
  SECTION("unbounded") {
    auto [tx, rx] = unbounded_channel<int>();
    auto receiving = spawn(executor, receive_all(rx));
    REQUIRE_FALSE(receiving.done());
    auto sending = spawn(executor, send_all_then_drop(std::move(tx), std::vector<int>{1, 2}));
    REQUIRE(sending.done());
    CHECK(sending.result());
    CHECK(executor.wakes() == 1);
    executor.run();
    REQUIRE(receiving.done());
    CHECK(receiving.result() == std::vector<int>{1, 2});
  }
}

TEST_CASE("recv_many with limit 0 returns at once; otherwise it takes what is there, up to the limit",
          "[mpsc]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>(2);
  std::vector<int> buffer;
  CHECK(completed(receive_many(rx, buffer, 0)) == 0);  // open and empty, yet it does not wait
  CHECK(buffer.empty());

  auto sending = spawn(executor, send_all_then_drop(std::move(tx), std::vector<int>{1, 2, 7, 0}));
  REQUIRE_FALSE(sending.done());  // the third value waits for room

  std::size_t received = 0;
  for (int round = 0; received < 4 && round < 8; ++round) {
    auto taking = spawn(executor, receive_many(rx, buffer, 3));
    executor.run();
    REQUIRE(taking.done());
    const std::size_t taken = taking.result();
    CHECK(taken >= 1);
    CHECK(taken <= 3);
    received += taken;
    CHECK(buffer.size() == received);
  }
  CHECK(buffer == std::vector<int>{1, 2, 7, 0});
  executor.run();
  REQUIRE(sending.done());
  CHECK(sending.result());
  CHECK(completed(receive_many(rx, buffer, 3)) == 0);
  CHECK(buffer.size() == 4);
}

TEST_CASE("a cancelled reserve is never woken, and a woken one that is cancelled gives its slot back",
          "[mpsc]") {
  auto [tx1, rx] = channel<int>(1);
  auto tx2 = tx1;
  REQUIRE(tx1.try_send(0));

  manual_executor executor1, executor2;
  auto reserve1 = spawn_cancellable(executor1, reserve_slot(tx1));
  REQUIRE_FALSE(reserve1->done());
  auto reserve2 = spawn_cancellable(executor2, reserve_slot(tx2));
  REQUIRE_FALSE(reserve2->done());

  reserve1.reset();  // cancelled while first in line
  CHECK(recv_now(rx) == std::optional<int>(0));
  CHECK(executor2.wakes() == 1);
  CHECK(executor1.wakes() == 0);

  reserve2.reset();  // woken (the slot is its) but cancelled before it ran
  CHECK(tx1.capacity() == 1);

  { auto gone = std::move(tx1); }
  { auto gone = std::move(tx2); }
  CHECK(recv_now(rx) == std::nullopt);
}

TEST_CASE("capacity 0 or above max_channel_capacity throws std::invalid_argument (Tokio panics)", "[mpsc]") {
  CHECK_THROWS_AS((void)channel<int>(0), std::invalid_argument);
  CHECK(max_channel_capacity >= (std::size_t{1} << 30));
  CHECK_THROWS_AS((void)channel<int>(max_channel_capacity + 1), std::invalid_argument);
  auto [tx, rx] = channel<int>(1);
  CHECK(tx.max_capacity() == 1);
}

TEST_CASE("unbounded: sends never wait, values arrive in order, recv ends once the senders are gone",
          "[mpsc]") {
  auto [tx, rx] = unbounded_channel<int>();
  REQUIRE(tx.send(1));
  REQUIRE(tx.send(2));
  CHECK(recv_now(rx) == std::optional<int>(1));
  CHECK(recv_now(rx) == std::optional<int>(2));
  { auto gone = std::move(tx); }
  CHECK(recv_now(rx) == std::nullopt);
}

TEST_CASE("unbounded: recv_many takes up to the limit, appends, and returns 0 once closed and drained",
          "[mpsc]") {
  auto [tx, rx] = unbounded_channel<int>();
  std::vector<int> buffer;
  CHECK(completed(receive_many(rx, buffer, 0)) == 0);
  CHECK(buffer.empty());

  for (int value : {7, 13, 100, 1002}) REQUIRE(tx.send(value));
  CHECK(completed(receive_many(rx, buffer, 0)) == 0);  // limit 0 takes nothing even when values wait
  CHECK(buffer.empty());
  for (int i = 0; i < 4; ++i) CHECK(completed(receive_many(rx, buffer, 1)) == 1);
  CHECK(buffer == std::vector<int>{7, 13, 100, 1002});

  buffer.clear();
  for (int value : {5, 6, 7, 2}) REQUIRE(tx.send(value));
  CHECK(completed(receive_many(rx, buffer, 32)) == 4);
  CHECK(buffer == std::vector<int>{5, 6, 7, 2});

  { auto gone = std::move(tx); }
  CHECK(completed(receive_many(rx, buffer, 4)) == 0);
  CHECK(buffer == std::vector<int>{5, 6, 7, 2});
  CHECK(recv_now(rx) == std::nullopt);
}

namespace {
// The body shared by the bounded and unbounded forms of Tokio's send_recv_many_*_capacity: `limit + 1` values
// are buffered; recv_many takes `limit`, then the last one; then it waits until a task sends "final" and
// ends (destroying the last sender), and after that returns 0.
template <class Sender, class Receiver>
void check_recv_many_up_to_limit_then_waiting(Sender tx, Receiver& rx, std::vector<std::string> wanted) {
  const std::size_t limit = wanted.size();
  std::vector<std::string> buffer;
  CHECK(completed(receive_many(rx, buffer, limit)) == limit);
  CHECK(buffer == wanted);
  CHECK(completed(receive_many(rx, buffer, limit)) == 1);
  wanted.push_back("one more");
  CHECK(buffer == wanted);

  manual_executor executor;
  auto taking = spawn(executor, receive_many(rx, buffer, limit));
  REQUIRE_FALSE(taking.done());  // empty, and a sender is alive
  auto sending = spawn(executor, send_all_then_drop(std::move(tx), std::vector<std::string>{"final"}));
  REQUIRE(sending.done());
  CHECK(sending.result());
  executor.run();
  REQUIRE(taking.done());
  CHECK(taking.result() == 1);
  wanted.push_back("final");
  CHECK(buffer == wanted);
  CHECK(completed(receive_many(rx, buffer, limit)) == 0);  // closed and drained
  CHECK(buffer == wanted);
}
}  // namespace

TEST_CASE("recv_many takes up to the limit and waits for a value from a sender that then goes away",
          "[mpsc]") {
  std::vector<std::string> wanted;
  for (int i = 0; i < 9; ++i) wanted.push_back(std::to_string(i));
  SECTION("bounded") {
    auto [tx, rx] = channel<std::string>(100);
    for (const auto& value : wanted) REQUIRE(completed(send_value(tx, value)));
    REQUIRE(completed(send_value(tx, "one more")));
    check_recv_many_up_to_limit_then_waiting(std::move(tx), rx, wanted);
  }
  SECTION("unbounded") {
    auto [tx, rx] = unbounded_channel<std::string>();
    for (const auto& value : wanted) REQUIRE(tx.send(value));
    REQUIRE(tx.send("one more"));
    check_recv_many_up_to_limit_then_waiting(std::move(tx), rx, wanted);
  }
}

TEST_CASE("recv_many on a closed, empty channel returns 0 and leaves the vector as it was", "[mpsc]") {
  std::vector<int> buffer{1};
  SECTION("bounded") {
    auto [tx, rx] = channel<int>(1);
    rx.close();
    CHECK(completed(receive_many(rx, buffer, 1)) == 0);
  }
  SECTION("unbounded") {
    auto [tx, rx] = unbounded_channel<int>();
    rx.close();
    CHECK(completed(receive_many(rx, buffer, 1)) == 0);
  }
  CHECK(buffer == std::vector<int>{1});
}

TEST_CASE("a value type that cannot be copied, compared or default-constructed goes through", "[mpsc]") {
  SECTION("bounded") {
    auto [tx, rx] = channel<bare_value>(100);
    auto copy = tx;  // senders are copyable whatever T is
    REQUIRE(copy.try_send(bare_value(1)));
    auto received = recv_now(rx);
    REQUIRE(received);
    CHECK(received->value == 1);
  }
  SECTION("unbounded") {
    auto [tx, rx] = unbounded_channel<bare_value>();
    auto copy = tx;
    REQUIRE(copy.send(bare_value(2)));
    auto received = recv_now(rx);
    REQUIRE(received);
    CHECK(received->value == 2);
  }
}

TEST_CASE("a slot freed while a reserve waits goes to it, not to try_send", "[mpsc]") {
  auto [tx, rx] = channel<int>(1);
  {
    auto reserved = reserve_now(tx);
    std::move(reserved).send(1);
  }
  manual_executor executor;
  auto reserve2 = spawn(executor, reserve_slot(tx));
  REQUIRE_FALSE(reserve2.done());

  CHECK(recv_now(rx) == std::optional<int>(1));
  CHECK(executor.wakes() == 1);

  auto refused = tx.try_send(1337);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().is_full());
  CHECK(refused.error().kind == try_send_failure::full);
  CHECK(refused.error().value == 1337);

  executor.run();
  REQUIRE(reserve2.done());
  REQUIRE(reserve2.result());
  std::move(*reserve2.result()).send(2);
  CHECK(recv_now(rx) == std::optional<int>(2));
}

TEST_CASE("after close() on an idle channel recv returns nothing and send fails with the value", "[mpsc]") {
  auto [tx, rx] = channel<int>(10);
  rx.close();
  CHECK(recv_now(rx) == std::nullopt);
  auto sent = completed(send_value(tx, 1));
  REQUIRE_FALSE(sent);
  CHECK(sent.error().value == 1);
  CHECK(sent.error() == send_error<int>{1});
}

TEST_CASE("close() fails a waiting reserve, but a permit taken before can still deliver", "[mpsc]") {
  auto [tx1, rx] = channel<int>(1);
  auto tx2 = tx1;
  auto permit1 = reserve_now(tx1);

  manual_executor reserving, receiving;
  auto reserve2 = spawn(reserving, reserve_slot(tx2));
  REQUIRE_FALSE(reserve2.done());

  rx.close();
  CHECK(reserving.wakes() == 1);
  reserving.run();
  REQUIRE(reserve2.done());
  REQUIRE_FALSE(reserve2.result());
  CHECK(reserve2.result().error() == closed_error{});

  {
    auto receive1 = spawn(receiving, receive(rx));
    REQUIRE_FALSE(receive1.done());  // closed, but the permit may still send
    std::move(permit1).send(123);
    CHECK(receiving.wakes() == 1);
    receiving.run();
    REQUIRE(receive1.done());
    CHECK(receive1.result() == std::optional<int>(123));
  }
  CHECK(recv_now(rx) == std::nullopt);
}

TEST_CASE("recv returns nothing once every sender is gone", "[mpsc]") {
  auto [tx, rx] = channel<int>(10);
  { auto gone = std::move(tx); }
  CHECK(recv_now(rx) == std::nullopt);
}

TEST_CASE("try_send on a full channel fails with full and hands the value back", "[mpsc]") {
  auto [tx, rx] = channel<std::string>(1);
  REQUIRE(tx.try_send("hello"));
  auto refused = tx.try_send("fail");
  REQUIRE_FALSE(refused);
  CHECK(refused.error().is_full());
  CHECK_FALSE(refused.error().is_closed());
  CHECK(refused.error().value == "fail");

  SECTION("received with recv") {
    CHECK(recv_now(rx) == std::optional<std::string>("hello"));
    REQUIRE(tx.try_send("goodbye"));
    { auto gone = std::move(tx); }
    CHECK(recv_now(rx) == std::optional<std::string>("goodbye"));
    CHECK(recv_now(rx) == std::nullopt);
  }
  SECTION("received with try_recv") {
    auto first = rx.try_recv();
    REQUIRE(first);
    CHECK(*first == "hello");
    REQUIRE(tx.try_send("goodbye"));
    { auto gone = std::move(tx); }
    auto second = rx.try_recv();
    REQUIRE(second);
    CHECK(*second == "goodbye");
    auto third = rx.try_recv();
    REQUIRE_FALSE(third);
    CHECK(third.error() == try_recv_error::disconnected);
  }
}

TEST_CASE("try_reserve fails with full while a permit holds the only slot; dropping the permit frees it",
          "[mpsc]") {
  auto [tx, rx] = channel<std::string>(1);
  auto reserved = tx.try_reserve();
  REQUIRE(reserved);
  auto refused = tx.try_reserve();
  REQUIRE_FALSE(refused);
  CHECK(refused.error() == try_reserve_error::full);

  std::move(*reserved).send("foo");
  CHECK(recv_now(rx) == std::optional<std::string>("foo"));

  {
    auto unused = tx.try_reserve();
    REQUIRE(unused);
  }
  CHECK(tx.try_reserve());
}

TEST_CASE("capacity() counts every outstanding permit and buffered value", "[mpsc]") {
  for (std::size_t n = 1; n < 12; ++n) {
    for (std::size_t k = 0; k < n; ++k) {
      INFO("capacity " << n << ", values sent " << k);
      auto [tx, rx] = channel<std::size_t>(n);
      std::vector<permit<std::size_t>> permits;
      for (std::size_t i = 0; i < n; ++i) {
        auto reserved = tx.try_reserve();
        REQUIRE(reserved);
        permits.push_back(std::move(*reserved));
      }
      CHECK(tx.capacity() == 0);
      REQUIRE_FALSE(tx.try_reserve());
      CHECK(error_of(tx.try_reserve()) == try_reserve_error::full);

      for (std::size_t i = 0; i < k; ++i) std::move(permits[i]).send(i);
      permits.clear();  // the unused ones give their slots back
      CHECK(tx.capacity() == n - k);
      CHECK(rx.len() == k);

      {
        std::vector<permit<std::size_t>> more;
        for (std::size_t i = 0; i < n - k; ++i) {
          auto reserved = tx.try_reserve();
          REQUIRE(reserved);
          more.push_back(std::move(*reserved));
        }
        CHECK(error_of(tx.try_reserve()) == try_reserve_error::full);  // no more than what is free
      }
      for (std::size_t i = 0; i < k; ++i) CHECK(recv_now(rx) == std::optional<std::size_t>(i));
      CHECK(error_of(rx.try_recv()) == try_recv_error::empty);
      CHECK(tx.capacity() == n);
    }
  }
}

TEST_CASE("dropping several permits lets as many waiting reserves through", "[mpsc]") {
  for (std::size_t n = 1; n < 10; ++n) {
    INFO("capacity " << n);
    auto [tx, rx] = channel<int>(n);
    std::vector<permit<int>> permits;
    for (std::size_t i = 0; i < n; ++i) permits.push_back(reserve_now(tx));

    manual_executor executor;
    std::vector<job<reserve_result<int>>> waiting;
    for (std::size_t i = 0; i < n; ++i) {
      waiting.push_back(spawn(executor, reserve_slot(tx)));
      REQUIRE_FALSE(waiting.back().done());
    }
    permits.clear();
    CHECK(executor.wakes() == n);
    executor.run();
    for (auto& reserve : waiting) {
      REQUIRE(reserve.done());
      CHECK(reserve.result());
    }
    waiting.clear();
    CHECK(tx.capacity() == n);
  }
}

TEST_CASE("dropping an unused permit wakes a waiting reserve", "[mpsc]") {
  auto [tx1, rx] = channel<int>(1);
  auto tx2 = tx1;
  auto permit1 = reserve_now(tx1);
  manual_executor executor;
  auto reserve2 = spawn(executor, reserve_slot(tx2));
  REQUIRE_FALSE(reserve2.done());
  { auto dropped = std::move(permit1); }
  CHECK(executor.wakes() == 1);
  executor.run();
  REQUIRE(reserve2.done());
  CHECK(reserve2.result());
}

TEST_CASE("destroying the receiver destroys buffered values and fails reserve, send and the try_ forms",
          "[mpsc]") {
  auto message = std::make_shared<int>(0);
  auto [tx, rx] = channel<std::shared_ptr<int>>(100);
  REQUIRE(tx.try_send(message));
  CHECK(message.use_count() == 2);
  { auto gone = std::move(rx); }
  CHECK(message.use_count() == 1);
  CHECK(tx.is_closed());

  SECTION("awaiting") {
    auto reserved = completed(reserve_slot(tx));
    REQUIRE_FALSE(reserved);
    CHECK(reserved.error() == closed_error{});
    {
      auto sent = completed(send_value(tx, message));
      REQUIRE_FALSE(sent);
      CHECK(sent.error().value == message);
    }
  }
  SECTION("try forms") {
    {
      auto sent = tx.try_send(message);
      REQUIRE_FALSE(sent);
      CHECK(sent.error().is_closed());
      CHECK(sent.error().kind == try_send_failure::closed);
      CHECK(sent.error().value == message);
    }
    auto reserved = tx.try_reserve();
    REQUIRE_FALSE(reserved);
    CHECK(reserved.error() == try_reserve_error::closed);
  }
  SECTION("blocking forms") {
    {
      auto sent = tx.blocking_send(message);
      REQUIRE_FALSE(sent);
      CHECK(sent.error().value == message);
    }
    auto reserved = tx.blocking_reserve();
    REQUIRE_FALSE(reserved);
    CHECK(reserved.error() == closed_error{});
  }
  CHECK(message.use_count() == 1);
}

TEST_CASE("values still buffered are destroyed when both ends go", "[mpsc]") {
  auto message = std::make_shared<int>(0);
  {
    auto [tx, rx] = channel<std::shared_ptr<int>>(100);
    REQUIRE(tx.try_send(message));
    CHECK(message.use_count() == 2);
  }
  CHECK(message.use_count() == 1);
}

TEST_CASE("blocking_recv on a thread gets a value sent by a task", "[mpsc]") {
  auto [tx, rx] = channel<int>(1);
  std::optional<int> received;
  std::thread receiving([&received, moved = std::move(rx)]() mutable { received = moved.blocking_recv(); });
  manual_executor executor;
  auto sending = spawn(executor, send_value(tx, 10));
  REQUIRE(sending.done());
  CHECK(sending.result());
  receiving.join();
  CHECK(received == std::optional<int>(10));
}

TEST_CASE("blocking forms throw std::logic_error on a runtime worker thread (Tokio panics)", "[mpsc]") {
  auto [tx, rx] = channel<int>(2);
  REQUIRE(tx.try_send(1));  // so that a form that failed to refuse would not block the test
  auto [closed_tx, closed_rx] = channel<int>(1);
  closed_rx.close();
  auto [unbounded_tx, unbounded_rx] = unbounded_channel<int>();
  REQUIRE(unbounded_tx.send(1));
  unbounded_rx.close();
  std::vector<int> out;

  postal::detail::on_executor_thread = true;
  CHECK_THROWS_AS((void)rx.blocking_recv(), std::logic_error);
  CHECK_THROWS_AS((void)rx.blocking_recv_many(out, 1), std::logic_error);
  CHECK_THROWS_AS((void)tx.blocking_send(2), std::logic_error);
  CHECK_THROWS_AS((void)tx.blocking_send_timeout(2, 1h), std::logic_error);
  CHECK_THROWS_AS((void)tx.blocking_reserve(), std::logic_error);
  CHECK_THROWS_AS(closed_tx.blocking_closed(), std::logic_error);
  CHECK_THROWS_AS((void)unbounded_rx.blocking_recv(), std::logic_error);
  CHECK_THROWS_AS((void)unbounded_rx.blocking_recv_many(out, 1), std::logic_error);
  CHECK_THROWS_AS(unbounded_tx.blocking_closed(), std::logic_error);
  postal::detail::on_executor_thread = false;

  CHECK(out.empty());
  CHECK(rx.blocking_recv() == std::optional<int>(1));
  CHECK(unbounded_rx.blocking_recv() == std::optional<int>(1));
}

TEST_CASE("blocking_send on a thread reaches a receiving task, and waits while full", "[mpsc]") {
  SECTION("room available") {
    auto [tx, rx] = channel<int>(1);
    manual_executor executor;
    auto receiving = spawn(executor, receive(rx));
    REQUIRE_FALSE(receiving.done());
    bool sent = false;
    std::thread sending(
        [&sent, moved = std::move(tx)]() mutable { sent = moved.blocking_send(10).has_value(); });
    sending.join();
    CHECK(sent);
    CHECK(executor.wakes() == 1);
    executor.run();
    REQUIRE(receiving.done());
    CHECK(receiving.result() == std::optional<int>(10));
  }
  SECTION("full: the thread waits until a value is received") {
    auto [tx, rx] = channel<int>(1);
    REQUIRE(tx.try_send(1));
    bool sent = false;
    std::thread sending([&sent, moved = tx]() mutable { sent = moved.blocking_send(10).has_value(); });
    CHECK(recv_now(rx) == std::optional<int>(1));
    sending.join();
    CHECK(sent);
    CHECK(recv_now(rx) == std::optional<int>(10));
  }
}

TEST_CASE("after close(), recv waits for an outstanding permit and ends when it is dropped", "[mpsc]") {
  auto [tx, rx] = channel<int>(100);
  auto tx2 = tx;
  auto reserved = reserve_now(tx);
  rx.close();
  manual_executor executor;
  auto receiving = spawn(executor, receive(rx));
  REQUIRE_FALSE(receiving.done());
  { auto dropped = std::move(reserved); }
  CHECK(executor.wakes() == 1);
  executor.run();
  REQUIRE(receiving.done());
  CHECK(receiving.result() == std::nullopt);
}

TEST_CASE("close() wakes a waiting reserve; cancelling it after the wake leaves recv ending cleanly",
          "[mpsc]") {
  auto [tx1, rx] = channel<int>(1);
  auto tx2 = tx1;
  auto permit1 = reserve_now(tx1);
  manual_executor executor;
  auto reserve2 = spawn_cancellable(executor, reserve_slot(tx2));
  REQUIRE_FALSE(reserve2->done());

  rx.close();
  { auto dropped = std::move(permit1); }
  CHECK(executor.wakes() == 1);
  reserve2.reset();  // woken, never resumed
  CHECK(recv_now(rx) == std::nullopt);
}

TEST_CASE("try_recv drains a bounded channel, reports empty, then disconnected", "[mpsc]") {
  auto [tx, rx] = channel<std::string>(5);
  auto expect_hello = [&rx = rx] {
    auto value = rx.try_recv();
    REQUIRE(value);
    CHECK(*value == "hello");
  };
  auto expect_error = [&rx = rx](try_recv_error wanted) {
    auto value = rx.try_recv();
    REQUIRE_FALSE(value);
    CHECK(value.error() == wanted);
  };
  for (int i = 0; i < 5; ++i) REQUIRE(tx.try_send("hello"));
  CHECK_FALSE(tx.try_send("hello"));
  for (int i = 0; i < 5; ++i) expect_hello();
  expect_error(try_recv_error::empty);

  for (int i = 0; i < 4; ++i) REQUIRE(tx.try_send("hello"));
  expect_hello();
  REQUIRE(tx.try_send("hello"));
  REQUIRE(tx.try_send("hello"));
  CHECK_FALSE(tx.try_send("hello"));
  for (int i = 0; i < 5; ++i) expect_hello();
  expect_error(try_recv_error::empty);

  for (int i = 0; i < 3; ++i) REQUIRE(tx.try_send("hello"));
  { auto gone = std::move(tx); }
  for (int i = 0; i < 3; ++i) expect_hello();
  expect_error(try_recv_error::disconnected);
}

TEST_CASE("unbounded: try_recv drains in order, reports empty, then disconnected", "[mpsc]") {
  for (int count = 0; count < 100; ++count) {
    auto [tx, rx] = unbounded_channel<int>();
    for (int i = 0; i < count; ++i) REQUIRE(tx.send(i));
    for (int i = 0; i < count; ++i) {
      auto value = rx.try_recv();
      REQUIRE(value);
      CHECK(*value == i);
    }
    CHECK(error_of(rx.try_recv()) == try_recv_error::empty);
    { auto gone = std::move(tx); }
    CHECK(error_of(rx.try_recv()) == try_recv_error::disconnected);
  }
}

TEST_CASE("try_recv reports disconnected after close() even with a sender alive", "[mpsc]") {
  auto [tx, rx] = channel<int>(5);
  CHECK(error_of(rx.try_recv()) == try_recv_error::empty);
  rx.close();
  CHECK(error_of(rx.try_recv()) == try_recv_error::disconnected);
}

TEST_CASE("try_recv on an empty channel reports empty, then disconnected once the senders are gone",
          "[mpsc]") {
  SECTION("bounded") {
    auto [tx, rx] = channel<int>(5);
    CHECK(error_of(rx.try_recv()) == try_recv_error::empty);
    { auto gone = std::move(tx); }
    CHECK(error_of(rx.try_recv()) == try_recv_error::disconnected);
  }
  SECTION("unbounded") {
    auto [tx, rx] = unbounded_channel<int>();
    CHECK(error_of(rx.try_recv()) == try_recv_error::empty);
    { auto gone = std::move(tx); }
    CHECK(error_of(rx.try_recv()) == try_recv_error::disconnected);
  }
}

TEST_CASE("send_timeout succeeds while there is room, times out when full and reports closed afterwards",
          "[mpsc]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>(5);
  for (int value : {10, 20, 30, 40, 50}) {
    auto sending = spawn(executor, send_with_timeout(tx, value, 1h));
    REQUIRE(sending.done());
    CHECK(sending.result());
  }
  auto timing_out = spawn(executor, send_with_timeout(tx, 60, 1h));
  REQUIRE_FALSE(timing_out.done());
  executor.advance(30min);
  CHECK(executor.wakes() == 0);
  executor.advance(2h);
  CHECK(executor.wakes() == 1);
  executor.run();
  REQUIRE(timing_out.done());
  REQUIRE_FALSE(timing_out.result());
  CHECK(timing_out.result().error().is_timeout());
  CHECK(timing_out.result().error() == send_timeout_error<int>{send_timeout_failure::timeout, 60});
  CHECK(rx.len() == 5);

  { auto gone = std::move(rx); }
  auto closed_send = spawn(executor, send_with_timeout(tx, 70, 1h));
  REQUIRE(closed_send.done());
  REQUIRE_FALSE(closed_send.result());
  CHECK(closed_send.result().error().is_closed());
  CHECK(closed_send.result().error() == send_timeout_error<int>{send_timeout_failure::closed, 70});
}

TEST_CASE("send_timeout in a coroutine without timers throws std::logic_error (Tokio panics)", "[mpsc]") {
  auto [tx, rx] = channel<int>(1);
  REQUIRE(tx.try_send(1));  // full, so the send has to wait, which needs a timer
  timerless_hooks hooks;
  SECTION("a coroutine without suspend hooks") {
    auto task = send_timeout_under_hooks(tx, 2);
    task.start(nullptr);
    REQUIRE(task.done());
    CHECK_THROWS_AS(task.rethrow(), std::logic_error);
  }
  SECTION("hooks whose wake_at refuses") {
    auto task = send_timeout_under_hooks(tx, 2);
    task.start(&hooks);
    REQUIRE(task.done());
    CHECK_THROWS_AS(task.rethrow(), std::logic_error);
  }
  CHECK(hooks.live == 0);  // no waker was left behind in the channel
  CHECK(rx.try_recv().value() == 1);
  CHECK(error_of(rx.try_recv()) == try_recv_error::empty);
  CHECK(tx.try_send(3));  // the refused send took no slot
}

TEST_CASE("capacity() drops with each reserve and each buffered value; max_capacity() stays", "[mpsc]") {
  auto [tx, rx] = channel<int>(10);
  CHECK(tx.capacity() == 10);
  CHECK(tx.max_capacity() == 10);
  auto reserved = reserve_now(tx);
  CHECK(tx.capacity() == 9);
  CHECK(tx.max_capacity() == 10);
  REQUIRE(completed(send_value(tx, 0)));
  CHECK(tx.capacity() == 8);
  CHECK(tx.max_capacity() == 10);
  CHECK(rx.capacity() == 8);
  CHECK(rx.max_capacity() == 10);
}

TEST_CASE("receiver::is_closed is true after close() or once every sender is gone, not while a permit is out",
          "[mpsc]") {
  SECTION("close() with a sender alive") {
    auto [tx, rx] = channel<int>(10);
    rx.close();
    CHECK(rx.is_closed());
  }
  SECTION("every sender dropped, one of them on another thread") {
    auto [tx, rx] = channel<int>(10);
    std::thread other([copy = tx]() mutable { auto gone = std::move(copy); });
    { auto gone = std::move(tx); }
    other.join();
    CHECK(rx.is_closed());
  }
  SECTION("a sender is alive") {
    auto [tx, rx] = channel<int>(10);
    CHECK_FALSE(rx.is_closed());
  }
  SECTION("a sender is alive and the buffer is full") {
    auto [tx, rx] = channel<int>(10);
    for (int i = 0; i < 10; ++i) REQUIRE(completed(send_value(tx, i)));
    CHECK_FALSE(rx.is_closed());
  }
  SECTION("no sender left, values buffered") {
    auto [tx, rx] = channel<int>(10);
    for (int i = 0; i < 10; ++i) REQUIRE(completed(send_value(tx, i)));
    { auto gone = std::move(tx); }
    CHECK(rx.is_closed());
  }
  SECTION("values buffered and close() called") {
    auto [tx, rx] = channel<int>(10);
    for (int i = 0; i < 10; ++i) REQUIRE(completed(send_value(tx, i)));
    rx.close();
    CHECK(rx.is_closed());
  }
  SECTION("a permit is out but no sender") {
    auto [tx, rx] = channel<int>(10);
    auto reserved = reserve_now(tx);
    { auto gone = std::move(tx); }
    CHECK_FALSE(rx.is_closed());
  }
}

TEST_CASE("receiver::is_empty is true exactly when no value is buffered", "[mpsc]") {
  auto [tx, rx] = channel<int>(10);
  SECTION("nothing sent") {
    CHECK(rx.is_empty());
  }
  SECTION("a value buffered") {
    REQUIRE(completed(send_value(tx, 0)));
    CHECK_FALSE(rx.is_empty());
  }
  SECTION("the buffer is full") {
    for (int i = 0; i < 10; ++i) REQUIRE(completed(send_value(tx, i)));
    CHECK_FALSE(rx.is_empty());
  }
  SECTION("all but one value received") {
    for (int i = 0; i < 10; ++i) REQUIRE(completed(send_value(tx, i)));
    for (int i = 0; i < 9; ++i) REQUIRE(recv_now(rx));
    CHECK_FALSE(rx.is_empty());
  }
  SECTION("every value received with try_recv") {
    for (int i = 0; i < 10; ++i) REQUIRE(completed(send_value(tx, i)));
    while (rx.try_recv()) {
    }
    CHECK(rx.is_empty());
  }
  SECTION("every sender dropped and every value received") {
    for (int i = 0; i < 10; ++i) REQUIRE(completed(send_value(tx, i)));
    { auto gone = std::move(tx); }
    for (int i = 0; i < 10; ++i) REQUIRE(recv_now(rx));
    CHECK(rx.is_empty());
  }
}

TEST_CASE("receiver::len counts buffered values, whatever happened to the senders or close()", "[mpsc]") {
  auto [tx, rx] = channel<int>(100);
  SECTION("empty channel") {
    CHECK(rx.len() == 0);
  }
  SECTION("empty channel without senders") {
    { auto gone = std::move(tx); }
    CHECK(rx.len() == 0);
  }
  SECTION("filled channel") {
    for (int i = 0; i < 100; ++i) REQUIRE(completed(send_value(tx, i)));
    CHECK(rx.len() == 100);
  }
  SECTION("filled channel without senders") {
    for (int i = 0; i < 100; ++i) REQUIRE(completed(send_value(tx, i)));
    { auto gone = std::move(tx); }
    CHECK(rx.len() == 100);
  }
  SECTION("while filling and draining") {
    for (std::size_t i = 0; i < 100; ++i) {
      REQUIRE(completed(send_value(tx, static_cast<int>(i))));
      CHECK(rx.len() == i + 1);
    }
    { auto gone = std::move(tx); }
    for (std::size_t i = 100; i-- > 0;) {
      REQUIRE(recv_now(rx));
      CHECK(rx.len() == i);
    }
  }
  SECTION("close() called") {
    REQUIRE(completed(send_value(tx, 0)));
    rx.close();
    CHECK(rx.len() == 1);
  }
  SECTION("close() called, then the sender dropped") {
    REQUIRE(completed(send_value(tx, 0)));
    rx.close();
    { auto gone = std::move(tx); }
    CHECK(rx.len() == 1);
  }
  SECTION("the sender dropped, then close() called") {
    REQUIRE(completed(send_value(tx, 0)));
    { auto gone = std::move(tx); }
    rx.close();
    CHECK(rx.len() == 1);
  }
}

TEST_CASE("unbounded_receiver::is_closed is true after close() or once every sender is gone", "[mpsc]") {
  auto [tx, rx] = unbounded_channel<int>();
  SECTION("close() with a sender alive") {
    rx.close();
    CHECK(rx.is_closed());
  }
  SECTION("every sender dropped, one of them on another thread") {
    std::thread other([copy = tx]() mutable { auto gone = std::move(copy); });
    { auto gone = std::move(tx); }
    other.join();
    CHECK(rx.is_closed());
  }
  SECTION("a sender is alive") {
    CHECK_FALSE(rx.is_closed());
  }
  SECTION("no sender left, values buffered") {
    for (int i = 0; i < 10; ++i) REQUIRE(tx.send(i));
    { auto gone = std::move(tx); }
    CHECK(rx.is_closed());
  }
  SECTION("values buffered and close() called") {
    for (int i = 0; i < 10; ++i) REQUIRE(tx.send(i));
    rx.close();
    CHECK(rx.is_closed());
  }
}

TEST_CASE("unbounded_receiver::is_empty is true exactly when no value is buffered", "[mpsc]") {
  auto [tx, rx] = unbounded_channel<int>();
  SECTION("nothing sent") {
    CHECK(rx.is_empty());
  }
  SECTION("a value buffered") {
    REQUIRE(tx.send(0));
    CHECK_FALSE(rx.is_empty());
  }
  SECTION("all but one value received") {
    for (int i = 0; i < 10; ++i) REQUIRE(tx.send(i));
    for (int i = 0; i < 9; ++i) REQUIRE(recv_now(rx));
    CHECK_FALSE(rx.is_empty());
  }
  SECTION("every value received with try_recv") {
    for (int i = 0; i < 10; ++i) REQUIRE(tx.send(i));
    while (rx.try_recv()) {
    }
    CHECK(rx.is_empty());
  }
  SECTION("every sender dropped and every value received") {
    for (int i = 0; i < 10; ++i) REQUIRE(tx.send(i));
    { auto gone = std::move(tx); }
    for (int i = 0; i < 10; ++i) REQUIRE(recv_now(rx));
    CHECK(rx.is_empty());
  }
}

TEST_CASE("unbounded_receiver::len counts buffered values, whatever happened to the senders or close()",
          "[mpsc]") {
  auto [tx, rx] = unbounded_channel<int>();
  SECTION("empty channel") {
    CHECK(rx.len() == 0);
  }
  SECTION("empty channel without senders") {
    { auto gone = std::move(tx); }
    CHECK(rx.len() == 0);
  }
  SECTION("many values") {
    for (int i = 0; i < 100; ++i) REQUIRE(tx.send(i));
    CHECK(rx.len() == 100);
  }
  SECTION("many values, senders dropped") {
    for (int i = 0; i < 100; ++i) REQUIRE(tx.send(i));
    { auto gone = std::move(tx); }
    CHECK(rx.len() == 100);
  }
  SECTION("while filling and draining") {
    for (std::size_t i = 0; i < 100; ++i) {
      REQUIRE(tx.send(static_cast<int>(i)));
      CHECK(rx.len() == i + 1);
    }
    { auto gone = std::move(tx); }
    for (std::size_t i = 100; i-- > 0;) {
      REQUIRE(recv_now(rx));
      CHECK(rx.len() == i);
    }
  }
  SECTION("close() called") {
    REQUIRE(tx.send(0));
    rx.close();
    CHECK(rx.len() == 1);
  }
  SECTION("close() called, then the sender dropped") {
    REQUIRE(tx.send(0));
    rx.close();
    { auto gone = std::move(tx); }
    CHECK(rx.len() == 1);
  }
  SECTION("the sender dropped, then close() called") {
    REQUIRE(tx.send(0));
    { auto gone = std::move(tx); }
    rx.close();
    CHECK(rx.len() == 1);
  }
}

TEST_CASE("is_empty holds after each send-then-receive, far past the buffer's size", "[mpsc]") {
  auto [tx, rx] = channel<int>(33);
  for (int value = 1; value < 257; ++value) {
    REQUIRE(completed(send_value(tx, value)));
    REQUIRE(recv_now(rx) == std::optional<int>(value));
    INFO("value " << value << ", len " << rx.len());
    CHECK(rx.is_empty());
    CHECK(rx.len() == 0);
  }
}

// --- Beyond Tokio's tests ---

TEST_CASE("waiting senders are served first come, first served, and try_send does not overtake them",
          "[mpsc]") {
  auto [tx, rx] = channel<int>(1);
  REQUIRE(tx.try_send(0));
  manual_executor executor1, executor2, executor3;
  auto send1 = spawn(executor1, send_value(tx, 1));
  auto send2 = spawn(executor2, send_value(tx, 2));
  auto send3 = spawn(executor3, send_value(tx, 3));
  REQUIRE_FALSE(send1.done());
  REQUIRE_FALSE(send2.done());
  REQUIRE_FALSE(send3.done());
  CHECK(error_of(tx.try_send(99)).is_full());

  CHECK(recv_now(rx) == std::optional<int>(0));
  CHECK(executor1.wakes() == 1);
  CHECK(executor2.wakes() == 0);
  CHECK(error_of(tx.try_send(99)).is_full());  // the freed slot belongs to send1
  executor1.run();
  REQUIRE(send1.done());
  CHECK(send1.result());

  CHECK(recv_now(rx) == std::optional<int>(1));
  CHECK(executor2.wakes() == 1);
  CHECK(executor3.wakes() == 0);
  executor2.run();
  REQUIRE(send2.done());
  CHECK(recv_now(rx) == std::optional<int>(2));
  CHECK(executor3.wakes() == 1);
  executor3.run();
  REQUIRE(send3.done());
  CHECK(recv_now(rx) == std::optional<int>(3));
  CHECK(tx.try_send(4));
}

TEST_CASE("a cancelled send loses its place and its value is not sent, even if it was already woken",
          "[mpsc]") {
  const long before = counted::live.load();
  {
    auto [tx, rx] = channel<counted>(1);
    REQUIRE(tx.try_send(counted(0)));
    manual_executor executor1, executor2, executor3;
    auto send1 = spawn_cancellable(executor1, send_value(tx, counted(1)));
    auto send2 = spawn_cancellable(executor2, send_value(tx, counted(2)));
    auto send3 = spawn(executor3, send_value(tx, counted(3)));
    REQUIRE_FALSE(send1->done());
    REQUIRE_FALSE(send2->done());
    REQUIRE_FALSE(send3.done());

    send1.reset();  // cancelled while waiting: never woken
    auto first = recv_now(rx);
    REQUIRE(first);
    CHECK(first->value == 0);
    CHECK(executor1.wakes() == 0);
    CHECK(executor2.wakes() == 1);

    send2.reset();  // woken but cancelled before it ran: its value is not sent, the slot passes on to send3
    CHECK(executor3.wakes() == 1);
    executor3.run();
    REQUIRE(send3.done());
    CHECK(send3.result());
    auto next = recv_now(rx);
    REQUIRE(next);
    CHECK(next->value == 3);
    CHECK(error_of(rx.try_recv()) == try_recv_error::empty);
  }
  CHECK(counted::live.load() == before);
}

TEST_CASE("destroying the receiver fails every waiting send and reserve, handing values back", "[mpsc]") {
  auto [tx, rx] = channel<std::string>(1);
  REQUIRE(tx.try_send("buffered"));
  manual_executor executor;
  auto sending = spawn(executor, send_value(tx, "waiting"));
  auto reserving = spawn(executor, reserve_slot(tx));
  auto closing = spawn(executor, wait_closed(tx));
  REQUIRE_FALSE(sending.done());
  REQUIRE_FALSE(reserving.done());
  REQUIRE_FALSE(closing.done());
  std::string blocked_value;
  std::thread blocked([&blocked_value, copy = tx]() mutable {
    auto sent = copy.blocking_send("blocked");
    if (!sent) blocked_value = std::move(sent.error().value);
  });

  { auto gone = std::move(rx); }
  blocked.join();
  CHECK(blocked_value == "blocked");
  CHECK(executor.wakes() == 3);
  executor.run();
  REQUIRE(sending.done());
  REQUIRE_FALSE(sending.result());
  CHECK(sending.result().error().value == "waiting");
  REQUIRE(reserving.done());
  CHECK(error_of(std::move(reserving.result())) == closed_error{});
  CHECK(closing.done());
}

TEST_CASE("closed() completes when the receiver closes or goes, and at once when it already did", "[mpsc]") {
  manual_executor executor;
  SECTION("close()") {
    auto [tx, rx] = channel<int>(1);
    auto waiting = spawn(executor, wait_closed(tx));
    REQUIRE_FALSE(waiting.done());
    CHECK_FALSE(tx.is_closed());
    rx.close();
    CHECK(tx.is_closed());
    CHECK(executor.wakes() == 1);
    executor.run();
    CHECK(waiting.done());
  }
  SECTION("receiver destroyed") {
    auto [tx, rx] = channel<int>(1);
    auto waiting = spawn(executor, wait_closed(tx));
    REQUIRE_FALSE(waiting.done());
    { auto gone = std::move(rx); }
    CHECK(tx.is_closed());
    CHECK(executor.wakes() == 1);
    executor.run();
    CHECK(waiting.done());
  }
  SECTION("already closed") {
    auto [tx, rx] = channel<int>(1);
    rx.close();
    auto waiting = spawn(executor, wait_closed(tx));
    CHECK(waiting.done());
  }
  SECTION("unbounded") {
    auto [tx, rx] = unbounded_channel<int>();
    auto waiting = spawn(executor, wait_closed(tx));
    REQUIRE_FALSE(waiting.done());
    CHECK_FALSE(tx.is_closed());
    { auto gone = std::move(rx); }
    CHECK(tx.is_closed());
    CHECK(executor.wakes() == 1);
    executor.run();
    CHECK(waiting.done());
  }
  SECTION("a cancelled wait is not woken") {
    auto [tx, rx] = channel<int>(1);
    {
      auto waiting = spawn(executor, wait_closed(tx));
      REQUIRE_FALSE(waiting.done());
    }
    rx.close();
    CHECK(executor.wakes() == 0);
  }
  SECTION("several senders wait at once") {
    auto [tx, rx] = channel<int>(1);
    auto tx2 = tx;
    auto waiting1 = spawn(executor, wait_closed(tx));
    auto waiting2 = spawn(executor, wait_closed(tx2));
    rx.close();
    CHECK(executor.wakes() == 2);
    executor.run();
    CHECK(waiting1.done());
    CHECK(waiting2.done());
  }
}

TEST_CASE("blocking_closed returns when the receiver goes on another thread", "[mpsc]") {
  SECTION("bounded, receiver destroyed") {
    for (int round = 0; round < 50; ++round) {
      auto [tx, rx] = channel<int>(1);
      std::thread other([moved = std::move(rx)]() mutable { auto gone = std::move(moved); });
      tx.blocking_closed();
      CHECK(tx.is_closed());
      other.join();
    }
  }
  SECTION("unbounded, close()") {
    for (int round = 0; round < 50; ++round) {
      auto [tx, rx] = unbounded_channel<int>();
      std::thread other([moved = std::move(rx)]() mutable { moved.close(); });
      tx.blocking_closed();
      CHECK(tx.is_closed());
      other.join();
    }
  }
}

TEST_CASE("a cancelled recv leaves the next value in the channel and wakes nobody", "[mpsc]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>(1);
  {
    auto waiting = spawn(executor, receive(rx));
    REQUIRE_FALSE(waiting.done());
  }
  REQUIRE(tx.try_send(3));
  CHECK(executor.wakes() == 0);
  auto second = spawn(executor, receive(rx));  // a later task may wait on the same receiver
  REQUIRE(second.done());
  CHECK(second.result() == std::optional<int>(3));
  auto third = spawn(executor, receive(rx));
  REQUIRE_FALSE(third.done());
  REQUIRE(tx.try_send(4));
  CHECK(executor.wakes() == 1);
  executor.run();
  REQUIRE(third.done());
  CHECK(third.result() == std::optional<int>(4));
}

TEST_CASE("recv_many waits for at least one value, and ends with 0 on close() or when the senders go",
          "[mpsc]") {
  manual_executor executor;
  std::vector<int> buffer;
  SECTION("a value arrives") {
    auto [tx, rx] = channel<int>(4);
    auto taking = spawn(executor, receive_many(rx, buffer, 10));
    REQUIRE_FALSE(taking.done());
    REQUIRE(tx.try_send(5));
    CHECK(executor.wakes() == 1);
    executor.run();
    REQUIRE(taking.done());
    CHECK(taking.result() == 1);
    CHECK(buffer == std::vector<int>{5});
  }
  SECTION("close()") {
    auto [tx, rx] = channel<int>(4);
    auto taking = spawn(executor, receive_many(rx, buffer, 10));
    REQUIRE_FALSE(taking.done());
    rx.close();
    executor.run();
    REQUIRE(taking.done());
    CHECK(taking.result() == 0);
  }
  SECTION("close(), unbounded") {
    auto [tx, rx] = unbounded_channel<int>();
    auto taking = spawn(executor, receive_many(rx, buffer, 10));
    REQUIRE_FALSE(taking.done());
    rx.close();
    executor.run();
    REQUIRE(taking.done());
    CHECK(taking.result() == 0);
  }
  SECTION("senders gone, unbounded") {
    auto [tx, rx] = unbounded_channel<int>();
    auto taking = spawn(executor, receive_many(rx, buffer, 10));
    REQUIRE_FALSE(taking.done());
    { auto gone = std::move(tx); }
    executor.run();
    REQUIRE(taking.done());
    CHECK(taking.result() == 0);
  }
  SECTION("cancelled: nothing taken") {
    auto [tx, rx] = channel<int>(4);
    {
      auto taking = spawn(executor, receive_many(rx, buffer, 10));
      REQUIRE_FALSE(taking.done());
    }
    REQUIRE(tx.try_send(6));
    CHECK(executor.wakes() == 0);
    CHECK(buffer.empty());
    CHECK(rx.len() == 1);
  }
}

TEST_CASE("a permit that has sent holds nothing any more", "[mpsc]") {
  auto [tx, rx] = channel<int>(1);
  auto reserved = reserve_now(tx);
  std::move(reserved).send(7);
  { auto gone = std::move(tx); }
  CHECK(recv_now(rx) == std::optional<int>(7));
  CHECK(recv_now(rx) == std::nullopt);  // the used permit (not yet destroyed) keeps nothing open
}

TEST_CASE("a permit keeps recv waiting after the senders are gone, and delivers", "[mpsc]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>(1);
  auto reserved = reserve_now(tx);
  { auto gone = std::move(tx); }
  CHECK_FALSE(rx.is_closed());
  auto receiving = spawn(executor, receive(rx));
  REQUIRE_FALSE(receiving.done());
  std::move(reserved).send(8);
  executor.run();
  REQUIRE(receiving.done());
  CHECK(receiving.result() == std::optional<int>(8));
  { auto used = std::move(reserved); }
  CHECK(recv_now(rx) == std::nullopt);
}

TEST_CASE("send_timeout that gets room before its deadline succeeds, and its timer later wakes nothing",
          "[mpsc]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>(1);
  REQUIRE(tx.try_send(1));
  auto sending = spawn(executor, send_with_timeout(tx, 2, 1h));
  REQUIRE_FALSE(sending.done());
  CHECK(recv_now(rx) == std::optional<int>(1));
  CHECK(executor.wakes() == 1);
  executor.run();
  REQUIRE(sending.done());
  CHECK(sending.result());
  executor.advance(2h);  // the timer fires after the wait ended
  CHECK(executor.wakes() == 1);
  CHECK(executor.run() == 0);
  CHECK(recv_now(rx) == std::optional<int>(2));
}

TEST_CASE("a cancelled send_timeout is woken neither by its timer nor by a freed slot", "[mpsc]") {
  manual_executor executor;
  auto [tx, rx] = channel<int>(1);
  REQUIRE(tx.try_send(1));
  {
    auto sending = spawn(executor, send_with_timeout(tx, 2, 1h));
    REQUIRE_FALSE(sending.done());
  }
  CHECK(recv_now(rx) == std::optional<int>(1));
  executor.advance(2h);
  CHECK(executor.wakes() == 0);
  CHECK(error_of(rx.try_recv()) == try_recv_error::empty);
  CHECK(tx.capacity() == 1);
}

TEST_CASE("a send_timeout that timed out takes no slot from the senders behind it", "[mpsc]") {
  manual_executor timing_out_executor, waiting_executor;
  auto [tx, rx] = channel<int>(1);
  REQUIRE(tx.try_send(1));
  auto timing_out = spawn(timing_out_executor, send_with_timeout(tx, 2, 1h));
  auto waiting = spawn(waiting_executor, send_value(tx, 3));
  REQUIRE_FALSE(timing_out.done());
  REQUIRE_FALSE(waiting.done());
  timing_out_executor.advance(2h);
  timing_out_executor.run();
  REQUIRE(timing_out.done());
  CHECK(error_of(std::move(timing_out.result())) ==
        send_timeout_error<int>{send_timeout_failure::timeout, 2});
  CHECK(recv_now(rx) == std::optional<int>(1));
  CHECK(waiting_executor.wakes() == 1);
  waiting_executor.run();
  REQUIRE(waiting.done());
  CHECK(recv_now(rx) == std::optional<int>(3));
}

TEST_CASE("blocking_send_timeout times out on a full channel and succeeds when a thread makes room",
          "[mpsc]") {
  auto [tx, rx] = channel<int>(1);
  REQUIRE(tx.try_send(1));
  auto timed_out = tx.blocking_send_timeout(2, 20ms);
  REQUIRE_FALSE(timed_out);
  CHECK(timed_out.error() == send_timeout_error<int>{send_timeout_failure::timeout, 2});

  std::thread receiving([&rx = rx] { (void)rx.blocking_recv(); });
  auto sent = tx.blocking_send_timeout(3, 1h);
  receiving.join();
  CHECK(sent);
  CHECK(rx.try_recv().value() == 3);

  rx.close();
  auto closed = tx.blocking_send_timeout(4, 1h);
  REQUIRE_FALSE(closed);
  CHECK(closed.error() == send_timeout_error<int>{send_timeout_failure::closed, 4});
}

TEST_CASE("blocking_reserve and blocking_recv_many work across threads", "[mpsc]") {
  auto [tx, rx] = channel<int>(2);
  REQUIRE(tx.try_send(1));
  REQUIRE(tx.try_send(2));
  std::thread producer([copy = tx]() mutable {
    for (int value = 3; value <= 6; ++value) {
      auto reserved = copy.blocking_reserve();
      if (reserved) std::move(*reserved).send(value);
    }
  });
  { auto gone = std::move(tx); }
  std::vector<int> buffer;
  for (int round = 0; round < 10; ++round) {
    if (rx.blocking_recv_many(buffer, 4) == 0) break;
  }
  producer.join();
  CHECK(buffer == std::vector<int>{1, 2, 3, 4, 5, 6});
  CHECK(rx.blocking_recv_many(buffer, 4) == 0);
}

TEST_CASE("move-only values go through every path", "[mpsc]") {
  using box = std::unique_ptr<int>;
  auto [tx, rx] = channel<box>(1);
  REQUIRE(tx.try_send(std::make_unique<int>(1)));
  auto refused = tx.try_send(std::make_unique<int>(2));
  REQUIRE_FALSE(refused);
  REQUIRE(refused.error().value);
  CHECK(*refused.error().value == 2);
  CHECK(*recv_now(rx).value() == 1);

  REQUIRE(completed(send_value(tx, std::make_unique<int>(3))));
  CHECK(**rx.try_recv() == 3);
  {
    auto reserved = reserve_now(tx);
    std::move(reserved).send(std::make_unique<int>(4));
  }
  std::vector<box> buffer;
  CHECK(completed(receive_many(rx, buffer, 5)) == 1);
  CHECK(*buffer.at(0) == 4);

  rx.close();
  auto failed = completed(send_value(tx, std::make_unique<int>(5)));
  REQUIRE_FALSE(failed);
  CHECK(*failed.error().value == 5);

  auto [utx, urx] = unbounded_channel<box>();
  REQUIRE(utx.send(std::make_unique<int>(6)));
  CHECK(*urx.blocking_recv().value() == 6);
  urx.close();
  auto unbounded_failed = utx.send(std::make_unique<int>(7));
  REQUIRE_FALSE(unbounded_failed);
  CHECK(*unbounded_failed.error().value == 7);
}

TEST_CASE("every value is destroyed exactly once, whoever ends up with it", "[mpsc]") {
  const long before = counted::live.load();
  SECTION("received") {
    auto [tx, rx] = channel<counted>(2);
    REQUIRE(tx.try_send(counted(1)));
    {
      auto value = recv_now(rx);
      REQUIRE(value);
      CHECK(value->value == 1);
    }
    CHECK(counted::live.load() == before);
  }
  SECTION("left in a bounded channel when the receiver goes") {
    auto [tx, rx] = channel<counted>(3);
    REQUIRE(tx.try_send(counted(1)));
    REQUIRE(tx.try_send(counted(2)));
    REQUIRE(tx.try_send(counted(3)));
    CHECK(counted::live.load() == before + 3);
    { auto gone = std::move(rx); }
    CHECK(counted::live.load() == before);
  }
  SECTION("left in an unbounded channel when the receiver goes") {
    auto [tx, rx] = unbounded_channel<counted>();
    for (int i = 0; i < 100; ++i) REQUIRE(tx.send(counted(i)));
    CHECK(counted::live.load() == before + 100);
    { auto gone = std::move(rx); }
    CHECK(counted::live.load() == before);
  }
  SECTION("handed back by failed sends") {
    auto [tx, rx] = channel<counted>(1);
    REQUIRE(tx.try_send(counted(1)));
    {
      auto full = tx.try_send(counted(2));
      REQUIRE_FALSE(full);
      CHECK(full.error().value.value == 2);
      CHECK(counted::live.load() == before + 2);
    }
    rx.close();
    {
      auto closed = completed(send_value(tx, counted(3)));
      REQUIRE_FALSE(closed);
      CHECK(closed.error().value.value == 3);
    }
    CHECK(counted::live.load() == before + 1);
  }
  SECTION("given to a permit whose receiver is gone") {
    auto [tx, rx] = channel<counted>(1);
    auto reserved = reserve_now(tx);
    { auto gone = std::move(rx); }
    std::move(reserved).send(counted(4));  // never fails; the value is destroyed
    CHECK(counted::live.load() == before);
  }
  SECTION("received by recv_many, or left behind for the receiver to destroy") {
    auto [tx, rx] = unbounded_channel<counted>();
    for (int i = 0; i < 10; ++i) REQUIRE(tx.send(counted(i)));
    {
      std::vector<counted> buffer;
      CHECK(completed(receive_many(rx, buffer, 4)) == 4);
      CHECK(counted::live.load() == before + 10);
    }
    CHECK(counted::live.load() == before + 6);
    { auto gone = std::move(rx); }
    CHECK(counted::live.load() == before);
  }
  CHECK(counted::live.load() == before);
}

TEST_CASE("producer threads and a consumer thread: nothing lost, each producer's order kept",
          "[mpsc][threads]") {
  constexpr int producers = 4;
  constexpr int per_producer = 2000;
  SECTION("bounded, blocking_send and blocking_recv") {
    auto [tx, rx] = channel<int>(8);
    std::vector<std::thread> threads;
    for (int p = 0; p < producers; ++p)
      threads.emplace_back([copy = tx, p]() mutable {
        for (int i = 0; i < per_producer; ++i) (void)copy.blocking_send(p * per_producer + i);
      });
    { auto gone = std::move(tx); }
    std::vector<int> next(producers, 0);
    int received = 0;
    bool in_order = true;
    while (auto value = rx.blocking_recv()) {
      const int p = *value / per_producer;
      if (*value % per_producer != next[p]) in_order = false;
      ++next[p];
      ++received;
    }
    for (auto& thread : threads) thread.join();
    CHECK(in_order);
    CHECK(received == producers * per_producer);
  }
  SECTION("unbounded, send and blocking_recv_many") {
    auto [tx, rx] = unbounded_channel<int>();
    std::vector<std::thread> threads;
    for (int p = 0; p < producers; ++p)
      threads.emplace_back([copy = tx, p]() mutable {
        for (int i = 0; i < per_producer; ++i) (void)copy.send(p * per_producer + i);
      });
    { auto gone = std::move(tx); }
    std::vector<int> next(producers, 0);
    std::vector<int> batch;
    int received = 0;
    bool in_order = true;
    while (rx.blocking_recv_many(batch, 64) > 0) {
      for (int value : batch) {
        const int p = value / per_producer;
        if (value % per_producer != next[p]) in_order = false;
        ++next[p];
        ++received;
      }
      batch.clear();
    }
    for (auto& thread : threads) thread.join();
    CHECK(in_order);
    CHECK(received == producers * per_producer);
  }
}

TEST_CASE("a task awaiting recv is woken by blocking sends from another thread", "[mpsc][threads]") {
  constexpr int rounds = 3000;
  manual_executor executor;
  auto [tx, rx] = channel<int>(4);
  std::thread producer([moved = std::move(tx)]() mutable {
    for (int i = 0; i < rounds; ++i) (void)moved.blocking_send(i);
  });
  int next = 0;
  bool in_order = true;
  for (;;) {
    auto receiving = spawn(executor, receive(rx));
    while (!receiving.done()) {
      executor.run();
      std::this_thread::yield();
    }
    auto value = receiving.result();
    if (!value) break;
    if (*value != next) in_order = false;
    ++next;
  }
  producer.join();
  CHECK(in_order);
  CHECK(next == rounds);
}

TEST_CASE("a task awaiting room is woken by a receiver on another thread", "[mpsc][threads]") {
  constexpr int rounds = 3000;
  auto [tx, rx] = channel<int>(2);
  std::vector<int> received;
  std::thread consumer([&received, moved = std::move(rx)]() mutable {
    while (auto value = moved.blocking_recv()) received.push_back(*value);
  });
  std::vector<int> values;
  for (int i = 0; i < rounds; ++i) values.push_back(i);
  manual_executor executor;
  auto sending = spawn(executor, send_all_then_drop(std::move(tx), values));
  while (!sending.done()) {
    executor.run();
    std::this_thread::yield();
  }
  consumer.join();
  CHECK(sending.result());
  CHECK(received == values);
}

TEST_CASE("tasks sending and reserving on one thread race a receiver destroyed on another",
          "[mpsc][threads]") {
  const long before = counted::live.load();
  for (int round = 0; round < 300; ++round) {
    manual_executor executor;
    auto [tx, rx] = channel<counted>(1);
    REQUIRE(tx.try_send(counted(0)));
    auto sending = spawn(executor, send_value(tx, counted(1)));
    auto reserving = spawn(executor, reserve_slot(tx));
    std::thread other([moved = std::move(rx)]() mutable {
      (void)moved.try_recv();  // frees the slot: one waiter may get it first
      auto gone = std::move(moved);
    });
    while (!(sending.done() && reserving.done())) {
      executor.run();
      std::this_thread::yield();
    }
    other.join();
    CHECK(tx.is_closed());
  }
  CHECK(counted::live.load() == before);
}

// -- a core embedded in another object (how an actor holds its mailbox): the seam's core_traits -----------

namespace embedded {
struct item {
  postal::test::counted value;
};
struct holder;
std::atomic<int> disposed{0};
}  // namespace embedded

template <>
struct postal::channel_access::core_traits<embedded::item> {
  static constexpr bool compact = true;
  static void dispose(bounded_core<embedded::item>* core) noexcept;
};

namespace embedded {
// The object the core lives in; the core is freed with it, through the trait's dispose.
struct holder : postal::channel_access::bounded_core<item> {
  explicit holder(std::size_t capacity) : bounded_core<item>(capacity) {}
  int other_state = 42;
};
}  // namespace embedded

void postal::channel_access::core_traits<embedded::item>::dispose(bounded_core<embedded::item>* core) noexcept {
  auto* owner = static_cast<embedded::holder*>(core);
  CHECK(owner->other_state == 42);
  embedded::disposed.fetch_add(1);
  delete owner;
}

TEST_CASE("a compact core embedded in another object carries values between threads and is disposed once, "
          "after its last handle",
          "[mpsc][threads]") {
  using core_type = postal::channel_access::bounded_core<embedded::item>;
  static_assert(sizeof(core_type) < sizeof(postal::channel_access::bounded_core<int>));
  static_assert(alignof(core_type) <= alignof(std::max_align_t));
  const long before = counted::live.load();
  embedded::disposed = 0;
  {
    auto* owner = new embedded::holder(4);
    auto [tx, rx] = postal::channel_access::adopt<embedded::item>(*owner);
    constexpr int per_producer = 2000;
    std::atomic<int> failed_sends{0};  // Catch's assertions are not for other threads
    std::vector<std::thread> producers;
    for (int p = 0; p < 2; ++p)
      producers.emplace_back([p, tx = tx, &failed_sends]() mutable {
        for (int i = 0; i < per_producer; ++i)
          if (!tx.blocking_send(embedded::item{counted(p * per_producer + i)})) failed_sends.fetch_add(1);
      });
    std::vector<int> last{-1, -1};
    for (int n = 0; n < 2 * per_producer; ++n) {
      auto got = rx.blocking_recv();
      REQUIRE(got);
      const int producer = got->value.value / per_producer;
      CHECK(got->value.value > last[producer]);  // each producer's values in order
      last[producer] = got->value.value;
    }
    for (auto& t : producers) t.join();
    CHECK(failed_sends.load() == 0);

    // Values buffered when the receiver goes, and one sent through a permit afterwards, are destroyed.
    REQUIRE(tx.try_send(embedded::item{counted(-1)}));
    auto weak = tx.downgrade();
    auto held = tx.try_reserve();
    REQUIRE(held);
    { auto drop = std::move(rx); }
    held->send(embedded::item{counted(-2)});
    { auto drop = std::move(tx); }
    CHECK(embedded::disposed.load() == 0);  // the weak sender still holds it
    CHECK_FALSE(weak.upgrade());
  }
  CHECK(embedded::disposed.load() == 1);
  CHECK(counted::live.load() == before);
}
