// The machinery of postal::net: per-socket state (readiness counts, the waiting task of each direction),
// the I/O driver thread (edge-triggered epoll, deadlines), and the syscalls the operations make.
// Not for: anything a user calls directly (net.hpp is the interface).
//
// How a wait is never lost. Each direction of a socket counts the readiness events the driver saw for it.
// An operation reads the count before its syscall; if the syscall would block, it registers its waker under
// the socket's mutex only if the count is unchanged. The driver bumps the count and takes the waker under
// the same mutex, so an event that arrives between the syscall and the registration is seen by one side or
// the other: either the operation finds the count changed and tries again, or the driver finds the waker.
// A stream polled with try_read_some has EPOLLIN taken out of its registration (so the driver is not woken
// for every arrival while a task polls); a read that then has to wait puts it back under the same mutex
// before it registers, and epoll reports data that is already there as a new event: the same two sides.
//
// Lifetimes. A socket_state is reference counted: one reference for its handle (tcp_stream/tcp_listener),
// one while it is registered with epoll. Closing removes it from epoll, closes the fd, and hands the epoll
// reference to the driver, which drops it only after it finished the batch of events in progress: epoll
// cannot report the socket again, and an event already reported still finds the state alive. The fd is
// closed only when no syscall on it is in flight (a use count), so a racing close() never lets a syscall
// hit a reused fd number.
#include <postal/net.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <new>
#include <stdexcept>
#include <thread>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define POSTAL_NET_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define POSTAL_NET_ASAN 1
#endif
#endif

namespace postal::net::detail {

// The busy-poll window in microseconds (0: off), from set_busy_poll or POSTAL_NET_BUSY_POLL_US.
std::atomic<std::int64_t> busy_poll_us{[] {
  const char* value = std::getenv("POSTAL_NET_BUSY_POLL_US");
  return value ? std::max<std::int64_t>(0, std::atoll(value)) : std::int64_t{0};
}()};

namespace {

std::error_code system_error(int code) noexcept {
  return std::error_code(code, std::system_category());
}
std::error_code last_error() noexcept {
  return system_error(errno);
}

constexpr std::size_t not_in_heap = std::numeric_limits<std::size_t>::max();

// How a wait for readiness ended.
enum class wait_outcome : std::uint8_t { ready, timed_out, closed };

}  // namespace

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
  std::atomic<std::uint32_t> references{1};  // the handle's; +1 while registered with epoll
  std::atomic<std::uint32_t> use{0};
  std::uint16_t local_port = 0;
  std::uint16_t peer_port = 0;
  std::mutex mutex;                // guards both directions' waiting tasks
  std::uint64_t next_wait_id = 0;  // guarded by mutex
  // EPOLLIN is in the epoll registration (changed under mutex). try_read_some takes it out when it finds
  // nothing and nobody waits to read, so a task polling for data does not have the driver woken for every
  // arrival; a read that waits puts it back before it registers (see readiness_wait).
  std::atomic<bool> read_armed{true};
  direction_state read;
  direction_state write;

  bool closing() const noexcept { return (use.load(std::memory_order_acquire) & closed_flag) != 0; }
};

namespace {

bool begin_io(socket_state* socket) noexcept;
void end_io(socket_state* socket) noexcept;

// -- the I/O driver --------------------------------------------------------------------------------------

class reactor {
 public:
  // The process's driver, started on first use. It is never destroyed (a socket closed by a static
  // destructor still finds it), but its thread is stopped and joined at exit.
  static reactor& instance() {
    static reactor* const driver = [] {
      auto* created = new reactor();
      static const stop_at_exit stopper{created};
      return created;
    }();
    return *driver;
  }

