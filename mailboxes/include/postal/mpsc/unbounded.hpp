// postal::mpsc unbounded channels: unbounded_channel<T>(), unbounded_sender, weak_unbounded_sender,
// unbounded_receiver. send() never waits; memory grows while the receiver falls behind (no backpressure).
// See <postal/mpsc.hpp> for when to use which channel. Not for the bounded channel
// (<postal/mpsc/bounded.hpp>).
#pragma once

#include <postal/expected.hpp>
#include <postal/mpsc/detail/common.hpp>
#include <postal/mpsc/detail/unbounded_queue.hpp>
#include <postal/mpsc/errors.hpp>
#include <postal/waker.hpp>

#include <cstddef>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

namespace postal::mpsc {

template <class T>
class unbounded_sender;
template <class T>
class weak_unbounded_sender;
template <class T>
class unbounded_receiver;

template <class T>
std::pair<unbounded_sender<T>, unbounded_receiver<T>> unbounded_channel();

/// The sending half of an unbounded channel. Copyable: a copy is one more sender; the receiver sees the end
/// of the stream once every sender is gone. A moved-from sender may only be assigned to or destroyed.
/// Thread-safety: senders, and one sender object, may be used from several threads at once (except
/// assignment and destruction).
template <class T>
class unbounded_sender {
 public:
  unbounded_sender(const unbounded_sender& other) noexcept : core_(other.core_) {
    if (core_ != nullptr) {
      core_->counts.strong_senders.fetch_add(1, std::memory_order_relaxed);
      core_->counts.references.fetch_add(1, std::memory_order_relaxed);
    }
  }
  unbounded_sender(unbounded_sender&& other) noexcept : core_(std::exchange(other.core_, nullptr)) {}
  unbounded_sender& operator=(unbounded_sender other) noexcept {
    std::swap(core_, other.core_);
    return *this;
  }
  /// Destroying the last sender lets the receiver drain and then see the end of the stream.
  ~unbounded_sender() { reset(); }

  /// Appends `value` to the channel and wakes the receiver if it waits. Never waits. send_error with the
  /// value back if the receiver is gone or closed. Throws std::bad_alloc if the buffer cannot grow (the
  /// value is then destroyed).
  expected<void, send_error<T>> send(T value) {
    if (core_->push(value)) return {};
    return unexpected<send_error<T>>{send_error<T>{std::move(value)}};
  }

  /// `co_await tx.closed()` completes once the receiver is closed or destroyed (at once if it already is).
  /// Cancel-safety: destroying the waiting coroutine withdraws the wait; nothing is lost.
  detail::closed_awaitable<detail::unbounded_core<T>> closed() const noexcept {
    return detail::wait_closed(core_);
  }
  /// Blocks the calling thread until the receiver is closed or destroyed. Throws std::logic_error on a
  /// runtime worker thread.
  void blocking_closed() const {
    postal::detail::check_may_block("blocking_closed");
    detail::block_until_closed(*core_);
  }

  /// True once the receiver is closed or destroyed (every send fails from then on). Never waits.
  bool is_closed() const noexcept { return core_->receiver_closed(); }
  /// A weak sender: it does not keep the channel open, and upgrade() gives a sender while one exists.
  weak_unbounded_sender<T> downgrade() const noexcept { return weak_unbounded_sender<T>(core_); }
  bool same_channel(const unbounded_sender& other) const noexcept { return core_ == other.core_; }
  std::size_t strong_count() const noexcept {
    return core_->counts.strong_senders.load(std::memory_order_acquire);
  }
  std::size_t weak_count() const noexcept {
    return core_->counts.weak_senders.load(std::memory_order_acquire);
  }

 private:
  template <class U>
  friend std::pair<unbounded_sender<U>, unbounded_receiver<U>> unbounded_channel();
  friend class detail::weak_handle<detail::unbounded_core<T>, unbounded_sender<T>>;
  struct adopt_t {};
  unbounded_sender(detail::unbounded_core<T>* core, adopt_t) noexcept : core_(core) {}
  void reset() noexcept {
    if (core_ != nullptr) {
      detail::unbounded_core<T>* core = std::exchange(core_, nullptr);
      core->drop_strong_sender();
      core->release_reference();
    }
  }

