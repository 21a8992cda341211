// postal::oneshot: a channel that carries exactly one value from one sender to one receiver (Tokio's
// oneshot). Use it to hand back the answer to one request (the command pattern's responder). When the other
// side goes away nothing hangs: a receiver whose sender is destroyed without sending gets recv_error, and a
// sender whose receiver is gone (or closed) gets its value back from send() while its closed() wait
// completes. Not for streams of values (use mpsc) or for several receivers (use broadcast or watch).
#pragma once

#include <postal/expected.hpp>
#include <postal/waker.hpp>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>

#if defined(__SANITIZE_ADDRESS__)
#define POSTAL_ONESHOT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define POSTAL_ONESHOT_ASAN 1
#endif
#endif
#ifdef POSTAL_ONESHOT_ASAN
#include <sanitizer/asan_interface.h>
#endif

namespace postal::oneshot {

/// Why awaiting (or blocking_recv) gave no value: the sender was destroyed without sending, or the receiver
/// was closed before a value arrived, or the value was already received.
struct recv_error {
  friend bool operator==(recv_error, recv_error) noexcept = default;
};

/// Why recv_until() or blocking_recv_until() gave no value.
struct recv_timeout_error {
  enum class kind_type {
    timeout,  // the deadline passed first (a value sent later stays in the channel)
    closed,   // nothing will arrive, as for recv_error
  };
  kind_type kind;
  bool is_timeout() const noexcept { return kind == kind_type::timeout; }
  bool is_closed() const noexcept { return kind == kind_type::closed; }
  friend bool operator==(recv_timeout_error, recv_timeout_error) noexcept = default;
};

/// Why try_recv() gave no value.
enum class try_recv_error {
  empty,   // nothing sent yet, and the sender may still send
  closed,  // nothing will arrive: the sender is gone, the receiver was closed, or the value was already taken
};

// Printing, as every postal error: to_string(e), and operator<< writing the same.
inline std::string to_string(const recv_error&) {
  return "no value will arrive (the sender is gone, the receiver was closed, or the value was taken)";
}
inline std::string to_string(const recv_timeout_error& error) {
  return error.is_timeout() ? "no value before the deadline" : to_string(recv_error{});
}
inline std::string to_string(try_recv_error error) {
  return error == try_recv_error::empty ? "no value yet" : to_string(recv_error{});
}
inline std::ostream& operator<<(std::ostream& out, const recv_error& error) { return out << to_string(error); }
inline std::ostream& operator<<(std::ostream& out, const recv_timeout_error& error) { return out << to_string(error); }
inline std::ostream& operator<<(std::ostream& out, try_recv_error error) { return out << to_string(error); }

template <class T>
class sender;
template <class T>
class receiver;

namespace detail {

// The one state word of a channel. Each flag is set or cleared by a single atomic read-modify-write, and the
// value of the word before that operation decides who owns what (who wakes which waker, who frees the block).
//
// The receiver's waker is in block::receiver_waker, waiting for `complete`.
inline constexpr std::uint32_t receiver_waiting = 1u << 0;
// The sender is done: it sent a value, or went away without one.
inline constexpr std::uint32_t complete = 1u << 1;
// The receiver closed the channel or went away.
inline constexpr std::uint32_t closed = 1u << 2;
// The sender's closed() waker is in block::sender_waker, waiting for `closed`.
inline constexpr std::uint32_t sender_waiting = 1u << 3;
// A value is in the block (set together with `complete`).
inline constexpr std::uint32_t has_value = 1u << 4;
// The sender, resp. the receiver, still refers to the block.
inline constexpr std::uint32_t sender_alive = 1u << 5;
inline constexpr std::uint32_t receiver_alive = 1u << 6;

// Everything a channel needs, in one allocation: the state word, both wakers and room for the value.
//
// Ownership rules (the protocol):
// - The value slot is written by the sender before it publishes complete|has_value; from then on it belongs
//   to the receiver, which moves it out or destroys it. If the receiver closed first, the sender never
//   publishes has_value and takes its value back.
// - A waker slot is written by its owner (receiver_waker by the receiver, sender_waker by the sender) only
//   while its *_waiting flag is clear, then published by setting the flag. The other side takes and wakes it
//   if its own transition (complete, resp. closed) finds the flag set; the owner takes it back if clearing
//   the flag finds that transition not yet made.
// - The block is freed by whichever of sender and receiver clears its *_alive flag last. A sender that
//   finishes (send or leave) while the receiver waits clears sender_alive in the same operation that sets
//   `complete` (one atomic read-modify-write less per reply), then takes receiver_waker out and sets
//   receiver_waker_taken (a plain store: its last touch of the block), then wakes it. So a receiver that
//   withdraws its wait and finds `complete` set waits for receiver_waker_taken before it may free the block
//   (it is woken only after it, so a woken receiver never needs to).
template <class T>
struct block {
  std::atomic<std::uint32_t> state{sender_alive | receiver_alive};
  waker receiver_waker;
  waker sender_waker;
  // False from the receiver's registration until the sender has moved receiver_waker out (see above).
  std::atomic<bool> receiver_waker_taken{true};
  alignas(T) unsigned char storage[sizeof(T)];

