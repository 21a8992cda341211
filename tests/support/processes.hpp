// Test support: real programs started by a test. A redis-server on 127.0.0.1 and a free port (no disk
// persistence), which can be killed and started again on the same port; and running a command line (the real
// redis-cli) for its output, or in the background with its output read line by line.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace test_support {

/// A TCP port on 127.0.0.1 that nothing listens on right now.
inline std::uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) throw std::runtime_error("bind");
  socklen_t length = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

/// A child process whose stdout (and stderr) is read line by line on a thread of its own.
class child_process {
 public:
  explicit child_process(std::vector<std::string> argv) {
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDERR_FILENO);
    std::vector<char*> args;
    for (auto& arg : argv) args.push_back(arg.data());
    args.push_back(nullptr);
    const int spawned = ::posix_spawnp(&pid_, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(pipe_fds[1]);
    if (spawned != 0) {
      ::close(pipe_fds[0]);
      throw std::runtime_error("cannot start " + argv[0]);
    }
    reader_ = std::thread([this, fd = pipe_fds[0]] { read_lines(fd); });
  }
  ~child_process() {
    kill(SIGKILL);
    if (reader_.joinable()) reader_.join();
  }
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  /// Waits until a line containing `text` was printed (or the process ended, or `limit` passed); true if it
  /// was.
  bool wait_for_line(const std::string& text, std::chrono::seconds limit = std::chrono::seconds(60)) {
    std::unique_lock lock(lock_);
    changed_.wait_for(lock, limit, [&] { return ended_ || contains(text); });
    return contains(text);
  }
  /// The lines printed so far.
  std::vector<std::string> lines() {
    std::lock_guard lock(lock_);
    return lines_;
  }
  /// Sends `signal` without waiting for the process to end (SIGSTOP, SIGCONT).
  void signal(int signal) {
    if (pid_ > 0) ::kill(pid_, signal);
  }
  pid_t pid() const noexcept { return pid_; }
  /// Stops the process with `signal` and waits for its end.
  void kill(int signal) {
    if (pid_ > 0) {
      ::kill(pid_, signal);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }

 private:
  bool contains(const std::string& text) const {
    for (auto& line : lines_)
      if (line.find(text) != std::string::npos) return true;
    return false;
  }
  void read_lines(int fd) {
    std::string pending;
    char buffer[4096];
    for (;;) {
      const ssize_t got = ::read(fd, buffer, sizeof buffer);
      if (got <= 0) break;
      pending.append(buffer, static_cast<std::size_t>(got));
      std::size_t end;
      while ((end = pending.find('\n')) != std::string::npos) {
        std::lock_guard lock(lock_);
        lines_.push_back(pending.substr(0, end));
        pending.erase(0, end + 1);
        changed_.notify_all();
      }
    }
    ::close(fd);
    std::lock_guard lock(lock_);
    if (!pending.empty()) lines_.push_back(pending);
    ended_ = true;
    changed_.notify_all();
  }

  pid_t pid_ = -1;
  std::mutex lock_;
  std::condition_variable changed_;
  std::vector<std::string> lines_;
  bool ended_ = false;
  std::thread reader_;
};

/// A real redis-server on 127.0.0.1:port(), without persistence. Ready when constructed (it has logged that
/// it accepts connections); stop() kills it (SIGKILL) and start() starts it again on the same port.
class redis_server {
 public:
  redis_server() : port_(free_port()) { start(); }
  void start() {
    process_.reset();
    process_ = std::make_unique<child_process>(std::vector<std::string>{
        "redis-server", "--port", std::to_string(port_), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--daemonize", "no", "--loglevel", "notice", "--protected-mode", "no"});
    if (!process_->wait_for_line("Ready to accept connections"))
      throw std::runtime_error("redis-server did not start on port " + std::to_string(port_));
  }
  void stop() { process_.reset(); }
  std::uint16_t port() const noexcept { return port_; }

 private:
  std::uint16_t port_;
  std::unique_ptr<child_process> process_;
};

/// Runs a command line and returns what it printed (stdout).
inline std::string output_of(const std::string& command) {
  std::string output;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) throw std::runtime_error("popen " + command);
  char buffer[4096];
  std::size_t got;
  while ((got = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) output.append(buffer, got);
  ::pclose(pipe);
  return output;
}

}  // namespace test_support
