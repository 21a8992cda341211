// postal::broadcast: many senders, many receivers, every receiver sees every value (Tokio's broadcast): a
// pub/sub topic, a stream of events to several consumers. Bounded, and a send never waits: when the ring is
// full the oldest value is overwritten, and a receiver that fell more than the capacity behind is told how
// many values it missed (lagged) before it continues from the oldest value still retained.
// When the other side goes away: once every sender is gone, receivers still get what was sent, then closed;
// once every receiver is gone, send() fails and hands the value back, and senders' closed() completes.
// Not for work queues (every receiver gets a copy: use mpsc) or for only the latest value (use watch).
#pragma once

#include <postal/detail/inline_operation.hpp>
#include <postal/detail/intrusive_list.hpp>
#include <postal/detail/list_wait.hpp>
#include <postal/expected.hpp>
#include <postal/waker.hpp>

#include <array>
#include <atomic>
#include <bit>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <iosfwd>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>

namespace postal::broadcast {

/// The largest capacity channel() accepts (it rounds up to a power of two, which must fit a std::size_t).
inline constexpr std::size_t max_capacity = ~std::size_t{0} >> 1;
/// The most receivers one channel can have at a time; subscribe() beyond it throws std::length_error.
inline constexpr std::size_t max_receivers = (std::size_t{1} << 31) - 1;

/// send() failed because no receiver exists; the value is handed back.
template <class T>
struct send_error {
  T value;
};

/// Why recv() or blocking_recv() gave no value.
struct recv_error {
  enum class kind_type {
    lagged,  // the receiver fell behind and `missed` values were overwritten; the next recv gets the oldest
    closed,  // every sender is gone and this receiver has seen everything that was sent
  };
  kind_type kind;
  std::uint64_t missed = 0;  // for lagged: how many values this receiver skipped

  static recv_error lagged(std::uint64_t missed) noexcept { return {kind_type::lagged, missed}; }
  static recv_error closed() noexcept { return {kind_type::closed, 0}; }
  bool is_lagged() const noexcept { return kind == kind_type::lagged; }
  bool is_closed() const noexcept { return kind == kind_type::closed; }
  friend bool operator==(const recv_error&, const recv_error&) noexcept = default;
};

/// Why try_recv() gave no value.
enum class try_recv_error_kind {
  empty,   // nothing new yet, and a sender still exists
  lagged,  // as recv_error's lagged
  closed,  // as recv_error's closed
};
struct try_recv_error {
  try_recv_error_kind kind;
  std::uint64_t missed = 0;  // for lagged: how many values this receiver skipped

  static try_recv_error empty() noexcept { return {try_recv_error_kind::empty, 0}; }
  static try_recv_error lagged(std::uint64_t missed) noexcept {
    return {try_recv_error_kind::lagged, missed};
  }
  static try_recv_error closed() noexcept { return {try_recv_error_kind::closed, 0}; }
  bool is_empty() const noexcept { return kind == try_recv_error_kind::empty; }
  bool is_lagged() const noexcept { return kind == try_recv_error_kind::lagged; }
  bool is_closed() const noexcept { return kind == try_recv_error_kind::closed; }
  friend bool operator==(const try_recv_error&, const try_recv_error&) noexcept = default;
};

// Printing, as every postal error: to_string(e), and operator<< writing the same.
inline std::string to_string(const recv_error& error) {
  if (error.is_lagged()) return "lagged: " + std::to_string(error.missed) + " values were missed";
  return "the channel is closed and every value was taken";
}
inline std::string to_string(const try_recv_error& error) {
  if (error.is_empty()) return "nothing new yet";
  return to_string(error.is_lagged() ? recv_error::lagged(error.missed) : recv_error::closed());
}
template <class T>
std::string to_string(const send_error<T>&) {
  return "no receiver";
}
inline std::ostream& operator<<(std::ostream& out, const recv_error& error) { return out << to_string(error); }
inline std::ostream& operator<<(std::ostream& out, const try_recv_error& error) { return out << to_string(error); }
template <class T>
std::ostream& operator<<(std::ostream& out, const send_error<T>& error) {
  return out << to_string(error);
}

template <class T>
class sender;
template <class T>
class weak_sender;
template <class T>
class receiver;

namespace detail {

using postal::detail::cpu_relax;
// How often a send pauses the CPU while readers finish copying the slot it overwrites, before it yields.
inline constexpr int spin_iterations = 200;

// One place in the ring. Each slot has a state word whose low 32 bits count the receivers that will still
// read (or release) the value there ("remaining": Tokio's rem, which also gives sender::len()), and whose top
// bit marks a send writing the slot. A send holds the channel's mutex while it writes a slot; a receiver
// reads a slot without the mutex, and never takes the mutex while it is inside a slot. Two kinds of slot:
// - word_slot, for small trivially copyable values (the common case: ids, numbers, small structs): the value
//   is stored as atomic words and read like a seqlock. A receiver loads the state, copies the words, and
//   decrements remaining with one compare-exchange that fails if a send started since; so a receive costs
//   one atomic read-modify-write, and a send writes with plain stores.
// - locked_slot, for every other value: bits 32-62 count the receivers inside (copying the value); a send
//   sets the writer bit and waits for them to leave (a copy is brief) before it replaces the value. The last
//   receiver to read a value destroys it.
inline constexpr std::uint64_t remaining_one = 1;
inline constexpr std::uint64_t remaining_mask = 0xFFFF'FFFFull;
inline constexpr std::uint64_t writer_bit = std::uint64_t{1} << 63;
inline constexpr std::uint64_t reader_one = std::uint64_t{1} << 32;  // locked_slot
inline constexpr std::uint64_t reader_mask = 0x7FFF'FFFFull << 32;   // locked_slot
inline constexpr std::uint64_t lap_tag_mask = 0x7FFF'FFFFull << 32;  // word_slot

// Values that word_slot carries.
template <class T>
inline constexpr bool copied_as_words =
    std::is_trivially_copyable_v<T>&& std::is_trivially_destructible_v<T> && sizeof(T) <= 64;

template <class T>
struct alignas(64) word_slot {  // one cache line or more, so the sender and the receivers do not share one
  static constexpr std::size_t word_count = (sizeof(T) + 7) / 8;

