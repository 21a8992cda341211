// postal::file_watch: calls back when one file changes: written and closed, renamed over (the way editors
// save), created, deleted or renamed away. Uses inotify on the file's directory (so a rename over the file is
// seen as a change, not a deletion), and polls the file's metadata when inotify is not available or when
// asked to. Events that arrive close together are coalesced into one call, after the file has been quiet
// for a short settle time, so an editor's delete-then-create is one change rather than a deletion.
// Not for: watching directories or many files (one thread per watch).
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>

namespace postal {

/// How a file_watch learns about changes.
enum class watch_mode {
  automatic,  // inotify, or polling where inotify cannot watch the directory
  inotify,    // inotify only; constructing the watch fails (std::system_error) if it cannot
  poll,       // compare the file's metadata (inode, size, modification time) every poll interval
};

struct file_watch_options {
  watch_mode mode = watch_mode::automatic;
  /// How often polling looks at the file.
  std::chrono::milliseconds poll_interval{250};
  /// How long the file must be quiet after an event before the callback runs (coalescing bursts).
  std::chrono::milliseconds settle{5};
};

/// Watches one file on a thread of its own and calls `on_change` (on that thread) after each change.
/// Destroying the watch stops the thread and waits for it; no callback runs after the destructor returns.
class file_watch {
 public:
  file_watch(std::filesystem::path file, std::function<void()> on_change, file_watch_options options = {});
  ~file_watch();
  file_watch(const file_watch&) = delete;
  file_watch& operator=(const file_watch&) = delete;

  /// The mode in use: inotify or poll (never automatic).
  watch_mode mode() const noexcept;

 private:
  struct state;
  std::unique_ptr<state> state_;
};

}  // namespace postal
