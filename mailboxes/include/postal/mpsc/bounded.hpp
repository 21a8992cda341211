// postal::mpsc bounded channels: channel<T>(capacity), sender, weak_sender, permit, receiver. A sender waits
// while the channel is full (backpressure); waiting senders are served first come, first served. See
// <postal/mpsc.hpp> for when to use which channel. Not for the unbounded channel
// (<postal/mpsc/unbounded.hpp>).
#pragma once

#include <postal/expected.hpp>
#include <postal/mpsc/detail/bounded_queue.hpp>
#include <postal/mpsc/detail/common.hpp>
#include <postal/mpsc/errors.hpp>
#include <postal/waker.hpp>

#include <chrono>
#include <coroutine>
#include <cstddef>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace postal::mpsc {

template <class T>
class sender;
template <class T>
class weak_sender;
template <class T>
class permit;
template <class T>
class receiver;

namespace detail {
// The first sender and the receiver of a core built in place, where channel_access::core_traits<T>::dispose knows how to
// free it (a channel() core is freed with delete). They take over the counts a new core starts with.
// Throws std::invalid_argument, naming `who`, unless 1 <= capacity <= max_channel_capacity.
inline void check_capacity(std::size_t capacity, const char* who) {
  if (capacity == 0) throw std::invalid_argument(std::string(who) + ": capacity must be at least 1");
  if (capacity > max_channel_capacity)
    throw std::invalid_argument(std::string(who) + ": capacity above max_channel_capacity");
}
template <class T>
std::pair<sender<T>, receiver<T>> adopt_core(bounded_core<T>& core) noexcept;
// A new sender of such a core while any strong sender exists (weak_sender::upgrade, for an owner that keeps
// the core's memory alive by other means).
template <class T>
std::optional<sender<T>> upgrade_core(bounded_core<T>& core) noexcept;
}  // namespace detail

template <class T>
std::pair<sender<T>, receiver<T>> channel(std::size_t capacity);

namespace detail {

// How a wait for a slot ended on a plain thread.
enum class slot_outcome { claimed, granted, closed, timed_out };

// Waits on this thread for a slot (a send index, or a permit): spins briefly, then queues up and parks.
// `claimed` fills `out` (publish for a send); `granted` means a permit was granted to this waiter.
template <class T>
slot_outcome block_for_slot(bounded_core<T>& core, bool as_permit, claim& out,
                            const std::chrono::steady_clock::time_point* deadline) {
  for (int i = 0; i < spin_iterations; ++i) {
    const claim_status status = core.try_claim(as_permit, out);
    if (status == claim_status::claimed) return slot_outcome::claimed;
    if (status == claim_status::closed) return slot_outcome::closed;
    spin_pause(i);  // backing off keeps the receiver's cache line to itself while it frees slots
  }
  postal::detail::thread_parker parker;
  waiter node;
  node.target = parker.make_waker();
  const claim_status status = core.claim_or_enqueue(as_permit, node, out);
  if (status == claim_status::claimed) return slot_outcome::claimed;
  if (status == claim_status::closed) return slot_outcome::closed;
  if (deadline == nullptr) {
    parker.park();
  } else if (!parker.park_until(*deadline)) {
    if (core.withdraw(node, true) == wait_state::waiting) return slot_outcome::timed_out;
    parker.park();  // its waker was taken to be woken: wait for that before the node and parker go away
  }
  return node.state == wait_state::granted ? slot_outcome::granted : slot_outcome::closed;
}

// The part of send / reserve / send_timeout awaitables that waits for a slot: the waiter node and its
// withdrawal when the waiting coroutine is destroyed (a slot granted meanwhile goes to the next waiter).
template <class T>
class slot_wait {
 public:
  slot_wait(const slot_wait&) = delete;
  slot_wait& operator=(const slot_wait&) = delete;

 protected:
  explicit slot_wait(bounded_core<T>* core) noexcept : core_(core) {}
  ~slot_wait() {
    if (waiting_) core_->withdraw(node_, false);
  }