  // bits 0-31 remaining; bits 32-62 the lap (position / capacity) of the value here, modulo 2^31; bit 63 a
  // send is writing. A receiver that checked the lap and then slept through 2^31 laps of the ring between
  // two instructions could take a wrong value; nothing else can.
  std::atomic<std::uint64_t> state{0};
  std::uint64_t position = 0;  // the position of the value here; written and read under the channel's mutex
  std::atomic<std::uint64_t> words[word_count] = {};

  static std::uint64_t lap_tag(std::uint64_t position, unsigned lap_shift) noexcept {
    return ((position >> lap_shift) << 32) & lap_tag_mask;
  }
  void initialize(std::uint64_t empty_position, unsigned lap_shift) noexcept {
    position = empty_position;
    state.store(lap_tag(empty_position, lap_shift), std::memory_order_relaxed);
  }
  // Copies the value at `wanted` into `out` and takes this receiver's claim off it; false if the slot holds
  // another position or a send is writing it.
  bool try_take(std::uint64_t wanted, unsigned lap_shift, std::array<std::byte, sizeof(T)>& out) noexcept {
    const std::uint64_t tag = lap_tag(wanted, lap_shift);
    std::uint64_t now = state.load(std::memory_order_acquire);
    for (;;) {
      if ((now & (writer_bit | lap_tag_mask)) != tag) return false;
      std::uint64_t copy[word_count];
      for (std::size_t i = 0; i < word_count; ++i) copy[i] = words[i].load(std::memory_order_acquire);
      const std::uint64_t after = (now & remaining_mask) != 0 ? now - remaining_one : now;
      // Succeeds only if no send started since `now` was read: then the copy is the value of that lap.
      if (state.compare_exchange_weak(now, after, std::memory_order_acq_rel, std::memory_order_acquire)) {
        std::memcpy(out.data(), copy, sizeof(T));
        return true;
      }
    }
  }
  // Takes a leaving receiver's claim off the value at `wanted`, if it is still there.
  void release(std::uint64_t wanted, unsigned lap_shift) noexcept {
    const std::uint64_t tag = lap_tag(wanted, lap_shift);
    std::uint64_t now = state.load(std::memory_order_relaxed);
    while ((now & (writer_bit | lap_tag_mask)) == tag && (now & remaining_mask) != 0) {
      if (state.compare_exchange_weak(now, now - remaining_one, std::memory_order_relaxed)) return;
    }
  }
  // Stores `value` at `new_position` for `receivers` receivers (the caller holds the channel's mutex).
  void write(std::uint64_t new_position, unsigned lap_shift, const T& value,
             std::uint64_t receivers) noexcept {
    // A receiver whose copy sees any word stored below also sees the writer bit (the word stores are
    // releases, its loads acquires) when it tries its compare-exchange, which then fails.
    state.store(writer_bit, std::memory_order_relaxed);
    std::uint64_t copy[word_count] = {};
    std::memcpy(copy, &value, sizeof(T));
    for (std::size_t i = 0; i < word_count; ++i) words[i].store(copy[i], std::memory_order_release);
    position = new_position;
    state.store(lap_tag(new_position, lap_shift) | receivers, std::memory_order_release);
  }
};

template <class T>
struct alignas(64)
    locked_slot {  // one cache line (for small T), so the sender and the receivers do not share one
  std::atomic<std::uint64_t> state{0};
  std::uint64_t position =
      0;  // written by the writer under the channel's mutex; read inside, or under the mutex
  bool holds_value = false;  // false once the last receiver destroyed the value (or before the first write)
  alignas(T) unsigned char storage[sizeof(T)];

  T* value() noexcept { return std::launder(reinterpret_cast<T*>(storage)); }
  void initialize(std::uint64_t empty_position, unsigned) noexcept { position = empty_position; }

  // Enters as a reader; false (and nothing held) if a writer is replacing the slot.
  bool enter() noexcept {
    const std::uint64_t before = state.fetch_add(reader_one, std::memory_order_acquire);
    if ((before & writer_bit) == 0) return true;
    state.fetch_sub(reader_one, std::memory_order_relaxed);
    return false;
  }
  // Leaves without having taken the value at `position`.
  void leave() noexcept { state.fetch_sub(reader_one, std::memory_order_release); }
  // Leaves after taking (or skipping) the value at `position`; the last receiver to do so destroys it.
  void leave_consumed() noexcept {
    if constexpr (!std::is_trivially_destructible_v<T>) {
      // remaining == 1: every other receiver has left this value for good, and no writer can be inside.
      if ((state.load(std::memory_order_acquire) & remaining_mask) == 1) {
        std::destroy_at(value());
        holds_value = false;
      }
    }
    state.fetch_sub(reader_one + remaining_one, std::memory_order_acq_rel);
  }
  // Takes a leaving receiver's claim off the value at `wanted`, if it is still there.
  void release(std::uint64_t wanted, unsigned) noexcept {
    if (!enter()) return;  // a send is overwriting it: the value goes, and the claim with it
    if (position == wanted)
      leave_consumed();
    else
      leave();
  }
  // Enters as the writer (the caller holds the channel's mutex); returns the remaining count.
  std::uint64_t enter_exclusive() noexcept {
    std::uint64_t now = state.fetch_or(writer_bit, std::memory_order_acquire);
    for (int spins = 0; (now & reader_mask) != 0; ++spins) {
      if (spins < spin_iterations)
        cpu_relax();
      else
        std::this_thread::yield();
      now = state.load(std::memory_order_acquire);
    }
    return now & remaining_mask;
  }
  // Leaves as the writer, setting the remaining count from `old_remaining` to `new_remaining`.
  void leave_exclusive(std::uint64_t old_remaining, std::uint64_t new_remaining) noexcept {
    state.fetch_add(new_remaining - old_remaining - writer_bit, std::memory_order_release);
  }
};

template <class T>
using slot = std::conditional_t<copied_as_words<T>, word_slot<T>, locked_slot<T>>;

// A task or thread waiting for the next value (receivers) or for the last receiver to go (senders).
// Lives inside the awaitable or on the blocked thread's stack.
struct waiter : postal::detail::list_node {
  waker target;
};

// The shared state of one channel; senders, weak senders and receivers hold it through shared_ptr.
template <class T>
struct shared_state {
  explicit shared_state(std::size_t capacity)
      : capacity(capacity),
        mask(capacity - 1),
        lap_shift(static_cast<unsigned>(std::countr_zero(capacity))),
        slots(std::make_unique<slot<T>[]>(capacity)) {
    for (std::size_t i = 0; i < capacity; ++i) slots[i].initialize(std::uint64_t{i} - capacity, lap_shift);
  }
  shared_state(const shared_state&) = delete;
  shared_state& operator=(const shared_state&) = delete;
  ~shared_state() {
    if constexpr (!copied_as_words<T> && !std::is_trivially_destructible_v<T>) {
      for (std::size_t i = 0; i < capacity; ++i)
        if (slots[i].holds_value) std::destroy_at(slots[i].value());
    }
  }

