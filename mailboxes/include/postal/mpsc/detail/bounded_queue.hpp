// The shared state of a bounded mpsc channel and its lock-free protocol: a ring of slots, one producer-side
// word and one consumer-side word, and a FIFO of senders waiting for a slot. The public handles in
// <postal/mpsc/bounded.hpp> are thin wrappers around it. Not a public API: include <postal/mpsc.hpp>.
//
// The protocol, in short:
// - producer word [tail index (31 bits) | outstanding permits (30 bits) | senders waiting | receiver parked |
//   closed]. A send is one CAS on it (tail + 1), after a room check that reads the sequence number of the
//   slot that must have been freed (for a power-of-two capacity and no permits: the very slot it will
//   write, as in Vyukov's queue); then the sender writes its slot and publishes it (sequence number).
// - consumer word [consumed count | senders waiting]. The receiver marks each slot it empties free for the
//   next lap and adds to this word (one RMW on its own cache line) per batch it takes; when senders wait,
//   it grants the freed slots to the oldest of them. No sender reads this word on the fast path.
// - A sender that finds no room takes the waiters lock, sets "senders waiting" in both words and re-checks;
//   if it still finds no room (or others wait before it), it queues up. While the bit is set, no sender
//   claims a slot past the queue: freed slots are granted, as permits, in FIFO order.
// - The receiver parks by publishing its waker and setting "receiver parked"; whoever clears that bit owns
//   the waker and wakes it: the sender whose claim CAS cleared it (after writing its slot), or, once nothing
//   can arrive any more, the last sender or permit going away.
// - The ring is allocated by the first claim (send or reserve), not with the channel: an idle channel (an
//   actor's mailbox that never got a message) costs no ring. Every claim (tail or permit) is made by a
//   sender that saw the ring allocated, so a claimed slot always has a ring, and a receiver that finds no
//   ring has nothing to take.
#pragma once

#include <postal/detail/core_traits.hpp>
#include <postal/mpsc/detail/common.hpp>
#include <postal/waker.hpp>

#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <utility>

namespace postal::mpsc::detail {

// The producer word.
inline constexpr std::uint64_t closed_bit = 1;           // the receiver closed or went away
inline constexpr std::uint64_t receiver_parked_bit = 2;  // the receiver's waker is published, waiting
inline constexpr std::uint64_t senders_queued_bit = 4;   // senders wait for a slot: nobody claims past them
inline constexpr int permits_shift = 3;
inline constexpr std::uint64_t permit_one = std::uint64_t{1} << permits_shift;
inline constexpr std::uint32_t max_permits = (std::uint32_t{1} << 30) - 1;
inline constexpr std::uint64_t permits_mask = std::uint64_t{max_permits} << permits_shift;
inline constexpr int tail_shift = 33;
inline constexpr std::uint64_t tail_one = std::uint64_t{1} << tail_shift;
// Slot indices count modulo 2^31 (the ring size, a power of two of at most 2^30, divides that).
inline constexpr std::uint32_t index_mask = (std::uint32_t{1} << 31) - 1;

// The consumer word.
inline constexpr std::uint64_t senders_waiting_bit = 1;
inline constexpr std::uint64_t consumed_one = 2;

inline std::uint32_t tail_of(std::uint64_t word) noexcept {
  return static_cast<std::uint32_t>(word >> tail_shift);
}
inline std::uint32_t permits_of(std::uint64_t word) noexcept {
  return static_cast<std::uint32_t>((word & permits_mask) >> permits_shift);
}
inline std::uint64_t consumed_of(std::uint64_t consumer_word) noexcept {
  return consumer_word >> 1;
}

// One ring slot. Its sequence number says which index it is free for (free_for(i)) or whose value it holds
// (free_for(i) + 1). Implicit-lifetime, and 0 means "free for index s" in slot s, so that a zeroed
// allocation is a ring of empty slots.
template <class T>
struct slot {
  std::uint32_t sequence;
  alignas(T) unsigned char storage[sizeof(T)];

  T* value() noexcept { return std::launder(reinterpret_cast<T*>(storage)); }
  std::atomic_ref<std::uint32_t> published() noexcept { return std::atomic_ref<std::uint32_t>(sequence); }
};

enum class claim_status { claimed, full, closed };

// What a successful claim got: the slot index to write (for a send), and whether the claim took over the
// receiver's waker (then the sender wakes it after publishing).
struct claim {
  std::uint32_t index = 0;
  bool wake_receiver = false;
};

template <class T>
class bounded_core;

template <class T>
class bounded_core {
  using traits = channel_access::core_traits<T>;
  static constexpr std::size_t line_alignment = traits::compact ? alignof(std::uint64_t) : 64;