  detail::unbounded_core<T>* core_ = nullptr;
};

/// A sender that does not keep the unbounded channel open (Tokio's WeakUnboundedSender). Copyable.
/// upgrade() gives a sender while at least one sender exists, an empty optional once every sender is gone.
template <class T>
class weak_unbounded_sender : public detail::weak_handle<detail::unbounded_core<T>, unbounded_sender<T>> {
 private:
  friend class unbounded_sender<T>;
  explicit weak_unbounded_sender(detail::unbounded_core<T>* core) noexcept
      : detail::weak_handle<detail::unbounded_core<T>, unbounded_sender<T>>(core) {}
};

/// The receiving half of an unbounded channel. Move-only. Values from one sender arrive in the order it sent
/// them. Destroying the receiver closes the channel (later sends fail with their values back, closed()
/// waits complete) and destroys the values still buffered. Thread-safety: as mpsc::receiver.
template <class T>
class unbounded_receiver {
 public:
  unbounded_receiver(unbounded_receiver&& other) noexcept : core_(std::exchange(other.core_, nullptr)) {}
  unbounded_receiver& operator=(unbounded_receiver&& other) noexcept {
    if (this != &other) {
      reset();
      core_ = std::exchange(other.core_, nullptr);
    }
    return *this;
  }
  unbounded_receiver(const unbounded_receiver&) = delete;
  unbounded_receiver& operator=(const unbounded_receiver&) = delete;
  ~unbounded_receiver() { reset(); }

  /// `co_await rx.recv()` -> the next value, waiting while none is buffered; an empty optional once every
  /// sender is gone (or close() was called) and the buffer is drained. The receiver must outlive the wait.
  /// Cancel-safety: destroying the waiting coroutine withdraws the wait; no value is lost.
  auto recv() noexcept {
    return detail::receive_awaitable<detail::unbounded_core<T>, detail::receive_one<T>>(core_, {});
  }
  /// The next value if one is buffered; try_recv_error::empty if none is but one may come;
  /// try_recv_error::disconnected if none ever will.
  expected<T, try_recv_error> try_recv() {
    std::optional<T> value;
    if (core_->take(1, [&value](T&& v) noexcept { value.emplace(std::move(v)); }) != 0)
      return expected<T, try_recv_error>(std::move(*value));
    if (core_->finished()) return unexpected{try_recv_error::disconnected};
    return unexpected{try_recv_error::empty};
  }
  /// Blocks the calling thread until recv() would complete; returns what it returns. Throws
  /// std::logic_error on a runtime worker thread.
  std::optional<T> blocking_recv() {
    postal::detail::check_may_block("blocking_recv");
    return detail::blocking_receive(*core_, detail::receive_one<T>{});
  }
  /// `co_await rx.recv_many(out, limit)` -> how many values it appended to `out` (at most `limit`), waiting
  /// until at least one is buffered; 0 only if `limit` is 0 or the channel is finished.
  /// `out` and the receiver must outlive the wait. Cancel-safety: as recv().
  auto recv_many(std::vector<T>& out, std::size_t limit) noexcept {
    return detail::receive_awaitable<detail::unbounded_core<T>, detail::receive_many<T>>(
        core_, detail::receive_many<T>{&out, limit});
  }
  /// Blocks the calling thread like recv_many. Throws std::logic_error on a runtime worker thread.
  std::size_t blocking_recv_many(std::vector<T>& out, std::size_t limit) {
    postal::detail::check_may_block("blocking_recv_many");
    return detail::blocking_receive(*core_, detail::receive_many<T>{&out, limit});
  }

  /// Closes the channel without destroying the receiver: sends fail from now on and closed() waits
  /// complete, but buffered values can still be received. Idempotent.
  void close() noexcept { core_->close(); }
  /// True once close() was called or every sender is gone (values may still be buffered).
  bool is_closed() const noexcept {
    return core_->receiver_closed() || core_->counts.strong_senders.load(std::memory_order_acquire) == 0;
  }
  bool is_empty() const noexcept { return core_->buffered() == 0; }
  std::size_t len() const noexcept { return core_->buffered(); }
  std::size_t sender_strong_count() const noexcept {
    return core_->counts.strong_senders.load(std::memory_order_acquire);
  }
  std::size_t sender_weak_count() const noexcept {
    return core_->counts.weak_senders.load(std::memory_order_acquire);
  }

 private:
  template <class U>
  friend std::pair<unbounded_sender<U>, unbounded_receiver<U>> unbounded_channel();
  explicit unbounded_receiver(detail::unbounded_core<T>* core) noexcept : core_(core) {}
  void reset() noexcept {
    if (core_ != nullptr) {
      detail::unbounded_core<T>* core = std::exchange(core_, nullptr);
      core->receiver_leave();
      core->release_reference();
    }
  }

  detail::unbounded_core<T>* core_ = nullptr;
};

/// Creates an unbounded channel: `auto [tx, rx] = postal::mpsc::unbounded_channel<T>();`.
template <class T>
std::pair<unbounded_sender<T>, unbounded_receiver<T>> unbounded_channel() {
  static_assert(!std::is_void_v<T> && !std::is_reference_v<T>,
                "use a value type (std::monostate for no value)");
  static_assert(std::is_nothrow_move_constructible_v<T> && std::is_nothrow_destructible_v<T>,
                "postal::mpsc needs a nothrow move-constructible value type");
  auto* core = new detail::unbounded_core<T>();
  return {unbounded_sender<T>(core, typename unbounded_sender<T>::adopt_t{}), unbounded_receiver<T>(core)};
}

}  // namespace postal::mpsc