  T* value() noexcept { return std::launder(reinterpret_cast<T*>(storage)); }
};

// Under AddressSanitizer, recycled blocks are poisoned while they wait for reuse, so that a late access to a
// freed channel is still reported.
inline void poison_retired([[maybe_unused]] void* memory, [[maybe_unused]] std::size_t size) noexcept {
#ifdef POSTAL_ONESHOT_ASAN
  __asan_poison_memory_region(memory, size);
#endif
}
inline void unpoison_retired([[maybe_unused]] void* memory, [[maybe_unused]] std::size_t size) noexcept {
#ifdef POSTAL_ONESHOT_ASAN
  __asan_unpoison_memory_region(memory, size);
#endif
}

// Where blocks come from: a small per-thread, per-type stack of freed blocks, because the command pattern
// creates and drops one channel per request and the allocator would cost as much as the channel itself.
// Bounded (retired_capacity blocks per thread and type), emptied when the thread exits; a block freed on
// another thread than the one that made it simply joins that thread's stack.
template <class T>
class block_recycler {
 public:
  static block<T>* make() {
    void* memory = nullptr;
    if (!thread_gone) {
      retired_stack& retired = stack();
      if (retired.count > 0) {
        memory = retired.items[--retired.count];
        unpoison_retired(memory, sizeof(block<T>));
      }
    }
    if (memory == nullptr) memory = allocate();
    return ::new (memory) block<T>();
  }
  static void free(block<T>* b) noexcept {
    b->~block();
    if (!thread_gone) {
      retired_stack& retired = stack();
      if (retired.count < retired_capacity) {
        poison_retired(b, sizeof(block<T>));
        retired.items[retired.count++] = b;
        return;
      }
    }
    deallocate(b);
  }

 private:
  static constexpr int retired_capacity = 32;
  static constexpr bool over_aligned = alignof(block<T>) > __STDCPP_DEFAULT_NEW_ALIGNMENT__;

  static void* allocate() {
    if constexpr (over_aligned)
      return ::operator new (sizeof(block<T>), std::align_val_t{alignof(block<T>)});
    else
      return ::operator new(sizeof(block<T>));
  }
  static void deallocate(void* memory) noexcept {
    if constexpr (over_aligned)
      ::operator delete (memory, std::align_val_t{alignof(block<T>)});
    else
      ::operator delete(memory);
  }