 public:
  explicit bounded_core(std::size_t capacity)
      : ring_size_(std::bit_ceil(capacity < 2 ? std::size_t{2} : capacity)),
        ring_mask_(static_cast<std::uint32_t>(ring_size_ - 1)),
        line_shift_(static_cast<std::uint32_t>(std::countr_zero(slots_per_line(ring_size_)))),
        lines_shift_(static_cast<std::uint32_t>(std::countr_zero(ring_size_ / slots_per_line(ring_size_)))),
        capacity_(static_cast<std::uint32_t>(capacity)) {}
  bounded_core(const bounded_core&) = delete;
  bounded_core& operator=(const bounded_core&) = delete;
  // Destroys the values still in the ring (written after the receiver drained it, or never received).
  ~bounded_core() {
    slot<T>* const ring = ring_.load(std::memory_order_acquire);
    if (ring == nullptr) return;  // never claimed: nothing was written
    const std::uint32_t tail = tail_of(producer_.load(std::memory_order_acquire));
    for (std::uint32_t i = static_cast<std::uint32_t>(head_) & index_mask; i != tail;
         i = (i + 1) & index_mask) {
      slot<T>& s = ring[position(i)];
      if (s.published().load(std::memory_order_acquire) == free_for(i) + 1) std::destroy_at(s.value());
    }
    free_ring(ring, ring_size_);
  }

  handle_counts counts;

  void release_reference() noexcept {
    if (counts.references.fetch_sub(1, std::memory_order_acq_rel) == 1) traits::dispose(this);
  }

  std::size_t max_capacity() const noexcept { return capacity_; }

  // --- sender side ---

  // Claims room for one value without waiting: the next index (as_permit false; publish() must follow) or
  // a permit. Reports full while other senders wait for room (no barging). Throws std::bad_alloc, having
  // claimed nothing, if it is the first claim and cannot allocate the ring.
  claim_status try_claim(bool as_permit, claim& out) {
    slot<T>* ring = ring_.load(std::memory_order_acquire);
    std::uint64_t word = producer_.load(std::memory_order_relaxed);
    for (;;) {
      if (word & closed_bit) return claim_status::closed;
      if ((word & senders_queued_bit) || (as_permit && permits_of(word) == max_permits))
        return claim_status::full;
      // Allocated before the claim CAS, so that a failure leaves nothing claimed. (Queued senders installed
      // a ring before queuing, and permits imply one: a closed or full channel allocates nothing here.)
      if (ring == nullptr) [[unlikely]]
        ring = install_ring();
      // One more claim needs index tail + permits - capacity consumed: its slot then is free for the lap
      // after it. (Before the first lap wraps, that is the initial state of the slot.)
      const std::uint32_t needed = (tail_of(word) + permits_of(word) - capacity_) & index_mask;
      const std::uint32_t after_needed = (needed + static_cast<std::uint32_t>(ring_size_)) & index_mask;
      if (ring[position(needed)].published().load(std::memory_order_acquire) != free_for(after_needed)) {
        const std::uint64_t now = producer_.load(std::memory_order_relaxed);
        if (now == word) return claim_status::full;
        word = now;  // others claimed meanwhile: check again against the new tail
        continue;
      }
      if (producer_.compare_exchange_weak(word, claimed_word(word, as_permit), std::memory_order_acq_rel,
                                          std::memory_order_relaxed)) {
        out = claim_of(word, as_permit);
        return claim_status::claimed;
      }
    }
  }

