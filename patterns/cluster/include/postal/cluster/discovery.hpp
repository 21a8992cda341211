// How a node finds the members to join through, behind one small interface: a static seed list (the
// default, nothing else to run), or a Redis registry, so that the Redis a service already runs is its
// discovery.
//
//   postal::cluster::static_seeds seeds({"10.0.0.1:7100", "10.0.0.2:7100"});
//   co_await postal::cluster::join(node, seeds);
//
//   auto redis = postal::redis::spawn_connection_manager(rt, {.host = "10.0.0.9", .port = 6379});
//   postal::cluster::redis_registry registry(rt, redis, {.cluster = "orders"});
//   co_await postal::cluster::join(node, registry);     // joins through what the registry lists, then
//                                                        // keeps this node listed until the registry goes
//
// The Redis registry: each node keeps the key "<prefix><cluster>:node:<name>" = "host:port" with a TTL
// (refreshed every third of it, through the connection manager) and its name in the set
// "<prefix><cluster>:nodes"; a node that joins reads the set and the keys, and removes from the set the names
// whose key has expired (a node that died without leaving). Destroying the registry removes this node's key
// and name at once. The registry only says where to knock: admission (the cookie, TLS) and membership are
// the node's, as with seeds. A node that cannot reach Redis fails its join with `unreachable`.
// Not for: service discovery of anything other than cluster nodes.
#pragma once

#include <postal/cluster/node.hpp>
#include <postal/expected.hpp>
#include <postal/redis.hpp>
#include <postal/runtime.hpp>
#include <postal/task.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace postal::cluster {

/// Where a node finds members to join through.
class discovery {
 public:
  virtual ~discovery() = default;
  /// The addresses ("host:port") of nodes that may be members now; this node's own may be among them.
  virtual task<expected<std::vector<std::string>, cluster_error>> seeds() = 0;
  /// Called once `self` has joined (or started the cluster): make it findable by later nodes.
  virtual task<expected<void, cluster_error>> announce(node& self) = 0;
};

/// A fixed list of seeds; announcing does nothing (the list is the operator's).
class static_seeds final : public discovery {
 public:
  explicit static_seeds(std::vector<std::string> seeds) : seeds_(std::move(seeds)) {}
  task<expected<std::vector<std::string>, cluster_error>> seeds() override { co_return seeds_; }
  task<expected<void, cluster_error>> announce(node&) override { co_return expected<void, cluster_error>{}; }

 private:
  std::vector<std::string> seeds_;
};

struct redis_registry_options {
  /// The cluster's name: nodes of one cluster share it (several clusters may share one Redis).
  std::string cluster = "default";
  /// Prepended to every key.
  std::string prefix = "postal:cluster:";
  /// How long a node's key lives without a refresh: a node that dies stays listed at most this long.
  std::chrono::milliseconds ttl{10'000};
};

/// Discovery through a Redis server, over a connection manager (postal/redis.hpp).
class redis_registry final : public discovery {
 public:
  /// Throws std::invalid_argument for an empty cluster name or a TTL under 30 ms.
  redis_registry(runtime& rt, redis::connection redis, redis_registry_options options = {});
  /// Removes this node's key and name (a node that is going away is not offered to joiners).
  ~redis_registry() override;
  redis_registry(const redis_registry&) = delete;
  redis_registry& operator=(const redis_registry&) = delete;

  task<expected<std::vector<std::string>, cluster_error>> seeds() override;
  /// Lists `self` and keeps it listed (a task refreshes its key) until the registry is destroyed.
  task<expected<void, cluster_error>> announce(node& self) override;

  struct state;

 private:
  runtime& rt_;
  std::shared_ptr<state> state_;
};

/// Joins through what `through` lists (as node::join with those seeds), then announces this node there.
task<expected<void, cluster_error>> join(node& self, discovery& through);
/// join for plain threads.
expected<void, cluster_error> blocking_join(runtime& rt, node& self, discovery& through);

}  // namespace postal::cluster
