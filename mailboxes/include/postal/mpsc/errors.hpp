// The error types of postal::mpsc (Tokio's tokio::sync::mpsc::error): what a failed send, reserve or receive
// reports, with the unsent value handed back inside the error. Not for misuse (capacity 0 or too large),
// which throws std::invalid_argument.
#pragma once

#include <cstddef>

namespace postal::mpsc {

/// The largest capacity a bounded channel accepts (2^30 slots); channel() throws std::invalid_argument above.
/// A bounded channel allocates its ring of slots up front (the capacity rounded up to a power of two), so
/// the practical limit is memory.
inline constexpr std::size_t max_channel_capacity = std::size_t{1} << 30;

/// send() / blocking_send() failed: the receiver is gone or closed. The value is handed back.
template <class T>
struct send_error {
  T value;
  friend bool operator==(const send_error&, const send_error&) = default;
};

/// Why try_send() failed.
enum class try_send_failure {
  full,    // no free slot now (or other senders are waiting for one: try_send does not jump the queue)
  closed,  // the receiver is gone or closed
};

/// try_send() failed; the value is handed back.
template <class T>
struct try_send_error {
  try_send_failure kind;
  T value;
  bool is_full() const noexcept { return kind == try_send_failure::full; }
  bool is_closed() const noexcept { return kind == try_send_failure::closed; }
  friend bool operator==(const try_send_error&, const try_send_error&) = default;
};

/// Why send_timeout() / blocking_send_timeout() failed.
enum class send_timeout_failure {
  timeout,  // no slot became free before the deadline
  closed,   // the receiver is gone or closed
};

/// send_timeout() / blocking_send_timeout() failed; the value is handed back.
template <class T>
struct send_timeout_error {
  send_timeout_failure kind;
  T value;
  bool is_timeout() const noexcept { return kind == send_timeout_failure::timeout; }
  bool is_closed() const noexcept { return kind == send_timeout_failure::closed; }
  friend bool operator==(const send_timeout_error&, const send_timeout_error&) = default;
};

/// Why try_recv() gave no value.
enum class try_recv_error {
  empty,         // nothing buffered now, but a value may still arrive
  disconnected,  // nothing buffered and nothing can arrive any more (every sender and permit is gone, or the
                 // receiver was closed and no permit is outstanding)
};

/// reserve() / blocking_reserve() failed: the receiver is gone or closed.
struct closed_error {
  friend bool operator==(closed_error, closed_error) noexcept = default;
};

/// Why try_reserve() failed.
enum class try_reserve_error {
  full,    // no free slot now (or senders are waiting for one)
  closed,  // the receiver is gone or closed
};

}  // namespace postal::mpsc