  // The waiting path, under the waiters lock: sets "senders waiting", then claims if nobody waits before
  // this sender and there is room; otherwise queues `node` (whose waker must be set) and reports full.
  // Throws std::bad_alloc, having changed nothing, if no ring exists yet and none can be allocated.
  // (Callers try_claim() first, which allocates it; this is for a caller that did not.)
  claim_status claim_or_enqueue(bool as_permit, waiter& node, claim& out) {
    // Before the lock and the bits: a queued sender, and a grant to it, may then count on the ring.
    if (ring_.load(std::memory_order_acquire) == nullptr) [[unlikely]]
      install_ring();
    std::lock_guard guard(lock_);
    const std::uint64_t consumer = consumer_.fetch_or(senders_waiting_bit, std::memory_order_seq_cst);
    std::uint64_t word =
        producer_.fetch_or(senders_queued_bit, std::memory_order_seq_cst) | senders_queued_bit;
    for (;;) {
      if (word & closed_bit) {
        if (send_waiters_.empty()) clear_waiting_bits();
        return claim_status::closed;
      }
      if (!send_waiters_.empty() || !has_room(word, consumed_of(consumer))) break;
      if (producer_.compare_exchange_weak(word, claimed_word(word, as_permit) & ~senders_queued_bit,
                                          std::memory_order_seq_cst, std::memory_order_seq_cst)) {
        consumer_.fetch_and(~senders_waiting_bit, std::memory_order_seq_cst);
        out = claim_of(word, as_permit);
        return claim_status::claimed;
      }
    }
    node.state = wait_state::waiting;
    send_waiters_.push_back(&node);
    return claim_status::full;
  }

  // Writes `value` into the claimed slot and publishes it; wakes the receiver if the claim took its waker.
  // The ring exists: whoever claimed the slot (or the permit) saw it first, and passed that on with the
  // claim (granting a permit, or handing it to another thread, synchronizes).
  void publish(const claim& c, T&& value) noexcept {
    slot<T>& s = ring_.load(std::memory_order_acquire)[position(c.index)];
    // Room accounting guarantees the slot is free already; the acquire load orders the receiver's last
    // use of it before this write (a line this sender writes next anyway).
    const std::uint32_t free = free_for(c.index);
    backoff wait;
    while (s.published().load(std::memory_order_acquire) != free) wait.pause();
    std::construct_at(s.value(), std::move(value));
    s.published().store(free + 1, std::memory_order_release);
    if (c.wake_receiver) wake_receiver();
  }

  // Sends through a permit (one that was reserved, or granted to a waiting sender). Never fails; once the
  // receiver is gone the value is left with the caller, which destroys it.
  void send_with_permit(T&& value) noexcept {
    if (receiver_gone_.load(std::memory_order_acquire)) {
      release_permit();
      return;
    }
    std::uint64_t word = producer_.load(std::memory_order_relaxed);
    while (!producer_.compare_exchange_weak(word, (word - permit_one + tail_one) & ~receiver_parked_bit,
                                            std::memory_order_acq_rel, std::memory_order_relaxed)) {
    }
    publish(claim{tail_of(word), (word & receiver_parked_bit) != 0}, std::move(value));
  }

  // Gives a permit's slot back: to the oldest waiting sender, or to the channel.
  void release_permit() noexcept {
    std::uint64_t word = producer_.load(std::memory_order_relaxed);
    while (!producer_.compare_exchange_weak(word, word - permit_one, std::memory_order_seq_cst,
                                            std::memory_order_relaxed)) {
    }
    const std::uint64_t after = word - permit_one;
    if (permits_of(after) == 0 && (after & receiver_parked_bit) &&
        ((after & closed_bit) || counts.strong_senders.load(std::memory_order_seq_cst) == 0))
      try_wake_parked_receiver();  // that was the last thing the receiver could wait for
    if (after & senders_queued_bit) serve_waiters();
  }

  // Withdraws a waiter that will not wait any longer. Returns wait_state::waiting if it was still queued
  // (now removed), else what happened to it. A slot granted to it is passed on to the next waiter, unless
  // `keep_grant` (the caller then sends with it).
  wait_state withdraw(waiter& node, bool keep_grant) noexcept {
    std::unique_lock guard(lock_);
    if (node.linked()) {
      // Queued, possibly in the list close() is working through: remove works on either.
      send_waiters_.remove(&node);
      if (send_waiters_.empty()) clear_waiting_bits();
      return wait_state::waiting;
    }
    const wait_state state = node.state;
    if (state != wait_state::granted || keep_grant) return state;
    node.state = wait_state::closed;
    if (waiter* next = send_waiters_.pop_front()) {  // hand the slot straight to the next in line
      next->state = wait_state::granted;
      waker w = std::move(next->target);
      if (send_waiters_.empty()) clear_waiting_bits();
      guard.unlock();
      w.wake();
    } else {
      guard.unlock();
      release_permit();
    }
    return state;
  }

