// postal::watch: one value that many readers watch (Tokio's watch): the current configuration, a status, a
// shutdown flag. Receivers see only the latest value, never a queue of old ones; each remembers the version
// it has seen and can wait for a newer one. When the other side goes away: once every sender is gone,
// receivers still read the last value and changed() fails (after reporting a change they had not seen yet);
// once every receiver is gone, send() fails and hands the value back (send_replace still stores it), and
// closed() completes. Not for delivering every message (use mpsc, or broadcast for many readers).
#pragma once

#include <postal/detail/inline_operation.hpp>
#include <postal/detail/intrusive_list.hpp>
#include <postal/detail/list_wait.hpp>
#include <postal/expected.hpp>
#include <postal/waker.hpp>

#include <array>
#include <atomic>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <iosfwd>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <shared_mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace postal::watch {

/// Why changed(), wait_for() or has_changed() failed: every sender is gone (and, for changed() and
/// wait_for(), no unseen value is left to report).
struct recv_error {
  friend bool operator==(recv_error, recv_error) noexcept = default;
};

/// send() failed because no receiver exists; the value is handed back.
template <class T>
struct send_error {
  T value;
};

// Printing, as every postal error: to_string(e), and operator<< writing the same.
inline std::string to_string(const recv_error&) { return "every sender is gone"; }
template <class T>
std::string to_string(const send_error<T>&) {
  return "no receiver";
}
inline std::ostream& operator<<(std::ostream& out, const recv_error& error) { return out << to_string(error); }
template <class T>
std::ostream& operator<<(std::ostream& out, const send_error<T>& error) {
  return out << to_string(error);
}

template <class T>
class sender;
template <class T>
class receiver;

namespace detail {

inline constexpr std::uint64_t closed_bit = 1;    // bit 0 of the state word: every sender is gone
inline constexpr std::uint64_t version_step = 2;  // the rest counts versions: each change adds 2

// A task or thread waiting for a change (on receivers) or for the last receiver to go (on senders).
// Lives inside the awaitable or on the blocked thread's stack.
struct waiter : postal::detail::list_node {
  waker target;
  std::uint64_t seen = 0;  // for change waiters: the version the receiver had seen when it started waiting
};

// The shared state of one channel; senders and receivers hold it through shared_ptr.
template <class T>
struct shared_state {
  template <class U>
  explicit shared_state(U&& initial) : value(std::forward<U>(initial)) {}

