// A value type that counts its live instances, to check that every value left in a channel is destroyed
// exactly once when the channel goes away (and never destroyed twice).
#pragma once

#include <atomic>

namespace postal::test {

struct counted {
  static inline std::atomic<long> live{0};
  int value = 0;
  bool moved_from = false;

  explicit counted(int v = 0) : value(v) { live.fetch_add(1, std::memory_order_relaxed); }
  counted(const counted& other) : value(other.value) { live.fetch_add(1, std::memory_order_relaxed); }
  counted(counted&& other) noexcept : value(other.value) {
    other.moved_from = true;
    live.fetch_add(1, std::memory_order_relaxed);
  }
  counted& operator=(const counted&) = default;
  counted& operator=(counted&&) = default;
  ~counted() { live.fetch_sub(1, std::memory_order_relaxed); }
};

}  // namespace postal::test
