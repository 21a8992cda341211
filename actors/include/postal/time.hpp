// Timers for postal tasks: `co_await postal::sleep_for(d)` and `sleep_until(t)`, served by CAF's clock
// (no thread of postal's own). Channel waits with a timeout (mpsc send_timeout ...) use the same timers.
// Not for: timed waits on plain threads (the blocking_ forms take their own deadlines).
#pragma once

#include <postal/waker.hpp>

#include <chrono>
#include <coroutine>
#include <stdexcept>

namespace postal {

namespace detail {

class sleep_awaiter {
 public:
  explicit sleep_awaiter(std::chrono::steady_clock::time_point deadline) noexcept : deadline_(deadline) {}
  bool await_ready() const noexcept { return deadline_ <= std::chrono::steady_clock::now(); }
  template <class Promise>
  void await_suspend(std::coroutine_handle<Promise> handle) {
    suspend_hooks* hooks = hooks_of(handle);
    if (hooks == nullptr)
      throw std::logic_error("postal::sleep_for/sleep_until: only postal tasks can sleep");
    waker wake = hooks->waker_for(handle);
    if (!hooks->wake_at(deadline_, wake))
      throw std::logic_error("postal::sleep_for/sleep_until: this executor has no timers");
  }
  void await_resume() const noexcept {}

 private:
  std::chrono::steady_clock::time_point deadline_;
};

}  // namespace detail

/// Suspends the calling task until `deadline` (at once if it passed). Timers fire a few hundred
/// microseconds late at most under normal load. Cancel-safety: a task destroyed while it sleeps is simply
/// gone; the timer finds nothing to wake. At runtime shutdown a sleeping task counts as suspended (see
/// runtime::shutdown): join it first if it must finish.
inline detail::sleep_awaiter sleep_until(std::chrono::steady_clock::time_point deadline) noexcept {
  return detail::sleep_awaiter(deadline);
}

/// Suspends the calling task for at least `duration`.
template <class Rep, class Period>
detail::sleep_awaiter sleep_for(std::chrono::duration<Rep, Period> duration) noexcept {
  return detail::sleep_awaiter(std::chrono::steady_clock::now() +
                               std::chrono::duration_cast<std::chrono::steady_clock::duration>(duration));
}

}  // namespace postal