  std::shared_mutex value_lock;  // readers share it; a send holds it exclusively
  T value;
  std::atomic<std::uint64_t> state{0};  // version | closed_bit; the version changes only under value_lock
  std::atomic<std::size_t> receiver_count{0};
  std::atomic<std::size_t> sender_count{0};
  std::mutex waiters_lock;                                // guards both lists below
  postal::detail::intrusive_list<waiter> change_waiters;  // receivers waiting in changed()
  postal::detail::intrusive_list<waiter> closed_waiters;  // senders waiting in closed()
};

// A per-thread buffer for the wakers of one notification, reused so that notifying allocates nothing once
// warmed up. A notification nested inside another one on the same thread (an inline-resumed coroutine that
// sends again) takes an empty buffer of its own.
inline std::vector<waker>& spare_wake_buffer() noexcept {
  thread_local std::vector<waker> buffer;
  return buffer;
}
// The most wakers a notification moves out per hold of the waiters lock (and so the largest buffer a thread
// keeps: 16 KiB). Up to this many waiters (plus an overflow of 16) are woken with one lock hold.
inline constexpr std::size_t max_wakers_per_batch = 1024;

// Wakes the waiters on `waiting` for which `should_wake(const waiter&)` holds, evaluated under `lock`; the
// others stay. Filtering under the lock is what makes every wake real: a receiver that already saw this
// send's version and waits again before the sender gets here is left waiting for the next one.
// The chosen waiters are taken off the list and their wakers moved out under `lock` (O(waiters)), and woken
// after it is released: in one hold of the lock for up to max_wakers_per_batch waiters, in batches beyond
// (also if the buffer cannot be grown). The lock is also released once when this thread's buffer must grow.
// Chosen waiters not yet woken sit on a list on this stack, from which a cancelled waiter still unlinks
// itself under `lock` (intrusive_list::remove needs only the node).
template <class ShouldWake>
void wake_waiters(std::mutex& lock, postal::detail::intrusive_list<waiter>& waiting,
                  ShouldWake should_wake) noexcept {
  std::unique_lock guard(lock);
  if (waiting.empty()) return;
  postal::detail::intrusive_list<waiter> taken;
  std::size_t count = 0;
  waiting.for_each([&](waiter* w) {
    if (should_wake(*w)) {
      waiting.remove(w);
      taken.push_back(w);
      ++count;
    }
  });
  if (count == 0) return;
  std::vector<waker> batch = std::move(spare_wake_buffer());  // leaves the spare empty
  const std::size_t wanted = count < max_wakers_per_batch ? count : max_wakers_per_batch;
  if (batch.capacity() < wanted) {
    guard.unlock();
    try {
      batch.reserve(wanted);
    } catch (const std::bad_alloc&) {  // then the overflow array below carries the whole load
    }
    guard.lock();
  }
  std::array<waker, 16> overflow;
  for (;;) {
    std::size_t in_overflow = 0;
    while (!taken.empty()) {
      if (batch.size() < batch.capacity())
        batch.push_back(std::move(taken.pop_front()->target));
      else if (in_overflow < overflow.size())
        overflow[in_overflow++] = std::move(taken.pop_front()->target);
      else
        break;
    }
    const bool more = !taken.empty();
    guard.unlock();
    for (waker& w : batch) w.wake();
    for (std::size_t i = 0; i < in_overflow; ++i) overflow[i].wake();
    batch.clear();
    if (!more) break;
    guard.lock();
  }
  if (batch.capacity() > spare_wake_buffer().capacity()) spare_wake_buffer() = std::move(batch);
}

// Wakes the receivers waiting in changed() that have a change to see (or all of them once closed).
template <class T>
void notify_receivers(shared_state<T>& shared) noexcept {
  wake_waiters(shared.waiters_lock, shared.change_waiters, [&shared](const waiter& w) {
    const std::uint64_t now = shared.state.load(std::memory_order_acquire);
    return (now & closed_bit) != 0 || (now & ~closed_bit) != w.seen;
  });
}

// Wakes the senders waiting in closed(), if no receiver exists (a subscribe() may have come in between).
template <class T>
void notify_senders(shared_state<T>& shared) noexcept {
  wake_waiters(shared.waiters_lock, shared.closed_waiters, [&shared](const waiter&) {
    return shared.receiver_count.load(std::memory_order_acquire) == 0;
  });
}

// co_await receiver.changed(): a list_wait on change_waiters (see change_wait below).
template <class T>
struct change_wait;
template <class T>
using changed_awaitable = postal::detail::list_wait<waiter, change_wait<T>>;
// co_await sender.closed(): waits on the closed_waiters list until no receiver exists.
template <class T>
struct no_receivers {
  shared_state<T>* shared;
  bool operator()() const noexcept { return shared->receiver_count.load(std::memory_order_acquire) == 0; }
};
template <class T>
using closed_awaitable = postal::detail::list_wait<waiter, no_receivers<T>>;

}  // namespace detail

/// A read guard on the channel's value, from borrow(), borrow_and_update() or wait_for(). It holds a shared
/// (reader) lock: while any ref is alive, every send on the channel waits.
///   NEVER HOLD A REF ACROSS A co_await, and never send on the same channel while holding one: a send on this
///   thread deadlocks, and a send on another thread stalls until the ref is gone. Copy what you need out.
template <class T>
class ref {
 public:
  ref(ref&&) noexcept = default;
  ref& operator=(ref&&) noexcept = default;
  ref(const ref&) = delete;
  ref& operator=(const ref&) = delete;

  const T& operator*() const noexcept { return *value_; }
  const T* operator->() const noexcept { return value_; }
  const T& get() const noexcept { return *value_; }
  /// True if this value was new to the receiver when it was borrowed (not yet marked seen). Always false for
  /// a ref from sender::borrow().
  bool has_changed() const noexcept { return has_changed_; }

 private:
  friend class sender<T>;
  friend class receiver<T>;
  ref(std::shared_lock<std::shared_mutex> lock, const T* value, bool has_changed) noexcept
      : lock_(std::move(lock)), value_(value), has_changed_(has_changed) {}

  std::shared_lock<std::shared_mutex> lock_;
  const T* value_;
  bool has_changed_;
};

/// Creates a channel holding `initial`: `auto [tx, rx] = postal::watch::channel<T>(initial);`. The receiver
/// has seen the initial value (changed() waits for the first send).
template <class T>
std::pair<sender<T>, receiver<T>> channel(T initial);