  struct retired_stack {
    void* items[retired_capacity];
    int count = 0;
    ~retired_stack() {
      thread_gone = true;  // a block freed later by another thread_local's destructor is deallocated
      while (count > 0) {
        void* memory = items[--count];
        unpoison_retired(memory, sizeof(block<T>));
        deallocate(memory);
      }
    }
  };
  static retired_stack& stack() noexcept {
    thread_local retired_stack retired;
    return retired;
  }
  // Set once this thread's stack is destroyed; trivially destructible, so readable until the thread ends.
  static inline thread_local bool thread_gone = false;
};

// Clears `alive_flag` (the caller's last touch of the block) and frees the block if the other side is gone.
template <class T>
void release(block<T>* b, std::uint32_t alive_flag) noexcept {
  const std::uint32_t before = b->state.fetch_and(~alive_flag, std::memory_order_acq_rel);
  const std::uint32_t other = alive_flag == sender_alive ? receiver_alive : sender_alive;
  if ((before & other) == 0) block_recycler<T>::free(b);
}

// The sender's last step after its transition to `complete` (which also cleared sender_alive) found the
// receiver waiting: takes the receiver's waker out, tells a receiver withdrawing its wait that the block is
// no longer touched, and wakes the receiver. The block may be freed as soon as receiver_waker_taken is set.
template <class T>
void hand_over_receiver_waker(block<T>* b) noexcept {
  waker w = std::move(b->receiver_waker);
  b->receiver_waker_taken.store(true, std::memory_order_release);
  w.wake();
}

// The sender leaves without (successfully) sending: marks the channel complete, wakes a waiting receiver
// and lets go of the block.
template <class T>
void sender_leave(block<T>* b) noexcept {
  std::uint32_t before = b->state.load(std::memory_order_relaxed);
  std::uint32_t after;
  do {
    after = (before | complete) & ~sender_alive;
  } while (
      !b->state.compare_exchange_weak(before, after, std::memory_order_acq_rel, std::memory_order_relaxed));
  if (before & receiver_waiting)
    hand_over_receiver_waker(b);  // the receiver is alive (it waits): it frees the block
  else if ((before & receiver_alive) == 0)
    block_recycler<T>::free(b);
}

// The receiver leaves: closes the channel (waking a sender waiting in closed()), destroys a value it did not
// take, and lets go of the block.
template <class T>
void receiver_leave(block<T>* b, bool value_taken) noexcept {
  std::uint32_t before = b->state.load(std::memory_order_acquire);
  if ((before & sender_alive) == 0) {  // the sender is gone for good: nobody else touches the block
    if ((before & has_value) && !value_taken) std::destroy_at(b->value());
    block_recycler<T>::free(b);
    return;
  }
  std::uint32_t after;
  bool work_left;
  do {
    work_left = ((before & sender_waiting) && !(before & closed)) || ((before & has_value) && !value_taken);
    after = before | closed;
    if (!work_left) after &= ~receiver_alive;
  } while (
      !b->state.compare_exchange_weak(before, after, std::memory_order_acq_rel, std::memory_order_acquire));
  if (!work_left) {
    if ((before & sender_alive) == 0) block_recycler<T>::free(b);
    return;
  }
  if ((before & sender_waiting) && !(before & closed)) {
    waker w = std::move(b->sender_waker);
    w.wake();
  }
  if ((before & has_value) && !value_taken) std::destroy_at(b->value());
  release(b, receiver_alive);
}

// Publishes `w` in `slot` under `waiting_flag` unless `done_flags` is already set. Returns true if the wait
// is registered (the waker will be woken by the other side, or taken back by unregister()); false if the
// awaited condition already holds (the waker was dropped unused).
template <class T>
bool register_waker(block<T>* b, waker& slot, waker w, std::uint32_t waiting_flag, std::uint32_t done_flags,
                    bool& registered) {
  const std::uint32_t now = b->state.load(std::memory_order_acquire);
  if (now & done_flags) return false;
  if (now & waiting_flag)
    throw std::logic_error("postal::oneshot: only one task or thread may wait on a channel end at a time");
  slot = std::move(w);
  if (waiting_flag == receiver_waiting)  // published by the fetch_or below
    b->receiver_waker_taken.store(false, std::memory_order_relaxed);
  registered = true;  // before publishing: once published, the wait may end on another thread at any moment
  const std::uint32_t before = b->state.fetch_or(waiting_flag, std::memory_order_acq_rel);
  if (before & done_flags) {  // the other side finished in between and did not see our waker: take it back
    b->state.fetch_and(~waiting_flag, std::memory_order_relaxed);
    slot.reset();
    registered = false;
    return false;
  }
  return true;
}

// Withdraws a registered wait that will not be resumed (its coroutine frame is being destroyed, or a timer
// ended it). If the other side already made its transition, it owns the waker and wakes it; a receiver then
// waits until the sender no longer touches the block (see hand_over_receiver_waker), since the block may be
// freed next.
template <class T>
void unregister(block<T>* b, waker& slot, std::uint32_t waiting_flag, std::uint32_t done_flag) noexcept {
  const std::uint32_t before = b->state.fetch_and(~waiting_flag, std::memory_order_acq_rel);
  if ((before & done_flag) == 0) {
    slot.reset();  // still ours
  } else if (waiting_flag == receiver_waiting) {
    while (!b->receiver_waker_taken.load(std::memory_order_acquire)) postal::detail::cpu_relax();
  }
}

// Waits on a plain thread until one of `done_flags` is set: spins briefly, then parks until the other side's
// transition wakes it. With a deadline it does not spin, and gives up at the deadline (returns false): it
// takes its waker back, or, if the other side (the one that sets `taking_flag`) already took it to wake
// this stack frame, waits for that wake first. True once `done_flags` are set.
template <class T>
bool block_until(block<T>* b, waker& slot, std::uint32_t waiting_flag, std::uint32_t done_flags,
                 std::uint32_t taking_flag, const std::chrono::steady_clock::time_point* deadline = nullptr) {
  auto done = [&] { return (b->state.load(std::memory_order_acquire) & done_flags) != 0; };
  if (deadline == nullptr && postal::detail::spin_until(done)) return true;
  postal::detail::thread_parker parker;
  bool registered = false;
  if (!register_waker(b, slot, parker.make_waker(), waiting_flag, done_flags, registered)) return true;
  if (deadline == nullptr) {
    parker.park();
    return true;
  }
  if (parker.park_until(*deadline)) return true;
  if (b->state.fetch_and(~waiting_flag, std::memory_order_acq_rel) & taking_flag)
    parker.park();  // the other side took the waker and is about to wake this stack frame: let it
  else
    slot.reset();
  return done();
}

// co_await on a receiver; see receiver::operator co_await.
template <class T>
class receive_awaitable {
 public:
  explicit receive_awaitable(receiver<T>& target) noexcept : target_(&target) {}
  explicit receive_awaitable(receiver<T>&& owned) noexcept : owned_(std::move(owned)), target_(&owned_) {}
  receive_awaitable(const receive_awaitable&) = delete;
  receive_awaitable& operator=(const receive_awaitable&) = delete;
  ~receive_awaitable() {
    if (registered_) unregister(target_->block_, target_->block_->receiver_waker, receiver_waiting, complete);
  }

