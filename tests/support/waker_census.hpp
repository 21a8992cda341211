// Suspend hooks for tests that must see exactly which wakers a channel keeps, wakes or drops (tokio_test's
// waker_ref_count), and a coroutine type to run one wait under them. A wake is only counted: nothing is
// resumed, so a test can also cancel a wait after its wake. Not an executor (see manual_executor.hpp).
#pragma once

#include <postal/waker.hpp>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <exception>
#include <utility>

namespace postal::test {

/// Counts the wakers it handed out that are still alive (neither woken nor dropped), and the wakes.
/// Thread-safe: a channel may wake or drop a waker on another thread.
struct waker_census final : postal::suspend_hooks {
  std::atomic<int> live{0};
  std::atomic<int> woken{0};

  postal::waker waker_for(std::coroutine_handle<>) noexcept override {
    ++live;
    return postal::waker(this, &table);
  }
  bool wake_at(std::chrono::steady_clock::time_point, postal::waker&) override { return false; }

  static void wake(void* data) noexcept {
    auto* self = static_cast<waker_census*>(data);
    --self->live;
    ++self->woken;
  }
  static void drop(void* data) noexcept { --static_cast<waker_census*>(data)->live; }
  static constexpr postal::waker::vtable table{&waker_census::wake, &waker_census::drop};
};

/// A coroutine run to its first suspension under a waker_census by start() and never resumed again;
/// destroying it cancels the wait it is suspended in (woken or not).
struct probe {
  struct promise_type {
    waker_census* census = nullptr;
    probe get_return_object() { return probe(std::coroutine_handle<promise_type>::from_promise(*this)); }
    std::suspend_always initial_suspend() noexcept { return {}; }
    std::suspend_always final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() { std::terminate(); }
    postal::suspend_hooks* postal_hooks() noexcept { return census; }
  };
  explicit probe(std::coroutine_handle<promise_type> h) : handle(h) {}
  probe(probe&& other) noexcept : handle(std::exchange(other.handle, {})) {}
  probe& operator=(probe&&) = delete;
  ~probe() {
    if (handle) handle.destroy();
  }
  void start(waker_census& census) {
    handle.promise().census = &census;
    handle.resume();
  }
  bool done() const { return handle.done(); }
  std::coroutine_handle<promise_type> handle;
};

}  // namespace postal::test