  slot<T>& slot_for(std::uint64_t position) noexcept { return slots[position & mask]; }

  const std::size_t capacity;  // a power of two
  const std::uint64_t mask;    // capacity - 1
  const unsigned lap_shift;    // log2(capacity)
  std::unique_ptr<slot<T>[]> slots;

  alignas(64) std::mutex lock;  // guards what follows up to the counters; a send holds it while it writes
  std::uint64_t tail = 0;       // the position the next send writes
  std::atomic<std::uint64_t> tail_position{0};  // a copy of tail for lock-free readers (written under lock)
  std::atomic<std::size_t> receiver_count{0};   // changed under lock, read anywhere
  std::atomic<bool> closed{false};              // every sender is gone (set under lock)
  postal::detail::intrusive_list<waiter> receive_waiters;  // receivers waiting in recv() at the tail
  postal::detail::intrusive_list<waiter> closed_waiters;   // senders waiting in closed()

  alignas(64) std::atomic<std::size_t> sender_count{0};
  std::atomic<std::size_t> weak_count{0};
};

// Wakes every waiter on `waiting`; the caller holds `guard` locked, and it is unlocked on return. The waiters
// are taken off the list under the lock and their wakers moved out under it, in batches, and woken after it
// is released (a waker may run arbitrary code, even use this channel). Waiters not yet woken wait on a list
// on this stack, from which a cancelled waiter still unlinks itself under the lock.
inline void wake_all(std::unique_lock<std::mutex>& guard,
                     postal::detail::intrusive_list<waiter>& waiting) noexcept {
  if (waiting.empty()) {
    guard.unlock();
    return;
  }
  postal::detail::intrusive_list<waiter> taken;
  while (waiter* w = waiting.pop_front()) taken.push_back(w);
  std::array<waker, 32> batch;
  for (;;) {
    std::size_t count = 0;
    while (count < batch.size() && !taken.empty()) batch[count++] = std::move(taken.pop_front()->target);
    const bool more = !taken.empty();
    guard.unlock();
    for (std::size_t i = 0; i < count; ++i) batch[i].wake();
    if (!more) return;
    guard.lock();
  }
}

// co_await receiver.recv(): a list_wait on receive_waiters (see recv_wait below).
template <class T>
struct recv_wait;
template <class T>
using recv_awaitable = postal::detail::list_wait<waiter, recv_wait<T>>;

}  // namespace detail

/// Creates a channel that retains up to `capacity` values (rounded up to a power of two):
/// `auto [tx, rx] = postal::broadcast::channel<T>(capacity);`. Throws std::invalid_argument if capacity is 0
/// or above max_capacity. T must be copy-constructible (each receiver gets its own copy), and nothrow
/// move-constructible and destructible. T's copy constructor and destructor must not use the same channel
/// (a copy runs while the receiver is inside its slot, where a send to that slot would wait for it).
/// Small trivially copyable values (up to 64 bytes) are copied without any lock (see detail::word_slot).
template <class T>
std::pair<sender<T>, receiver<T>> channel(std::size_t capacity);

/// The sending half. Copyable: a copy is one more sender; receivers see the channel closed once the last
/// sender is destroyed (weak senders do not count). A moved-from sender may only be assigned to or destroyed.
/// Thread-safety: every method may be called from any thread at once, except assignment and destruction.
template <class T>
class sender {
 public:
  sender(const sender& other) noexcept : shared_(other.shared_) {
    shared_->sender_count.fetch_add(1, std::memory_order_relaxed);
  }
  sender(sender&& other) noexcept = default;
  sender& operator=(sender other) noexcept {
    std::swap(shared_, other.shared_);
    return *this;
  }
  /// Destroying the last sender closes the channel: receivers get what is left, then recv_error closed.
  ~sender() {
    if (shared_ && shared_->sender_count.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::unique_lock lock(shared_->lock);
      shared_->closed.store(true, std::memory_order_release);
      detail::wake_all(lock, shared_->receive_waiters);
    }
  }