  // Queues up with waker `w` (status full: the caller must suspend and touch nothing more), or claims
  // (claimed) or finds the channel closed (closed), in which case the waker is dropped unused. May throw
  // std::bad_alloc (the ring's first allocation) before queuing: the withdrawal then finds nothing to do.
  claim_status start_waiting(bool as_permit, waker w, claim& out) {
    node_.target = std::move(w);
    waiting_ = true;  // before publishing: the wait may end on another thread right after
    const claim_status status = core_->claim_or_enqueue(as_permit, node_, out);
    if (status != claim_status::full) {
      waiting_ = false;
      node_.target.reset();
    }
    return status;
  }
  // After the wake: granted (a permit is ours) or closed.
  wait_state finish_waiting() noexcept {
    waiting_ = false;
    return node_.state;
  }
  // After a timed wake: waiting if the wait timed out (now withdrawn), else granted or closed.
  wait_state withdraw_keeping_grant() noexcept {
    waiting_ = false;
    return core_->withdraw(node_, true);
  }

  bounded_core<T>* core_;

 private:
  waiter node_;
  bool waiting_ = false;
};

enum class send_outcome : unsigned char { pending, sent, closed, timed_out };

// co_await sender.send(value).
template <class T>
class [[nodiscard]] send_awaitable : slot_wait<T> {
 public:
  send_awaitable(bounded_core<T>* core, T&& value) noexcept : slot_wait<T>(core), value_(std::move(value)) {}

  bool await_ready() {
    claim c;
    return settle(this->core_->try_claim(false, c), c);
  }
  template <class Promise>
  bool await_suspend(std::coroutine_handle<Promise> handle) {
    claim c;
    const claim_status status = this->start_waiting(false, postal::detail::waker_for(handle), c);
    if (status == claim_status::full) return true;
    settle(status, c);
    return false;
  }
  expected<void, send_error<T>> await_resume() {
    if (outcome_ == send_outcome::pending) {
      if (this->finish_waiting() == wait_state::granted) {
        this->core_->send_with_permit(std::move(value_));
        outcome_ = send_outcome::sent;
      } else {
        outcome_ = send_outcome::closed;
      }
    }
    if (outcome_ == send_outcome::sent) return {};
    return unexpected<send_error<T>>{send_error<T>{std::move(value_)}};
  }

 private:
  bool settle(claim_status status, const claim& c) noexcept {
    if (status == claim_status::claimed) {
      this->core_->publish(c, std::move(value_));
      outcome_ = send_outcome::sent;
    } else if (status == claim_status::closed) {
      outcome_ = send_outcome::closed;
    }
    return status != claim_status::full;
  }

  T value_;
  send_outcome outcome_ = send_outcome::pending;
};

// co_await sender.send_timeout(value, timeout).
template <class T>
class [[nodiscard]] send_timeout_awaitable : slot_wait<T> {
 public:
  send_timeout_awaitable(bounded_core<T>* core, T&& value,
                         std::chrono::steady_clock::time_point deadline) noexcept
      : slot_wait<T>(core), value_(std::move(value)), deadline_(deadline) {}
  ~send_timeout_awaitable() {
    if (gate_ != nullptr) {
      gate_->disarm();
      gate_->release();
    }
  }

  bool await_ready() const noexcept { return false; }
  template <class Promise>
  bool await_suspend(std::coroutine_handle<Promise> handle) {
    suspend_hooks* hooks = postal::detail::hooks_of(handle);
    if (hooks == nullptr)
      throw std::logic_error(
          "postal::mpsc::sender::send_timeout needs a coroutine whose executor has timers");
    claim c;
    claim_status status = this->core_->try_claim(false, c);
    if (status != claim_status::full) {
      settle(status, c);
      return false;
    }
    gate_ = timed_wake::create(postal::detail::waker_for(handle));
    {
      waker timer = gate_->make_waker();
      if (!hooks->wake_at(deadline_, timer))
        throw std::logic_error("postal::mpsc::sender::send_timeout needs an executor with timers");
    }
    status = this->start_waiting(false, gate_->make_waker(), c);
    if (status == claim_status::full) return gate_->finish_suspend();  // the last touch of this awaitable
    gate_->disarm();
    settle(status, c);
    return false;
  }
  expected<void, send_timeout_error<T>> await_resume() {
    if (outcome_ == send_outcome::pending) {
      gate_->disarm();
      switch (this->withdraw_keeping_grant()) {
        case wait_state::waiting:
          outcome_ = send_outcome::timed_out;
          break;
        case wait_state::granted:
          this->core_->send_with_permit(std::move(value_));
          outcome_ = send_outcome::sent;
          break;
        case wait_state::closed:
          outcome_ = send_outcome::closed;
          break;
      }
    }
    if (outcome_ == send_outcome::sent) return {};
    const send_timeout_failure kind =
        outcome_ == send_outcome::closed ? send_timeout_failure::closed : send_timeout_failure::timeout;
    return unexpected<send_timeout_error<T>>{send_timeout_error<T>{kind, std::move(value_)}};
  }

