// postal::file_watch on Linux: inotify on the file's directory, or stat() polling; an eventfd stops it.
#include <postal/file_watch.hpp>

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <system_error>
#include <thread>
#include <utility>

namespace postal {

namespace {

// What polling compares: a change of any of these is a change of the file.
struct file_identity {
  bool exists = false;
  dev_t device = 0;
  ino_t inode = 0;
  off_t size = 0;
  timespec modified{};
  timespec changed{};

  static file_identity of(const std::filesystem::path& file) {
    struct stat info {};
    if (::stat(file.c_str(), &info) != 0) return {};
    return {true, info.st_dev, info.st_ino, info.st_size, info.st_mtim, info.st_ctim};
  }
  bool operator==(const file_identity& other) const noexcept {
    return exists == other.exists && device == other.device && inode == other.inode && size == other.size &&
           modified.tv_sec == other.modified.tv_sec && modified.tv_nsec == other.modified.tv_nsec &&
           changed.tv_sec == other.changed.tv_sec && changed.tv_nsec == other.changed.tv_nsec;
  }
};

class unique_fd {
 public:
  explicit unique_fd(int fd = -1) noexcept : fd_(fd) {}
  unique_fd(unique_fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  unique_fd& operator=(unique_fd&& other) noexcept {
    std::swap(fd_, other.fd_);
    return *this;
  }
  ~unique_fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const noexcept { return fd_; }

 private:
  int fd_;
};

constexpr std::uint32_t inotify_events = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE |
                                         IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF;

}  // namespace

struct file_watch::state {
  std::filesystem::path file;
  std::string name;  // the file's name within its directory, as inotify reports it
  std::function<void()> on_change;
  file_watch_options options;
  unique_fd stop;     // an eventfd: readable once the watch is being destroyed
  unique_fd inotify;  // -1 in poll mode
  std::atomic<bool> polling{true};
  file_identity last;  // what polling saw last; taken before the thread starts
  std::thread thread;

  // Waits on the stop fd (and inotify, when used) for up to `timeout` (-1: forever). False once stopping.
  bool wait(int timeout_ms, bool& inotify_ready) {
    std::array<pollfd, 2> fds{pollfd{stop.get(), POLLIN, 0}, pollfd{inotify.get(), POLLIN, 0}};
    const nfds_t count = inotify.get() >= 0 ? 2 : 1;
    for (;;) {
      const int ready = ::poll(fds.data(), count, timeout_ms);
      if (ready < 0 && errno == EINTR) continue;
      if (ready < 0) return false;  // cannot happen with valid fds; stop rather than spin
      if (fds[0].revents != 0) return false;
      inotify_ready = count == 2 && fds[1].revents != 0;
      return true;
    }
  }

  // Reads the pending inotify events; true if one concerns the file (or the directory went away, which
  // turns the watch into polling).
  bool read_events() {
    alignas(inotify_event) std::array<char, 16 * 1024> buffer;
    bool relevant = false;
    for (;;) {
      const ssize_t length = ::read(inotify.get(), buffer.data(), buffer.size());
      if (length <= 0) break;  // EAGAIN: drained
      for (ssize_t at = 0; at < length;) {
        const auto* event = reinterpret_cast<const inotify_event*>(buffer.data() + at);
        at += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
        if (event->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF | IN_Q_OVERFLOW)) {
          relevant = true;
          if (!(event->mask & IN_Q_OVERFLOW)) {  // the directory is gone: poll from now on
            inotify = unique_fd();
            polling.store(true, std::memory_order_relaxed);
            return true;
          }
        } else if (event->len > 0 && name == event->name) {
          relevant = true;
        }
      }
    }
    return relevant;
  }

  void run() {
    for (;;) {
      bool inotify_ready = false;
      const bool polling = inotify.get() < 0;
      if (!wait(polling ? static_cast<int>(options.poll_interval.count()) : -1, inotify_ready)) return;
      bool changed = false;
      if (polling) {
        const file_identity now = file_identity::of(file);
        changed = !(now == last);
        last = now;
      } else if (inotify_ready) {
        changed = read_events();
      }
      if (!changed) continue;
      // Let a burst of events settle: wait until the file has been quiet for `settle`.
      for (;;) {
        bool more = false;
        if (!wait(static_cast<int>(options.settle.count()), more)) return;
        if (!more || inotify.get() < 0) break;
        (void)read_events();
      }
      last = file_identity::of(file);
      on_change();
    }
  }
};

file_watch::file_watch(std::filesystem::path file, std::function<void()> on_change, file_watch_options options)
    : state_(std::make_unique<state>()) {
  state_->file = std::move(file);
  state_->name = state_->file.filename().string();
  state_->on_change = std::move(on_change);
  state_->options = options;
  state_->stop = unique_fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (state_->stop.get() < 0) throw std::system_error(errno, std::generic_category(), "postal::file_watch: eventfd");
  if (options.mode != watch_mode::poll) {
    std::filesystem::path directory = state_->file.parent_path();
    if (directory.empty()) directory = ".";
    unique_fd fd(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
    const int error = fd.get() < 0 || ::inotify_add_watch(fd.get(), directory.c_str(), inotify_events) < 0 ? errno : 0;
    if (error == 0) {
      state_->inotify = std::move(fd);
      state_->polling.store(false, std::memory_order_relaxed);
    } else if (options.mode == watch_mode::inotify) {
      throw std::system_error(error, std::generic_category(),
                              "postal::file_watch: cannot watch " + directory.string() + " with inotify");
    }
  }
  state_->last = file_identity::of(state_->file);
  state_->thread = std::thread([state = state_.get()] { state->run(); });
}

file_watch::~file_watch() {
  const std::uint64_t one = 1;
  (void)!::write(state_->stop.get(), &one, sizeof one);
  state_->thread.join();
}

watch_mode file_watch::mode() const noexcept {
  return state_->polling.load(std::memory_order_relaxed) ? watch_mode::poll : watch_mode::inotify;
}

}  // namespace postal
