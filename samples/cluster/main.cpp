// samples/cluster: one node of a distributed mini Redis. Each node is a process running kv-server (the mini
// Redis of samples/kv-server) on its own port; the key space is split over the nodes by hash, and a node
// that gets a command for a key it does not own asks the owner's shard through a remote ref (the command
// pattern across nodes). PUBLISH on any node reaches SUBSCRIBE on every node through a cluster group, and
// one node's configuration file (the greeting INFO shows) is followed by every other node.
//
//   sample-cluster --name node2 --nodes 3 --port 7402 --kv-port 6402 --seeds 127.0.0.1:7401,127.0.0.1:7402
//                  --cookie SECRET (--config cluster.json | --config-from node1) [--shards 2]
//                  [--heartbeat-ms 100] [--timeout-ms 1000] [CAF's options]
//
// Nodes are named node1 .. nodeN; node k owns the shards k*S .. k*S+S-1 of the N*S shards (S = --shards,
// the same on every node). It prints "ready" once it has joined and listens, and stops on SIGINT or
// SIGTERM (leaving the cluster). tour.sh starts a cluster of these and drives it with redis-cli.
#include "server.hpp"

#include <postal/cluster.hpp>
#include <postal/config.hpp>

#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace cluster_sample {

// The configuration every node follows: what INFO greets with. (Outside the anonymous namespace: the
// templates it is sent through are instantiated with it.)
struct cluster_settings {
  std::string greeting = "hello";
  friend bool operator==(const cluster_settings&, const cluster_settings&) = default;
};
void from_json(const nlohmann::json& j, cluster_settings& x) { j.at("greeting").get_to(x.greeting); }
template <class Inspector>
auto inspect(Inspector& f, cluster_settings& x) {
  return f(x.greeting);
}

}  // namespace cluster_sample