 private:
  void settle(claim_status status, const claim& c) noexcept {
    if (status == claim_status::claimed) {
      this->core_->publish(c, std::move(value_));
      outcome_ = send_outcome::sent;
    } else {
      outcome_ = send_outcome::closed;
    }
  }

  T value_;
  std::chrono::steady_clock::time_point deadline_;
  timed_wake* gate_ = nullptr;
  send_outcome outcome_ = send_outcome::pending;
};

// co_await sender.reserve().
template <class T>
class [[nodiscard]] reserve_awaitable : slot_wait<T> {
 public:
  explicit reserve_awaitable(bounded_core<T>* core) noexcept : slot_wait<T>(core) {}

  bool await_ready() {
    claim c;
    return settle(this->core_->try_claim(true, c));
  }
  template <class Promise>
  bool await_suspend(std::coroutine_handle<Promise> handle) {
    claim c;
    const claim_status status = this->start_waiting(true, postal::detail::waker_for(handle), c);
    if (status == claim_status::full) return true;
    settle(status);
    return false;
  }
  expected<permit<T>, closed_error> await_resume() {
    if (outcome_ == send_outcome::pending)
      outcome_ = this->finish_waiting() == wait_state::granted ? send_outcome::sent : send_outcome::closed;
    if (outcome_ == send_outcome::closed) return unexpected{closed_error{}};
    outcome_ = send_outcome::closed;  // the permit is handed out once
    return permit<T>(this->core_);
  }

 private:
  bool settle(claim_status status) noexcept {
    if (status == claim_status::claimed) outcome_ = send_outcome::sent;
    if (status == claim_status::closed) outcome_ = send_outcome::closed;
    return status != claim_status::full;
  }

  send_outcome outcome_ = send_outcome::pending;
};

}  // namespace detail

/// A reserved slot in a bounded channel, from sender::reserve() / try_reserve() / blocking_reserve().
/// Move-only. send() uses it and never fails; destroying an unused permit gives the slot back (to the oldest
/// waiting sender first). While a permit exists the channel's sender side stays alive: it counts as a strong
/// sender (like Tokio's OwnedPermit, which holds a Sender: strong_count() includes it and weak senders can
/// still upgrade), and the receiver does not see the end of the stream before the permit is used or
/// destroyed, even after every sender is gone or after close().
template <class T>
class permit {
 public:
  permit(permit&& other) noexcept : core_(std::exchange(other.core_, nullptr)) {}
  permit& operator=(permit&& other) noexcept {
    if (this != &other) {
      reset();
      core_ = std::exchange(other.core_, nullptr);
    }
    return *this;
  }
  permit(const permit&) = delete;
  permit& operator=(const permit&) = delete;
  /// Gives the slot back if it was not used.
  ~permit() { reset(); }

  /// Puts `value` in the reserved slot and wakes the receiver if it waits. Never waits and never fails: if
  /// the receiver is gone, the value is destroyed (Tokio does the same). Values sent through permits are
  /// received in the order they were sent, not reserved. Afterwards the permit is used up.
  /// Throws std::logic_error on a used-up or moved-from permit.
  void send(T value) {
    if (core_ == nullptr) throw std::logic_error("postal::mpsc::permit::send: this permit was already used");
    detail::bounded_core<T>* core = std::exchange(core_, nullptr);
    core->send_with_permit(std::move(value));
    core->drop_strong_sender();
    core->release_reference();
  }