  // Registers a new socket (edge-triggered, both directions); takes the registration's reference.
  std::error_code add(socket_state* socket) noexcept {
    epoll_event event{};
    event.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    event.data.ptr = socket;
    socket->references.fetch_add(1, std::memory_order_relaxed);
    if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, socket->fd, &event) != 0) {
      socket->references.fetch_sub(1, std::memory_order_relaxed);
      return last_error();
    }
    return {};
  }

  // Puts EPOLLIN (and EPOLLRDHUP) into a socket's registration, or takes them out. The caller holds the
  // socket's mutex and a use of it (begin_io), so the fd is still the socket's. Arming reports data that is
  // already there as a new event (epoll_ctl re-checks readiness), so nothing that arrived while the socket
  // was disarmed is missed. False if epoll_ctl failed (the registration is unchanged).
  bool set_read_interest(socket_state* socket, bool armed) noexcept {
    epoll_event event{};
    event.events = (armed ? EPOLLIN | EPOLLRDHUP : 0u) | EPOLLOUT | EPOLLET;
    event.data.ptr = socket;
    if (::epoll_ctl(epoll_, EPOLL_CTL_MOD, socket->fd, &event) != 0) return false;
    socket->read_armed.store(armed, std::memory_order_relaxed);
    return true;
  }

  // Removes a socket whose fd is about to be closed; its registration reference is dropped once the
  // driver can no longer be looking at an event for it.
  void remove(socket_state* socket) noexcept { ::epoll_ctl(epoll_, EPOLL_CTL_DEL, socket->fd, nullptr); }
  void retire(socket_state* socket) noexcept {
    bool was_empty;
    {
      std::lock_guard lock(retired_mutex_);
      if (stopped_) {
        release(socket);  // no driver thread any more: nothing can be looking at it
        return;
      }
      was_empty = retired_.empty();
      retired_.push_back(socket);
    }
    if (was_empty) poke();
  }

  // Puts `direction`'s wait `wait_id` on the timer heap. The caller holds the socket's mutex. Returns true
  // when it is the earliest deadline, so the driver must be poked to shorten its epoll_wait.
  bool schedule(direction_state& direction, clock::time_point deadline, std::uint64_t wait_id) {
    std::lock_guard lock(timers_mutex_);
    if (direction.heap_index != not_in_heap) remove_timer(direction);
    timers_.push_back(&direction);  // may throw: nothing changed yet
    direction.deadline = deadline;
    direction.timer_wait_id = wait_id;
    direction.heap_index = timers_.size() - 1;
    sift_up(direction.heap_index);
    return timers_.front() == &direction;
  }
  // Takes `direction`'s deadline off the heap (if it is still there). The caller holds the socket's mutex.
  void cancel(direction_state& direction) noexcept {
    std::lock_guard lock(timers_mutex_);
    if (direction.heap_index != not_in_heap) remove_timer(direction);
  }

  // Ends the registered wait of `direction`, reporting `outcome` (nullptr: nobody is told, the waiting
  // coroutine is being destroyed), and returns its waker for the caller to wake or drop after unlocking.
  // The caller holds the socket's mutex.
  static waker end_wait(direction_state& direction, wait_outcome* outcome) noexcept {
    if (outcome != nullptr) *direction.outcome = *outcome;
    direction.outcome = nullptr;
    direction.wait_id = 0;
    if (std::exchange(direction.has_timer, false)) instance().cancel(direction);
    return std::move(direction.waiting);
  }

  // Makes epoll_wait return (a new earliest deadline, a retired socket, or stopping).
  void poke() noexcept {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto written = ::write(event_, &one, sizeof one);
  }

 private:
  struct stop_at_exit {
    reactor* driver;
    ~stop_at_exit() { driver->stop(); }
  };

  reactor() {
    epoll_ = ::epoll_create1(EPOLL_CLOEXEC);
    event_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (epoll_ < 0 || event_ < 0) throw std::system_error(last_error(), "postal::net: cannot start epoll");
    epoll_event event{};
    event.events = EPOLLIN;  // level-triggered: it stays readable until the driver drains it
    event.data.ptr = nullptr;
    if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, event_, &event) != 0)
      throw std::system_error(last_error(), "postal::net: cannot start epoll");
    thread_ = std::thread([this] { run(); });
    pthread_setname_np(thread_.native_handle(), "postal.net");
  }

  void stop() noexcept {
    stopping_.store(true, std::memory_order_release);
    poke();
    if (thread_.joinable()) thread_.join();
    std::vector<socket_state*> retired;
    {
      std::lock_guard lock(retired_mutex_);
      stopped_ = true;
      retired.swap(retired_);
    }
    for (socket_state* socket : retired) release(socket);
  }

  void run() {
    constexpr int batch = 256;
    epoll_event events[batch];
    auto last_event = clock::now();
    while (!stopping_.load(std::memory_order_acquire)) {
      // Busy polling: for a while after the last event, look again at once instead of sleeping (a sleeping
      // driver thread adds a scheduler wake-up to every reply; see set_busy_poll).
      const auto window = std::chrono::microseconds(busy_poll_us.load(std::memory_order_relaxed));
      const bool polling = window.count() > 0 && clock::now() - last_event < window;
      const int ready = ::epoll_wait(epoll_, events, batch, polling ? 0 : next_timeout_ms());
      if (ready > 0) last_event = clock::now();
      for (int i = 0; i < ready; ++i) {
        auto* socket = static_cast<socket_state*>(events[i].data.ptr);
        if (socket == nullptr) {
          std::uint64_t count;
          [[maybe_unused]] auto read = ::read(event_, &count, sizeof count);
          continue;
        }
        const std::uint32_t flags = events[i].events;
        if (flags & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) signal(socket->read);
        if (flags & (EPOLLOUT | EPOLLHUP | EPOLLERR)) signal(socket->write);
      }
      fire_due_timers();
      release_retired();
    }
  }

  // A readiness event: bump the count and wake the waiting task, if any.
  static void signal(direction_state& direction) noexcept {
    waker target;
    {
      std::lock_guard lock(direction.socket->mutex);
      wait_outcome ready = wait_outcome::ready;
      direction.readiness.store(direction.readiness.load(std::memory_order_relaxed) + 1,
                                std::memory_order_release);
      if (direction.wait_id != 0) target = end_wait(direction, &ready);
    }
    target.wake();
  }

  int next_timeout_ms() {
    std::lock_guard lock(timers_mutex_);
    if (timers_.empty()) return -1;
    const auto left = timers_.front()->deadline - clock::now();
    if (left <= clock::duration::zero()) return 0;
    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
    return static_cast<int>(std::min<decltype(ms)>(ms, 60'000));
  }

  void fire_due_timers() {
    due_.clear();  // reused: no allocation per turn
    {
      std::lock_guard lock(timers_mutex_);
      const auto now = clock::now();
      while (!timers_.empty() && timers_.front()->deadline <= now) {
        direction_state* direction = timers_.front();
        due_.push_back({direction, direction->timer_wait_id});
        remove_timer(*direction);
      }
    }
    // The sockets are alive: retired sockets are only released after this, later in the same turn.
    for (const auto& [direction, wait_id] : due_) {
      waker target;
      {
        std::lock_guard lock(direction->socket->mutex);
        wait_outcome timed_out = wait_outcome::timed_out;
        if (direction->wait_id == wait_id) target = end_wait(*direction, &timed_out);
      }
      target.wake();
    }
  }

  void release_retired() {
    {
      std::lock_guard lock(retired_mutex_);
      if (retired_.empty()) return;
      releasing_.swap(retired_);
    }
    for (socket_state* socket : releasing_) release(socket);
    releasing_.clear();
  }

  // -- the timer heap (a binary min-heap on deadline; each entry knows its index) -----------------------
  void place(std::size_t index, direction_state* direction) noexcept {
    timers_[index] = direction;
    direction->heap_index = index;
  }
  void sift_up(std::size_t index) noexcept {
    direction_state* moving = timers_[index];
    while (index > 0) {
      const std::size_t parent = (index - 1) / 2;
      if (timers_[parent]->deadline <= moving->deadline) break;
      place(index, timers_[parent]);
      index = parent;
    }
    place(index, moving);
  }
  void sift_down(std::size_t index) noexcept {
    direction_state* moving = timers_[index];
    const std::size_t size = timers_.size();
    for (;;) {
      std::size_t child = 2 * index + 1;
      if (child >= size) break;
      if (child + 1 < size && timers_[child + 1]->deadline < timers_[child]->deadline) ++child;
      if (moving->deadline <= timers_[child]->deadline) break;
      place(index, timers_[child]);
      index = child;
    }
    place(index, moving);
  }
  void remove_timer(direction_state& direction) noexcept {
    const std::size_t index = direction.heap_index;
    direction.heap_index = not_in_heap;
    direction_state* last = timers_.back();
    timers_.pop_back();
    if (last == &direction) return;
    place(index, last);
    sift_down(index);
    sift_up(last->heap_index);
  }

  int epoll_ = -1;
  int event_ = -1;
  std::thread thread_;
  std::atomic<bool> stopping_{false};

  std::mutex timers_mutex_;
  std::vector<direction_state*> timers_;                         // guarded by timers_mutex_
  std::vector<std::pair<direction_state*, std::uint64_t>> due_;  // the driver thread's scratch list

  std::mutex retired_mutex_;
  std::vector<socket_state*> retired_;  // guarded by retired_mutex_
  bool stopped_ = false;                // guarded by retired_mutex_
  std::vector<socket_state*> releasing_;
};

// -- closing: the use count --------------------------------------------------------------------------------

// The last step of closing, once no syscall is in flight: out of epoll first, then the fd, then the
// registration's reference goes to the driver.
void close_descriptor(socket_state* socket) noexcept {
  reactor& driver = reactor::instance();
  driver.remove(socket);
  ::close(socket->fd);
  driver.retire(socket);
}

// Marks a syscall in flight; false (and nothing marked) once the socket is closing.
bool begin_io(socket_state* socket) noexcept {
  std::uint32_t before = socket->use.load(std::memory_order_acquire);
  do {
    if (before & socket_state::closed_flag) return false;
  } while (!socket->use.compare_exchange_weak(before, before + 1, std::memory_order_acquire,
                                              std::memory_order_acquire));
  return true;
}
// Ends a syscall; the last one to end after close() closes the fd.
void end_io(socket_state* socket) noexcept {
  if (socket->use.fetch_sub(1, std::memory_order_acq_rel) == (socket_state::closed_flag | 1))
    close_descriptor(socket);
}

// A socket for a new fd: TCP_NODELAY for streams, registered with the driver. Closes the fd on failure.
expected<socket_state*, std::error_code> adopt(int fd, bool stream) {
  if (stream) {
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  auto* socket = new (std::nothrow) socket_state(fd);
  if (socket == nullptr) {
    ::close(fd);
    return unexpected{std::make_error_code(std::errc::not_enough_memory)};
  }
  if (auto error = reactor::instance().add(socket)) {
    ::close(fd);
    delete socket;
    return unexpected{error};
  }
  return socket;
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

// -- waiting for readiness ---------------------------------------------------------------------------------

// co_await: waits until `direction` saw a readiness event after `seen` (at once if it already did), the
// deadline passes, or the socket is closed. Cancel-safety: destroying the waiting coroutine withdraws the
// wait; a wake already on its way then only reaches the task's waker, never this frame.
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
    waker target = postal::detail::waker_for(handle);  // its reference is taken before the wait is published
    socket_state& socket = *direction_.socket;
    bool earliest = false;
    {
      std::lock_guard lock(socket.mutex);
      if (socket.closing()) {
        outcome_ = wait_outcome::closed;
        return false;
      }
      if (direction_.readiness.load(std::memory_order_relaxed) != seen_) {
        outcome_ = wait_outcome::ready;
        return false;
      }
      if (deadline_ != no_deadline && clock::now() >= deadline_) {
        outcome_ = wait_outcome::timed_out;
        return false;
      }
      if (&direction_ == &socket.read && !socket.read_armed.load(std::memory_order_relaxed)) {
        // Disarmed by try_read_some: arm again first. An arrival since the caller's attempt is then
        // reported as an event, which the driver handles once this wait is registered (it needs the mutex).
        if (!begin_io(&socket)) {
          outcome_ = wait_outcome::closed;
          return false;
        }
        const bool armed = reactor::instance().set_read_interest(&socket, true);
        end_io(&socket);
        if (!armed) {  // could not arm (out of kernel memory): the caller tries again instead of waiting
          outcome_ = wait_outcome::ready;
          return false;
        }
      }
      if (direction_.wait_id != 0)
        throw std::logic_error(
            "postal::net: two tasks wait to read (or accept), or to write, on one socket at once");
      const std::uint64_t wait_id = ++socket.next_wait_id;
      if (deadline_ != no_deadline) {  // first, since it may throw (then nothing is registered)
        earliest = reactor::instance().schedule(direction_, deadline_, wait_id);
        direction_.has_timer = true;
      }
      wait_id_ = wait_id;
      direction_.wait_id = wait_id;
      direction_.outcome = &outcome_;
      direction_.waiting = std::move(target);
    }
    // From here on the wait may be over and this frame gone: touch no member.
    if (earliest) reactor::instance().poke();
    return true;
  }
  wait_outcome await_resume() noexcept {
    wait_id_ = 0;  // the waker's taker ended the wait (and wrote outcome_) before waking
    return outcome_;
  }

 private:
  void withdraw() noexcept {
    waker dropped;
    {
      std::lock_guard lock(direction_.socket->mutex);
      if (direction_.wait_id == wait_id_) dropped = reactor::end_wait(direction_, nullptr);
    }
  }

  direction_state& direction_;
  std::uint64_t seen_;
  clock::time_point deadline_;
  std::uint64_t wait_id_ = 0;  // nonzero while registered
  wait_outcome outcome_ = wait_outcome::ready;
};

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

// -- the attempts: one syscall (or a loop until it would block); true when the operation is over -----------

bool attempt_read(socket_state* socket, std::span<char> buffer, std::uint64_t& readiness,
                  io_outcome& outcome) noexcept {
  if (socket == nullptr) {
    outcome.error = no_socket_error();
    return true;
  }
  for (;;) {
    readiness = socket->read.readiness.load(std::memory_order_acquire);
    if (!begin_io(socket)) {
      outcome.error = cancelled_error();
      return true;
    }
    const ssize_t received = ::recv(socket->fd, buffer.data(), buffer.size(), 0);
    const int error = errno;
    end_io(socket);
    if (received >= 0) {
      outcome.count = static_cast<std::size_t>(received);
      return true;
    }
    if (error == EINTR) continue;
    if (error == EAGAIN || error == EWOULDBLOCK) return false;
    outcome.error = system_error(error);
    return true;
  }
}

bool attempt_write(socket_state* socket, std::string_view& remaining, std::uint64_t& readiness,
                   io_outcome& outcome) noexcept {
  if (socket == nullptr) {
    outcome.error = no_socket_error();
    return true;
  }
  while (!remaining.empty()) {
    readiness = socket->write.readiness.load(std::memory_order_acquire);
    if (!begin_io(socket)) {
      outcome.error = cancelled_error();
      return true;
    }
    const ssize_t sent = ::send(socket->fd, remaining.data(), remaining.size(), MSG_NOSIGNAL);
    const int error = errno;
    end_io(socket);
    if (sent >= 0) {
      remaining.remove_prefix(static_cast<std::size_t>(sent));
      continue;
    }
    if (error == EINTR) continue;
    if (error == EAGAIN || error == EWOULDBLOCK) return false;
    outcome.error = system_error(error);
    return true;
  }
  return true;
}

bool attempt_accept(socket_state* listener, socket_state*& accepted, std::uint64_t& readiness,
                    io_outcome& outcome) noexcept {
  if (listener == nullptr) {
    outcome.error = no_socket_error();
    return true;
  }
  for (;;) {
    readiness = listener->read.readiness.load(std::memory_order_acquire);
    if (!begin_io(listener)) {
      outcome.error = cancelled_error();
      return true;
    }
    const int fd = ::accept4(listener->fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    const int error = errno;
    end_io(listener);
    if (fd >= 0) {
      auto socket = adopt(fd, /*stream=*/true);
      if (!socket) {
        outcome.error = socket.error();
        return true;
      }
      read_ports(*socket);
      accepted = *socket;
      return true;
    }
    if (error == EINTR || error == ECONNABORTED) continue;
    if (error == EAGAIN || error == EWOULDBLOCK) return false;
    outcome.error = system_error(error);
    return true;
  }
}

// -- the waiting paths -------------------------------------------------------------------------------------

wait_path read_when_ready(socket_state* socket, std::span<char> buffer, clock::time_point deadline,
                          std::uint64_t readiness, io_outcome& outcome) {
  for (;;) {
    readiness_wait wait(socket->read, readiness, deadline);
    const wait_outcome how = co_await wait;
    if (how != wait_outcome::ready) {
      outcome.error = error_for(how);
      co_return;
    }
    if (attempt_read(socket, buffer, readiness, outcome)) co_return;
  }
}

wait_path write_when_ready(socket_state* socket, std::string_view remaining, std::uint64_t readiness,
                           io_outcome& outcome) {
  for (;;) {
    readiness_wait wait(socket->write, readiness, no_deadline);
    const wait_outcome how = co_await wait;
    if (how != wait_outcome::ready) {
      outcome.error = error_for(how);
      co_return;
    }
    if (attempt_write(socket, remaining, readiness, outcome)) co_return;
  }
}

wait_path accept_when_ready(socket_state* listener, socket_state*& accepted, std::uint64_t readiness,
                            io_outcome& outcome) {
  for (;;) {
    readiness_wait wait(listener->read, readiness, no_deadline);
    const wait_outcome how = co_await wait;
    if (how != wait_outcome::ready) {
      outcome.error = error_for(how);
      co_return;
    }
    if (attempt_accept(listener, accepted, readiness, outcome)) co_return;
  }
}

// -- wait_path frames: a small per-thread cache ------------------------------------------------------------

// Every cached wait_path frame is allocated with this size, so any cached block fits any of them. The three
// frames take 136-152 bytes with g++ 12 at -O2; a larger one (an unoptimized build) bypasses the cache.
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

// -- socket handles ----------------------------------------------------------------------------------------

void release(socket_state* socket) noexcept {
  if (socket->references.fetch_sub(1, std::memory_order_acq_rel) == 1) delete socket;
}

void close(socket_state* socket) noexcept {
  // Closing counts as a use until the waiting tasks are woken: whoever ends the last use closes the fd.
  std::uint32_t before = socket->use.load(std::memory_order_acquire);
  do {
    if (before & socket_state::closed_flag) return;
  } while (!socket->use.compare_exchange_weak(before, (before | socket_state::closed_flag) + 1,
                                              std::memory_order_acq_rel, std::memory_order_acquire));
  waker reader;
  waker writer;
  {
    std::lock_guard lock(socket->mutex);
    wait_outcome closed = wait_outcome::closed;
    if (socket->read.wait_id != 0) reader = reactor::end_wait(socket->read, &closed);
    if (socket->write.wait_id != 0) writer = reactor::end_wait(socket->write, &closed);
  }
  reader.wake();
  writer.wake();
  end_io(socket);
}

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

// -- operations --------------------------------------------------------------------------------------------

read_operation::read_operation(socket_state* socket, std::span<char> buffer, clock::time_point deadline)
    : socket_(socket), buffer_(buffer), deadline_(deadline) {
  if (buffer.empty()) throw std::invalid_argument("postal::net::tcp_stream::read_some: empty buffer");
}
bool read_operation::attempt() noexcept {
  return attempt_read(socket_, buffer_, readiness_, outcome_);
}
wait_path read_operation::wait() {
  return read_when_ready(socket_, buffer_, deadline_, readiness_, outcome_);
}

bool write_operation::attempt() noexcept {
  return attempt_write(socket_, remaining_, readiness_, outcome_);
}
wait_path write_operation::wait() {
  return write_when_ready(socket_, remaining_, readiness_, outcome_);
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
  return accept_when_ready(listener_, accepted_, readiness_, outcome_);
}
expected<tcp_stream, std::error_code> accept_operation::result() noexcept {
  if (outcome_.error) return unexpected{outcome_.error};
  return tcp_stream(std::exchange(accepted_, nullptr));
}

}  // namespace postal::net::detail

namespace postal::net {

void set_busy_poll(std::chrono::microseconds window) noexcept {
  detail::busy_poll_us.store(std::max<std::int64_t>(0, window.count()), std::memory_order_relaxed);
}
std::chrono::microseconds busy_poll() noexcept {
  return std::chrono::microseconds(detail::busy_poll_us.load(std::memory_order_relaxed));
}

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
    if (socket_->read_armed.load(std::memory_order_relaxed)) {
      std::lock_guard lock(socket_->mutex);
      if (socket_->read.wait_id == 0 && socket_->read_armed.load(std::memory_order_relaxed) &&
          detail::begin_io(socket_)) {
        detail::reactor::instance().set_read_interest(socket_, false);
        detail::end_io(socket_);
      }
    }
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
