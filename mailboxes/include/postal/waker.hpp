// The hook between postal's channels and whatever runs the code that waits on them (Tokio's Waker).
// A channel never resumes a coroutine or unblocks a thread itself: it calls waker::wake(), and the waker
// decides how (schedule the task on its executor, resume the coroutine inline, unpark a thread).
// Not for: scheduling. Executors (postal::runtime in actors/) implement suspend_hooks; this file has no CAF.
#pragma once

#include <atomic>
#include <chrono>
#include <concepts>
#include <condition_variable>
#include <coroutine>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

namespace postal {

/// A one-shot handle that resumes exactly one suspended wait. Move-only; wake() consumes it, and destroying
/// an unused waker releases whatever it holds without waking anybody.
class waker {
 public:
  struct vtable {
    void (*wake)(void* data) noexcept;  // resume the waiting party, then release `data`
    void (*drop)(void* data) noexcept;  // release `data` without waking
  };

  constexpr waker() noexcept = default;
  constexpr waker(void* data, const vtable* table) noexcept : data_(data), table_(table) {}
  waker(waker&& other) noexcept : data_(take(other.data_)), table_(take(other.table_)) {}
  waker& operator=(waker&& other) noexcept {
    if (this != &other) {
      reset();
      data_ = take(other.data_);
      table_ = take(other.table_);
    }
    return *this;
  }
  waker(const waker&) = delete;
  waker& operator=(const waker&) = delete;
  ~waker() { reset(); }

  /// Wakes the waiting party (once). Afterwards this waker is empty. No effect on an empty waker.
  void wake() noexcept {
    if (table_) {
      auto* table = std::exchange(table_, nullptr);
      table->wake(std::exchange(data_, nullptr));
    }
  }
  /// Releases the waker without waking.
  void reset() noexcept {
    if (table_) {
      auto* table = std::exchange(table_, nullptr);
      table->drop(std::exchange(data_, nullptr));
    }
  }
  explicit operator bool() const noexcept { return table_ != nullptr; }

 private:
  // Reads a member of a waker being moved from and clears it. One 8-byte load per member: a waker is often
  // moved right after a call stored it member by member (the executor's waker_for returns it through
  // memory), and a single 16-byte load of both (what GCC makes of two plain loads) cannot be forwarded from
  // those two stores, which stalls the load until they reach the cache (~7% of a command-pattern round
  // trip). A relaxed atomic load is a plain load that the compiler does not merge.
  template <class Member>
  static Member take(Member& member) noexcept {
    Member value = __atomic_load_n(&member, __ATOMIC_RELAXED);
    member = nullptr;
    return value;
  }

  void* data_ = nullptr;
  const vtable* table_ = nullptr;
};

/// What an executor offers a coroutine that suspends on a channel. A coroutine promise opts in by providing
/// `postal::suspend_hooks* postal_hooks() noexcept`; postal::task does.
class suspend_hooks {
 public:
  /// A waker that resumes `handle` (exactly once) on this executor. Must not resume it before returning.
  virtual waker waker_for(std::coroutine_handle<> handle) noexcept = 0;
  /// Arranges `w.wake()` at or after `deadline`. Returns false, leaving `w` untouched, if this executor has
  /// no timers. A timer that fires after the wait already ended must find a waker that ignores it.
  virtual bool wake_at(std::chrono::steady_clock::time_point deadline, waker& w) = 0;
  /// Reschedules the coroutine `handle`, which is suspending, behind the work this executor already has
  /// queued (postal::yield_now). By default it is simply woken.
  virtual void yield(std::coroutine_handle<> handle) noexcept { waker_for(handle).wake(); }
  /// For a poll loop (postal::yield_here): if other work is queued on the thread that runs `handle`, which
  /// is about to suspend, reschedules it behind that work on the same thread (waking no other thread) and
  /// returns true; returns false, leaving it to go on without suspending, when there is nothing else to run
  /// there. By default: yield, and true.
  virtual bool yield_here(std::coroutine_handle<> handle) noexcept {
    yield(handle);
    return true;
  }