  bool await_ready() const noexcept { return target_->finished(); }
  template <class Promise>
  bool await_suspend(std::coroutine_handle<Promise> handle) {
    block<T>* b = target_->block_;
    return register_waker(b, b->receiver_waker, postal::detail::waker_for(handle), receiver_waiting,
                          complete | closed, registered_);
  }
  expected<T, recv_error> await_resume() {
    registered_ = false;
    return target_->take();
  }

 private:
  receiver<T> owned_;  // the receiver, when it was awaited as an rvalue
  receiver<T>* target_;
  bool registered_ = false;
};

// co_await rx.recv_until(deadline): a receive that the channel or a timer ends, whichever comes first.
// Both wake through one wake_once arbiter, so the task is resumed once.
template <class T>
class receive_until_awaitable {
 public:
  receive_until_awaitable(receiver<T>& target, std::chrono::steady_clock::time_point deadline) noexcept
      : target_(&target), deadline_(deadline) {}
  receive_until_awaitable(const receive_until_awaitable&) = delete;
  receive_until_awaitable& operator=(const receive_until_awaitable&) = delete;
  ~receive_until_awaitable() { withdraw(); }

  bool await_ready() const noexcept {
    return target_->finished() || std::chrono::steady_clock::now() >= deadline_;
  }
  template <class Promise>
  bool await_suspend(std::coroutine_handle<Promise> handle) {
    suspend_hooks* hooks = postal::detail::hooks_of(handle);
    if (hooks == nullptr)
      throw std::logic_error("postal::oneshot::receiver::recv_until needs an executor with timers");
    arbiter_ = postal::detail::wake_once::create(postal::detail::waker_for(handle));
    block<T>* b = target_->block_;
    if (!register_waker(b, b->receiver_waker, arbiter_->make_waker(), receiver_waiting, complete | closed,
                        registered_)) {
      std::exchange(arbiter_, nullptr)->release();
      return false;
    }
    waker timer = arbiter_->make_waker();
    if (!hooks->wake_at(deadline_, timer)) {
      withdraw();
      throw std::logic_error("postal::oneshot::receiver::recv_until: this executor has no timers");
    }
    return true;
  }
  expected<T, recv_timeout_error> await_resume() {
    withdraw();
    if (!target_->finished()) return unexpected{recv_timeout_error{recv_timeout_error::kind_type::timeout}};
    auto result = target_->take();
    if (!result) return unexpected{recv_timeout_error{recv_timeout_error::kind_type::closed}};
    return std::move(*result);
  }