 private:
  friend class sender<T>;
  friend class detail::reserve_awaitable<T>;
  // Adopts one permit already counted in the channel's producer word, taken through a live sender. Like
  // Tokio's OwnedPermit, which holds a Sender, it counts as a strong sender until it is used or destroyed.
  explicit permit(detail::bounded_core<T>* core) noexcept : core_(core) {
    core_->counts.strong_senders.fetch_add(1, std::memory_order_relaxed);
    core_->counts.references.fetch_add(1, std::memory_order_relaxed);
  }
  void reset() noexcept {
    if (core_ != nullptr) {
      detail::bounded_core<T>* core = std::exchange(core_, nullptr);
      core->release_permit();
      core->drop_strong_sender();
      core->release_reference();
    }
  }

  detail::bounded_core<T>* core_ = nullptr;
};

/// The sending half of a bounded channel. Copyable: a copy is one more sender; the receiver sees the end of
/// the stream once every sender (and permit) is gone. A moved-from sender may only be assigned to or
/// destroyed. Thread-safety: senders, and one sender object, may be used from several threads at once
/// (except assignment and destruction). Awaitables returned by send(), reserve() and send_timeout() refer to
/// the channel through this sender: the sender must outlive them (as a Tokio future borrows its Sender).
/// Allocation: the channel's ring of slots is allocated by its first send or reserve (of any sender), so an
/// unused channel costs none. If that allocation fails, the operation throws std::bad_alloc having sent or
/// reserved nothing (a value passed to it is destroyed, not sent); the channel stays usable.
template <class T>
class sender {
 public:
  /// An empty sender, as a moved-from one: it may be assigned to and destroyed, nothing else.
  sender() noexcept = default;
  sender(const sender& other) noexcept : core_(other.core_) {
    if (core_ != nullptr) {
      core_->counts.strong_senders.fetch_add(1, std::memory_order_relaxed);
      core_->counts.references.fetch_add(1, std::memory_order_relaxed);
    }
  }
  sender(sender&& other) noexcept : core_(std::exchange(other.core_, nullptr)) {}
  sender& operator=(sender other) noexcept {
    std::swap(core_, other.core_);
    return *this;
  }
  /// Destroying the last sender (with no permit outstanding) lets the receiver drain and then see the end.
  ~sender() { reset(); }

  /// `co_await tx.send(v)` -> success once the value is in the channel; send_error with the value back if the
  /// receiver is gone or closed (now, or while this send waited). Waits while the channel is full; waiting
  /// senders get freed slots in the order they started waiting. Completes without suspending when a slot
  /// is free and nobody waits before it.
  /// Cancel-safety: destroying the waiting coroutine withdraws the send; the value was not sent (it is
  /// destroyed with the awaitable), and a slot granted to it meanwhile goes to the next waiting sender.
  /// The co_await throws std::bad_alloc, the value not sent, if it cannot allocate the ring (see above).
  detail::send_awaitable<T> send(T value) noexcept {
    return detail::send_awaitable<T>(core_, std::move(value));
  }

  /// Sends without waiting. Fails with try_send_failure::closed if the receiver is gone or closed, or with
  /// try_send_failure::full if no slot is free or other senders are waiting for one (it never jumps the
  /// queue); the value is handed back either way. Throws std::bad_alloc, the value not sent, if it cannot
  /// allocate the ring (see above).
  expected<void, try_send_error<T>> try_send(T value) {
    detail::claim c;
    switch (core_->try_claim(false, c)) {
      case detail::claim_status::claimed:
        core_->publish(c, std::move(value));
        return {};
      case detail::claim_status::full:
        return unexpected<try_send_error<T>>{try_send_error<T>{try_send_failure::full, std::move(value)}};
      case detail::claim_status::closed:
        break;
    }
    return unexpected<try_send_error<T>>{try_send_error<T>{try_send_failure::closed, std::move(value)}};
  }

  /// Blocks the calling thread until the value is in the channel (spinning briefly, then parked in the queue
  /// of waiting senders); send_error with the value back if the receiver is gone or closed. Throws
  /// std::logic_error on a runtime worker thread, and std::bad_alloc as send() does.
  expected<void, send_error<T>> blocking_send(T value) {
    postal::detail::check_may_block("blocking_send");
    detail::claim c;
    switch (detail::block_for_slot(*core_, false, c, nullptr)) {
      case detail::slot_outcome::claimed:
        core_->publish(c, std::move(value));
        return {};
      case detail::slot_outcome::granted:
        core_->send_with_permit(std::move(value));
        return {};
      default:
        return unexpected<send_error<T>>{send_error<T>{std::move(value)}};
    }
  }

