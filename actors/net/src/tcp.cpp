// The sockets of postal::net: tcp_listener and tcp_stream, the syscalls their operations make, and the one
// loop by which an operation that would block waits for readiness and tries again.
// Not for: how readiness is watched, deadlines kept or a socket closed (the I/O driver, driver.hpp).
#include "driver.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <new>
#include <stdexcept>

#if defined(__SANITIZE_ADDRESS__)
#define POSTAL_NET_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define POSTAL_NET_ASAN 1
#endif
#endif

namespace postal::net::detail {

namespace {

std::error_code cancelled_error() noexcept {
  return std::make_error_code(std::errc::operation_canceled);
}
std::error_code no_socket_error() noexcept {
  return std::make_error_code(std::errc::bad_file_descriptor);
}

// The error for a wait that did not end with readiness.
std::error_code error_for(wait_outcome outcome) noexcept {
  return outcome == wait_outcome::timed_out ? std::make_error_code(std::errc::timed_out) : cancelled_error();
}

// A socket for a new fd: TCP_NODELAY for streams, registered with the driver. Closes the fd on failure.
expected<socket_state*, std::error_code> adopt(int fd, bool stream) {
  if (stream) {
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return register_socket(fd);
}

std::uint16_t port_of(const sockaddr_in& address) noexcept {
  return ntohs(address.sin_port);
}
void read_ports(socket_state* socket) noexcept {
  sockaddr_in address{};
  socklen_t length = sizeof address;
  if (::getsockname(socket->fd, reinterpret_cast<sockaddr*>(&address), &length) == 0)
    socket->local_port = port_of(address);
  length = sizeof address;
  if (::getpeername(socket->fd, reinterpret_cast<sockaddr*>(&address), &length) == 0)
    socket->peer_port = port_of(address);
}

// host:port as an IPv4 address: a numeric address, "localhost", or (when binding) "" for every interface.
bool resolve(const std::string& host, std::uint16_t port, sockaddr_in& address, bool binding) noexcept {
  address = {};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  if (host == "localhost") {
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return true;
  }
  if (host.empty()) {
    address.sin_addr.s_addr = htonl(INADDR_ANY);
    return binding;
  }
  return ::inet_pton(AF_INET, host.c_str(), &address.sin_addr) == 1;
}

// -- the attempts: syscalls until one would block; true when the operation is over -----------------------

// The attempt of every operation on `socket`'s `direction`. `syscall(fd)` makes one non-blocking syscall
// (while the fd is held open by begin_io) and returns its result; a success (>= 0) goes to
// `progress(result)`, which says whether the operation is over or needs another syscall. EINTR, and
// `also_retry` (an errno, 0 for none), mean another syscall too. False when a syscall would block: then
// `readiness` is the direction's count seen before it, for the wait (when_ready). A failure is put in
// `outcome`, and so is a socket that is closing (operation_canceled) or absent (bad_file_descriptor).
template <class Syscall, class Progress>
bool attempt_syscalls(socket_state* socket, direction_state socket_state::*direction,
                      std::uint64_t& readiness, io_outcome& outcome, int also_retry, Syscall syscall,
                      Progress progress) noexcept {
  if (socket == nullptr) {
    outcome.error = no_socket_error();
    return true;
  }
  for (;;) {
    readiness = (socket->*direction).readiness.load(std::memory_order_acquire);
    if (!begin_io(socket)) {
      outcome.error = cancelled_error();
      return true;
    }
    const auto result = syscall(socket->fd);
    const int error = errno;
    end_io(socket);
    if (result >= 0) {
      if (progress(result)) return true;
      continue;
    }
    if (error == EINTR || (also_retry != 0 && error == also_retry)) continue;
    if (error == EAGAIN || error == EWOULDBLOCK) return false;
    outcome.error = system_error(error);
    return true;
  }
}

bool attempt_read(socket_state* socket, std::span<char> buffer, std::uint64_t& readiness,
                  io_outcome& outcome) noexcept {
  return attempt_syscalls(
      socket, &socket_state::read, readiness, outcome, 0,
      [buffer](int fd) noexcept { return ::recv(fd, buffer.data(), buffer.size(), 0); },
      [&outcome](ssize_t received) noexcept {
        outcome.count = static_cast<std::size_t>(received);
        return true;
      });
}

bool attempt_write(socket_state* socket, std::string_view& remaining, std::uint64_t& readiness,
                   io_outcome& outcome) noexcept {
  if (socket != nullptr && remaining.empty()) return true;
  return attempt_syscalls(
      socket, &socket_state::write, readiness, outcome, 0,
      [&remaining](int fd) noexcept { return ::send(fd, remaining.data(), remaining.size(), MSG_NOSIGNAL); },
      [&remaining](ssize_t sent) noexcept {
        remaining.remove_prefix(static_cast<std::size_t>(sent));
        return remaining.empty();
      });
}

bool attempt_accept(socket_state* listener, socket_state*& accepted, std::uint64_t& readiness,
                    io_outcome& outcome) noexcept {
  return attempt_syscalls(
      listener, &socket_state::read, readiness, outcome, ECONNABORTED,
      [](int fd) noexcept { return ::accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC); },
      [&accepted, &outcome](int fd) noexcept {
        auto socket = adopt(fd, /*stream=*/true);
        if (!socket) {
          outcome.error = socket.error();
          return true;
        }
        read_ports(*socket);
        accepted = *socket;
        return true;
      });
}

// -- the waiting path ------------------------------------------------------------------------------------

// The wait of every operation whose attempt would have blocked: waits for `direction` to become ready after
// `readiness` (kept up to date by the attempts), then calls `again()` (the operation's attempt) until it is
// over, or until the deadline passes or the socket is closed (then `outcome` says which).
template <class Attempt>
wait_path when_ready(direction_state& direction, const std::uint64_t& readiness, clock::time_point deadline,
                     io_outcome& outcome, Attempt again) {
  for (;;) {
    readiness_wait wait(direction, readiness, deadline);
    const wait_outcome how = co_await wait;
    if (how != wait_outcome::ready) {
      outcome.error = error_for(how);
      co_return;
    }
    if (again()) co_return;
  }
}

// -- wait_path frames: a small per-thread cache ----------------------------------------------------------

// Every cached wait_path frame is allocated with this size, so any cached block fits any of them. The
// frames of when_ready take 144 bytes with g++ 12 at -O2; a larger one (an unoptimized build) bypasses the
// cache.
constexpr std::size_t cached_frame_size = 256;

struct frame_cache {
  static constexpr int capacity = 16;
  void* frames[capacity];
  int count = 0;
  ~frame_cache() {
    gone = true;  // a frame freed later by another thread_local's destructor is deallocated
    while (count > 0) ::operator delete(frames[--count]);
  }
  static inline thread_local bool gone = false;
};
thread_local frame_cache cached_frames;

}  // namespace

void* wait_path::promise_type::operator new(std::size_t size) {
#ifndef POSTAL_NET_ASAN  // under AddressSanitizer every frame is its own allocation, so misuse is reported
  if (size <= cached_frame_size) {
    if (!frame_cache::gone && cached_frames.count > 0) return cached_frames.frames[--cached_frames.count];
    return ::operator new(cached_frame_size);
  }
#endif
  return ::operator new(size);
}

void wait_path::promise_type::operator delete(void* frame, [[maybe_unused]] std::size_t size) noexcept {
#ifndef POSTAL_NET_ASAN
  if (size <= cached_frame_size && !frame_cache::gone && cached_frames.count < frame_cache::capacity) {
    cached_frames.frames[cached_frames.count++] = frame;
    return;
  }
#endif
  ::operator delete(frame);
}

// -- socket handles --------------------------------------------------------------------------------------

bool is_open(const socket_state* socket) noexcept {
  return !socket->closing();
}
std::uint16_t local_port(const socket_state* socket) noexcept {
  return socket->local_port;
}
std::uint16_t peer_port(const socket_state* socket) noexcept {
  return socket->peer_port;
}
int native_handle(const socket_state* socket) noexcept {
  return socket->closing() ? -1 : socket->fd;
}

// -- operations ------------------------------------------------------------------------------------------

read_operation::read_operation(socket_state* socket, std::span<char> buffer, clock::time_point deadline)
    : socket_(socket), buffer_(buffer), deadline_(deadline) {
  if (buffer.empty()) throw std::invalid_argument("postal::net::tcp_stream::read_some: empty buffer");
}
bool read_operation::attempt() noexcept {
  return attempt_read(socket_, buffer_, readiness_, outcome_);
}
wait_path read_operation::wait() {
  return when_ready(socket_->read, readiness_, deadline_, outcome_, [this]() noexcept { return attempt(); });
}

bool write_operation::attempt() noexcept {
  return attempt_write(socket_, remaining_, readiness_, outcome_);
}
wait_path write_operation::wait() {
  return when_ready(socket_->write, readiness_, no_deadline, outcome_,
                    [this]() noexcept { return attempt(); });
}

accept_operation::~accept_operation() {
  if (accepted_ != nullptr) {  // accepted, but the result was never taken
    close(accepted_);
    release(accepted_);
  }
}
bool accept_operation::attempt() noexcept {
  return attempt_accept(listener_, accepted_, readiness_, outcome_);
}
wait_path accept_operation::wait() {
  return when_ready(listener_->read, readiness_, no_deadline, outcome_,
                    [this]() noexcept { return attempt(); });
}
expected<tcp_stream, std::error_code> accept_operation::result() noexcept {
  if (outcome_.error) return unexpected{outcome_.error};
  return tcp_stream(std::exchange(accepted_, nullptr));
}

}  // namespace postal::net::detail

