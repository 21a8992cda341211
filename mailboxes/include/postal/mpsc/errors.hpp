// The error types of postal::mpsc (Tokio's tokio::sync::mpsc::error): what a failed send, reserve or receive
// reports, with the unsent value handed back inside the error. Not for misuse (capacity 0 or too large),
// which throws std::invalid_argument.
#pragma once

#include <cstddef>
#include <iosfwd>
#include <string>

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

// -- printing: to_string(e) is one line for a log or a user; operator<< writes the same (postal's convention
// for every error type). The handed-back value is not printed.

inline std::string to_string(const closed_error&) { return "the channel is closed (its receiver is gone or closed)"; }
inline std::string to_string(try_send_failure kind) {
  return kind == try_send_failure::full ? "the channel is full" : to_string(closed_error{});
}
inline std::string to_string(send_timeout_failure kind) {
  return kind == send_timeout_failure::timeout ? "no room in the channel before the deadline" : to_string(closed_error{});
}
inline std::string to_string(try_recv_error kind) {
  return kind == try_recv_error::empty ? "the channel is empty" : "the channel is empty and nothing more can arrive";
}
inline std::string to_string(try_reserve_error kind) {
  return kind == try_reserve_error::full ? "the channel is full" : to_string(closed_error{});
}
template <class T>
std::string to_string(const send_error<T>&) {
  return to_string(closed_error{});
}
template <class T>
std::string to_string(const try_send_error<T>& error) {
  return to_string(error.kind);
}
template <class T>
std::string to_string(const send_timeout_error<T>& error) {
  return to_string(error.kind);
}

inline std::ostream& operator<<(std::ostream& out, const closed_error& error) { return out << to_string(error); }
inline std::ostream& operator<<(std::ostream& out, try_send_failure error) { return out << to_string(error); }
inline std::ostream& operator<<(std::ostream& out, send_timeout_failure error) { return out << to_string(error); }
inline std::ostream& operator<<(std::ostream& out, try_recv_error error) { return out << to_string(error); }
inline std::ostream& operator<<(std::ostream& out, try_reserve_error error) { return out << to_string(error); }
template <class T>
std::ostream& operator<<(std::ostream& out, const send_error<T>& error) {
  return out << to_string(error);
}
template <class T>
std::ostream& operator<<(std::ostream& out, const try_send_error<T>& error) {
  return out << to_string(error);
}
template <class T>
std::ostream& operator<<(std::ostream& out, const send_timeout_error<T>& error) {
  return out << to_string(error);
}

}  // namespace postal::mpsc
