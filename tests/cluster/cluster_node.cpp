// A node for the cluster tests, run as a process of its own: it publishes a key-value actor as "kv", a
// consumer as "sink" (slowed down by --sink-delay-us), a counter as "counter" and a relay (which keeps a ref
// it is sent and uses it) as "relay" and its view of the cluster as "members"; it makes the cluster topic
// "news" (capacity --news-capacity) with two member actors (slowed down by --news-delay-us) reported by its
// "news" actor; it shares the configuration "app" from --config-file or follows it from the node
// --follow-config names (reported by its "config" actor). It joins the cluster through --seeds
// (host:port,...) or through a Redis registry (--registry-port), prints "port=<n>" once it listens, and runs
// until SIGTERM (it leaves the cluster and exits 0) or SIGKILL.
// usage: cluster-test-node --cookie C [--port P] [--name N] [--sink-delay-us D] [--heartbeat-ms H]
//                          [--timeout-ms T] [--seeds host:port,...] [--news-capacity C] [--news-delay-us D]
//                          [--config-file F | --follow-config SOURCE-NODE-NAME]
//                          [--registry-port REDIS-PORT [--registry-ttl-ms T]]
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
#include <memory>
#include <mutex>
#include <optional>
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

// What the node's member actors of "news" got, shared with the "news" actor that reports it.
struct news_tallies {
  std::mutex lock;
  std::vector<std::uint64_t> received = std::vector<std::uint64_t>(2);
  std::vector<std::uint64_t> missed = std::vector<std::uint64_t>(2);
  std::uint64_t out_of_order = 0;
  std::optional<std::uint64_t> first;
  std::map<std::string, std::uint64_t> last;  // per publisher and member: the last sequence
};

using news_member_message = std::variant<news, postal::group_lagged>;

class news_member : public postal::actor<news_member_message> {
 public:
  news_member(std::shared_ptr<news_tallies> tallies, std::size_t index, std::chrono::microseconds delay)
      : tallies_(std::move(tallies)), index_(index), delay_(delay) {}
  std::optional<postal::task<void>> handle(news& m) {
    {
      std::lock_guard guard(tallies_->lock);
      ++tallies_->received[index_];
      if (!tallies_->first) tallies_->first = m.sequence;
      const std::string key = m.from + "/" + std::to_string(index_);
      auto last = tallies_->last.find(key);
      if (last != tallies_->last.end() && m.sequence <= last->second) ++tallies_->out_of_order;
      tallies_->last[key] = m.sequence;
    }
    if (delay_.count() == 0) return std::nullopt;
    return wait();
  }
  void handle(postal::group_lagged& m) {
    std::lock_guard guard(tallies_->lock);
    tallies_->missed[index_] += m.missed;
  }

 private:
  postal::task<void> wait() { co_await postal::sleep_for(delay_); }
  std::shared_ptr<news_tallies> tallies_;
  std::size_t index_;
  std::chrono::microseconds delay_;
};

class news_desk : public postal::actor<news_message> {
 public:
  news_desk(std::shared_ptr<news_tallies> tallies, postal::cluster::topic<news> topic, std::string name)
      : tallies_(std::move(tallies)), topic_(std::move(topic)), name_(std::move(name)) {}
  news_report handle(news_tally&) {
    news_report report;
    std::lock_guard guard(tallies_->lock);
    report.received = tallies_->received;
    report.missed = tallies_->missed;
    report.out_of_order = tallies_->out_of_order;
    report.first = tallies_->first.value_or(0);
    const auto stats = topic_.stats();
    report.published_here = stats.here.published;
    report.nodes = stats.nodes;
    return report;
  }
  std::uint64_t handle(publish_news& m) {
    for (std::uint64_t i = 0; i < m.count; ++i) topic_.publish(news{name_, m.first + i});
    return m.count;
  }

 private:
  std::shared_ptr<news_tallies> tallies_;
  postal::cluster::topic<news> topic_;
  std::string name_;
};

// What this node's handle of the configuration "app" holds.
class config_desk : public postal::actor<config_message> {
 public:
  explicit config_desk(postal::config_handle<app_settings> handle) : handle_(std::move(handle)) {}
  config_report handle(config_query&) {
    config_report report;
    report.value = handle_.get();
    auto status = handle_.status();
    auto now = status.borrow();
    if (now->error) report.error = now->error->describe();
    report.loads = now->loads;
    report.failures = now->failures;
    return report;
  }

 private:
  postal::config_handle<app_settings> handle_;
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
  // The cluster topic "news", with two member actors (slowed down by --news-delay-us) and the "news" desk.
  postal::cluster::groups groups(rt, node);
  auto topic = groups.topic<news>("news", static_cast<std::size_t>(number("--news-capacity", 1024)));
  auto tallies = std::make_shared<news_tallies>();
  std::vector<postal::group_membership> memberships;
  for (std::size_t i = 0; i < 2; ++i)
    memberships.push_back(topic.join(rt, postal::spawn_actor<news_member>(
                                             rt, postal::actor_options{.mailbox_capacity = 16}, tallies, i,
                                             std::chrono::microseconds(number("--news-delay-us", 0)))));
  node.publish("news", postal::spawn_actor<news_desk>(rt, postal::actor_options{}, tallies, topic, node.name()));
  // Discovery through a Redis registry at 127.0.0.1:--registry-port (TTL --registry-ttl-ms), instead of seeds.
  std::optional<postal::cluster::redis_registry> registry;
  if (args.count("--registry-port")) {
    auto redis = postal::redis::spawn_connection_manager(
        rt, {.host = "127.0.0.1", .port = static_cast<std::uint16_t>(number("--registry-port", 0))});
    registry.emplace(rt, redis,
                     postal::cluster::redis_registry_options{
                         .cluster = "tests", .ttl = std::chrono::milliseconds(number("--registry-ttl-ms", 10'000))});
    if (auto joined = postal::cluster::blocking_join(rt, node, *registry); !joined) {
      std::fprintf(stderr, "join through the registry failed: %s\n", joined.error().message.c_str());
      return 1;
    }
  }
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
  // The configuration "app": shared from --config-file, or followed from the node named --follow-config.
  std::optional<postal::config_handle<app_settings>> config;
  if (args.count("--config-file")) {
    auto loaded = postal::spawn_config<app_settings>(rt, {.file = args["--config-file"]});
    if (!loaded) {
      std::fprintf(stderr, "config: %s\n", loaded.error().describe().c_str());
      return 1;
    }
    postal::cluster::share_config(rt, node, "app", *loaded);
    config = std::move(*loaded);
  } else if (args.count("--follow-config")) {
    auto followed = postal::cluster::blocking_follow_config<app_settings>(rt, node, "app", args["--follow-config"]);
    if (!followed) {
      std::fprintf(stderr, "follow config: %s\n", followed.error().message.c_str());
      return 1;
    }
    config = std::move(*followed);
  }
  if (config) node.publish("config", postal::spawn_actor<config_desk>(rt, postal::actor_options{}, *config));
  std::printf("port=%u\n", static_cast<unsigned>(node.port()));
  std::fflush(stdout);
  int signal = 0;
  sigwait(&stop_signals, &signal);  // SIGTERM: the node leaves the cluster as it is destroyed
  return 0;
}