  /// `co_await tx.send_timeout(v, timeout)`: like send(), but gives up once `timeout` has passed:
  /// send_timeout_error with kind timeout (or closed) and the value back. Needs the awaiting coroutine's
  /// executor to have timers: throws std::logic_error from the co_await if the coroutine has no
  /// suspend_hooks, or if it has to wait and its executor's wake_at() declines; std::bad_alloc as send().
  /// Cancel-safety: as send().
  detail::send_timeout_awaitable<T> send_timeout(T value,
                                                 std::chrono::steady_clock::duration timeout) noexcept {
    return detail::send_timeout_awaitable<T>(core_, std::move(value),
                                             std::chrono::steady_clock::now() + timeout);
  }

  /// Blocks the calling thread like blocking_send(), for at most `timeout`; returns what send_timeout()
  /// would. Throws std::logic_error on a runtime worker thread, and std::bad_alloc as send() does.
  expected<void, send_timeout_error<T>> blocking_send_timeout(T value,
                                                              std::chrono::steady_clock::duration timeout) {
    postal::detail::check_may_block("blocking_send_timeout");
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    detail::claim c;
    send_timeout_failure failure = send_timeout_failure::closed;
    switch (detail::block_for_slot(*core_, false, c, &deadline)) {
      case detail::slot_outcome::claimed:
        core_->publish(c, std::move(value));
        return {};
      case detail::slot_outcome::granted:
        core_->send_with_permit(std::move(value));
        return {};
      case detail::slot_outcome::timed_out:
        failure = send_timeout_failure::timeout;
        break;
      case detail::slot_outcome::closed:
        break;
    }
    return unexpected<send_timeout_error<T>>{send_timeout_error<T>{failure, std::move(value)}};
  }

  /// `co_await tx.reserve()` -> a permit for one slot, waiting (in the same FIFO as send) while the channel
  /// is full; closed_error if the receiver is gone or closed.
  /// Cancel-safety: destroying the waiting coroutine withdraws the wait; a slot granted meanwhile goes to the
  /// next waiting sender. The co_await throws std::bad_alloc, nothing reserved, if it cannot allocate the
  /// ring (see above).
  detail::reserve_awaitable<T> reserve() noexcept { return detail::reserve_awaitable<T>(core_); }

  /// A permit if a slot is free and nobody waits for one; else try_reserve_error::full, or
  /// try_reserve_error::closed if the receiver is gone or closed. Never waits. Throws std::bad_alloc as
  /// reserve() does.
  expected<permit<T>, try_reserve_error> try_reserve() {
    detail::claim c;
    switch (core_->try_claim(true, c)) {
      case detail::claim_status::claimed:
        return permit<T>(core_);
      case detail::claim_status::full:
        return unexpected{try_reserve_error::full};
      case detail::claim_status::closed:
        break;
    }
    return unexpected{try_reserve_error::closed};
  }

  /// Blocks the calling thread until it holds a permit; closed_error if the receiver is gone or closed.
  /// Throws std::logic_error on a runtime worker thread, and std::bad_alloc as reserve() does.
  expected<permit<T>, closed_error> blocking_reserve() {
    postal::detail::check_may_block("blocking_reserve");
    detail::claim c;
    const detail::slot_outcome outcome = detail::block_for_slot(*core_, true, c, nullptr);
    if (outcome == detail::slot_outcome::closed) return unexpected{closed_error{}};
    return permit<T>(core_);
  }

