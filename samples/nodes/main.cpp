// Two nodes, two processes: one publishes a ledger actor, the other looks it up and uses it through an
// ordinary actor_ref, then sees what a caller sees when the serving node is killed.
//   sample-nodes                        runs both: starts the serving node as a child process, talks to it,
//                                       kills it, and stops
//   sample-nodes --serve [--port P]     the serving node alone (Ctrl-C stops it)
//   sample-nodes --connect HOST:PORT    the asking node alone, against a serving node started elsewhere
// Every node of a cluster needs the same cookie: --cookie C, or POSTAL_COOKIE in the environment.
#include <postal/actor.hpp>
#include <postal/cluster.hpp>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>
#include <variant>

extern char** environ;

namespace {

// -- the messages, and how each crosses to another node ----------------------------------------------------
struct deposit {
  std::string account;
  std::int64_t amount = 0;
};
struct balance {
  std::string account;
  using reply_type = std::int64_t;  // the handler returns it; the reply travels back to the asking node
};
using ledger_message = std::variant<deposit, balance>;

template <class Inspector>
auto inspect(Inspector& f, deposit& x) {
  return f(x.account, x.amount);
}
template <class Inspector>
auto inspect(Inspector& f, balance& x) {
  return f(x.account);
}

class ledger : public postal::actor<ledger_message> {
 public:
  void handle(deposit& d) { accounts_[d.account] += d.amount; }
  std::int64_t handle(balance& b) { return accounts_[b.account]; }

 private:
  std::map<std::string, std::int64_t> accounts_;
};

std::string cookie_from(const std::map<std::string, std::string>& args) {
  if (auto found = args.find("--cookie"); found != args.end()) return found->second;
  if (const char* from_env = std::getenv("POSTAL_COOKIE")) return from_env;
  return "postal-sample-cookie";
}

int serve(const std::map<std::string, std::string>& args) {
  // Ctrl-C and SIGTERM are waited for below, not delivered: block them before the runtime's threads start.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  postal::runtime rt(postal::cluster::enable({.workers = 2}));
  const auto port = static_cast<std::uint16_t>(args.count("--port") ? std::stoi(args.at("--port")) : 0);
  postal::cluster::node node(rt, {.name = "ledger-node", .port = port, .cookie = cookie_from(args)});
  node.publish("ledger", postal::spawn_actor<ledger>(rt, postal::actor_options{.name = "ledger"}));
  std::printf("serving node: 'ledger' published on 127.0.0.1:%u\n", static_cast<unsigned>(node.port()));
  std::fflush(stdout);
  int received = 0;
  sigwait(&stop_signals, &received);
  std::printf("serving node: stopping\n");
  return 0;
}

int ask(const std::string& host, std::uint16_t port, const std::map<std::string, std::string>& args,
        pid_t server = -1) {
  postal::runtime rt(postal::cluster::enable({.workers = 2}));
  postal::cluster::node node(rt, {.name = "asking-node", .cookie = cookie_from(args)});
  auto peer = node.blocking_connect(host, port);
  if (!peer) {
    std::cerr << "asking node: cannot connect: " << peer.error().message << "\n";
    return 1;
  }
  std::cout << "asking node: connected to '" << peer->name << "'\n";
  auto found = node.blocking_lookup<ledger_message>(*peer, "ledger");
  if (!found) {
    std::cerr << "asking node: lookup failed: " << found.error().message << "\n";
    return 1;
  }
  postal::actor_ref<ledger_message> ledger = *found;  // the same type as a local actor's ref
  (void)ledger.blocking_tell(deposit{"alice", 70});
  (void)ledger.blocking_tell(deposit{"alice", -30});
  auto alice = ledger.blocking_ask(balance{"alice"});
  if (!alice) return 1;
  std::cout << "asking node: alice's balance, computed on the other node: " << *alice << "\n";
  if (server < 0) return 0;

  std::cout << "asking node: killing the serving node (kill -9)\n";
  ::kill(server, SIGKILL);
  ::waitpid(server, nullptr, 0);
  auto after = ledger.blocking_ask(balance{"alice"});
  std::cout << "asking node: an ask after that ends with "
            << (after ? "an answer?!" : after.error() == postal::ask_error::node_down ? "node_down" : "another error")
            << "; the ref's monitor says: " << ledger.monitor().blocking_exit().message << "\n";
  return after || after.error() != postal::ask_error::node_down ? 1 : 0;
}

// Runs this program again as the serving node, and reads the port it listens on from its first line.
int both(const std::map<std::string, std::string>& args, const char* self) {
  int out[2];
  if (::pipe(out) != 0) return 1;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  std::string cookie = cookie_from(args);
  char serve_flag[] = "--serve", cookie_flag[] = "--cookie";
  char* argv[] = {const_cast<char*>(self), serve_flag, cookie_flag, cookie.data(), nullptr};
  pid_t server = -1;
  const int spawned = posix_spawn(&server, self, &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(out[1]);
  if (spawned != 0) return 1;
  FILE* lines = ::fdopen(out[0], "r");
  char line[256] = {};
  unsigned port = 0;
  while (port == 0 && std::fgets(line, sizeof line, lines) != nullptr) {
    std::fputs(line, stdout);
    std::sscanf(line, "serving node: 'ledger' published on 127.0.0.1:%u", &port);
  }
  if (port == 0) {
    ::kill(server, SIGKILL);
    ::waitpid(server, nullptr, 0);
    return 1;
  }
  const int result = ask("127.0.0.1", static_cast<std::uint16_t>(port), args, server);
  std::fclose(lines);
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> args;
  for (int i = 1; i < argc; ++i) {
    std::string key = argv[i];
    args[key] = (i + 1 < argc && argv[i + 1][0] != '-') ? argv[++i] : "";
  }
  if (args.count("--serve")) return serve(args);
  if (auto target = args.find("--connect"); target != args.end()) {
    const auto colon = target->second.rfind(':');
    if (colon == std::string::npos) {
      std::cerr << "usage: sample-nodes --connect HOST:PORT\n";
      return 2;
    }
    return ask(target->second.substr(0, colon), static_cast<std::uint16_t>(std::stoi(target->second.substr(colon + 1))),
               args);
  }
  return both(args, argv[0]);
}