  /// Sends `value` to every current receiver and returns how many there are (each will see it unless it
  /// lags). Never waits (apart from the channel's short lock, and a receiver still copying the oldest value
  /// out of the slot being overwritten): when the ring is full, the oldest value is overwritten, and
  /// receivers that had not read it get lagged. Fails, handing the value back, if no receiver exists.
  expected<std::size_t, send_error<T>> send(T value) {
    detail::shared_state<T>& shared = *shared_;
    // An overwritten value, destroyed after the lock is released (its destructor may do anything).
    [[maybe_unused]] std::conditional_t<std::is_trivially_destructible_v<T>, bool, std::optional<T>>
        evicted{};
    std::unique_lock lock(shared.lock);
    const std::size_t receivers = shared.receiver_count.load(std::memory_order_relaxed);
    if (receivers == 0) {
      lock.unlock();
      return unexpected{send_error<T>{std::move(value)}};
    }
    const std::uint64_t position = shared.tail;
    detail::slot<T>& slot = shared.slot_for(position);
    if constexpr (detail::copied_as_words<T>) {
      slot.write(position, shared.lap_shift, value, receivers);
    } else {
      const std::uint64_t old_remaining = slot.enter_exclusive();
      if constexpr (!std::is_trivially_destructible_v<T>) {
        if (slot.holds_value) {
          evicted.emplace(std::move(*slot.value()));
          std::destroy_at(slot.value());
        }
      }
      std::construct_at(slot.value(), std::move(value));
      slot.holds_value = true;
      slot.position = position;
      slot.leave_exclusive(old_remaining, receivers);
    }
    shared.tail = position + 1;
    shared.tail_position.store(position + 1, std::memory_order_release);
    if (!shared.receive_waiters.empty()) detail::wake_all(lock, shared.receive_waiters);
    return receivers;
  }