 protected:
  ~suspend_hooks() = default;
};

namespace detail {

inline constexpr waker::vtable inline_resume_vtable{
    [](void* address) noexcept { std::coroutine_handle<>::from_address(address).resume(); },
    [](void*) noexcept {},
};

template <class Promise>
suspend_hooks* hooks_of(std::coroutine_handle<Promise> handle) noexcept {
  if constexpr (requires(Promise & p) {
                  { p.postal_hooks() } -> std::convertible_to<suspend_hooks*>;
                }) {
    return handle.promise().postal_hooks();
  } else {
    (void)handle;
    return nullptr;
  }
}

/// The waker for a coroutine that is suspending. Inside postal's runtime the task is scheduled on its
/// executor; any other coroutine is resumed inline on the thread that wakes it.
template <class Promise>
waker waker_for(std::coroutine_handle<Promise> handle) noexcept {
  if (suspend_hooks* hooks = hooks_of(handle)) return hooks->waker_for(handle);
  return waker(handle.address(), &inline_resume_vtable);
}

/// True on threads that run postal tasks. Blocking operations refuse to run there, since blocking a worker
/// can deadlock the very task that would wake it. The runtime sets it on its worker threads.
inline thread_local bool on_executor_thread = false;

inline void check_may_block(const char* operation) {
  if (on_executor_thread)
    throw std::logic_error(std::string(operation) +
                           " would block a runtime worker thread; use co_await in a task instead");
}

/// Busy-waiting hint for the short spins of the blocking forms.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#else
  std::this_thread::yield();
#endif
}

/// How long a blocking form spins before it parks its thread. A reply from a task usually comes within a
/// few microseconds, while parking and being woken costs two futex calls and often more than the reply
/// itself; spinning this long costs at most this much CPU per wait that ends up parked anyway.
inline constexpr std::chrono::microseconds blocking_spin_time{200};

/// Spins (pausing the CPU) until `ready()` or until blocking_spin_time has passed; returns ready().
template <class Ready>
bool spin_until(Ready&& ready) {
  if (ready()) return true;
  const auto give_up = std::chrono::steady_clock::now() + blocking_spin_time;
  for (;;) {
    for (int i = 0; i < 32; ++i) {
      cpu_relax();
      if (ready()) return true;
    }
    if (std::chrono::steady_clock::now() >= give_up) return ready();
  }
}

/// Parks a plain thread until a waker made by make_waker() is woken. Lives on the blocked thread's stack.
class thread_parker {
 public:
  thread_parker() = default;
  thread_parker(const thread_parker&) = delete;
  thread_parker& operator=(const thread_parker&) = delete;

  /// The waker that unparks this thread. At most one may be outstanding at a time.
  waker make_waker() noexcept {
    woken_ = false;
    return waker(this, &vtable_);
  }
  /// Blocks until the waker was woken.
  void park() {
    std::unique_lock lock(mutex_);
    condition_.wait(lock, [this] { return woken_; });
  }
  /// Blocks until the waker was woken (true) or the deadline passed (false).
  bool park_until(std::chrono::steady_clock::time_point deadline) {
    std::unique_lock lock(mutex_);
    return condition_.wait_until(lock, deadline, [this] { return woken_; });
  }
  bool woken() {
    std::lock_guard lock(mutex_);
    return woken_;
  }

 private:
  static void wake(void* data) noexcept {
    auto* self = static_cast<thread_parker*>(data);
    // Notify while holding the lock: the parked thread may destroy *this as soon as it sees woken_.
    std::lock_guard lock(self->mutex_);
    self->woken_ = true;
    self->condition_.notify_one();
  }
  static constexpr waker::vtable vtable_{&thread_parker::wake, [](void*) noexcept {}};

  std::mutex mutex_;
  std::condition_variable condition_;
  bool woken_ = false;
};

/// Arbitrates between several sources that may wake one suspended wait (the channel and a timer): only the
/// first wake() gets through. Reference counted, so a timer that fires late finds it alive.
class wake_once {
 public:
  /// Creates the arbiter around the waiting party's waker; the caller owns one reference.
  static wake_once* create(waker target) { return new wake_once(std::move(target)); }

  /// A waker that forwards to the target unless another one already did. Adds a reference.
  waker make_waker() noexcept {
    references_.fetch_add(1, std::memory_order_relaxed);
    return waker(this, &vtable_);
  }
  /// True once any waker made here was woken.
  bool fired() const noexcept { return fired_.load(std::memory_order_acquire); }
  /// Marks the wait as over so later wakes are ignored; true if no wake got through before.
  bool disarm() noexcept { return !fired_.exchange(true, std::memory_order_acq_rel); }
  void release() noexcept {
    if (references_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

 private:
  explicit wake_once(waker target) : target_(std::move(target)) {}
  static void wake(void* data) noexcept {
    auto* self = static_cast<wake_once*>(data);
    if (!self->fired_.exchange(true, std::memory_order_acq_rel)) self->target_.wake();
    self->release();
  }
  static void drop(void* data) noexcept { static_cast<wake_once*>(data)->release(); }
  static constexpr waker::vtable vtable_{&wake_once::wake, &wake_once::drop};

  std::atomic<bool> fired_{false};
  std::atomic<std::uint32_t> references_{1};
  waker target_;
};

}  // namespace detail
}  // namespace postal
