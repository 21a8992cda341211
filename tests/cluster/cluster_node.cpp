// A node for the cluster tests, run as a process of its own: it publishes a key-value actor as "kv", a
// consumer as "sink" (slowed down by --sink-delay-us), a counter as "counter" and a relay (which keeps a ref
// it is sent and uses it) as "relay" and its view of the cluster as "members", joins the cluster through
// --seeds (host:port,...), prints "port=<n>" once it listens, and runs until SIGTERM (it leaves the cluster
// and exits 0) or SIGKILL.
// usage: cluster-test-node --cookie C [--port P] [--name N] [--sink-delay-us D] [--heartbeat-ms H]
//                          [--timeout-ms T] [--seeds host:port,...]
#include "messages.hpp"

#include <postal/actor.hpp>
#include <postal/cluster.hpp>
#include <postal/time.hpp>

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using namespace cluster_test;

class kv_store : public postal::actor<kv_message> {
 public:
  void handle(put& m) { data_[m.key] = m.value; }
  void handle(get& m) {
    auto found = data_.find(m.key);
    (void)m.reply.send(found == data_.end() ? std::nullopt : std::optional<std::string>(found->second));
  }
  std::int64_t handle(add& m) { return m.a + m.b; }
  void handle(hold& m) { holds_.push_back(std::move(m.reply)); }
  std::uint64_t handle(held&) { return holds_.size(); }
  void handle(crash&) { throw std::runtime_error("asked to crash"); }

 private:
  std::map<std::string, std::string> data_;
  std::vector<postal::responder<std::int64_t>> holds_;
};

class sink : public postal::actor<sink_message> {
 public:
  explicit sink(std::chrono::microseconds delay) : delay_(delay) {}
  std::optional<postal::task<void>> handle(blob& m) { return take(m.sequence); }
  std::optional<postal::task<void>> handle(item& m) { return take(m.sequence); }
  std::pair<std::uint64_t, std::uint64_t> handle(tally&) { return {received_, out_of_order_}; }

 private:
  std::optional<postal::task<void>> take(std::uint64_t sequence) {
    if (sequence != next_) ++out_of_order_;
    next_ = sequence + 1;
    ++received_;
    if (delay_.count() == 0) return std::nullopt;
    return wait();
  }
  postal::task<void> wait() { co_await postal::sleep_for(delay_); }
  std::chrono::microseconds delay_;
  std::uint64_t next_ = 0;
  std::uint64_t received_ = 0;
  std::uint64_t out_of_order_ = 0;
};

class counter : public postal::actor<counter_message> {
 public:
  std::uint64_t handle(bump&) { return ++count_; }

 private:
  std::uint64_t count_ = 0;
};

class relay : public postal::actor<relay_message> {
 public:
  bool handle(keep& m) {
    kept_ = std::move(m.counter);
    return static_cast<bool>(kept_);
  }
  std::optional<postal::task<void>> handle(bump_kept& m) {
    if (!kept_) {
      (void)m.reply.send(0);
      return std::nullopt;
    }
    return bump_times(kept_, m.times, std::move(m.reply));
  }
  postal::actor_ref<counter_message> handle(give_back&) { return kept_; }
  bool handle(drop_kept&) {
    kept_ = {};
    return true;
  }

 private:
  static postal::task<void> bump_times(postal::actor_ref<counter_message> to, std::uint64_t times,
                                 postal::responder<std::uint64_t> reply) {
    std::uint64_t last = 0;
    for (std::uint64_t i = 0; i < times; ++i) {
      cluster_test::bump request;
      auto answer = co_await to.ask(std::move(request));
      if (!answer) break;
      last = *answer;
    }
    (void)reply.send(last);
  }
  postal::actor_ref<counter_message> kept_;
};

class members : public postal::actor<members_message> {
 public:
  explicit members(postal::watch::receiver<postal::cluster::cluster_view> view) : view_(std::move(view)) {}
  std::vector<std::string> handle(members_query&) {
    std::vector<std::string> list;
    auto view = view_.borrow();
    for (const auto& entry : view->members) {
      const char* status = entry.status == postal::cluster::member::status_type::up     ? "up"
                           : entry.status == postal::cluster::member::status_type::down ? "down"
                                                                                        : "left";
      list.push_back(entry.name + "=" + status);
    }
    return list;
  }

 private:
  postal::watch::receiver<postal::cluster::cluster_view> view_;
};

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> args;
  for (int i = 1; i + 1 < argc; i += 2) args[argv[i]] = argv[i + 1];
  auto number = [&](const char* name, long fallback) {
    auto found = args.find(name);
    return found == args.end() ? fallback : std::stol(found->second);
  };
  postal::cluster::failure_detection detection{std::chrono::milliseconds(number("--heartbeat-ms", 100)),
                                               std::chrono::milliseconds(number("--timeout-ms", 1000))};
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);  // before any thread exists: every thread inherits it
  postal::runtime rt(postal::cluster::enable({.workers = 2}, detection));
  postal::cluster::node node(rt, {.name = args.count("--name") ? args["--name"] : "node",
                                  .port = static_cast<std::uint16_t>(number("--port", 0)),
                                  .cookie = args["--cookie"]});
  node.publish("kv", postal::spawn_actor<kv_store>(rt, postal::actor_options{}));
  node.publish("sink", postal::spawn_actor<sink>(rt, postal::actor_options{.mailbox_capacity = 64},
                                                 std::chrono::microseconds(number("--sink-delay-us", 0))));
  node.publish("counter", postal::spawn_actor<counter>(rt, postal::actor_options{}));
  node.publish("relay", postal::spawn_actor<relay>(rt, postal::actor_options{}));
  node.publish("members", postal::spawn_actor<members>(rt, postal::actor_options{}, node.view()));
  if (args.count("--seeds")) {
    std::vector<std::string> seeds;
    const std::string list = args["--seeds"];
    for (std::size_t start = 0;;) {
      const auto comma = list.find(',', start);
      seeds.push_back(list.substr(start, comma - start));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    if (auto joined = node.blocking_join(seeds); !joined) {
      std::fprintf(stderr, "join failed: %s\n", joined.error().message.c_str());
      return 1;
    }
  }
  std::printf("port=%u\n", static_cast<unsigned>(node.port()));
  std::fflush(stdout);
  int signal = 0;
  sigwait(&stop_signals, &signal);  // SIGTERM: the node leaves the cluster as it is destroyed
  return 0;
}
