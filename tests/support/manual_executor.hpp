// A deterministic executor for tests of the channel layer (folly's ManualExecutor, tokio_test's mock task):
// coroutines spawned on it run only when the test calls run(), wakes are counted, and timers fire only when
// the test calls advance(). No threads, no sleeps. Not for production use.
#pragma once

#include <postal/waker.hpp>

#include <chrono>
#include <coroutine>
#include <cstddef>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <utility>

namespace postal::test {

class manual_executor final : public suspend_hooks {
 public:
  using clock = std::chrono::steady_clock;

  waker waker_for(std::coroutine_handle<> handle) noexcept override {
    auto* token = new wake_token{this, handle};
    return waker(token, &token_vtable_);
  }
  bool wake_at(clock::time_point deadline, waker& w) override {
    std::lock_guard lock(mutex_);
    timers_.emplace(deadline, std::move(w));
    return true;
  }

  /// Resumes every woken coroutine, including ones woken while this runs. Returns how many resumes happened.
  std::size_t run() {
    std::size_t resumed = 0;
    for (;;) {
      std::coroutine_handle<> next;
      {
        std::lock_guard lock(mutex_);
        if (ready_.empty()) return resumed;
        next = ready_.front();
        ready_.pop_front();
      }
      next.resume();
      ++resumed;
    }
  }
  /// Moves the fake clock forward by `by` (from at least the real now) and wakes the timers that are due.
  void advance(clock::duration by) {
    std::multimap<clock::time_point, waker> due;
    {
      std::lock_guard lock(mutex_);
      now_ = std::max(now_, clock::now()) + by;
      auto end = timers_.upper_bound(now_);
      for (auto it = timers_.begin(); it != end;) {
        auto node = timers_.extract(it++);
        due.insert(std::move(node));
      }
    }
    for (auto& [deadline, w] : due) w.wake();
  }
  /// How many times a coroutine on this executor was woken so far.
  std::size_t wakes() const {
    std::lock_guard lock(mutex_);
    return wakes_;
  }
  std::size_t pending_timers() const {
    std::lock_guard lock(mutex_);
    return timers_.size();
  }

 private:
  struct wake_token {
    manual_executor* executor;
    std::coroutine_handle<> handle;
  };
  static void wake(void* data) noexcept {
    auto* token = static_cast<wake_token*>(data);
    {
      std::lock_guard lock(token->executor->mutex_);
      token->executor->ready_.push_back(token->handle);
      ++token->executor->wakes_;
    }
    delete token;
  }
  static void drop(void* data) noexcept { delete static_cast<wake_token*>(data); }
  static constexpr waker::vtable token_vtable_{&manual_executor::wake, &manual_executor::drop};

  mutable std::mutex mutex_;
  std::deque<std::coroutine_handle<>> ready_;
  std::multimap<clock::time_point, waker> timers_;
  clock::time_point now_ = clock::now();
  std::size_t wakes_ = 0;
};

/// A coroutine run on a manual_executor. It starts running at once (up to its first suspension) when created
/// by spawn(); done() tells whether it finished; result() gives its value (rethrowing its exception).
/// Destroying a job that has not finished destroys its frame (cancelling the wait it is suspended in).
template <class T>
class job {
 public:
  struct promise_type {
    manual_executor* executor = nullptr;
    std::optional<T> value;
    std::exception_ptr error;
    bool finished = false;

    job get_return_object() { return job(std::coroutine_handle<promise_type>::from_promise(*this)); }
    std::suspend_always initial_suspend() noexcept { return {}; }
    std::suspend_always final_suspend() noexcept {
      finished = true;
      return {};
    }
    void return_value(T v) { value.emplace(std::move(v)); }
    void unhandled_exception() {
      error = std::current_exception();
      finished = true;
    }
    suspend_hooks* postal_hooks() noexcept { return executor; }
  };

  job(job&& other) noexcept : handle_(std::exchange(other.handle_, {})) {}
  job& operator=(job&&) = delete;
  ~job() {
    if (handle_) handle_.destroy();
  }

  bool done() const { return handle_.promise().finished; }
  T& result() {
    if (handle_.promise().error) std::rethrow_exception(handle_.promise().error);
    return *handle_.promise().value;
  }

 private:
  template <class U>
  friend job<U> spawn(manual_executor&, job<U>);
  explicit job(std::coroutine_handle<promise_type> handle) : handle_(handle) {}
  std::coroutine_handle<promise_type> handle_;
};

/// Binds `j` to `executor` and runs it up to its first suspension.
template <class T>
job<T> spawn(manual_executor& executor, job<T> j) {
  j.handle_.promise().executor = &executor;
  j.handle_.resume();
  return j;
}

}  // namespace postal::test