 private:
  // Takes the channel's waker back if it is still there and lets a late timer find a disarmed arbiter.
  void withdraw() noexcept {
    if (registered_) {
      registered_ = false;
      unregister(target_->block_, target_->block_->receiver_waker, receiver_waiting, complete);
    }
    if (arbiter_) {
      arbiter_->disarm();
      std::exchange(arbiter_, nullptr)->release();
    }
  }

  receiver<T>* target_;
  std::chrono::steady_clock::time_point deadline_;
  postal::detail::wake_once* arbiter_ = nullptr;
  bool registered_ = false;
};

// co_await sender.closed(); see sender::closed.
template <class T>
class [[nodiscard]] closed_awaitable {
 public:
  explicit closed_awaitable(block<T>* b) noexcept : block_(b) {}
  closed_awaitable(const closed_awaitable&) = delete;
  closed_awaitable& operator=(const closed_awaitable&) = delete;
  ~closed_awaitable() {
    if (registered_) unregister(block_, block_->sender_waker, sender_waiting, closed);
  }

  bool await_ready() const noexcept {
    return block_ == nullptr || (block_->state.load(std::memory_order_acquire) & closed);
  }
  template <class Promise>
  bool await_suspend(std::coroutine_handle<Promise> handle) {
    return register_waker(block_, block_->sender_waker, postal::detail::waker_for(handle), sender_waiting,
                          closed, registered_);
  }
  void await_resume() noexcept { registered_ = false; }

 private:
  block<T>* block_;
  bool registered_ = false;
};

}  // namespace detail

/// Creates a channel for one value of type T: `auto [tx, rx] = postal::oneshot::channel<T>();`.
/// One heap allocation holds everything the channel needs.
template <class T>
std::pair<sender<T>, receiver<T>> channel();

/// The sending half. Move-only. send() is used at most once; destroying a sender that has not sent completes
/// the receiver with recv_error. A moved-from sender, or one that already sent, behaves as closed.
/// Thread-safety: the sender and its receiver may be used from different threads at once.
template <class T>
class sender {
 public:
  sender() noexcept = default;
  sender(sender&& other) noexcept : block_(std::exchange(other.block_, nullptr)) {}
  sender& operator=(sender&& other) noexcept {
    if (this != &other) {
      reset();
      block_ = std::exchange(other.block_, nullptr);
    }
    return *this;
  }
  sender(const sender&) = delete;
  sender& operator=(const sender&) = delete;
  /// Destroying a sender that has not sent wakes a waiting receiver with recv_error.
  ~sender() { reset(); }

