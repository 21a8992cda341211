// The I/O driver as the sockets see it (private to postal_net): a socket's state (readiness counts, each
// direction's waiting task, the use count), registering a new fd, waiting for readiness with a deadline,
// and closing. Not for: epoll, the timer heap or the driver thread (driver.cpp), nor syscalls (tcp.cpp).
//
// How a wait is never lost. Each direction of a socket counts the readiness events the driver saw for it.
// An operation reads the count before its syscall; if the syscall would block, it registers its waker under
// the socket's mutex only if the count is unchanged. The driver bumps the count and takes the waker under
// the same mutex, so an event that arrives between the syscall and the registration is seen by one side or
// the other: either the operation finds the count changed and tries again, or the driver finds the waker.
// A stream polled with try_read_some has its read interest paused (so the driver is not woken for every
// arrival while a task polls); a read that then has to wait resumes it under the same mutex before it
// registers, and the driver reports data that is already there as a new event: the same two sides.
//
// Lifetimes. A socket_state is reference counted: one reference for its handle (tcp_stream/tcp_listener),
// one while it is registered with the driver. Closing unregisters it, closes the fd, and hands the
// registration's reference to the driver, which drops it only after it finished the batch of events in
// progress: an event already reported still finds the state alive. The fd is closed only when no syscall on
// it is in flight (a use count), so a racing close() never lets a syscall hit a reused fd number.
#pragma once

#include <postal/expected.hpp>
#include <postal/net.hpp>
#include <postal/waker.hpp>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <mutex>
#include <system_error>

namespace postal::net::detail {

inline std::error_code system_error(int code) noexcept {
  return std::error_code(code, std::system_category());
}
inline std::error_code last_error() noexcept {
  return system_error(errno);
}

inline constexpr std::size_t not_in_heap = std::numeric_limits<std::size_t>::max();

// How a wait for readiness ended.
enum class wait_outcome : std::uint8_t { ready, timed_out, closed };

// One direction (reading or writing; accepting counts as reading) of a socket.
struct direction_state {
  explicit direction_state(socket_state* owner) noexcept : socket(owner) {}

  socket_state* const socket;
  // Readiness events the driver saw for this direction. Bumped under socket->mutex; read without it.
  std::atomic<std::uint64_t> readiness{0};

  // The waiting task, guarded by socket->mutex. wait_id is 0 when nobody waits.
  waker waiting;
  std::uint64_t wait_id = 0;
  wait_outcome* outcome = nullptr;  // where the waker's taker reports how the wait ended
  bool has_timer = false;

  // The wait's deadline in the driver's timer heap, guarded by the driver's timer mutex.
  clock::time_point deadline;
  std::size_t heap_index = not_in_heap;
  std::uint64_t timer_wait_id = 0;
};

struct socket_state {
  explicit socket_state(int descriptor) noexcept : fd(descriptor), read(this), write(this) {}

  // Set when close() begins; the low bits count syscalls in flight.
  static constexpr std::uint32_t closed_flag = 1u << 31;

  const int fd;
  std::atomic<std::uint32_t> references{1};  // the handle's; +1 while registered with the driver
  std::atomic<std::uint32_t> use{0};
  std::uint16_t local_port = 0;
  std::uint16_t peer_port = 0;
  std::mutex mutex;                // guards both directions' waiting tasks
  std::uint64_t next_wait_id = 0;  // guarded by mutex
  // The driver watches for reading (changed under mutex). pause_read_interest takes it away when
  // try_read_some finds nothing and nobody waits to read, so a task polling for data does not have the driver
  // woken for every arrival; a read that waits gives it back before it registers (see readiness_wait).
  std::atomic<bool> read_armed{true};
  direction_state read;
  direction_state write;

  bool closing() const noexcept { return (use.load(std::memory_order_acquire) & closed_flag) != 0; }
};

// -- the use count: a syscall in flight keeps the fd open ------------------------------------------------

// The last step of closing, once no syscall is in flight (driver.cpp).
void close_descriptor(socket_state* socket) noexcept;

// Marks a syscall in flight; false (and nothing marked) once the socket is closing.
inline bool begin_io(socket_state* socket) noexcept {
  std::uint32_t before = socket->use.load(std::memory_order_acquire);
  do {
    if (before & socket_state::closed_flag) return false;
  } while (!socket->use.compare_exchange_weak(before, before + 1, std::memory_order_acquire,
                                              std::memory_order_acquire));
  return true;
}
// Ends a syscall; the last one to end after close() closes the fd.
inline void end_io(socket_state* socket) noexcept {
  if (socket->use.fetch_sub(1, std::memory_order_acq_rel) == (socket_state::closed_flag | 1))
    close_descriptor(socket);
}

// -- registration ----------------------------------------------------------------------------------------

// A socket_state for a new non-blocking fd, registered with the driver for both directions (edge-triggered).
// Closes the fd on failure.
expected<socket_state*, std::error_code> register_socket(int fd);

// Stops the driver watching `socket` for reading, unless a task waits to read: try_read_some found nothing
// and its caller polls. The caller saw socket->read_armed set. The next readiness_wait on the read direction
// resumes watching.
void pause_read_interest(socket_state* socket) noexcept;

// -- waiting for readiness -------------------------------------------------------------------------------

// co_await: waits until `direction` saw a readiness event after `seen` (at once if it already did), the
// deadline passes, or the socket is closed. Cancel-safety: destroying the waiting coroutine withdraws the
// wait; a wake already on its way then only reaches the task's waker, never this frame. Two waits on one
// direction of one socket at once throw std::logic_error.
class readiness_wait {
 public:
  readiness_wait(direction_state& direction, std::uint64_t seen, clock::time_point deadline) noexcept
      : direction_(direction), seen_(seen), deadline_(deadline) {}
  readiness_wait(const readiness_wait&) = delete;
  readiness_wait& operator=(const readiness_wait&) = delete;
  ~readiness_wait() {
    if (wait_id_ != 0) withdraw();
  }

  bool await_ready() const noexcept { return false; }
  template <class Promise>
  bool await_suspend(std::coroutine_handle<Promise> handle) {
    // The waker's reference is taken before the wait is published.
    return register_wait(postal::detail::waker_for(handle));
  }
  wait_outcome await_resume() noexcept {
    wait_id_ = 0;  // the waker's taker ended the wait (and wrote outcome_) before waking
    return outcome_;
  }

 private:
  // await_suspend's work (driver.cpp): false when the wait is already over (outcome_ says how).
  bool register_wait(waker target);
  void withdraw() noexcept;

  direction_state& direction_;
  std::uint64_t seen_;
  clock::time_point deadline_;
  std::uint64_t wait_id_ = 0;  // nonzero while registered
  wait_outcome outcome_ = wait_outcome::ready;
};

}  // namespace postal::net::detail