namespace postal::net {

task<expected<tcp_stream, std::error_code>> tcp_stream::connect(std::string host, std::uint16_t port,
                                                                std::chrono::milliseconds timeout) {
  using namespace detail;
  const auto deadline = clock::now() + timeout;
  sockaddr_in address;
  if (!resolve(host, port, address, /*binding=*/false))
    co_return unexpected{std::make_error_code(std::errc::invalid_argument)};
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) co_return unexpected{last_error()};
  auto socket = adopt(fd, /*stream=*/true);
  if (!socket) co_return unexpected{socket.error()};
  tcp_stream stream(*socket);  // closes the socket on every failure below
  direction_state& writing = (*socket)->write;
  std::uint64_t readiness = writing.readiness.load(std::memory_order_acquire);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    if (errno != EINPROGRESS) co_return unexpected{last_error()};
    // Writable means connected or failed. A wake can also come from before connect() (a fresh socket
    // reports itself writable and hung up), so ask the kernel which it is.
    for (;;) {
      readiness_wait wait(writing, readiness, deadline);
      const wait_outcome how = co_await wait;
      if (how != wait_outcome::ready) co_return unexpected{error_for(how)};
      readiness = writing.readiness.load(std::memory_order_acquire);
      int error = 0;
      socklen_t length = sizeof error;
      if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0) co_return unexpected{last_error()};
      if (error != 0) co_return unexpected{system_error(error)};
      sockaddr_in peer{};
      length = sizeof peer;
      if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &length) == 0) break;
      if (errno != ENOTCONN) co_return unexpected{last_error()};
    }
  }
  read_ports(*socket);
  co_return std::move(stream);
}