  /// Stores `value` for the receiver and wakes it. Never waits. Returns the value back inside the error if
  /// the receiver is gone or closed. Either way this sender is used up afterwards (it behaves as closed).
  /// A value sent before the receiver closes can still be received (try_recv or co_await).
  /// Throws std::logic_error if this sender already sent or was moved from.
  expected<void, T> send(T value) {
    detail::block<T>* b = block_;
    if (b == nullptr)
      throw std::logic_error("postal::oneshot::sender::send: this sender already sent or was moved from");
    std::uint32_t before = b->state.load(std::memory_order_acquire);
    if (before & detail::closed) {
      block_ = nullptr;
      detail::sender_leave(b);
      return unexpected<T>{std::move(value)};
    }
    std::construct_at(b->value(), std::move(value));  // nothrow: T is nothrow move constructible
    block_ = nullptr;
    std::uint32_t after;
    do {
      if (before & detail::closed) {  // the receiver closed meanwhile: it will never look at the value
        T back(std::move(*b->value()));
        std::destroy_at(b->value());
        detail::sender_leave(b);
        return unexpected<T>{std::move(back)};
      }
      after = (before | detail::complete | detail::has_value) & ~detail::sender_alive;
    } while (
        !b->state.compare_exchange_weak(before, after, std::memory_order_acq_rel, std::memory_order_acquire));
    // Not closed, so the receiver is alive: only when it waits is there anything left to do here.
    if (before & detail::receiver_waiting) detail::hand_over_receiver_waker(b);
    return {};
  }

  /// True once the receiver is destroyed or closed (a send would fail), and for a used-up sender. Never
  /// waits.
  bool is_closed() const noexcept {
    return block_ == nullptr || (block_->state.load(std::memory_order_acquire) & detail::closed);
  }

  /// `co_await tx.closed()` completes once the receiver is destroyed or calls close() (at once if it already
  /// did). Useful to abandon work nobody waits for any more. At most one closed() wait per sender at a time
  /// (a second concurrent one throws std::logic_error). The sender must outlive the wait, and must not send
  /// while another task of the program still waits in its closed() (Tokio rules this out with &mut self).
  /// Cancel-safety: destroying the waiting coroutine withdraws the wait; nothing is lost.
  detail::closed_awaitable<T> closed() noexcept { return detail::closed_awaitable<T>(block_); }

  /// Blocks the calling thread until the receiver is destroyed or closed. Throws std::logic_error on a
  /// runtime worker thread.
  void blocking_closed() {
    postal::detail::check_may_block("blocking_closed");
    if (block_ != nullptr)
      detail::block_until(block_, block_->sender_waker, detail::sender_waiting, detail::closed,
                          detail::closed);
  }

 private:
  template <class U>
  friend std::pair<sender<U>, receiver<U>> channel();
  explicit sender(detail::block<T>* b) noexcept : block_(b) {}
  void reset() noexcept {
    if (block_ != nullptr) detail::sender_leave(std::exchange(block_, nullptr));
  }

