// Tests of the waker hook itself: the manual test executor, the thread parker and the wake_once arbiter
// that every channel's timed waits rely on.
#include <postal/expected.hpp>
#include <postal/waker.hpp>

#include <catch2/catch.hpp>
#include <memory>
#include <string>
#include <thread>

#include "support/manual_executor.hpp"

namespace {

// An awaitable that parks its waker where the test can reach it.
struct park_here {
  postal::waker* slot;
  bool await_ready() const noexcept { return false; }
  template <class P>
  void await_suspend(std::coroutine_handle<P> h) noexcept {
    *slot = postal::detail::waker_for(h);
  }
  void await_resume() const noexcept {}
};

postal::test::job<int> wait_once(postal::waker* slot) {
  co_await park_here{slot};
  co_return 7;
}

}  // namespace

TEST_CASE("a woken coroutine runs only when the executor runs it", "[waker]") {
  postal::test::manual_executor executor;
  postal::waker slot;
  auto j = postal::test::spawn(executor, wait_once(&slot));
  REQUIRE_FALSE(j.done());
  REQUIRE(slot);
  slot.wake();
  REQUIRE_FALSE(slot);
  CHECK(executor.wakes() == 1);
  CHECK_FALSE(j.done());
  CHECK(executor.run() == 1);
  REQUIRE(j.done());
  CHECK(j.result() == 7);
}

TEST_CASE("a timer waker fires only when the fake clock passes its deadline", "[waker]") {
  postal::test::manual_executor executor;
  postal::waker slot;
  auto j = postal::test::spawn(executor, wait_once(&slot));
  REQUIRE(executor.wake_at(std::chrono::steady_clock::now() + std::chrono::seconds(10), slot));
  executor.advance(std::chrono::seconds(1));
  CHECK(executor.run() == 0);
  executor.advance(std::chrono::seconds(10));
  CHECK(executor.run() == 1);
  CHECK(j.done());
}

TEST_CASE("wake_once lets only the first of two wakers through", "[waker]") {
  postal::test::manual_executor executor;
  postal::waker slot;
  auto j = postal::test::spawn(executor, wait_once(&slot));
  auto* arbiter = postal::detail::wake_once::create(std::move(slot));
  postal::waker first = arbiter->make_waker();
  postal::waker second = arbiter->make_waker();
  second.wake();
  first.wake();
  CHECK(arbiter->fired());
  CHECK_FALSE(arbiter->disarm());
  arbiter->release();
  CHECK(executor.wakes() == 1);
  executor.run();
  CHECK(j.done());
}

TEST_CASE("a thread parker is unparked by its waker from another thread", "[waker]") {
  postal::detail::thread_parker parker;
  postal::waker w = parker.make_waker();
  std::thread other([&] { w.wake(); });
  parker.park();
  other.join();
  CHECK(parker.woken());
}

TEST_CASE("a thread parker times out when nobody wakes it", "[waker]") {
  postal::detail::thread_parker parker;
  postal::waker w = parker.make_waker();
  CHECK_FALSE(parker.park_until(std::chrono::steady_clock::now()));
  w.wake();
  CHECK(parker.park_until(std::chrono::steady_clock::now()));
}

TEST_CASE("blocking calls are refused on executor threads", "[waker]") {
  postal::detail::on_executor_thread = true;
  CHECK_THROWS_AS(postal::detail::check_may_block("blocking_recv"), std::logic_error);
  postal::detail::on_executor_thread = false;
  CHECK_NOTHROW(postal::detail::check_may_block("blocking_recv"));
}

TEST_CASE("expected holds a value or an error, move-only types included", "[expected]") {
  postal::expected<std::unique_ptr<int>, std::string> ok = std::make_unique<int>(3);
  REQUIRE(ok);
  CHECK(**ok == 3);
  postal::expected<std::unique_ptr<int>, std::string> bad = postal::unexpected{std::string("full")};
  REQUIRE_FALSE(bad);
  CHECK(bad.error() == "full");
  CHECK_THROWS_AS(bad.value(), postal::bad_expected_access);
  postal::expected<void, int> nothing;
  CHECK(nothing);
  postal::expected<void, int> failed = postal::unexpected{5};
  CHECK(failed.error() == 5);
  auto moved = std::move(ok);
  CHECK(**moved == 3);
}
