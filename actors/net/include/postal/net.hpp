// postal::net: asynchronous TCP (IPv4, Linux) for postal tasks: tcp_listener accepts, tcp_stream connects,
// reads and writes. Tasks do the non-blocking syscalls themselves on CAF's workers; one I/O driver thread
// (epoll, edge-triggered) only wakes the tasks whose socket became ready, and keeps their deadlines.
// Not for: DNS names (numeric IPv4 or "localhost"), UDP, TLS, IPv6, or blocking I/O from plain threads.
// This header includes no CAF header.
//
// The I/O driver ("reactor") is one thread for the whole process, started by the first socket and stopped
// at exit. One per process rather than one per runtime because a socket need not belong to a runtime
// (tcp_listener::bind runs anywhere, e.g. in main()) and a waker already knows which runtime, or executor,
// its task belongs to: the driver only calls wakers and never runs tasks itself.
//
// Awaited from a coroutine that is not a postal task (one without postal::suspend_hooks), an operation that
// had to wait resumes that coroutine on the thread that woke it, usually the I/O driver's: keep such code
// short, since every other socket waits meanwhile.
//
// Errors are std::error_code values; compare them with std::errc: connection_refused, timed_out,
// operation_canceled (the socket was closed by close() while the operation waited, or before it began),
// bad_file_descriptor (a moved-from object), broken_pipe, connection_reset, invalid_argument (a host that is
// neither a numeric IPv4 address nor "localhost"), and whatever else the kernel reports.
#pragma once

#include <postal/expected.hpp>
#include <postal/task.hpp>
#include <postal/waker.hpp>

#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

namespace postal::net {

class tcp_stream;
class tcp_listener;

namespace detail {

using clock = std::chrono::steady_clock;
inline constexpr clock::time_point no_deadline = clock::time_point::max();

// One socket's state, shared by its handle and the I/O driver (defined in src/driver.hpp).
struct socket_state;

// How an operation ended: a byte count, or an error.
struct io_outcome {
  std::size_t count = 0;
  std::error_code error;
};

// The waiting part of an operation whose first attempt would have blocked: a small coroutine (in tcp.cpp)
// that waits for readiness, tries again, and so on, then resumes the awaiting coroutine by symmetric
// transfer. Its frame comes from a small per-thread cache, so waiting allocates nothing in the steady state.
class wait_path {
 public:
  struct promise_type {
    std::coroutine_handle<> continuation;
    suspend_hooks* hooks = nullptr;
    std::exception_ptr error;

    wait_path get_return_object() noexcept {
      return wait_path(std::coroutine_handle<promise_type>::from_promise(*this));
    }
    std::suspend_always initial_suspend() noexcept { return {}; }
    auto final_suspend() noexcept {
      struct resume_awaiting {
        bool await_ready() const noexcept { return false; }
        std::coroutine_handle<> await_suspend(std::coroutine_handle<promise_type> self) noexcept {
          return self.promise().continuation;
        }
        void await_resume() const noexcept {}
      };
      return resume_awaiting{};
    }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { error = std::current_exception(); }
    // The awaiting task's executor, so the wait's waker resumes this coroutine as part of that task.
    suspend_hooks* postal_hooks() noexcept { return hooks; }

    static void* operator new(std::size_t size);
    static void operator delete(void* frame, std::size_t size) noexcept;
  };

  wait_path() noexcept = default;
  wait_path(wait_path&& other) noexcept : handle_(std::exchange(other.handle_, {})) {}
  wait_path& operator=(wait_path&& other) noexcept {
    if (this != &other) {
      if (handle_) handle_.destroy();
      handle_ = std::exchange(other.handle_, {});
    }
    return *this;
  }
  wait_path(const wait_path&) = delete;
  wait_path& operator=(const wait_path&) = delete;
  // Destroying it while it waits withdraws the wait (the awaiting coroutine is being destroyed).
  ~wait_path() {
    if (handle_) handle_.destroy();
  }

  // Starts it on behalf of `awaiting`; the caller's await_suspend returns what this returns.
  std::coroutine_handle<> start(std::coroutine_handle<> awaiting, suspend_hooks* hooks) noexcept {
    handle_.promise().continuation = awaiting;
    handle_.promise().hooks = hooks;
    return handle_;
  }
  // Rethrows a misuse error raised while waiting (two tasks waiting on one direction of one socket).
  void rethrow_if_failed() const {
    if (handle_ && handle_.promise().error) std::rethrow_exception(handle_.promise().error);
  }

 private:
  explicit wait_path(std::coroutine_handle<promise_type> handle) noexcept : handle_(handle) {}
  std::coroutine_handle<promise_type> handle_;
};

// The awaitable of every socket operation. The first attempt is made in await_ready, so an operation that
// the kernel can serve at once completes without suspending and without allocating; otherwise the
// operation's wait_path runs as part of the awaiting task until the operation is over.
// Operation provides: bool attempt() (true: over), wait_path wait(), and result().
template <class Operation>
class io_awaitable {
 public:
  template <class... Args>
  explicit io_awaitable(Args&&... args) : operation_(std::forward<Args>(args)...) {}
  io_awaitable(const io_awaitable&) = delete;
  io_awaitable& operator=(const io_awaitable&) = delete;