  /// A new receiver that will see the values sent after this call (not the ones already retained).
  /// Throws std::length_error beyond max_receivers.
  receiver<T> subscribe() const { return receiver<T>(shared_); }

  /// How many receivers exist now.
  std::size_t receiver_count() const noexcept {
    return shared_->receiver_count.load(std::memory_order_acquire);
  }
  /// How many values are retained that some receiver has not seen yet (Tokio's Sender::len): a value counts
  /// until every receiver that existed when it was sent has read or skipped it, or it is overwritten. At most
  /// the capacity. Takes the channel's lock.
  std::size_t len() const {
    detail::shared_state<T>& shared = *shared_;
    std::lock_guard lock(shared.lock);
    // From the oldest slot to the newest, the remaining counts are zero first, then non-zero: a receiver that
    // still has to read one value still has to read every later one.
    std::size_t low = 0;
    std::size_t high = shared.capacity;
    while (low < high) {
      const std::size_t middle = low + (high - low) / 2;
      const std::uint64_t state = shared.slot_for(shared.tail + middle).state.load(std::memory_order_acquire);
      if ((state & detail::remaining_mask) == 0)
        low = middle + 1;
      else
        high = middle;
    }
    return shared.capacity - low;
  }
  /// True when len() is 0.
  bool is_empty() const { return len() == 0; }
  /// True if both senders belong to the same channel.
  bool same_channel(const sender& other) const noexcept { return shared_ == other.shared_; }
  /// How many senders exist (weak senders not counted).
  std::size_t strong_count() const noexcept { return shared_->sender_count.load(std::memory_order_acquire); }
  /// How many weak senders exist.
  std::size_t weak_count() const noexcept { return shared_->weak_count.load(std::memory_order_acquire); }
  /// A weak sender: it does not keep the channel open, and upgrade() gives a sender while one still exists.
  weak_sender<T> downgrade() const noexcept { return weak_sender<T>(shared_); }

  /// `co_await tx.closed()` completes once no receiver exists (at once if none exists now). A receiver
  /// subscribed between the last one leaving and this wait resuming keeps it waiting (as in Tokio).
  /// Cancel-safety: destroying the waiting coroutine withdraws the wait; nothing is lost.
  postal::detail::inline_operation<void> closed() const;

  /// Blocks the calling thread until no receiver exists. Throws std::logic_error on a runtime worker thread.
  void blocking_closed() const {
    postal::detail::check_may_block("blocking_closed");
    detail::shared_state<T>& shared = *shared_;
    for (;;) {
      postal::detail::thread_parker parker;
      detail::waiter node;
      node.target = parker.make_waker();
      {
        std::lock_guard lock(shared.lock);
        if (shared.receiver_count.load(std::memory_order_relaxed) == 0) return;
        shared.closed_waiters.push_back(&node);
      }
      parker.park();
    }
  }

 private:
  template <class U>
  friend std::pair<sender<U>, receiver<U>> channel(std::size_t capacity);
  friend class weak_sender<T>;
  // Adopts one count of sender_count, which the caller already added.
  explicit sender(std::shared_ptr<detail::shared_state<T>> shared) noexcept : shared_(std::move(shared)) {}

  std::shared_ptr<detail::shared_state<T>> shared_;
};

/// A sender that does not keep the channel open (Tokio's WeakSender): upgrade() gives a sender while at
/// least one sender exists. Copyable. Keeps the channel's memory, not its senders, alive.
template <class T>
class weak_sender {
 public:
  weak_sender(const weak_sender& other) noexcept : shared_(other.shared_) {
    shared_->weak_count.fetch_add(1, std::memory_order_relaxed);
  }
  weak_sender(weak_sender&& other) noexcept = default;
  weak_sender& operator=(weak_sender other) noexcept {
    std::swap(shared_, other.shared_);
    return *this;
  }
  ~weak_sender() {
    if (shared_) shared_->weak_count.fetch_sub(1, std::memory_order_acq_rel);
  }