expected<std::size_t, std::error_code> tcp_stream::try_read_some(std::span<char> buffer) {
  if (buffer.empty()) throw std::invalid_argument("postal::net::tcp_stream::try_read_some: empty buffer");
  std::uint64_t readiness = 0;
  detail::io_outcome outcome;
  if (!detail::attempt_read(socket_, buffer, readiness, outcome)) {
    // The caller polls: until a read waits again, the driver need not be woken for what arrives.
    if (socket_->read_armed.load(std::memory_order_relaxed)) detail::pause_read_interest(socket_);
    return unexpected{std::make_error_code(std::errc::operation_would_block)};
  }
  if (outcome.error) return unexpected{outcome.error};
  return outcome.count;
}

void tcp_stream::shutdown_write() noexcept {
  if (socket_ == nullptr || !detail::begin_io(socket_)) return;
  ::shutdown(socket_->fd, SHUT_WR);
  detail::end_io(socket_);
}

expected<tcp_listener, std::error_code> tcp_listener::bind(std::string host, std::uint16_t port,
                                                           int backlog) {
  sockaddr_in address;
  if (!detail::resolve(host, port, address, /*binding=*/true))
    return unexpected{std::make_error_code(std::errc::invalid_argument)};
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return unexpected{detail::last_error()};
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0 ||
      ::listen(fd, backlog) != 0) {
    const auto error = detail::last_error();
    ::close(fd);
    return unexpected{error};
  }
  auto socket = detail::adopt(fd, /*stream=*/false);
  if (!socket) return unexpected{socket.error()};
  detail::read_ports(*socket);
  return tcp_listener(*socket);
}

}  // namespace postal::net