/// The sending half. Copyable (unlike Tokio 1.24, like later Tokio releases): a copy is one more sender, and
/// receivers see the channel closed once the last sender is destroyed. Sends from several senders are
/// serialised by the channel's lock. A moved-from sender may only be assigned to or destroyed. Thread-safety:
/// distinct sender objects may be used from different threads at once; so may one sender object for the const
/// methods and the send_* methods (they lock), but not for assignment or destruction.
template <class T>
class sender {
 public:
  sender(const sender& other) noexcept : shared_(other.shared_) {
    if (shared_) shared_->sender_count.fetch_add(1, std::memory_order_relaxed);
  }
  sender(sender&& other) noexcept = default;
  sender& operator=(sender other) noexcept {
    std::swap(shared_, other.shared_);
    return *this;
  }
  /// Destroying the last sender closes the channel and wakes every waiting receiver.
  ~sender() {
    if (shared_ && shared_->sender_count.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      shared_->state.fetch_or(detail::closed_bit, std::memory_order_release);
      detail::notify_receivers(*shared_);
    }
  }

  /// Stores `value` and notifies every receiver, if at least one receiver exists; otherwise fails and hands
  /// the value back (use send_replace to store it anyway). Never waits, except for the channel's lock while
  /// refs are held.
  expected<void, send_error<T>> send(T value) {
    if (shared_->receiver_count.load(std::memory_order_acquire) == 0)
      return unexpected<send_error<T>>{send_error<T>{std::move(value)}};
    (void)send_replace(std::move(value));  // the old value is destroyed here, outside the lock
    return {};
  }

  /// Stores `value` (even when there are no receivers), notifies the receivers and returns the old value.
  T send_replace(T value) {
    {
      std::unique_lock lock(shared_->value_lock);
      std::swap(shared_->value, value);
      shared_->state.fetch_add(detail::version_step, std::memory_order_release);
    }
    detail::notify_receivers(*shared_);
    return value;
  }

  /// Calls `modify(T&)` on the value under the exclusive lock and always notifies the receivers (even with
  /// no receivers, the value is modified). If `modify` throws, the exception propagates, whatever it changed
  /// stays, and nobody is notified.
  template <class F>
  void send_modify(F&& modify) {
    send_if_modified([&](T& value) {
      std::forward<F>(modify)(value);
      return true;
    });
  }

  /// Calls `modify(T&) -> bool` on the value under the exclusive lock; notifies the receivers only if it
  /// returns true (it must return false only if it left the value unchanged). Returns what `modify` returned.
  /// If `modify` throws, the exception propagates and nobody is notified.
  template <class F>
  bool send_if_modified(F&& modify) {
    {
      std::unique_lock lock(shared_->value_lock);
      if (!std::forward<F>(modify)(shared_->value)) return false;
      shared_->state.fetch_add(detail::version_step, std::memory_order_release);
    }
    detail::notify_receivers(*shared_);
    return true;
  }

  /// A read guard on the current value (has_changed() is false). See ref: never hold it across a co_await,
  /// and never send while holding it.
  ref<T> borrow() const {
    std::shared_lock lock(shared_->value_lock);
    return ref<T>(std::move(lock), &shared_->value, false);
  }

  /// A new receiver that has seen the current value. Reopens a channel whose receivers were all gone.
  receiver<T> subscribe() const {
    return receiver<T>(shared_, shared_->state.load(std::memory_order_acquire) & ~detail::closed_bit);
  }

  std::size_t receiver_count() const noexcept {
    return shared_->receiver_count.load(std::memory_order_acquire);
  }
  std::size_t sender_count() const noexcept { return shared_->sender_count.load(std::memory_order_acquire); }
  /// True while no receiver exists (send would fail).
  bool is_closed() const noexcept { return receiver_count() == 0; }
  bool same_channel(const sender& other) const noexcept { return shared_ == other.shared_; }

  /// `co_await tx.closed()` completes once no receiver exists (at once if none exists now). The sender must
  /// outlive the wait (the wait does not keep the channel alive).
  /// Cancel-safety: destroying the waiting coroutine withdraws the wait; nothing is lost.
  detail::closed_awaitable<T> closed() const noexcept {
    return detail::closed_awaitable<T>(shared_->waiters_lock, shared_->closed_waiters,
                                       detail::no_receivers<T>{shared_.get()});
  }

