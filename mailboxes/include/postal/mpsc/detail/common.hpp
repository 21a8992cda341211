// Pieces shared by postal's bounded and unbounded mpsc channels: spinning, the waiter node of a task or
// thread waiting for a slot or for the receiver to close, and the receive / closed() waits written once over
// a channel "core". Not a public API: include <postal/mpsc.hpp>.
#pragma once

#include <postal/detail/intrusive_list.hpp>
#include <postal/detail/list_wait.hpp>
#include <postal/waker.hpp>

#include <algorithm>
#include <atomic>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace postal::mpsc::detail {

using postal::detail::cpu_relax;

// How many times a blocking form polls the channel before it parks its thread.
inline constexpr int spin_iterations = 64;

// The pause after the i-th failed poll: exponential up to 16 CPU pauses (about a thousand in all before a
// blocking form parks), so that a spinning thread does not keep stealing the cache line the other side is
// working on.
inline void spin_pause(int i) noexcept {
  for (int k = 0, n = 1 << (i < 4 ? i : 4); k < n; ++k) cpu_relax();
}

// Waits for another thread to finish a short step it has already started (writing a claimed slot, handing a
// waker over): pauses the CPU a few times, then yields the thread.
class backoff {
 public:
  void pause() noexcept {
    if (step_ < 64) {
      cpu_relax();
      ++step_;
    } else {
      std::this_thread::yield();
    }
  }

 private:
  int step_ = 0;
};

// A test-and-test-and-set lock for critical sections of a few instructions (the unbounded channel's queue).
class spinlock {
 public:
  void lock() noexcept {
    for (;;) {
      if (!locked_.exchange(true, std::memory_order_acquire)) return;
      backoff wait;
      while (locked_.load(std::memory_order_relaxed)) wait.pause();
    }
  }
  void unlock() noexcept { locked_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> locked_{false};
};

// A mutex in four bytes (std::mutex takes forty) for the bounded channel's waiting senders, so that they
// share the producer's cache line instead of taking lines of their own in every channel. Spins briefly,
// then sleeps on the word (a futex): a sender that holds it may be preempted, and threads block on it.
class small_mutex {
 public:
  void lock() noexcept {
    std::uint32_t expected = unlocked;
    if (!state_.compare_exchange_strong(expected, locked, std::memory_order_acquire, std::memory_order_relaxed))
      lock_contended();
  }
  void unlock() noexcept {
    if (state_.exchange(unlocked, std::memory_order_release) == contended) state_.notify_one();
  }

 private:
  static constexpr std::uint32_t unlocked = 0, locked = 1, contended = 2;
  void lock_contended() noexcept {
    for (int i = 0; i < spin_iterations; ++i) {
      std::uint32_t expected = unlocked;
      if (state_.load(std::memory_order_relaxed) == unlocked &&
          state_.compare_exchange_weak(expected, locked, std::memory_order_acquire, std::memory_order_relaxed))
        return;
      cpu_relax();
    }
    // From here on the word says "contended", so the holder's unlock wakes a sleeper.
    while (state_.exchange(contended, std::memory_order_acquire) != unlocked)
      state_.wait(contended, std::memory_order_relaxed);
  }
  std::atomic<std::uint32_t> state_{unlocked};
};

// Where a waiter stands. Written only under the channel's waiters lock.
enum class wait_state : unsigned char {
  waiting,  // linked in a list, nothing happened yet
  granted,  // a slot was reserved for it (it holds a permit) and its waker taken to wake it
  closed,   // the receiver closed; its waker taken to wake it
};

// A task or thread waiting for a free slot (send, reserve) or for the receiver to close (closed()).
// Lives inside the awaitable or on the blocked thread's stack, linked in a list of the channel.
struct waiter : postal::detail::list_node {
  waker target;
  wait_state state = wait_state::waiting;
};

using waiter_list = postal::detail::intrusive_list<waiter>;

// Wakes the waiters in `taken` (a list on the caller's stack that they were moved to, their state already
// set), one at a time: each waker is moved out under `lock` and woken after it is released, so that a
// waiter cancelled meanwhile can still unlink itself under `lock`, and a woken coroutine resumed inline may
// use the channel again.
template <class Lock>
void wake_taken(Lock& lock, waiter_list& taken) noexcept {
  for (;;) {
    std::unique_lock guard(lock);
    waiter* next = taken.pop_front();
    if (next == nullptr) return;
    waker w = std::move(next->target);
    guard.unlock();
    w.wake();
  }
}

// Arbitrates the two wakers of a timed wait (the channel's and the timer's): only the first wake gets
// through, and none before await_suspend has finished publishing both (finish_suspend), so that the waiting
// coroutine is never resumed while its await_suspend still runs. Reference counted: a timer that fires late
// finds it alive and is ignored.
class timed_wake {
 public:
  /// Creates the arbiter around the waiting coroutine's waker; the caller owns one reference.
  static timed_wake* create(waker target) { return new timed_wake(std::move(target)); }