namespace {

using cluster_sample::cluster_settings;

struct arguments {
  std::string name;
  std::size_t nodes = 3;
  std::size_t shards = 2;
  std::uint16_t port = 0;
  std::uint16_t kv_port = 0;
  std::vector<std::string> seeds;
  std::string cookie;
  std::string config_file;
  std::string config_from;
  long heartbeat_ms = 100;
  long timeout_ms = 1000;
  std::vector<char*> caf;  // what is not ours goes to CAF
};

std::vector<std::string> split(const std::string& list) {
  std::vector<std::string> parts;
  for (std::size_t start = 0; start <= list.size();) {
    const auto comma = list.find(',', start);
    const auto end = comma == std::string::npos ? list.size() : comma;
    if (end > start) parts.push_back(list.substr(start, end - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return parts;
}

// The node's number (node3 -> 2), or nothing for a name that is not node1 .. nodeN.
std::optional<std::size_t> index_of(std::string_view name, std::size_t nodes) {
  if (name.rfind("node", 0) != 0) return std::nullopt;
  const std::string digits(name.substr(4));
  char* end = nullptr;
  const unsigned long number = std::strtoul(digits.c_str(), &end, 10);
  if (digits.empty() || *end != '\0' || number < 1 || number > nodes) return std::nullopt;
  return number - 1;
}

arguments parse(int argc, char** argv) {
  arguments args;
  args.caf.push_back(argv[0]);
  auto number = [](std::string_view flag, const char* text, long low, long high) {
    char* end = nullptr;
    const long value = std::strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || value < low || value > high)
      throw std::invalid_argument(std::string(flag) + ": expected a number from " + std::to_string(low) + " to " +
                                  std::to_string(high) + ", got '" + text + "'");
    return value;
  };
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (flag.rfind("--", 0) != 0 || flag.find('=') != std::string_view::npos || flag.rfind("--caf.", 0) == 0 ||
        flag.rfind("--scheduler.", 0) == 0 || flag.rfind("--middleman.", 0) == 0) {
      args.caf.push_back(argv[i]);
      continue;
    }
    if (i + 1 >= argc) throw std::invalid_argument(std::string(flag) + ": missing its value");
    const char* value = argv[++i];
    if (flag == "--name") args.name = value;
    else if (flag == "--nodes") args.nodes = static_cast<std::size_t>(number(flag, value, 1, 64));
    else if (flag == "--shards") args.shards = static_cast<std::size_t>(number(flag, value, 1, 64));
    else if (flag == "--port") args.port = static_cast<std::uint16_t>(number(flag, value, 0, 65535));
    else if (flag == "--kv-port") args.kv_port = static_cast<std::uint16_t>(number(flag, value, 0, 65535));
    else if (flag == "--seeds") args.seeds = split(value);
    else if (flag == "--cookie") args.cookie = value;
    else if (flag == "--config") args.config_file = value;
    else if (flag == "--config-from") args.config_from = value;
    else if (flag == "--heartbeat-ms") args.heartbeat_ms = number(flag, value, 1, 60'000);
    else if (flag == "--timeout-ms") args.timeout_ms = number(flag, value, 1, 600'000);
    else throw std::invalid_argument("unknown option " + std::string(flag));
  }
  if (!index_of(args.name, args.nodes))
    throw std::invalid_argument("--name: node1 .. node" + std::to_string(args.nodes) + " expected");
  if (args.config_file.empty() == args.config_from.empty())
    throw std::invalid_argument("give either --config FILE (this node is the source) or --config-from NODE");
  return args;
}

std::string shard_name(std::size_t shard) { return "kv.shard." + std::to_string(shard); }

// Keeps the shard table in step with the cluster: a member that comes up gets its shards looked up (the
// remote refs), one that goes down or leaves has its shards marked unreachable.
postal::task<void> follow_members(postal::cluster::node& node, std::shared_ptr<kv::shard_table> table,
                                  std::size_t nodes, std::size_t shards) {
  using postal::cluster::member;
  auto view = node.view();
  std::map<std::string, std::string> resolved;  // member name -> the node id whose shards the table holds
  for (;;) {
    const postal::cluster::cluster_view now = *view.borrow_and_update();
    for (const auto& entry : now.members) {
      auto index = index_of(entry.name, nodes);
      if (!index || entry.id == node.id()) continue;
      if (entry.status != member::status_type::up) {
        if (resolved.erase(entry.name) > 0)
          for (std::size_t s = 0; s < shards; ++s) table->set(*index * shards + s, {{}, entry.name});
        continue;
      }
      if (resolved.count(entry.name) && resolved[entry.name] == entry.id) continue;
      postal::cluster::peer at{entry.name, entry.id};
      bool all = true;
      for (std::size_t s = 0; s < shards && all; ++s) {
        auto ref = co_await node.lookup<kv::shard_message>(at, shard_name(*index * shards + s));
        if (ref)
          table->set(*index * shards + s, {std::move(*ref), entry.name});
        else
          all = false;
      }
      if (all) resolved[entry.name] = entry.id;
    }
    if (!co_await view.changed()) co_return;
  }
}

// Carries what any node publishes to this node's subscribers.
postal::task<void> deliver_published(postal::subscription<kv::published> subscription, kv::server& server) {
  for (;;) {
    auto next = co_await subscription.recv();
    if (next) {
      server.deliver(std::move(*next));
    } else if (next.error().is_closed()) {
      co_return;
    }  // lagged: a subscriber that fell behind misses messages, as with one server
  }
}

}  // namespace

int main(int argc, char** argv) {
  arguments args;
  try {
    args = parse(argc, argv);
  } catch (const std::exception& error) {
    std::cerr << "sample-cluster: " << error.what() << "\n";
    return 2;
  }
  // Block the stop signals in every thread (the runtime's threads inherit the mask), then wait for one here.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  postal::runtime rt(static_cast<int>(args.caf.size()), args.caf.data(),
                     postal::cluster::enable({.workers = 2}, {std::chrono::milliseconds(args.heartbeat_ms),
                                                              std::chrono::milliseconds(args.timeout_ms)}));
  if (rt.help_printed()) return 0;
  try {
    const std::size_t self = *index_of(args.name, args.nodes);
    postal::cluster::node node(rt, {.name = args.name, .port = args.port, .cookie = args.cookie});

    // This node's shards, published for the others; the table of every shard, others' unreachable until seen.
    kv::shard_table::entries entries;
    for (std::size_t i = 0; i < args.nodes * args.shards; ++i) entries.push_back({{}, "node" + std::to_string(i / args.shards + 1)});
    for (std::size_t s = 0; s < args.shards; ++s) {
      const std::size_t index = self * args.shards + s;
      entries[index].ref = postal::spawn_actor<kv::shard>(rt, postal::actor_options{});
      node.publish(shard_name(index), entries[index].ref);
    }
    auto table = std::make_shared<kv::shard_table>(std::move(entries));

    postal::cluster::groups groups(rt, node);
    auto pubsub = groups.topic<kv::published>("kv.pubsub");
    auto subscription = pubsub.subscribe();

    if (auto joined = node.blocking_join(args.seeds); !joined) {
      std::cerr << "sample-cluster: " << args.name << " could not join: " << joined.error().message << "\n";
      return 1;
    }
    rt.spawn_detached(follow_members(node, table, args.nodes, args.shards));

    // The configuration: this node's file, or the copy another node shares.
    std::optional<postal::config_handle<cluster_settings>> config;
    if (!args.config_file.empty()) {
      auto loaded = postal::spawn_config<cluster_settings>(rt, {.file = args.config_file});
      if (!loaded) {
        std::cerr << "sample-cluster: " << loaded.error().describe() << "\n";
        return 1;
      }
      postal::cluster::share_config(rt, node, "cluster", *loaded);
      config = std::move(*loaded);
    } else {
      auto followed = postal::cluster::blocking_follow_config<cluster_settings>(rt, node, "cluster", args.config_from);
      if (!followed) {
        std::cerr << "sample-cluster: " << followed.error().message << "\n";
        return 1;
      }
      config = std::move(*followed);
    }

    auto view = node.view();
    kv::server_options options{.port = args.kv_port, .shards = 0};
    options.table = table;
    options.publish = [pubsub](kv::published message) mutable { pubsub.publish(std::move(message)); };
    options.info = [config = *config, view, name = args.name]() {
      const auto status = config.status();
      std::string text = "node:" + name + "\r\ngreeting:" + config.get().greeting + "\r\nmembers_up:" +
                         std::to_string(view.borrow()->up()) + "\r\n";
      if (const auto& error = status.borrow()->error) text += "config_error:" + error->describe() + "\r\n";
      return text;
    };
    kv::server server(rt, options);
    rt.spawn_detached(deliver_published(std::move(subscription), server));

    std::cout << args.name << ": kv-server on 127.0.0.1:" << server.port() << ", cluster port " << node.port()
              << "\nready" << std::endl;
    int received = 0;
    sigwait(&stop_signals, &received);
    std::cout << args.name << ": stopping" << std::endl;
  } catch (const std::exception& error) {
    std::cerr << "sample-cluster: " << error.what() << "\n";
    return 1;
  }
  return 0;
}