  /// A sender, if at least one sender still exists; empty once the last one is gone (for good: a closed
  /// channel never reopens).
  std::optional<sender<T>> upgrade() const noexcept {
    std::size_t count = shared_->sender_count.load(std::memory_order_relaxed);
    while (count != 0) {
      if (shared_->sender_count.compare_exchange_weak(count, count + 1, std::memory_order_acq_rel,
                                                      std::memory_order_relaxed))
        return sender<T>(shared_);
    }
    return std::nullopt;
  }
  /// How many senders exist (0 once the channel is closed).
  std::size_t strong_count() const noexcept { return shared_->sender_count.load(std::memory_order_acquire); }
  /// How many weak senders exist, this one included.
  std::size_t weak_count() const noexcept { return shared_->weak_count.load(std::memory_order_acquire); }

 private:
  friend class sender<T>;
  explicit weak_sender(std::shared_ptr<detail::shared_state<T>> shared) noexcept
      : shared_(std::move(shared)) {
    shared_->weak_count.fetch_add(1, std::memory_order_relaxed);
  }
  std::shared_ptr<detail::shared_state<T>> shared_;
};

/// The receiving half. Move-only (as in Tokio); resubscribe() makes another receiver, starting at the tail.
/// Each receiver reads the values in the order they were sent, from the position where it subscribed.
/// A moved-from receiver may only be assigned to or destroyed.
/// Thread-safety: distinct receivers may be used from different threads at once; one receiver must not be
/// used by several threads at once.
template <class T>
class receiver {
 public:
  receiver(receiver&& other) noexcept : shared_(std::move(other.shared_)), next_(other.next_) {}
  receiver& operator=(receiver&& other) noexcept {
    if (this != &other) {
      leave();
      shared_ = std::move(other.shared_);
      next_ = other.next_;
    }
    return *this;
  }
  receiver(const receiver&) = delete;
  receiver& operator=(const receiver&) = delete;
  /// Releases this receiver's claim on the values it has not read (each is destroyed once every receiver
  /// has read or skipped it). Destroying the last receiver completes the senders' closed() waits.
  ~receiver() { leave(); }

  /// `co_await rx.recv()` -> the next value (a copy), in the order sent; recv_error lagged(n) if this
  /// receiver fell more than the capacity behind, after which the next recv continues from the oldest value
  /// retained; recv_error closed once every sender is gone and this receiver has seen everything. Completes
  /// at once (without suspending) when a value is there. The receiver must outlive the wait. Cancel-safety:
  /// destroying the waiting coroutine withdraws the wait and loses nothing: the value it would have received
  /// stays for the next recv. If copying the value throws, the exception comes out of the co_await and that
  /// value is skipped.
  detail::recv_awaitable<T> recv() noexcept {
    return detail::recv_awaitable<T>(detail::recv_wait<T>(*this));
  }

  /// The next value if one is there now; otherwise try_recv_error empty, lagged(n) or closed (as recv()).
  /// Never waits.
  expected<T, try_recv_error> try_recv() {
    if (auto result = receive<try_recv_error>(nullptr)) return std::move(*result);
    return unexpected{try_recv_error::empty()};
  }

  /// Blocks the calling thread until recv() would complete; returns what it returns. Spins briefly before
  /// parking. Throws std::logic_error on a runtime worker thread.
  expected<T, recv_error> blocking_recv() {
    postal::detail::check_may_block("blocking_recv");
    detail::shared_state<T>& shared = *shared_;
    for (;;) {
      if (auto result = receive_without_lock<recv_error>()) return std::move(*result);
      postal::detail::spin_until([&] {
        return shared.tail_position.load(std::memory_order_acquire) != next_ ||
               shared.closed.load(std::memory_order_acquire);
      });
      postal::detail::thread_parker parker;
      detail::waiter node;
      node.target = parker.make_waker();
      if (auto result = receive<recv_error>(&node)) return std::move(*result);
      parker.park();  // woken by a send or by the last sender going: the loop then finds it
    }
  }