  /// Blocks the calling thread until no receiver exists. Throws std::logic_error on a runtime worker thread.
  void blocking_closed() const {
    postal::detail::check_may_block("blocking_closed");
    auto ready = [this] { return shared_->receiver_count.load(std::memory_order_acquire) == 0; };
    if (!postal::detail::spin_until(ready)) park_until(shared_->closed_waiters, ready);
  }

 private:
  template <class U>
  friend std::pair<sender<U>, receiver<U>> channel(U initial);
  friend class receiver<T>;
  explicit sender(std::shared_ptr<detail::shared_state<T>> shared) noexcept : shared_(std::move(shared)) {
    shared_->sender_count.fetch_add(1, std::memory_order_relaxed);
  }
  // Parks this thread on `list` until `ready()` holds (checked under the waiters lock before parking).
  template <class Ready>
  void park_until(postal::detail::intrusive_list<detail::waiter>& list, Ready ready) const {
    postal::detail::thread_parker parker;
    detail::waiter node;
    node.target = parker.make_waker();
    {
      std::lock_guard lock(shared_->waiters_lock);
      if (ready()) return;
      list.push_back(&node);
    }
    parker.park();
  }

  std::shared_ptr<detail::shared_state<T>> shared_;
};

/// The receiving half. Copyable: a copy is one more receiver that has seen the same version as the original.
/// Each receiver remembers the version it has seen; the initial value counts as seen. A moved-from receiver
/// may only be assigned to or destroyed.
/// Thread-safety: distinct receiver objects may be used from different threads at once; one receiver object
/// must not be used by several threads at once.
template <class T>
class receiver {
 public:
  receiver(const receiver& other) noexcept : shared_(other.shared_), seen_(other.seen_) {
    if (shared_) shared_->receiver_count.fetch_add(1, std::memory_order_relaxed);
  }
  receiver(receiver&& other) noexcept : shared_(std::move(other.shared_)), seen_(other.seen_) {}
  receiver& operator=(receiver other) noexcept {
    std::swap(shared_, other.shared_);
    std::swap(seen_, other.seen_);
    return *this;
  }
  /// Destroying the last receiver wakes the senders waiting in closed().
  ~receiver() {
    if (shared_ && shared_->receiver_count.fetch_sub(1, std::memory_order_acq_rel) == 1)
      detail::notify_senders(*shared_);
  }

  /// A read guard on the current value; does not mark it seen (ref::has_changed() tells whether it is new).
  /// See ref: never hold it across a co_await.
  ref<T> borrow() const {
    std::shared_lock lock(shared_->value_lock);
    const bool changed = version(shared_->state.load(std::memory_order_acquire)) != seen_;
    return ref<T>(std::move(lock), &shared_->value, changed);
  }
  /// A read guard on the current value, which it marks seen. See ref: never hold it across a co_await.
  ref<T> borrow_and_update() {
    std::shared_lock lock(shared_->value_lock);
    const std::uint64_t now = version(shared_->state.load(std::memory_order_acquire));
    const bool changed = now != seen_;
    seen_ = now;
    return ref<T>(std::move(lock), &shared_->value, changed);
  }

  /// Whether a version this receiver has not seen exists; recv_error once every sender is gone (even if an
  /// unseen version exists: changed() still reports that one). Lock-free, never waits.
  expected<bool, recv_error> has_changed() const noexcept {
    const std::uint64_t now = shared_->state.load(std::memory_order_acquire);
    if (now & detail::closed_bit) return unexpected{recv_error{}};
    return version(now) != seen_;
  }
  /// Makes the current value count as unseen: has_changed() is true and changed() completes at once.
  void mark_changed() noexcept {
    seen_ = version(shared_->state.load(std::memory_order_acquire)) - detail::version_step;
  }
  /// Makes the current value count as seen.
  void mark_unchanged() noexcept { seen_ = version(shared_->state.load(std::memory_order_acquire)); }

  /// `co_await rx.changed()` -> success once a version this receiver has not seen exists, which it marks
  /// seen (read it with borrow()); completes at once if one exists already. recv_error once every sender is
  /// gone and no unseen version is left. The receiver must outlive the wait.
  /// Cancel-safety: destroying the waiting coroutine withdraws the wait; nothing is marked seen, so a
  /// later changed() still reports the change.
  detail::changed_awaitable<T> changed() noexcept {
    return detail::changed_awaitable<T>(detail::change_wait<T>(*this));
  }