  bool await_ready() { return operation_.attempt(); }
  template <class Promise>
  std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> awaiting) {
    waiting_ = operation_.wait();
    return waiting_.start(awaiting, postal::detail::hooks_of(awaiting));
  }
  auto await_resume() {
    waiting_.rethrow_if_failed();
    return operation_.result();
  }

 private:
  Operation operation_;
  wait_path waiting_;
};

// -- operations (their syscalls and waiting path are in src/tcp.cpp) --------------------------------------

class read_operation {
 public:
  read_operation(socket_state* socket, std::span<char> buffer, clock::time_point deadline);
  bool attempt() noexcept;
  wait_path wait();
  expected<std::size_t, std::error_code> result() const noexcept {
    if (outcome_.error) return unexpected{outcome_.error};
    return outcome_.count;
  }

 private:
  socket_state* socket_;
  std::span<char> buffer_;
  clock::time_point deadline_;
  std::uint64_t readiness_ = 0;  // the socket's read readiness count seen before the last attempt
  io_outcome outcome_;
};

class write_operation {
 public:
  write_operation(socket_state* socket, std::string_view data) noexcept : socket_(socket), remaining_(data) {}
  bool attempt() noexcept;
  wait_path wait();
  expected<void, std::error_code> result() const noexcept {
    if (outcome_.error) return unexpected{outcome_.error};
    return {};
  }

 private:
  socket_state* socket_;
  std::string_view remaining_;
  std::uint64_t readiness_ = 0;
  io_outcome outcome_;
};

class accept_operation {
 public:
  explicit accept_operation(socket_state* listener) noexcept : listener_(listener) {}
  accept_operation(const accept_operation&) = delete;
  accept_operation& operator=(const accept_operation&) = delete;
  ~accept_operation();
  bool attempt() noexcept;
  wait_path wait();
  expected<tcp_stream, std::error_code> result() noexcept;

 private:
  socket_state* listener_;
  socket_state* accepted_ = nullptr;  // owned until result() hands it to a tcp_stream
  std::uint64_t readiness_ = 0;
  io_outcome outcome_;
};

// Reference counting and closing (src/driver.cpp), and what a handle reads (src/tcp.cpp).
void release(socket_state* socket) noexcept;
void close(socket_state* socket) noexcept;
bool is_open(const socket_state* socket) noexcept;
std::uint16_t local_port(const socket_state* socket) noexcept;
std::uint16_t peer_port(const socket_state* socket) noexcept;
int native_handle(const socket_state* socket) noexcept;

}  // namespace detail

/// Busy polling for the I/O driver thread: for `window` after the last socket event, it looks for the next
/// one at once instead of sleeping in epoll_wait (0, the default, turns it off). It trades CPU for latency:
/// a client with few requests in flight waits for each reply's wake-up, and busy polling removes the
/// driver's share of it (the Redis connection manager's conn_manager benchmark roughly doubles with 200 us),
/// while a busy server on few cores loses the CPU the polling takes (kv-server under redis-benchmark drops
/// about 10%). Process-wide; also set by the environment variable POSTAL_NET_BUSY_POLL_US at start.
void set_busy_poll(std::chrono::microseconds window) noexcept;
/// The busy-poll window now in effect (0: off).
std::chrono::microseconds busy_poll() noexcept;


/// A TCP connection. Move-only; destroying it closes it.
///
/// Concurrency: one task may read while another writes (each direction has room for one waiting task; a
/// second task waiting in the same direction at the same time throws std::logic_error), and any task or
/// thread may close() it meanwhile. The stream must outlive every operation on it.
/// Cancel-safety: destroying a task that waits in read_some loses nothing (no byte was read); destroying
/// one that waits in write_all leaves an unknown prefix of the data written.
class tcp_stream {
 public:
  tcp_stream() noexcept = default;
  tcp_stream(tcp_stream&& other) noexcept : socket_(std::exchange(other.socket_, nullptr)) {}
  tcp_stream& operator=(tcp_stream&& other) noexcept {
    if (this != &other) {
      reset();
      socket_ = std::exchange(other.socket_, nullptr);
    }
    return *this;
  }
  tcp_stream(const tcp_stream&) = delete;
  tcp_stream& operator=(const tcp_stream&) = delete;
  ~tcp_stream() { reset(); }

  /// Connects to host:port (a numeric IPv4 address or "localhost"). Fails with errc::timed_out if the
  /// connection is not established within `timeout`, with errc::connection_refused if nobody listens.
  /// TCP_NODELAY is set on the stream.
  static task<expected<tcp_stream, std::error_code>> connect(std::string host, std::uint16_t port,
                                                             std::chrono::milliseconds timeout);