  // The last strong sender is gone: wake the receiver if it waits and nothing can arrive any more.
  void drop_strong_sender() noexcept {
    if (counts.strong_senders.fetch_sub(1, std::memory_order_seq_cst) != 1) return;
    const std::uint64_t word = producer_.load(std::memory_order_seq_cst);
    if ((word & receiver_parked_bit) && permits_of(word) == 0) try_wake_parked_receiver();
  }

  bool receiver_closed() const noexcept { return producer_.load(std::memory_order_acquire) & closed_bit; }
  small_mutex& waiters_lock() noexcept { return lock_; }
  waiter_list& closed_waiters() noexcept { return closed_waiters_; }

  // Free slots now: capacity minus buffered values minus outstanding permits.
  std::size_t free_slots() const noexcept {
    const std::uint64_t consumed = consumed_of(consumer_.load(std::memory_order_acquire));
    const std::uint32_t used = in_flight(producer_.load(std::memory_order_acquire), consumed);
    return used >= capacity_ ? 0 : capacity_ - used;
  }

  // --- receiver side (one receiver; these touch head_) ---

  // Takes up to `limit` published values from the head, handing each to `sink(T&&)`; returns how many.
  // Grants the freed slots to waiting senders.
  template <class Sink>
  std::size_t take(std::size_t limit, Sink&& sink) noexcept {
    // No ring yet: nothing was published. (A sender that claimed a slot installed it before its claim CAS;
    // once park() or a later poll sees that claim, this load sees the ring.)
    slot<T>* const ring = ring_.load(std::memory_order_acquire);
    if (ring == nullptr) return 0;
    std::size_t taken = 0;
    while (taken < limit) {
      const std::uint32_t index = static_cast<std::uint32_t>(head_) & index_mask;
      slot<T>& s = ring[position(index)];
      const std::uint32_t free = free_for(index);
      if (s.published().load(std::memory_order_acquire) != free + 1) break;
      sink(std::move(*s.value()));
      std::destroy_at(s.value());
      ++head_;
      ++taken;
    }
    if (taken > 0) {
      const std::uint64_t before = consumer_.fetch_add(taken * consumed_one, std::memory_order_acq_rel);
      // Mark the slots free for their next lap only now: the RMW above then does not wait for these stores
      // to reach the senders' caches. A sender granted one of them meanwhile waits for the mark in publish().
      const std::uint32_t lap = static_cast<std::uint32_t>(ring_size_);
      for (std::uint32_t index = static_cast<std::uint32_t>(head_ - taken);
           index != static_cast<std::uint32_t>(head_); ++index)
        ring[position(index)].published().store(free_for(index + lap), std::memory_order_release);
      if (before & senders_waiting_bit) serve_waiters();
    }
    return taken;
  }

  // True once nothing can arrive any more: every claimed slot was taken, no permit is outstanding, and the
  // receiver closed or every strong sender is gone.
  bool finished() const noexcept {
    const std::size_t strong = counts.strong_senders.load(std::memory_order_seq_cst);  // before the word
    const std::uint64_t word = producer_.load(std::memory_order_seq_cst);
    return tail_of(word) == (static_cast<std::uint32_t>(head_) & index_mask) && permits_of(word) == 0 &&
           ((word & closed_bit) || strong == 0);
  }

  // Values buffered (or being written into claimed slots).
  std::size_t buffered() const noexcept {
    return (tail_of(producer_.load(std::memory_order_acquire)) - static_cast<std::uint32_t>(head_)) &
           index_mask;
  }

  // Publishes the receiver's waker. False (waker dropped) if a value is already on its way or the channel is
  // finished: poll again instead of waiting.
  bool park(waker w) noexcept {
    receiver_waker_ = std::move(w);
    receiver_waker_taken_.store(false, std::memory_order_relaxed);
    const std::uint64_t before = producer_.fetch_or(receiver_parked_bit, std::memory_order_seq_cst);
    if (tail_of(before) == (static_cast<std::uint32_t>(head_) & index_mask)) {
      const std::size_t strong = counts.strong_senders.load(std::memory_order_seq_cst);
      const bool finished_now = permits_of(before) == 0 && ((before & closed_bit) || strong == 0);
      if (!finished_now) return true;
    }
    if (producer_.fetch_and(~receiver_parked_bit, std::memory_order_acq_rel) & receiver_parked_bit) {
      receiver_waker_.reset();  // taken back unwoken
      return false;
    }
    return true;  // somebody cleared the bit meanwhile: it owns the waker and wakes it
  }

