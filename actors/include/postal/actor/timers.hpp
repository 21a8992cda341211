// Delayed and periodic tells: tell_after and tell_every, through CAF's clock (no thread of postal's own),
// and timer_handle to cancel them. Not for: sleeping in a task (<postal/time.hpp>).
#pragma once

#include <postal/actor/ref.hpp>
#include <postal/oneshot.hpp>
#include <postal/runtime.hpp>
#include <postal/task.hpp>
#include <postal/time.hpp>

#include <algorithm>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <type_traits>
#include <utility>

namespace postal {

/// Cancels a delayed or periodic tell (tell_after, tell_every). Move-only. Destroying the handle without
/// calling cancel() leaves the timer running (fire and forget).
class timer_handle {
 public:
  timer_handle() = default;
  timer_handle(timer_handle&&) noexcept = default;
  timer_handle& operator=(timer_handle&&) noexcept = default;
  /// Cancels the timer: a message not yet told never will be. Idempotent; never waits.
  void cancel() {
    if (cancel_) {
      (void)cancel_->send(true);
      cancel_.reset();
    }
  }

 private:
  template <class Message, class M>
  friend timer_handle tell_after(runtime&, actor_ref<Message>, std::chrono::steady_clock::duration, M);
  template <class Message, class M>
  friend timer_handle tell_every(runtime&, actor_ref<Message>, std::chrono::steady_clock::duration, M);
  explicit timer_handle(oneshot::sender<bool> cancel)
      : cancel_(std::make_unique<oneshot::sender<bool>>(std::move(cancel))) {}

  std::unique_ptr<oneshot::sender<bool>> cancel_;
};

namespace detail {
// Waits until `deadline` unless the handle cancels first; true if the timer should fire. A dropped handle
// (its sender gone) means "keep going": the rest of the wait is a plain sleep, and so are later ones.
inline task<bool> wait_or_cancel(oneshot::receiver<bool>& cancel, bool& detached,
                                 std::chrono::steady_clock::time_point deadline) {
  if (!detached) {
    auto outcome = co_await cancel.recv_until(deadline);
    if (outcome) co_return false;  // cancelled
    detached = outcome.error().is_closed();
    if (!detached) co_return true;  // the deadline passed
  }
  co_await sleep_until(deadline);
  co_return true;
}
}  // namespace detail

/// Tells `message` to `target` once `delay` has passed (through CAF's clock; no thread of postal's own).
/// The tell waits for mailbox room like any tell. Returns a handle whose cancel() withdraws it.
template <class Message, class M>
timer_handle tell_after(runtime& rt, actor_ref<Message> target, std::chrono::steady_clock::duration delay,
                        M message) {
  static_assert(detail::tellable<M, Message>, "the actor's mailbox does not take this message type");
  auto [cancel_tx, cancel_rx] = oneshot::channel<bool>();
  const auto deadline = std::chrono::steady_clock::now() + delay;
  rt.spawn([](actor_ref<Message> target, M message, oneshot::receiver<bool> cancel,
              std::chrono::steady_clock::time_point deadline) -> task<void> {
    bool detached = false;
    if (co_await detail::wait_or_cancel(cancel, detached, deadline))
      (void)co_await target.tell(std::move(message));
  }(std::move(target), std::move(message), std::move(cancel_rx), deadline));
  return timer_handle(std::move(cancel_tx));
}

/// Tells a copy of `message` to `target` every `period` (the first after one period), until cancel() or
/// until the actor stops taking messages. Ticks do not pile up: a tick that waits for mailbox room delays
/// the next one (the schedule stays anchored to the start, so it catches up without bursts beyond that).
template <class Message, class M>
timer_handle tell_every(runtime& rt, actor_ref<Message> target, std::chrono::steady_clock::duration period,
                        M message) {
  static_assert(detail::tellable<M, Message>, "the actor's mailbox does not take this message type");
  static_assert(std::is_copy_constructible_v<M>, "tell_every tells copies of the message");
  if (period <= std::chrono::steady_clock::duration::zero())
    throw std::invalid_argument("postal::tell_every: the period must be positive");
  auto [cancel_tx, cancel_rx] = oneshot::channel<bool>();
  rt.spawn([](actor_ref<Message> target, M message, oneshot::receiver<bool> cancel,
              std::chrono::steady_clock::duration period) -> task<void> {
    bool detached = false;
    auto next = std::chrono::steady_clock::now() + period;
    for (;;) {
      if (!co_await detail::wait_or_cancel(cancel, detached, next)) co_return;
      M tick = message;
      if (!co_await target.tell(std::move(tick))) co_return;  // the actor stopped
      next = std::max(next + period, std::chrono::steady_clock::now());
    }
  }(std::move(target), std::move(message), std::move(cancel_rx), period));
  return timer_handle(std::move(cancel_tx));
}

}  // namespace postal