  /// How many values this receiver has not read yet, counting the ones it will find overwritten (lagged).
  std::size_t len() const noexcept {
    return static_cast<std::size_t>(shared_->tail_position.load(std::memory_order_acquire) - next_);
  }
  /// True when len() is 0.
  bool is_empty() const noexcept { return len() == 0; }
  /// True once every sender is gone (values may still be left to receive).
  bool is_closed() const noexcept { return shared_->sender_count.load(std::memory_order_acquire) == 0; }
  /// True if both receivers belong to the same channel.
  bool same_channel(const receiver& other) const noexcept { return shared_ == other.shared_; }
  /// A new receiver on the same channel that will see the values sent after this call (not this receiver's
  /// unread ones). Works on a closed channel too (the new receiver just gets closed).
  receiver resubscribe() const { return receiver(shared_); }
  /// How many senders exist (weak senders not counted).
  std::size_t sender_strong_count() const noexcept {
    return shared_->sender_count.load(std::memory_order_acquire);
  }
  /// How many weak senders exist.
  std::size_t sender_weak_count() const noexcept {
    return shared_->weak_count.load(std::memory_order_acquire);
  }

 private:
  friend class sender<T>;
  friend struct detail::recv_wait<T>;
  template <class U>
  friend std::pair<sender<U>, receiver<U>> channel(std::size_t capacity);

  // A new receiver at the tail.
  explicit receiver(std::shared_ptr<detail::shared_state<T>> shared) : shared_(std::move(shared)) {
    std::lock_guard lock(shared_->lock);
    const std::size_t count = shared_->receiver_count.load(std::memory_order_relaxed);
    if (count >= max_receivers) throw std::length_error("postal::broadcast: too many receivers");
    shared_->receiver_count.store(count + 1, std::memory_order_relaxed);
    next_ = shared_->tail;
  }

  // Copies the value out of `slot` (entered, holding position next_) and leaves it, even if the copy throws.
  template <class E>
  std::optional<expected<T, E>> take(detail::slot<T>& slot) {
    struct leave_on_exit {
      detail::slot<T>& slot;
      ~leave_on_exit() { slot.leave_consumed(); }
    } guard{slot};
    ++next_;
    return std::optional<expected<T, E>>(std::in_place, std::as_const(*slot.value()));
  }

  // The fast path: the next value if it is in its slot, read without the channel's lock; empty otherwise
  // (nothing new, lagged, closed or a send writing that slot: receive() tells which).
  template <class E>
  std::optional<expected<T, E>> receive_without_lock() {
    detail::slot<T>& slot = shared_->slot_for(next_);
    if constexpr (detail::copied_as_words<T>) {
      std::array<std::byte, sizeof(T)> bytes;
      if (!slot.try_take(next_, shared_->lap_shift, bytes)) return std::nullopt;
      ++next_;
      return std::optional<expected<T, E>>(std::in_place, std::bit_cast<T>(bytes));
    } else {
      if (slot.enter()) {
        if (slot.position == next_) return take<E>(slot);
        slot.leave();
      }
      return std::nullopt;
    }
  }

  // The next value, or lagged(n), or closed; empty if nothing is there yet, and then, if `w` is given, `w` is
  // on the waiting list and will be woken by the next send or by the last sender going.
  template <class E>
  std::optional<expected<T, E>> receive(detail::waiter* w) {
    if (auto result = receive_without_lock<E>()) return result;
    std::unique_lock lock(shared_->lock);
    auto result = receive_locked<E>(lock);
    if (!result && w != nullptr) shared_->receive_waiters.push_back(w);
    return result;
  }

  // receive()'s part under the channel's lock, which `lock` holds: empty if nothing is there yet (the lock
  // is still held then); otherwise the outcome, and the lock may have been released (to copy the value).
  template <class E>
  std::optional<expected<T, E>> receive_locked(std::unique_lock<std::mutex>& lock) {
    detail::shared_state<T>& shared = *shared_;
    if (next_ == shared.tail) {
      if (shared.closed.load(std::memory_order_relaxed))
        return std::optional<expected<T, E>>(std::in_place, unexpected{E::closed()});
      return std::nullopt;
    }
    // Something was sent at next_. No send writes while the lock is held: the slot's position is stable.
    detail::slot<T>& slot = shared.slot_for(next_);
    if (slot.position == next_) {
      if constexpr (detail::copied_as_words<T>) {
        std::array<std::byte, sizeof(T)> bytes;
        while (!slot.try_take(next_, shared.lap_shift, bytes)) detail::cpu_relax();  // (never loops)
        ++next_;
        return std::optional<expected<T, E>>(std::in_place, std::bit_cast<T>(bytes));
      } else {
        while (!slot.enter()) detail::cpu_relax();  // (never loops)
        lock.unlock();                              // copy outside the lock
        return take<E>(slot);
      }
    }
    // Overwritten: skip to the oldest value retained.
    const std::uint64_t oldest = shared.tail - shared.capacity;
    const std::uint64_t missed = oldest - next_;
    next_ = oldest;
    return std::optional<expected<T, E>>(std::in_place, unexpected{E::lagged(missed)});
  }