  detail::block<T>* block_ = nullptr;
};

/// The receiving half. Move-only. Receives at most one value: `co_await rx` (or `co_await std::move(rx)`),
/// try_recv() or blocking_recv(). Destroying it closes the channel (the sender's send fails and its closed()
/// completes) and destroys a value that was sent but not received.
/// Thread-safety: the receiver and its sender may be used from different threads at once; one receiver
/// object must not be used by several threads at once.
template <class T>
class receiver {
 public:
  receiver() noexcept = default;
  receiver(receiver&& other) noexcept
      : block_(std::exchange(other.block_, nullptr)), terminated_(std::exchange(other.terminated_, false)) {}
  receiver& operator=(receiver&& other) noexcept {
    if (this != &other) {
      reset();
      block_ = std::exchange(other.block_, nullptr);
      terminated_ = std::exchange(other.terminated_, false);
    }
    return *this;
  }
  receiver(const receiver&) = delete;
  receiver& operator=(const receiver&) = delete;
  ~receiver() { reset(); }

  /// `co_await rx` -> the value once it is sent; recv_error if the sender is destroyed without sending, if
  /// close() was called before a value arrived, or if the value was already received (Tokio panics there).
  /// Completes without suspending when the outcome is already known. Awaiting an rvalue
  /// (`co_await std::move(rx)`) moves the receiver into the wait, which then owns it.
  /// At most one wait per receiver at a time (a second concurrent one throws std::logic_error).
  /// Cancel-safety: destroying the waiting coroutine withdraws the wait; a value sent meanwhile stays in the
  /// channel for a later receive (or is destroyed with the receiver).
  detail::receive_awaitable<T> operator co_await() & noexcept { return detail::receive_awaitable<T>(*this); }
  detail::receive_awaitable<T> operator co_await() && noexcept {
    return detail::receive_awaitable<T>(std::move(*this));
  }

  /// Takes the value if it was sent; otherwise try_recv_error::empty while the sender may still send, or
  /// try_recv_error::closed when nothing will arrive (sender gone, receiver closed, value already taken).
  /// Never waits. A value sent before close() is still returned.
  expected<T, try_recv_error> try_recv() {
    if (block_ == nullptr || terminated_) return unexpected{try_recv_error::closed};
    const std::uint32_t now = block_->state.load(std::memory_order_acquire);
    if (now & detail::has_value) {
      auto result = take();
      return expected<T, try_recv_error>(std::move(*result));
    }
    if (now & (detail::complete | detail::closed)) {
      terminated_ = true;  // no value can arrive any more (see take())
      return unexpected{try_recv_error::closed};
    }
    return unexpected{try_recv_error::empty};
  }

  /// Blocks the calling thread until the outcome is known; returns what `co_await rx` would. Spins briefly
  /// before parking. Throws std::logic_error on a runtime worker thread.
  expected<T, recv_error> blocking_recv() {
    postal::detail::check_may_block("blocking_recv");
    if (!finished())
      detail::block_until(block_, block_->receiver_waker, detail::receiver_waiting,
                          detail::complete | detail::closed, detail::complete);
    return take();
  }
  /// `co_await rx.recv_until(deadline)` -> what `co_await rx` gives, or recv_timeout_error timeout if the
  /// deadline passes first (then a value sent later stays in the channel for a later receive). Needs an
  /// executor with timers (postal's runtime); throws std::logic_error otherwise. Same cancel-safety as
  /// co_await rx.
  detail::receive_until_awaitable<T> recv_until(std::chrono::steady_clock::time_point deadline) & noexcept {
    return detail::receive_until_awaitable<T>(*this, deadline);
  }

  /// Blocks the calling thread like blocking_recv, but at most until `deadline`. Throws std::logic_error on
  /// a runtime worker thread.
  expected<T, recv_timeout_error> blocking_recv_until(std::chrono::steady_clock::time_point deadline) {
    postal::detail::check_may_block("blocking_recv_until");
    if (!finished() && !detail::block_until(block_, block_->receiver_waker, detail::receiver_waiting,
                                            detail::complete | detail::closed, detail::complete, &deadline))
      return unexpected{recv_timeout_error{recv_timeout_error::kind_type::timeout}};
    auto result = take();
    if (!result) return unexpected{recv_timeout_error{recv_timeout_error::kind_type::closed}};
    return std::move(*result);
  }

