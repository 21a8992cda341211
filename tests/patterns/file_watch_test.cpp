// Tests of postal::file_watch on its own: a write to the file, a rename over it (as editors save), a deletion
// and a re-creation are each reported (once each with inotify), in inotify and in poll mode; changes to OTHER
// files of the same directory are not reported as the file's; automatic mode and its fallback to polling. The callback records what the file held when it ran, and the test
// waits for the record it expects through a condition variable: the time limit only bounds a failing test,
// never a sleep. Each change is made after the callback of the previous one ran, so a correct watch makes
// exactly one call per change, whatever the timing.
#include "support/files.hpp"

#include <postal/file_watch.hpp>

#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <random>
#include <string>
#include <system_error>
#include <vector>

namespace {

namespace fs = std::filesystem;
using postal::file_watch;
using postal::file_watch_options;
using postal::watch_mode;

constexpr auto bound = std::chrono::seconds(20);  // only a failing test waits this long

// A fresh directory per test, removed afterwards.
struct scratch_dir : test_support::scratch_dir {
  scratch_dir() : test_support::scratch_dir("postal-file-watch-test") {}
};
using test_support::write_by_rename;
using test_support::write_in_place;
std::string read_or_missing(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return "<missing>";
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// What the callbacks saw: the file's content at each call, in order.
class recorder {
 public:
  explicit recorder(fs::path file) : file_(std::move(file)) {}

  void on_change() {
    std::string content = read_or_missing(file_);
    std::lock_guard lock(mutex_);
    seen_.push_back(std::move(content));
    changed_.notify_all();
  }
  // Waits (at most `bound`) until a call saw `content`; true if one did.
  bool wait_for(const std::string& content) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, bound, [&] {
      for (const std::string& s : seen_)
        if (s == content) return true;
      return false;
    });
  }
  std::vector<std::string> seen() {
    std::lock_guard lock(mutex_);
    return seen_;
  }

 private:
  fs::path file_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::string> seen_;
};

}  // namespace

TEST_CASE("file_watch: inotify reports a write, a rename over, a deletion and a re-creation once each",
          "[file_watch]") {
  scratch_dir dir;
  const fs::path file = dir.path / "watched.json";
  write_in_place(file, "0");
  recorder calls(file);
  file_watch_options options;
  options.mode = watch_mode::inotify;
  file_watch watch(file, [&] { calls.on_change(); }, options);
  REQUIRE(watch.mode() == watch_mode::inotify);

  // A write in place is one event, when the file is closed: the call sees the whole content.
  write_in_place(file, "11");
  REQUIRE(calls.wait_for("11"));
  write_by_rename(file, "222");
  REQUIRE(calls.wait_for("222"));
  fs::remove(file);
  REQUIRE(calls.wait_for("<missing>"));
  write_by_rename(file, "4444");  // re-created whole (created in place, it could be seen empty first)
  REQUIRE(calls.wait_for("4444"));
  CHECK(calls.seen() == std::vector<std::string>{"11", "222", "<missing>", "4444"});
}

TEST_CASE("file_watch: poll mode sees a write, a rename over, a deletion and a re-creation", "[file_watch]") {
  scratch_dir dir;
  const fs::path file = dir.path / "watched.json";
  write_in_place(file, "0");
  recorder calls(file);
  file_watch_options options;
  options.mode = watch_mode::poll;
  options.poll_interval = std::chrono::milliseconds(10);
  file_watch watch(file, [&] { calls.on_change(); }, options);
  REQUIRE(watch.mode() == watch_mode::poll);

  // Contents of different sizes: polling compares the size too, whatever the timestamps' granularity.
  write_in_place(file, "11");
  REQUIRE(calls.wait_for("11"));
  write_by_rename(file, "222");
  REQUIRE(calls.wait_for("222"));
  fs::remove(file);
  REQUIRE(calls.wait_for("<missing>"));
  write_by_rename(file, "4444");
  REQUIRE(calls.wait_for("4444"));
  // A poll may land between the truncation and the write of a write in place (the file is empty then), and
  // report that state, then the written one: drop empty contents and repeats, the changes remain in order.
  std::vector<std::string> changes;
  for (std::string& content : calls.seen()) {
    if (!content.empty() && (changes.empty() || changes.back() != content)) changes.push_back(std::move(content));
  }
  CHECK(changes == std::vector<std::string>{"11", "222", "<missing>", "4444"});
}