  /// `co_await tx.closed()` completes once the receiver is closed or destroyed (at once if it already is).
  /// Cancel-safety: destroying the waiting coroutine withdraws the wait; nothing is lost.
  detail::closed_awaitable<detail::bounded_core<T>> closed() const noexcept {
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
  /// Free slots now: max_capacity() minus buffered values minus outstanding permits.
  std::size_t capacity() const noexcept { return core_->free_slots(); }
  /// The capacity the channel was created with.
  std::size_t max_capacity() const noexcept { return core_->max_capacity(); }
  /// A weak sender: it does not keep the channel open, and upgrade() gives a sender while a sender or an
  /// unused permit exists.
  weak_sender<T> downgrade() const noexcept { return weak_sender<T>(core_); }
  /// True if both senders belong to the same channel.
  bool same_channel(const sender& other) const noexcept { return core_ == other.core_; }
  /// How many senders (strong; unused permits count as senders) and weak senders of this channel exist.
  std::size_t strong_count() const noexcept {
    return core_->counts.strong_senders.load(std::memory_order_acquire);
  }
  std::size_t weak_count() const noexcept {
    return core_->counts.weak_senders.load(std::memory_order_acquire);
  }

 private:
  template <class U>
  friend std::pair<sender<U>, receiver<U>> channel(std::size_t capacity);
  template <class U>
  friend std::pair<sender<U>, receiver<U>> detail::adopt_core(detail::bounded_core<U>& core) noexcept;
  template <class U>
  friend std::optional<sender<U>> detail::upgrade_core(detail::bounded_core<U>& core) noexcept;
  friend class detail::weak_handle<detail::bounded_core<T>, sender<T>>;
  struct adopt_t {};
  // Takes over a strong count and a reference already added for it.
  sender(detail::bounded_core<T>* core, adopt_t) noexcept : core_(core) {}
  void reset() noexcept {
    if (core_ != nullptr) {
      detail::bounded_core<T>* core = std::exchange(core_, nullptr);
      core->drop_strong_sender();
      core->release_reference();
    }
  }

  detail::bounded_core<T>* core_ = nullptr;
};

/// A sender that does not keep the channel open (Tokio's WeakSender). Copyable. upgrade() gives a sender
/// while at least one sender or unused permit exists, and an empty optional once all are gone.
template <class T>
class weak_sender : public detail::weak_handle<detail::bounded_core<T>, sender<T>> {
 private:
  friend class sender<T>;
  explicit weak_sender(detail::bounded_core<T>* core) noexcept
      : detail::weak_handle<detail::bounded_core<T>, sender<T>>(core) {}
};

/// The receiving half of a bounded channel. Move-only. Values from one sender arrive in the order it sent
/// them. Destroying the receiver closes the channel (waiting and later sends fail with their values back,
/// closed() waits complete) and destroys the values still buffered. A moved-from receiver may only be
/// assigned to or destroyed. Thread-safety: the receiver and the senders may be used from different threads
/// at once; one receiver object must not be used by several threads at once, and only one task or thread
/// may wait on it at a time.
template <class T>
class receiver {
 public:
  receiver(receiver&& other) noexcept : core_(std::exchange(other.core_, nullptr)) {}
  receiver& operator=(receiver&& other) noexcept {
    if (this != &other) {
      reset();
      core_ = std::exchange(other.core_, nullptr);
    }
    return *this;
  }
  receiver(const receiver&) = delete;
  receiver& operator=(const receiver&) = delete;
  ~receiver() { reset(); }

  /// `co_await rx.recv()` -> the next value, waiting while none is buffered; an empty optional once every
  /// sender and permit is gone (or close() was called and no permit is outstanding) and the buffer is
  /// drained. The receiver must outlive the wait.
  /// Cancel-safety: destroying the waiting coroutine withdraws the wait; no value is lost (a value that
  /// arrives meanwhile stays buffered for the next receive).
  auto recv() noexcept {
    return detail::receive_awaitable<detail::bounded_core<T>, detail::receive_one<T>>(core_, {});
  }

  /// The next value if one is buffered; try_recv_error::empty if none is but one may come;
  /// try_recv_error::disconnected if none ever will (see recv()). A value whose slot a sender has claimed
  /// but not finished writing is waited for (a few instructions), as Tokio does.
  expected<T, try_recv_error> try_recv() {
    detail::backoff wait;
    for (;;) {
      std::optional<T> value;
      if (core_->take(1, [&value](T&& v) noexcept { value.emplace(std::move(v)); }) != 0)
        return expected<T, try_recv_error>(std::move(*value));
      if (core_->finished()) return unexpected{try_recv_error::disconnected};
      if (core_->buffered() == 0) return unexpected{try_recv_error::empty};
      wait.pause();
    }
  }

  /// Blocks the calling thread until recv() would complete; returns what it returns. Spins briefly before
  /// parking. Throws std::logic_error on a runtime worker thread.
  std::optional<T> blocking_recv() {
    postal::detail::check_may_block("blocking_recv");
    return detail::blocking_receive(*core_, detail::receive_one<T>{});
  }