  /// `co_await read_some(buffer)` -> how many bytes were read into `buffer` (at least 1, waiting until some
  /// arrive), or 0 once the peer closed its side (after everything it sent was read). An empty buffer throws
  /// std::invalid_argument. Completes without suspending when data is already there.
  detail::io_awaitable<detail::read_operation> read_some(std::span<char> buffer) {
    return detail::io_awaitable<detail::read_operation>(socket_, buffer, detail::no_deadline);
  }
  /// read_some that fails with errc::timed_out if nothing arrives before `deadline`. The stream stays
  /// usable after a timeout (nothing was read).
  detail::io_awaitable<detail::read_operation> read_some(std::span<char> buffer,
                                                         std::chrono::steady_clock::time_point deadline) {
    return detail::io_awaitable<detail::read_operation>(socket_, buffer, deadline);
  }
  /// One read that never waits: how many bytes were read into `buffer` (at least 1), 0 once the peer closed
  /// its side, or errc::operation_would_block when nothing is there yet. For a task that polls for data it
  /// expects soon (with postal::yield_here between tries) before it settles into read_some, which waits for
  /// the I/O driver. While a task polls this way the driver thread is not woken for the data that arrives
  /// (one epoll_ctl when a try first finds nothing, one when a read_some next has to wait). An empty
  /// buffer throws std::invalid_argument.
  expected<std::size_t, std::error_code> try_read_some(std::span<char> buffer);
  /// `co_await write_all(data)` -> done once all of `data` is in the kernel's send buffer, waiting (with
  /// the task suspended) while that buffer is full: a peer that does not read slows the writer down. Fails
  /// with errc::broken_pipe / connection_reset when the peer is gone (part of the data may have been sent);
  /// never raises SIGPIPE. `data` must stay valid until the write is over.
  detail::io_awaitable<detail::write_operation> write_all(std::string_view data) noexcept {
    return detail::io_awaitable<detail::write_operation>(socket_, data);
  }

  /// Half-closes the stream: the peer reads 0 once it read everything sent before; reading here goes on.
  void shutdown_write() noexcept;
  /// Closes the stream. A task waiting in read_some or write_all wakes with errc::operation_canceled, and
  /// so does every later operation. Idempotent.
  void close() noexcept {
    if (socket_ != nullptr) detail::close(socket_);
  }
  bool is_open() const noexcept { return socket_ != nullptr && detail::is_open(socket_); }
  std::uint16_t local_port() const noexcept { return socket_ ? detail::local_port(socket_) : 0; }
  std::uint16_t peer_port() const noexcept { return socket_ ? detail::peer_port(socket_) : 0; }
  /// The file descriptor, for socket options and inspection; -1 once closed. Do not read, write or close it.
  int native_handle() const noexcept { return socket_ ? detail::native_handle(socket_) : -1; }

 private:
  friend class detail::accept_operation;
  explicit tcp_stream(detail::socket_state* socket) noexcept : socket_(socket) {}
  void reset() noexcept {
    if (socket_ != nullptr) {
      detail::close(socket_);
      detail::release(std::exchange(socket_, nullptr));
    }
  }

  detail::socket_state* socket_ = nullptr;
};

/// A listening TCP socket. Move-only; destroying it closes it. One task at a time may wait in accept().
class tcp_listener {
 public:
  tcp_listener() noexcept = default;
  tcp_listener(tcp_listener&& other) noexcept : socket_(std::exchange(other.socket_, nullptr)) {}
  tcp_listener& operator=(tcp_listener&& other) noexcept {
    if (this != &other) {
      reset();
      socket_ = std::exchange(other.socket_, nullptr);
    }
    return *this;
  }
  tcp_listener(const tcp_listener&) = delete;
  tcp_listener& operator=(const tcp_listener&) = delete;
  ~tcp_listener() { reset(); }

  /// Binds and listens on host:port ("0.0.0.0" or "" for every interface, a numeric IPv4 address, or
  /// "localhost"); port 0 lets the kernel pick one (see port()). SO_REUSEADDR is set. Callable anywhere,
  /// it does not wait.
  static expected<tcp_listener, std::error_code> bind(std::string host, std::uint16_t port,
                                                      int backlog = 1024);

  /// The port it listens on.
  std::uint16_t port() const noexcept { return socket_ ? detail::local_port(socket_) : 0; }
  /// `co_await accept()` -> the next connection (TCP_NODELAY set), waiting for one. Cancel-safety:
  /// destroying the waiting task loses no connection (it stays in the kernel's queue).
  detail::io_awaitable<detail::accept_operation> accept() noexcept {
    return detail::io_awaitable<detail::accept_operation>(socket_);
  }
  /// Stops listening. A task waiting in accept() wakes with errc::operation_canceled. Idempotent.
  void close() noexcept {
    if (socket_ != nullptr) detail::close(socket_);
  }
  bool is_open() const noexcept { return socket_ != nullptr && detail::is_open(socket_); }
  int native_handle() const noexcept { return socket_ ? detail::native_handle(socket_) : -1; }

 private:
  explicit tcp_listener(detail::socket_state* socket) noexcept : socket_(socket) {}
  void reset() noexcept {
    if (socket_ != nullptr) {
      detail::close(socket_);
      detail::release(std::exchange(socket_, nullptr));
    }
  }

  detail::socket_state* socket_ = nullptr;
};

}  // namespace postal::net
