// Discovery (postal/cluster/discovery.hpp): joining through what a discovery lists, and the Redis registry
// over a connection manager. No CAF header here.
#include <postal/cluster/discovery.hpp>

#include <postal/oneshot.hpp>
#include <postal/time.hpp>

#include <stdexcept>
#include <utility>

namespace postal::cluster {

struct redis_registry::state {
  redis::connection redis;
  redis_registry_options options;
  std::atomic<bool> stopped{false};
  std::string own_name;  // set by announce
  std::string set_key() const { return options.prefix + options.cluster + ":nodes"; }
  std::string node_key(const std::string& name) const { return options.prefix + options.cluster + ":node:" + name; }
};

namespace {

cluster_error registry_error(const redis::error& error) {
  return cluster_error{cluster_error::kind_type::unreachable, "the Redis registry cannot be read: " + error.message};
}

// Keeps this node's key alive: SET with the TTL and SADD, every third of the TTL, until the registry goes.
task<void> refresh(std::shared_ptr<redis_registry::state> state, std::string address) {
  const auto period = state->options.ttl / 3;
  while (!state->stopped.load(std::memory_order_acquire)) {
    co_await sleep_for(period);
    if (state->stopped.load(std::memory_order_acquire)) break;
    redis::set keep{state->node_key(state->own_name), address, {}, state->options.ttl};
    (void)co_await redis::query(state->redis, std::move(keep));  // a failure: tried again next period
    redis::raw add{{"SADD", state->set_key(), state->own_name}, {}};
    (void)co_await redis::query(state->redis, std::move(add));
  }
}

}  // namespace

redis_registry::redis_registry(runtime& rt, redis::connection redis, redis_registry_options options)
    : rt_(rt), state_(std::make_shared<state>()) {
  if (options.cluster.empty()) throw std::invalid_argument("postal::cluster::redis_registry: an empty cluster name");
  if (options.ttl < std::chrono::milliseconds(30))
    throw std::invalid_argument("postal::cluster::redis_registry: a TTL under 30 ms");
  state_->redis = std::move(redis);
  state_->options = std::move(options);
}

redis_registry::~redis_registry() {
  state_->stopped.store(true, std::memory_order_release);
  if (state_->own_name.empty()) return;
  // Told, not awaited (a destructor cannot wait on a worker): a full mailbox leaves the key to its TTL.
  auto [deleted, ignored_delete] = oneshot::channel<redis::result<std::int64_t>>();
  (void)state_->redis.try_tell(redis::del{{state_->node_key(state_->own_name)}, std::move(deleted)});
  auto [removed, ignored_remove] = oneshot::channel<redis::result<resp::value>>();
  (void)state_->redis.try_tell(redis::raw{{"SREM", state_->set_key(), state_->own_name}, std::move(removed)});
}

task<expected<std::vector<std::string>, cluster_error>> redis_registry::seeds() {
  auto state = state_;
  redis::raw members{{"SMEMBERS", state->set_key()}, {}};
  auto names = co_await redis::query(state->redis, std::move(members));
  if (!names) co_return unexpected{registry_error(names.error())};
  std::vector<std::string> addresses;
  for (const auto& name : names->elements) {
    redis::get address{state->node_key(name.text), {}};
    auto found = co_await redis::query(state->redis, std::move(address));
    if (!found) co_return unexpected{registry_error(found.error())};
    if (*found) {
      addresses.push_back(**found);
    } else {  // its key expired: a node that died without leaving
      redis::raw forget{{"SREM", state->set_key(), name.text}, {}};
      (void)co_await redis::query(state->redis, std::move(forget));
    }
  }
  co_return addresses;
}

task<expected<void, cluster_error>> redis_registry::announce(node& self) {
  auto state = state_;
  state->own_name = self.name();
  const std::string address = self.address();
  redis::set listed{state->node_key(state->own_name), address, {}, state->options.ttl};
  auto stored = co_await redis::query(state->redis, std::move(listed));
  if (!stored) co_return unexpected{registry_error(stored.error())};
  redis::raw add{{"SADD", state->set_key(), state->own_name}, {}};
  auto added = co_await redis::query(state->redis, std::move(add));
  if (!added) co_return unexpected{registry_error(added.error())};
  rt_.spawn_detached(refresh(state, address));
  co_return expected<void, cluster_error>{};
}

task<expected<void, cluster_error>> join(node& self, discovery& through) {
  auto seeds = co_await through.seeds();
  if (!seeds) co_return unexpected{std::move(seeds.error())};
  // This node's own address goes in too: when no listed node answers (none is listed, or the listed ones
  // died within their TTL), this node starts the cluster.
  seeds->push_back(self.address());
  auto joined = co_await self.join(std::move(*seeds));
  if (!joined) co_return joined;
  co_return co_await through.announce(self);
}

expected<void, cluster_error> blocking_join(runtime& rt, node& self, discovery& through) {
  return rt.block_on(join(self, through));
}

}  // namespace postal::cluster
