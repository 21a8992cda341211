// Another process of this benchmark program (a node of the cluster scenarios), started with `args` and
// always stopped by pid with this object. It reports what it must on its standard output as "key=value"
// lines, the first being "port=<n>"; closing its standard input tells it to finish.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "bench.hpp"

extern char** environ;

namespace bench {

/// In a node process: says "port=<port>" to the process that started it, then serves until that process
/// closes this one's standard input (or ends).
inline void report_port_and_serve(std::uint16_t port) {
  std::printf("port=%u\n", static_cast<unsigned>(port));
  std::fflush(stdout);
  char byte;
  while (::read(STDIN_FILENO, &byte, 1) > 0) {
  }
}

class node_process {
 public:
  explicit node_process(std::vector<std::string> args) {
    int to_child[2], from_child[2];
    if (::pipe2(to_child, O_CLOEXEC) != 0 || ::pipe2(from_child, O_CLOEXEC) != 0) fail("pipe");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, to_child[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, from_child[1], STDOUT_FILENO);
    std::string self = program_path();
    std::vector<char*> argv{self.data()};
    for (auto& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    if (posix_spawn(&pid_, self.c_str(), &actions, nullptr, argv.data(), environ) != 0)
      fail("cannot start a node process");
    posix_spawn_file_actions_destroy(&actions);
    ::close(to_child[0]);
    ::close(from_child[1]);
    stdin_ = to_child[1];
    out_ = ::fdopen(from_child[0], "r");
    const std::string port = value("port");
    if (port.empty()) fail("a node process did not start");
    port_ = static_cast<std::uint16_t>(std::stoul(port));
  }
  node_process(const node_process&) = delete;
  node_process& operator=(const node_process&) = delete;
  ~node_process() {
    finish();
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (out_ != nullptr) std::fclose(out_);
  }
  std::uint16_t port() const noexcept { return port_; }
  /// The value of the "key=value" line `key`, reading lines until it comes (empty if the process ends first).
  std::string value(const std::string& key) {
    for (;;) {
      if (auto found = values_.find(key); found != values_.end()) return found->second;
      char line[256];
      if (std::fgets(line, sizeof line, out_) == nullptr) return {};
      std::string text(line);
      while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
      if (auto equals = text.find('='); equals != std::string::npos)
        values_[text.substr(0, equals)] = text.substr(equals + 1);
    }
  }
  /// Closes its standard input: it finishes (a node leaves its cluster) and exits.
  void finish() {
    if (stdin_ >= 0) ::close(stdin_);
    stdin_ = -1;
  }
  /// Waits until it has exited.
  void wait() {
    if (pid_ > 0) ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  /// Its resident memory at its peak, in MB.
  double peak_mb() const {
    std::ifstream status("/proc/" + std::to_string(pid_) + "/status");
    std::string line;
    while (std::getline(status, line))
      if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024;
    return 0;
  }

 private:
  pid_t pid_ = -1;
  int stdin_ = -1;
  std::FILE* out_ = nullptr;
  std::uint16_t port_ = 0;
  std::map<std::string, std::string> values_;
};

}  // namespace bench
