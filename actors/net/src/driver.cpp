// The I/O driver of postal::net: one thread for the process that waits in edge-triggered epoll, wakes the
// task waiting on a socket that became ready, and keeps the waits' deadlines; also the closing of a socket.
// Not for: syscalls on the sockets or the operations (tcp.cpp). The protocol is described in driver.hpp.
#include "driver.hpp"

#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

namespace postal::net::detail {

namespace {

// The busy-poll window in microseconds (0: off), from set_busy_poll or POSTAL_NET_BUSY_POLL_US.
std::atomic<std::int64_t> busy_poll_us{[] {
  const char* value = std::getenv("POSTAL_NET_BUSY_POLL_US");
  return value ? std::max<std::int64_t>(0, std::atoll(value)) : std::int64_t{0};
}()};

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

}  // namespace

// -- registration and closing ----------------------------------------------------------------------------

expected<socket_state*, std::error_code> register_socket(int fd) {
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

void pause_read_interest(socket_state* socket) noexcept {
  std::lock_guard lock(socket->mutex);
  if (socket->read.wait_id == 0 && socket->read_armed.load(std::memory_order_relaxed) && begin_io(socket)) {
    reactor::instance().set_read_interest(socket, false);
    end_io(socket);
  }
}

// Out of epoll first, then the fd, then the registration's reference goes to the driver.
void close_descriptor(socket_state* socket) noexcept {
  reactor& driver = reactor::instance();
  driver.remove(socket);
  ::close(socket->fd);
  driver.retire(socket);
}

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

// -- waiting for readiness -------------------------------------------------------------------------------

bool readiness_wait::register_wait(waker target) {
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
      // Paused by try_read_some: arm again first. An arrival since the caller's attempt is then reported
      // as an event, which the driver handles once this wait is registered (it needs the mutex).
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

void readiness_wait::withdraw() noexcept {
  waker dropped;
  {
    std::lock_guard lock(direction_.socket->mutex);
    if (direction_.wait_id == wait_id_) dropped = reactor::end_wait(direction_, nullptr);
  }
}

}  // namespace postal::net::detail

namespace postal::net {

void set_busy_poll(std::chrono::microseconds window) noexcept {
  detail::busy_poll_us.store(std::max<std::int64_t>(0, window.count()), std::memory_order_relaxed);
}
std::chrono::microseconds busy_poll() noexcept {
  return std::chrono::microseconds(detail::busy_poll_us.load(std::memory_order_relaxed));
}

}  // namespace postal::net