  // Withdraws a published waker (the waiting coroutine is being destroyed).
  void unpark() noexcept {
    if (producer_.fetch_and(~receiver_parked_bit, std::memory_order_acq_rel) & receiver_parked_bit) {
      receiver_waker_.reset();
      return;
    }
    // Somebody owns the waker and is about to wake it: let it finish taking the waker out of the slot
    // before a later wait may store a new one there.
    backoff wait;
    while (!receiver_waker_taken_.load(std::memory_order_acquire)) wait.pause();
  }

  // Closes the channel: sends and reserves fail from now on, waiting senders get their values back, and
  // closed() waits complete. Values buffered and outstanding permits can still be received. Idempotent.
  void close() noexcept {
    const std::uint64_t before = producer_.fetch_or(closed_bit, std::memory_order_seq_cst);
    // A receive waiting meanwhile (close() called from elsewhere) ends if nothing can arrive any more: a set
    // parked bit means nothing was claimed since it parked, and no permit can appear after closing.
    if ((before & receiver_parked_bit) && permits_of(before) == 0) try_wake_parked_receiver();
    waiter_list taken;
    {
      std::lock_guard guard(lock_);
      while (waiter* w = send_waiters_.pop_front()) {
        w->state = wait_state::closed;
        taken.push_back(w);
      }
      clear_waiting_bits();
      while (waiter* w = closed_waiters_.pop_front()) {
        w->state = wait_state::closed;
        taken.push_back(w);
      }
    }
    wake_taken(lock_, taken);
  }

  // The receiver goes away: close, then destroy the values buffered now (later ones die with the state).
  void receiver_leave() noexcept {
    close();
    receiver_gone_.store(true, std::memory_order_release);
    take(static_cast<std::size_t>(-1), [](T&&) noexcept {});
  }

 private:
  // The first claim's slow path: allocates a zeroed ring (all slots free for their first lap) and installs
  // it, unless another sender got there first (then this one is freed). Returns the installed ring.
  slot<T>* install_ring() {
    slot<T>* const mine = allocate_ring(ring_size_);
    slot<T>* installed = nullptr;
    // Release: the zeroes are visible to whoever acquires the pointer.
    if (ring_.compare_exchange_strong(installed, mine, std::memory_order_acq_rel, std::memory_order_acquire))
      return mine;
    free_ring(mine, ring_size_);
    return installed;
  }
  static slot<T>* allocate_ring(std::size_t count) {
    const std::size_t bytes = count * sizeof(slot<T>);
    if constexpr (alignof(slot<T>) <= alignof(std::max_align_t)) {
      void* memory = std::calloc(count, sizeof(slot<T>));  // zero pages come lazily for big rings
      if (memory == nullptr) throw std::bad_alloc();
      return static_cast<slot<T>*>(memory);
    } else {
      void* memory = ::operator new (bytes, std::align_val_t{alignof(slot<T>)});
      std::memset(memory, 0, bytes);
      return static_cast<slot<T>*>(memory);
    }
  }
  static void free_ring(slot<T>* ring, [[maybe_unused]] std::size_t count) noexcept {
    if constexpr (alignof(slot<T>) <= alignof(std::max_align_t))
      std::free(ring);
    else
      ::operator delete (ring, std::align_val_t{alignof(slot<T>)});
  }