  /// `co_await rx.recv_many(out, limit)` -> how many values it appended to `out` (at most `limit`), waiting
  /// until at least one is buffered; 0 only if `limit` is 0 or the channel is finished (see recv()).
  /// `out` and the receiver must outlive the wait. Cancel-safety: as recv().
  auto recv_many(std::vector<T>& out, std::size_t limit) noexcept {
    return detail::receive_awaitable<detail::bounded_core<T>, detail::receive_many<T>>(
        core_, detail::receive_many<T>{&out, limit});
  }
  /// Blocks the calling thread like recv_many. Throws std::logic_error on a runtime worker thread.
  std::size_t blocking_recv_many(std::vector<T>& out, std::size_t limit) {
    postal::detail::check_may_block("blocking_recv_many");
    return detail::blocking_receive(*core_, detail::receive_many<T>{&out, limit});
  }

  /// Closes the channel without destroying the receiver: sends and reserves fail from now on (waiting ones
  /// get their values back), closed() waits complete, but buffered values and outstanding permits can
  /// still be received. Idempotent.
  void close() noexcept { core_->close(); }

  /// True once close() was called or every sender and permit is gone (values may still be buffered).
  bool is_closed() const noexcept {
    return core_->receiver_closed() || core_->counts.strong_senders.load(std::memory_order_acquire) == 0;
  }
  /// True if no value is buffered.
  bool is_empty() const noexcept { return core_->buffered() == 0; }
  /// How many values are buffered.
  std::size_t len() const noexcept { return core_->buffered(); }
  /// Free slots now (see sender::capacity()).
  std::size_t capacity() const noexcept { return core_->free_slots(); }
  std::size_t max_capacity() const noexcept { return core_->max_capacity(); }
  std::size_t sender_strong_count() const noexcept {
    return core_->counts.strong_senders.load(std::memory_order_acquire);
  }
  std::size_t sender_weak_count() const noexcept {
    return core_->counts.weak_senders.load(std::memory_order_acquire);
  }

 private:
  template <class U>
  friend std::pair<sender<U>, receiver<U>> channel(std::size_t capacity);
  template <class U>
  friend std::pair<sender<U>, receiver<U>> detail::adopt_core(detail::bounded_core<U>& core) noexcept;
  explicit receiver(detail::bounded_core<T>* core) noexcept : core_(core) {}
  void reset() noexcept {
    if (core_ != nullptr) {
      detail::bounded_core<T>* core = std::exchange(core_, nullptr);
      core->receiver_leave();
      core->release_reference();
    }
  }

  detail::bounded_core<T>* core_ = nullptr;
};

/// Creates a bounded channel with room for `capacity` values: `auto [tx, rx] = postal::mpsc::channel<T>(n);`.
/// Throws std::invalid_argument if `capacity` is 0 or above max_channel_capacity. One allocation for the
/// shared state, and one for the ring of slots (capacity rounded up to a power of two) made by the first
/// send or reserve (see sender); none per message.
template <class T>
std::pair<sender<T>, receiver<T>> channel(std::size_t capacity) {
  static_assert(!std::is_void_v<T> && !std::is_reference_v<T>,
                "use a value type (std::monostate for no value)");
  static_assert(std::is_nothrow_move_constructible_v<T> && std::is_nothrow_destructible_v<T>,
                "postal::mpsc needs a nothrow move-constructible value type");
  detail::check_capacity(capacity, "postal::mpsc::channel");
  auto* core = new detail::bounded_core<T>(capacity);
  return {sender<T>(core, typename sender<T>::adopt_t{}), receiver<T>(core)};
}

template <class T>
std::pair<sender<T>, receiver<T>> detail::adopt_core(bounded_core<T>& core) noexcept {
  return {sender<T>(&core, typename sender<T>::adopt_t{}), receiver<T>(&core)};
}

template <class T>
std::optional<sender<T>> detail::upgrade_core(bounded_core<T>& core) noexcept {
  if (!try_add_strong_sender(core.counts)) return std::nullopt;
  core.counts.references.fetch_add(1, std::memory_order_relaxed);
  return sender<T>(&core, typename sender<T>::adopt_t{});
}

}  // namespace postal::mpsc