  /// Blocks the calling thread until changed() would complete; returns what it returns. Spins briefly before
  /// parking. Throws std::logic_error on a runtime worker thread.
  expected<void, recv_error> blocking_changed() {
    postal::detail::check_may_block("blocking_changed");
    if (!postal::detail::spin_until([this] { return change_ready(); })) {
      postal::detail::thread_parker parker;
      detail::waiter node;
      node.target = parker.make_waker();
      node.seen = seen_;
      bool wait;
      {
        std::lock_guard lock(shared_->waiters_lock);
        wait = !change_ready();
        if (wait) shared_->change_waiters.push_back(&node);
      }
      if (wait) parker.park();
    }
    return take_change();
  }

  /// `co_await rx.wait_for(predicate)` -> a ref to the first value (the current one included) for which
  /// `predicate(const T&)` returns true, marked seen; recv_error once every sender is gone and no value
  /// satisfied it. The predicate runs in the waiting coroutine, under the shared lock, once for the current
  /// value and once per change it is woken for (intermediate versions may be skipped). Exceptions from the
  /// predicate propagate out of the co_await. The returned ref holds the shared lock: drop it before the next
  /// co_await. The receiver must outlive the wait.
  /// Cancel-safety: destroying the waiting coroutine withdraws the wait; the versions already checked stay
  /// seen.
  template <class Predicate>
  postal::detail::inline_operation<expected<ref<T>, recv_error>> wait_for(Predicate predicate) {
    for (;;) {
      {
        ref<T> current = borrow_and_update();
        if (predicate(*current)) co_return std::move(current);
      }
      if (!co_await changed()) co_return unexpected{recv_error{}};
    }
  }

  /// Blocks the calling thread like wait_for. Throws std::logic_error on a runtime worker thread.
  template <class Predicate>
  expected<ref<T>, recv_error> blocking_wait_for(Predicate predicate) {
    postal::detail::check_may_block("blocking_wait_for");
    for (;;) {
      {
        ref<T> current = borrow_and_update();
        if (predicate(*current)) return current;
      }
      if (!blocking_changed()) return unexpected{recv_error{}};
    }
  }

  /// True if both receivers belong to the same channel.
  bool same_channel(const receiver& other) const noexcept { return shared_ == other.shared_; }

 private:
  friend class sender<T>;
  friend struct detail::change_wait<T>;
  template <class U>
  friend std::pair<sender<U>, receiver<U>> channel(U initial);
  receiver(std::shared_ptr<detail::shared_state<T>> shared, std::uint64_t seen) noexcept
      : shared_(std::move(shared)), seen_(seen) {
    shared_->receiver_count.fetch_add(1, std::memory_order_relaxed);
  }
  static std::uint64_t version(std::uint64_t state) noexcept { return state & ~detail::closed_bit; }

  // True when changed() would not wait: an unseen version exists, or every sender is gone.
  bool change_ready() const noexcept {
    const std::uint64_t now = shared_->state.load(std::memory_order_acquire);
    return version(now) != seen_ || (now & detail::closed_bit);
  }
  // The outcome of changed() once change_ready(): marks the new version seen, or reports the closed channel.
  expected<void, recv_error> take_change() noexcept {
    const std::uint64_t now = shared_->state.load(std::memory_order_acquire);
    if (version(now) != seen_) {
      seen_ = version(now);
      return {};
    }
    return unexpected{recv_error{}};
  }

  std::shared_ptr<detail::shared_state<T>> shared_;
  std::uint64_t seen_ = 0;  // the version this receiver has seen
};

namespace detail {

// What list_wait needs for co_await receiver.changed(): wait on change_waiters until change_ready(); the
// node carries the version seen, by which notify_receivers tells whether this send is news to it.
template <class T>
struct change_wait {
  explicit change_wait(receiver<T>& target) noexcept : target(&target) {}

  std::mutex& lock() const noexcept { return target->shared_->waiters_lock; }
  postal::detail::intrusive_list<waiter>& list() const noexcept { return target->shared_->change_waiters; }

  bool operator()() const noexcept { return target->change_ready(); }
  bool prepare(waiter& node) const noexcept {
    node.seen = target->seen_;
    return false;
  }
  expected<void, recv_error> resume() noexcept { return target->take_change(); }

  receiver<T>* target;
};

}  // namespace detail

template <class T>
std::pair<sender<T>, receiver<T>> channel(T initial) {
  auto shared = std::make_shared<detail::shared_state<T>>(std::move(initial));
  receiver<T> rx(shared, 0);
  return {sender<T>(std::move(shared)), std::move(rx)};
}

}  // namespace postal::watch