  // Leaves the channel: one receiver fewer, and the claims on unread values released.
  void leave() noexcept {
    if (!shared_) return;
    detail::shared_state<T>& shared = *shared_;
    std::uint64_t until;
    {
      std::unique_lock lock(shared.lock);
      const std::size_t count = shared.receiver_count.load(std::memory_order_relaxed) - 1;
      shared.receiver_count.store(count, std::memory_order_relaxed);
      until = shared.tail;
      if (count == 0)
        detail::wake_all(lock, shared.closed_waiters);
      else
        lock.unlock();
    }
    // Values sent before `until` counted this receiver; older than until - capacity they are overwritten.
    std::uint64_t position = next_;
    if (until - position > shared.capacity) position = until - shared.capacity;
    for (; position != until; ++position) shared.slot_for(position).release(position, shared.lap_shift);
    shared_.reset();
  }

  std::shared_ptr<detail::shared_state<T>> shared_;
  std::uint64_t next_ = 0;  // the position of the next value this receiver reads
};

namespace detail {

// What list_wait needs for co_await receiver.recv(): the lock-free read (again once the waker is set, for a
// value that came meanwhile), then the read under the channel's lock, registering on receive_waiters if
// nothing is there; once woken, the read again.
template <class T>
struct recv_wait {
  explicit recv_wait(receiver<T>& target) noexcept : target(&target) {}

  std::mutex& lock() const noexcept { return target->shared_->lock; }
  postal::detail::intrusive_list<waiter>& list() const noexcept { return target->shared_->receive_waiters; }

  bool operator()() {
    result = target->template receive_without_lock<recv_error>();
    return result.has_value();
  }
  bool prepare(waiter&) { return (*this)(); }
  bool locked(std::unique_lock<std::mutex>& guard) {
    result = target->template receive_locked<recv_error>(guard);
    return result.has_value();
  }
  expected<T, recv_error> resume(bool woken) {
    if (woken) {  // a value, a lag or the closed channel is there now
      result = target->template receive<recv_error>(nullptr);
      if (!result) throw std::logic_error("postal::broadcast: a recv was woken with nothing to receive");
    }
    return std::move(*result);
  }

  receiver<T>* target;
  std::optional<expected<T, recv_error>> result;
};

// One wait in sender.closed() for the receiver count to reach zero.
template <class T>
struct no_receivers {
  shared_state<T>* shared;
  bool operator()() const noexcept { return shared->receiver_count.load(std::memory_order_acquire) == 0; }
};
template <class T>
using closed_awaitable = postal::detail::list_wait<waiter, no_receivers<T>>;

template <class T>
postal::detail::inline_operation<void> wait_until_no_receiver(std::shared_ptr<shared_state<T>> shared) {
  while (shared->receiver_count.load(std::memory_order_acquire) != 0)
    co_await closed_awaitable<T>(shared->lock, shared->closed_waiters, no_receivers<T>{shared.get()});
}

}  // namespace detail

template <class T>
postal::detail::inline_operation<void> sender<T>::closed() const {
  return detail::wait_until_no_receiver<T>(shared_);
}

template <class T>
std::pair<sender<T>, receiver<T>> channel(std::size_t capacity) {
  static_assert(!std::is_void_v<T> && !std::is_reference_v<T> && !std::is_const_v<T>,
                "postal::broadcast carries values of an object type");
  static_assert(std::is_copy_constructible_v<T>, "postal::broadcast copies each value to every receiver");
  static_assert(std::is_nothrow_move_constructible_v<T> && std::is_nothrow_destructible_v<T>,
                "postal::broadcast needs a nothrow move-constructible value type");
  if (capacity == 0) throw std::invalid_argument("postal::broadcast::channel: capacity must be at least 1");
  if (capacity > max_capacity)
    throw std::invalid_argument("postal::broadcast::channel: capacity above max_capacity");
  std::size_t rounded = 1;
  while (rounded < capacity) rounded <<= 1;
  auto shared = std::make_shared<detail::shared_state<T>>(rounded);
  shared->sender_count.store(1, std::memory_order_relaxed);
  receiver<T> rx(shared);
  return {sender<T>(std::move(shared)), std::move(rx)};
}

}  // namespace postal::broadcast