  // Claimed slots and permits, given a consumed count no newer than the word's tail.
  static std::uint32_t in_flight(std::uint64_t word, std::uint64_t consumed) noexcept {
    return ((tail_of(word) - static_cast<std::uint32_t>(consumed)) & index_mask) + permits_of(word);
  }
  bool has_room(std::uint64_t word, std::uint64_t consumed) const noexcept {
    return in_flight(word, consumed) < capacity_;
  }
  static std::uint64_t claimed_word(std::uint64_t word, bool as_permit) noexcept {
    return as_permit ? word + permit_one : (word + tail_one) & ~receiver_parked_bit;
  }
  static claim claim_of(std::uint64_t word_before, bool as_permit) noexcept {
    if (as_permit) return claim{};
    return claim{tail_of(word_before), (word_before & receiver_parked_bit) != 0};
  }
  // Slots per 64-byte cache line (a power of two, at most the ring size).
  static constexpr std::size_t slots_per_line(std::size_t ring_size) noexcept {
    const std::size_t per_line = std::bit_floor(std::max<std::size_t>(1, 64 / sizeof(slot<T>)));
    return std::min(per_line, ring_size);
  }
  // Where index i lives in the ring: consecutive indices go to different cache lines (index i and i + 1
  // are a line apart, wrapping round), so a sender writing index i and the receiver taking i - 1 do not
  // pass one cache line back and forth for every value. A bijection of [0, ring size).
  // (A rotation of the index's ring bits: the low lines_shift_ bits move up by line_shift_, the rest down.)
  std::uint32_t position(std::uint32_t index) const noexcept {
    const std::uint32_t i = index & ring_mask_;
    return ((i << line_shift_) | (i >> lines_shift_)) & ring_mask_;
  }
  // The sequence number of index i's slot while it is free for i (its value then makes it free_for(i) + 1;
  // the receiver, having taken it, makes it free_for(i + ring size)). A multiple of the ring size, so the
  // values of different laps never meet.
  std::uint32_t free_for(std::uint32_t index) const noexcept {
    return (index & index_mask) - (index & ring_mask_);
  }
  // Under lock_, once no sender waits any more.
  void clear_waiting_bits() noexcept {
    consumer_.fetch_and(~senders_waiting_bit, std::memory_order_seq_cst);
    producer_.fetch_and(~senders_queued_bit, std::memory_order_seq_cst);
  }

  void wake_receiver() noexcept {
    waker w = std::move(receiver_waker_);
    receiver_waker_taken_.store(true, std::memory_order_release);
    w.wake();
  }
  void try_wake_parked_receiver() noexcept {
    if (producer_.fetch_and(~receiver_parked_bit, std::memory_order_acq_rel) & receiver_parked_bit)
      wake_receiver();
  }

  // Grants free slots (as permits) to the oldest waiting senders and wakes them; clears "senders waiting"
  // once none is left.
  void serve_waiters() noexcept {
    std::unique_lock guard(lock_);
    for (;;) {
      std::array<waker, 8> batch;
      std::size_t granted = 0;
      while (granted < batch.size() && !send_waiters_.empty() && grant_permit()) {
        waiter* next = send_waiters_.pop_front();
        next->state = wait_state::granted;
        batch[granted++] = std::move(next->target);
      }
      if (send_waiters_.empty()) clear_waiting_bits();
      const bool more = granted == batch.size() && !send_waiters_.empty();
      guard.unlock();
      for (std::size_t i = 0; i < granted; ++i) batch[i].wake();
      if (!more) return;
      guard.lock();
    }
  }
  // Reserves one slot for the front waiter if there is room (and the channel is open).
  bool grant_permit() noexcept {
    const std::uint64_t consumed = consumed_of(consumer_.load(std::memory_order_seq_cst));
    std::uint64_t word = producer_.load(std::memory_order_seq_cst);
    for (;;) {
      if ((word & closed_bit) || permits_of(word) == max_permits || !has_room(word, consumed)) return false;
      if (producer_.compare_exchange_weak(word, word + permit_one, std::memory_order_seq_cst,
                                          std::memory_order_seq_cst))
        return true;
    }
  }

  const std::size_t ring_size_;
  const std::uint32_t ring_mask_;
  const std::uint32_t line_shift_;   // log2 of the slots that share a cache line
  const std::uint32_t lines_shift_;  // log2 of the cache lines the ring spans
  const std::uint32_t capacity_;
  // Null until the first claim (see install_ring()); then fixed until the destructor frees it.
  std::atomic<slot<T>*> ring_{nullptr};

  // Producer side: the claim word, touched by every send, and the senders that wait (for room, or for the
  // receiver to close), under lock_. These are written only when the channel is full, when the senders
  // contend for this line anyway; giving them a line of their own made every channel 128 bytes larger.
  alignas(line_alignment) std::atomic<std::uint64_t> producer_{0};
  small_mutex lock_;
  waiter_list send_waiters_;
  waiter_list closed_waiters_;

  // Consumer side: touched by every receive.
  alignas(line_alignment) std::atomic<std::uint64_t> consumer_{0};
  std::uint64_t head_ = 0;  // the receiver's position (its consumed count); owned by the receiver
  waker receiver_waker_;
  std::atomic<bool> receiver_waker_taken_{true};
  std::atomic<bool> receiver_gone_{false};
};

// Three cache lines: read-mostly (counts, geometry, the ring), producer, consumer. Every actor has one.
static_assert(sizeof(bounded_core<int>) == 192);

}  // namespace postal::mpsc::detail