TEST_CASE("file_watch: changes to other files of the directory are not the file's", "[file_watch]") {
  scratch_dir dir;
  const fs::path file = dir.path / "app.json";
  write_in_place(file, "first");
  recorder calls(file);
  file_watch_options options;
  options.mode = watch_mode::inotify;
  // No settle time: a callback runs as soon as the events read concern the file, so an event of another
  // file taken for the file's would show as a call of its own (it could not hide in the next real change).
  options.settle = std::chrono::milliseconds(0);
  file_watch watch(file, [&] { calls.on_change(); }, options);
  REQUIRE(watch.mode() == watch_mode::inotify);

  write_in_place(file, "second");
  REQUIRE(calls.wait_for("second"));
  // Siblings, among them names that begin or end like the file's: written, renamed over, deleted.
  for (const char* name : {"app.json.tmp", "app.jso", "app.json~", "other.json", "xapp.json"}) {
    write_in_place(dir.path / name, "sibling");
    write_by_rename(dir.path / name, "sibling, renamed over");
    fs::remove(dir.path / name);
  }
  fs::create_directory(dir.path / "app.json.d");
  fs::remove(dir.path / "app.json.d");
  // The next change of the file itself: every sibling event came before it, so once its call has run, any
  // call for a sibling would have run too.
  write_in_place(file, "third");
  REQUIRE(calls.wait_for("third"));
  CHECK(calls.seen() == std::vector<std::string>{"second", "third"});
}

TEST_CASE("file_watch: automatic mode uses inotify where it can; a file not there yet is watched",
          "[file_watch]") {
  scratch_dir dir;
  const fs::path file = dir.path / "later.json";
  recorder calls(file);
  file_watch watch(file, [&] { calls.on_change(); });
  CHECK(watch.mode() == watch_mode::inotify);
  write_by_rename(file, "created");
  REQUIRE(calls.wait_for("created"));
  CHECK(calls.seen() == std::vector<std::string>{"created"});
}

TEST_CASE("file_watch: inotify mode fails with system_error when the directory cannot be watched",
          "[file_watch]") {
  scratch_dir dir;
  const fs::path file = dir.path / "no-such-dir" / "app.json";
  file_watch_options options;
  options.mode = watch_mode::inotify;
  CHECK_THROWS_AS(file_watch(file, [] {}, options), std::system_error);
  // Automatic mode falls back to polling the file's metadata.
  file_watch polled(file, [] {});
  CHECK(polled.mode() == watch_mode::poll);
}

TEST_CASE("file_watch: destroying the watch while the file changes stops its thread", "[file_watch]") {
  const auto mode = GENERATE(watch_mode::inotify, watch_mode::poll);
  scratch_dir dir;
  const fs::path file = dir.path / "app.json";
  write_in_place(file, "0");
  file_watch_options options;
  options.mode = mode;
  options.poll_interval = std::chrono::milliseconds(1);
  recorder calls(file);
  {
    file_watch watch(file, [&] { calls.on_change(); }, options);
    for (int i = 1; i <= 20; ++i) write_by_rename(file, std::string(static_cast<std::size_t>(i), 'x'));
  }  // joins the thread: returns even with events pending, or the test hangs
  const std::size_t calls_at_destruction = calls.seen().size();
  write_by_rename(file, "after");
  CHECK(calls.seen().size() == calls_at_destruction);  // the thread is gone: nothing can call any more
}