  /// Closes the channel without destroying the receiver: the sender's send fails from now on and its closed()
  /// completes. A value sent before still can be received. Idempotent.
  void close() noexcept {
    if (block_ == nullptr) return;
    const std::uint32_t before = block_->state.fetch_or(detail::closed, std::memory_order_acq_rel);
    if ((before & detail::sender_waiting) && !(before & detail::closed)) {
      waker w = std::move(block_->sender_waker);
      w.wake();
    }
  }

  /// True when no value can arrive any more: the sender sent (the value may still be waiting here), was
  /// destroyed, or this receiver was closed. Never waits.
  bool is_closed() const noexcept {
    return block_ == nullptr || terminated_ ||
           (block_->state.load(std::memory_order_acquire) & (detail::complete | detail::closed));
  }
  /// True once this receiver delivered its outcome: the value, or recv_error from co_await or blocking_recv,
  /// or try_recv_error::closed from try_recv (not after close() or the sender's destruction alone: the
  /// outcome still has to be received). Receiving afterwards gives recv_error (try_recv: closed). Also true
  /// for a moved-from receiver. Never waits. Tokio's Receiver::is_terminated.
  bool is_terminated() const noexcept { return block_ == nullptr || terminated_; }
  /// True when no value is waiting to be received: nothing was sent yet, or it was already taken, or the
  /// sender went away without sending. Never waits.
  bool is_empty() const noexcept {
    return block_ == nullptr || terminated_ ||
           !(block_->state.load(std::memory_order_acquire) & detail::has_value);
  }

 private:
  template <class U>
  friend std::pair<sender<U>, receiver<U>> channel();
  friend class detail::receive_awaitable<T>;
  friend class detail::receive_until_awaitable<T>;
  explicit receiver(detail::block<T>* b) noexcept : block_(b) {}

  // True when receiving would not wait.
  bool finished() const noexcept {
    return block_ == nullptr || terminated_ ||
           (block_->state.load(std::memory_order_acquire) & (detail::complete | detail::closed));
  }
  // The outcome, once finished(): moves the value out, or reports recv_error.
  expected<T, recv_error> take() {
    if (block_ == nullptr || terminated_) return unexpected{recv_error{}};
    const std::uint32_t now = block_->state.load(std::memory_order_acquire);
    if ((now & detail::has_value) == 0) {
      // complete without a value (the sender left) or closed: a sender never publishes has_value once it
      // finds `closed`, so no value can arrive any more, and none is in the block for receiver_leave.
      terminated_ = true;
      return unexpected{recv_error{}};
    }
    expected<T, recv_error> result(std::move(*block_->value()));
    std::destroy_at(block_->value());
    terminated_ = true;
    if ((now & detail::sender_alive) == 0) {  // the sender is gone for good: free the block now
      detail::block_recycler<T>::free(std::exchange(block_, nullptr));
    }
    return result;
  }
  void reset() noexcept {
    if (block_ != nullptr) detail::receiver_leave(std::exchange(block_, nullptr), terminated_);
    terminated_ = false;
  }

  detail::block<T>* block_ = nullptr;
  // The outcome was delivered: the value was moved out, or recv_error / try_recv_error::closed was reported.
  // The block may still be shared with a sender finishing up; it never holds a value once this is set.
  bool terminated_ = false;
};

template <class T>
std::pair<sender<T>, receiver<T>> channel() {
  static_assert(!std::is_void_v<T> && !std::is_reference_v<T>,
                "use a value type (std::monostate for no value)");
  static_assert(std::is_nothrow_move_constructible_v<T> && std::is_nothrow_destructible_v<T>,
                "postal::oneshot needs a nothrow move-constructible value type");
  detail::block<T>* b = detail::block_recycler<T>::make();
  return {sender<T>(b), receiver<T>(b)};
}

}  // namespace postal::oneshot