  /// A waker that forwards to the target unless another one already fired. Adds a reference.
  waker make_waker() noexcept {
    references_.fetch_add(1, std::memory_order_relaxed);
    return waker(this, &vtable_);
  }
  /// The last step of await_suspend: true if the coroutine stays suspended (a later wake resumes it); false
  /// if a wake already came, in which case the coroutine must not suspend (the target is never woken).
  bool finish_suspend() noexcept {
    return (state_.fetch_or(suspended, std::memory_order_acq_rel) & fired) == 0;
  }
  /// Ends the wait: later wakes are ignored.
  void disarm() noexcept { state_.fetch_or(fired, std::memory_order_acq_rel); }
  void release() noexcept {
    if (references_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

 private:
  static constexpr unsigned fired = 1;
  static constexpr unsigned suspended = 2;

  explicit timed_wake(waker target) noexcept : target_(std::move(target)) {}
  static void wake(void* data) noexcept {
    auto* self = static_cast<timed_wake*>(data);
    const unsigned before = self->state_.fetch_or(fired, std::memory_order_acq_rel);
    if ((before & fired) == 0 && (before & suspended) != 0) self->target_.wake();
    self->release();
  }
  static void drop(void* data) noexcept { static_cast<timed_wake*>(data)->release(); }
  static constexpr waker::vtable vtable_{&timed_wake::wake, &timed_wake::drop};

  std::atomic<unsigned> state_{0};
  std::atomic<std::uint32_t> references_{1};
  waker target_;
};

// The counts of one channel's handles. The shared state is freed when `references` drops to zero.
struct handle_counts {
  std::atomic<std::size_t> strong_senders{1};
  std::atomic<std::size_t> weak_senders{0};
  std::atomic<std::size_t> references{2};  // every sender, weak sender, permit and the receiver
};

// Adds a strong sender unless none is left (weak_sender::upgrade).
inline bool try_add_strong_sender(handle_counts& counts) noexcept {
  std::size_t now = counts.strong_senders.load(std::memory_order_relaxed);
  do {
    if (now == 0) return false;
  } while (!counts.strong_senders.compare_exchange_weak(now, now + 1, std::memory_order_acq_rel,
                                                        std::memory_order_relaxed));
  return true;
}

// A weak sender over either channel's core (weak_sender, weak_unbounded_sender): counted as weak, it keeps
// the core alive but not the channel open. Sender must befriend this class for its adopting constructor,
// `Sender(Core*, typename Sender::adopt_t)`, which takes over a strong count and a reference.
template <class Core, class Sender>
class weak_handle {
 public:
  weak_handle(const weak_handle& other) noexcept : core_(other.core_) { add(); }
  weak_handle(weak_handle&& other) noexcept : core_(std::exchange(other.core_, nullptr)) {}
  weak_handle& operator=(weak_handle other) noexcept {
    std::swap(core_, other.core_);
    return *this;
  }
  ~weak_handle() {
    if (core_ != nullptr) {
      core_->counts.weak_senders.fetch_sub(1, std::memory_order_acq_rel);
      core_->release_reference();
    }
  }

  /// A new sender, if any sender still exists.
  std::optional<Sender> upgrade() const noexcept {
    if (core_ == nullptr || !try_add_strong_sender(core_->counts)) return std::nullopt;
    core_->counts.references.fetch_add(1, std::memory_order_relaxed);
    return Sender(core_, typename Sender::adopt_t{});
  }
  std::size_t strong_count() const noexcept {
    return core_->counts.strong_senders.load(std::memory_order_acquire);
  }
  std::size_t weak_count() const noexcept {
    return core_->counts.weak_senders.load(std::memory_order_acquire);
  }

 protected:
  explicit weak_handle(Core* core) noexcept : core_(core) { add(); }

 private:
  void add() noexcept {
    if (core_ != nullptr) {
      core_->counts.weak_senders.fetch_add(1, std::memory_order_relaxed);
      core_->counts.references.fetch_add(1, std::memory_order_relaxed);
    }
  }

  Core* core_ = nullptr;
};

// A receive wait (recv, recv_many), written once over a channel core and an operation.
//
// Core: `bool park(waker)` publishes the receiver's waker unless a value is on its way or the channel is
// finished (then it drops the waker and returns false); `void unpark() noexcept` withdraws a published waker
// that will not be needed (the waiting coroutine is being destroyed).
// Operation: `bool poll(Core&)` tries to complete (true when the outcome is known, stored inside), and
// `result()` hands the outcome over.
// After a wake (or a false park), the outcome is known or a value is being written by a sender that already
// claimed its slot: await_resume spins for that short moment instead of suspending again.
template <class Core, class Operation>
class [[nodiscard]] receive_awaitable {
 public:
  receive_awaitable(Core* core, Operation operation) noexcept
      : core_(core), operation_(std::move(operation)) {}
  receive_awaitable(const receive_awaitable&) = delete;
  receive_awaitable& operator=(const receive_awaitable&) = delete;
  ~receive_awaitable() {
    if (registered_) core_->unpark();
  }

  bool await_ready() { return known_ = operation_.poll(*core_); }
  template <class Promise>
  bool await_suspend(std::coroutine_handle<Promise> handle) {
    registered_ = true;  // before publishing: once published, the wait may end on another thread at any time
    if (core_->park(postal::detail::waker_for(handle))) return true;
    registered_ = false;
    return false;
  }
  auto await_resume() {
    registered_ = false;
    backoff wait;
    while (!known_ && !operation_.poll(*core_)) wait.pause();
    return operation_.result();
  }

 private:
  Core* core_;
  Operation operation_;
  bool known_ = false;  // the outcome is already in operation_
  bool registered_ = false;
};

// The receive operations, over a core that offers `take(limit, sink)`, `finished()` and `buffered()`.
// recv(): one value, or an empty optional once the channel is finished.
template <class T>
struct receive_one {
  std::optional<T> value;

  template <class Core>
  bool poll(Core& core) {
    if (core.take(1, [this](T&& v) noexcept { value.emplace(std::move(v)); }) != 0) return true;
    return core.finished();
  }
  std::optional<T> result() { return std::move(value); }
};

// recv_many(): appends up to `limit` values (at least one), or none once the channel is finished.
template <class T>
struct receive_many {
  std::vector<T>* out;
  std::size_t limit;
  std::size_t count = 0;

  template <class Core>
  bool poll(Core& core) {
    if (limit == 0) return true;
    // Room first, so that appending cannot throw while values are taken out of the channel.
    std::size_t want = std::min(limit, std::max<std::size_t>(core.buffered(), 1));
    out->reserve(out->size() + want);
    want = std::min(want, out->capacity() - out->size());
    count = core.take(want, [this](T&& v) noexcept { out->push_back(std::move(v)); });
    return count != 0 || core.finished();
  }
  std::size_t result() const noexcept { return count; }
};

// One poll, kept out of line for blocking_receive: inlined into its spin loop, GCC 12 makes a loop that
// polls so eagerly that it keeps taking the slot's cache line from the sender (two threads: ~60 -> ~22 M
// values/s). A task's receive (receive_awaitable) inlines it: it polls once or twice per wait.
template <class Core, class Operation>
[[gnu::noinline]] bool poll_out_of_line(Core& core, Operation& operation) {
  return operation.poll(core);
}

// The blocking form of a receive wait: spins briefly, then parks the thread through the core's waker slot.
template <class Core, class Operation>
auto blocking_receive(Core& core, Operation operation) {
  for (;;) {
    for (int i = 0; i < spin_iterations; ++i) {
      if (poll_out_of_line(core, operation)) return operation.result();
      spin_pause(i);
    }
    postal::detail::thread_parker parker;
    if (core.park(parker.make_waker())) parker.park();
    backoff wait;
    for (int i = 0; i < spin_iterations; ++i) {
      if (poll_out_of_line(core, operation)) return operation.result();
      wait.pause();
    }
  }
}

// `co_await tx.closed()`, over a core that offers `bool receiver_closed()`, `waiters_lock()` and
// `closed_waiters()` (woken with wait_state::closed when the receiver closes).
template <class Core>
struct receiver_closed_of {
  Core* core;
  bool operator()() const noexcept { return core->receiver_closed(); }
};
template <class Core>
using closed_awaitable =
    postal::detail::list_wait<waiter, receiver_closed_of<Core>,
                              std::remove_reference_t<decltype(std::declval<Core&>().waiters_lock())>>;
template <class Core>
closed_awaitable<Core> wait_closed(Core* core) noexcept {
  return closed_awaitable<Core>(core->waiters_lock(), core->closed_waiters(), receiver_closed_of<Core>{core});
}

// Blocks the calling thread until the core's receiver is closed.
template <class Core>
void block_until_closed(Core& core) {
  for (int i = 0; i < spin_iterations && !core.receiver_closed(); ++i) cpu_relax();
  postal::detail::thread_parker parker;
  waiter node;
  node.target = parker.make_waker();
  {
    std::lock_guard lock(core.waiters_lock());
    if (core.receiver_closed()) return;
    core.closed_waiters().push_back(&node);
  }
  parker.park();
}

}  // namespace postal::mpsc::detail
