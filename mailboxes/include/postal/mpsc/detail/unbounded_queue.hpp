// The shared state of an unbounded mpsc channel: senders append to a buffer under a small spinlock; the
// receiver swaps that buffer with its own private one when the private one runs dry and then takes values
// without the lock. Buffers keep their capacity, so the steady state allocates nothing. Not a public API:
// include <postal/mpsc.hpp>.
#pragma once

#include <postal/mpsc/detail/common.hpp>
#include <postal/waker.hpp>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <utility>

namespace postal::mpsc::detail {

// A growable array of values that can be emptied from the front one value at a time (each taken value is
// destroyed at once, unlike std::vector's elements).
template <class T>
class value_buffer {
 public:
  value_buffer() noexcept = default;
  value_buffer(const value_buffer&) = delete;
  value_buffer& operator=(const value_buffer&) = delete;
  ~value_buffer() {
    clear();
    if (data_ != nullptr) std::allocator<T>().deallocate(data_, capacity_);
  }

  bool empty() const noexcept { return first_ == size_; }
  std::size_t size() const noexcept { return size_ - first_; }

  // Appends `value`; may throw std::bad_alloc when growing (then `value` is untouched).
  void push_back(T&& value) {
    if (size_ == capacity_) grow();
    std::construct_at(data_ + size_, std::move(value));
    ++size_;
  }
  // Hands the front value to `sink(T&&)` and destroys it. Requires !empty().
  template <class Sink>
  void pop_front(Sink& sink) noexcept {
    sink(std::move(data_[first_]));
    std::destroy_at(data_ + first_);
    if (++first_ == size_) first_ = size_ = 0;
  }
  void clear() noexcept {
    std::destroy(data_ + first_, data_ + size_);
    first_ = size_ = 0;
  }
  void swap(value_buffer& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(first_, other.first_);
    std::swap(size_, other.size_);
    std::swap(capacity_, other.capacity_);
  }

 private:
  void grow() {
    const std::size_t capacity = std::max<std::size_t>(16, capacity_ * 2);
    T* data = std::allocator<T>().allocate(capacity);
    for (std::size_t i = first_; i < size_; ++i) {
      std::construct_at(data + (i - first_), std::move(data_[i]));
      std::destroy_at(data_ + i);
    }
    if (data_ != nullptr) std::allocator<T>().deallocate(data_, capacity_);
    data_ = data;
    size_ -= first_;
    first_ = 0;
    capacity_ = capacity;
  }

  T* data_ = nullptr;
  std::size_t first_ = 0;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
};

template <class T>
class unbounded_core {
 public:
  unbounded_core() = default;
  unbounded_core(const unbounded_core&) = delete;
  unbounded_core& operator=(const unbounded_core&) = delete;

  handle_counts counts;

  void release_reference() noexcept {
    if (counts.references.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  // --- sender side ---

  // Appends `value` and wakes the receiver if it waits. False (value untouched) once the receiver closed.
  // May throw std::bad_alloc when the buffer grows.
  bool push(T& value) {
    waker receiver;
    {
      std::lock_guard guard(lock_);
      if (closed_) return false;
      const bool was_empty = incoming_.empty();
      incoming_.push_back(std::move(value));
      if (was_empty) has_incoming_.store(true, std::memory_order_relaxed);
      if (receiver_parked_) {
        receiver_parked_ = false;
        receiver = std::move(receiver_waker_);
      }
    }
    receiver.wake();
    return true;
  }

  // The last strong sender is gone: wake the receiver if it waits (it will see the end after draining).
  void drop_strong_sender() noexcept {
    if (counts.strong_senders.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    waker receiver;
    {
      std::lock_guard guard(lock_);
      if (receiver_parked_) {
        receiver_parked_ = false;
        receiver = std::move(receiver_waker_);
      }
    }
    receiver.wake();
  }

  bool receiver_closed() const noexcept { return closed_flag_.load(std::memory_order_acquire); }
  spinlock& waiters_lock() noexcept { return lock_; }
  waiter_list& closed_waiters() noexcept { return closed_waiters_; }

  // --- receiver side (one receiver) ---

  template <class Sink>
  std::size_t take(std::size_t limit, Sink&& sink) noexcept {
    std::size_t taken = 0;
    while (taken < limit) {
      if (draining_.empty()) {
        if (!has_incoming_.load(std::memory_order_acquire)) break;
        {
          std::lock_guard guard(lock_);
          draining_.swap(incoming_);
          has_incoming_.store(false, std::memory_order_relaxed);
        }
        if (draining_.empty()) break;
      }
      draining_.pop_front(sink);
      ++taken;
    }
    return taken;
  }

  // True once nothing can arrive any more: the receiver closed or every sender is gone, and all is taken.
  bool finished() const noexcept {
    if (!closed_flag_.load(std::memory_order_acquire) &&
        counts.strong_senders.load(std::memory_order_acquire) != 0)
      return false;
    return draining_.empty() && !has_incoming_.load(std::memory_order_acquire);
  }

  std::size_t buffered() noexcept {
    std::lock_guard guard(lock_);
    return incoming_.size() + draining_.size();
  }

  // Publishes the receiver's waker, unless values are waiting or nothing can arrive (then false).
  bool park(waker w) noexcept {
    std::lock_guard guard(lock_);
    if (!incoming_.empty() || closed_ || counts.strong_senders.load(std::memory_order_acquire) == 0)
      return false;
    receiver_waker_ = std::move(w);
    receiver_parked_ = true;
    return true;
  }
  void unpark() noexcept {
    waker withdrawn;
    std::lock_guard guard(lock_);
    if (receiver_parked_) {
      receiver_parked_ = false;
      withdrawn = std::move(receiver_waker_);
    }
  }

  // Closes the channel: sends fail from now on and closed() waits complete. Idempotent.
  void close() noexcept {
    waiter_list taken;
    waker receiver;  // a receive waiting meanwhile (close() called from elsewhere) ends once drained
    {
      std::lock_guard guard(lock_);
      closed_ = true;
      closed_flag_.store(true, std::memory_order_release);
      while (waiter* w = closed_waiters_.pop_front()) {
        w->state = wait_state::closed;
        taken.push_back(w);
      }
      if (receiver_parked_) {
        receiver_parked_ = false;
        receiver = std::move(receiver_waker_);
      }
    }
    receiver.wake();
    wake_taken(lock_, taken);
  }

  // The receiver goes away: close, and destroy every buffered value.
  void receiver_leave() noexcept {
    close();
    value_buffer<T> left;
    {
      std::lock_guard guard(lock_);
      left.swap(incoming_);
      has_incoming_.store(false, std::memory_order_relaxed);
    }
    draining_.clear();
  }

 private:
  // Shared with the senders, under lock_.
  alignas(64) spinlock lock_;
  value_buffer<T> incoming_;
  bool closed_ = false;
  bool receiver_parked_ = false;
  waker receiver_waker_;
  waiter_list closed_waiters_;
  std::atomic<bool> has_incoming_{false};  // incoming_ is not empty; set under lock_, read without it
  std::atomic<bool> closed_flag_{false};   // closed_, readable without the lock

  // The receiver's own.
  alignas(64) value_buffer<T> draining_;
};

}  // namespace postal::mpsc::detail
