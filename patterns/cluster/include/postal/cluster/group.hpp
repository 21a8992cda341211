// postal::cluster::groups: pub/sub topics across the members of a cluster. A topic of this registry is a
// local topic (postal/group.hpp) on every node that made it, joined up: every publish on any node reaches
// every subscriber and member actor of the topic on every node, in publish order per publisher.
//
//   postal::cluster::groups groups(rt, node);              // after node.join(...): one per node
//   auto prices = groups.topic<price>("prices");           // price needs an inspect overload to cross
//   auto sub = prices.subscribe();                         // this node's subscribers, as with local topics
//   prices.publish(price{"ACME", 12.5});                   // -> how many subscribers on this node it reached
//
// A publish crosses each link once: it is sent to each other member that has the topic, once, and that
// node's local broadcast gives it to its subscribers there. On each node a relay actor, published as
// "postal.topic.<name>", takes the messages from the others; a forwarding task per other member takes this
// node's publishes from an outbox (a broadcast channel of the topic's capacity) and tells them through a
// remote ref to that member's relay, so a slow or frozen member holds at most its credit window on the
// wire and the outbox's capacity here: when it falls further behind, it misses the oldest messages
// (counted in stats().missed_by_links), and the other members are not slowed. A member that goes down ends
// its forwarding task and disturbs no one else; a member that joins (or comes back) later gets what is
// published after its forwarding task started. Subscribers lag, and are told so, as on local topics.
//
// Members find each other's topics through a directory actor each node publishes as "postal.groups": a node
// that makes a topic tells every member that is up, and every member that comes up later; one that has the
// topic starts forwarding to it and answers the same way. Topic names must be made with the same message
// type on every node (a member whose type differs is refused and counted in stats().refused).
// Not for: delivery guarantees (a topic never waits for a subscriber; use a remote actor ref for that).
#pragma once

#include <postal/actor.hpp>
#include <postal/broadcast.hpp>
#include <postal/cluster/node.hpp>
#include <postal/group.hpp>
#include <postal/runtime.hpp>
#include <postal/task.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace postal::cluster {

/// A cluster topic's counters on this node.
struct topic_stats {
  postal::topic_stats here;          // this node's local topic: publishes (its own and relayed), subscribers
  std::size_t nodes = 0;             // other members this node forwards its publishes to
  std::uint64_t missed_by_links = 0;  // publishes a member's link fell too far behind to carry
  std::uint64_t refused = 0;          // members that made this topic with another message type
};

namespace detail {
// "I have this topic": told to a member's directory.
struct topic_hello {
  std::string topic;
  std::string signature;  // the topic's message type, as signature<std::variant<T>>()
  std::string from_name;
  std::string from_id;
};
template <class Inspector>
auto inspect(Inspector& f, topic_hello& x) {
  return f(x.topic, x.signature, x.from_name, x.from_id);
}
using directory_message = std::variant<topic_hello>;

// The counters one topic shares between its handles and its forwarding tasks.
struct topic_counters {
  std::atomic<std::size_t> nodes{0};
  std::atomic<std::uint64_t> missed_by_links{0};
  std::atomic<std::uint64_t> refused{0};
};

// What the registry keeps of every topic without knowing its type (src/groups.cpp).
class groups_core : public std::enable_shared_from_this<groups_core> {
 public:
  // Set when a forwarding task must end (its member went down or left): it ends at its next message.
  using cancel_flag = std::shared_ptr<std::atomic<bool>>;
  // Starts forwarding the topic's publishes to `to`; the task calls forwarder_ended when it ends.
  using forward_fn = std::function<void(const peer& to, cancel_flag cancelled)>;

  groups_core(runtime& rt, node& n) : rt_(rt), node_(n) {}
  // Publishes the directory and follows the view (tells members that come up which topics this node has).
  void start();
  // Kills the directory and the relays.
  void stop();
  // A topic made on this node: remembered, and every member that is up is told.
  void add_topic(const std::string& name, std::string signature, std::shared_ptr<topic_counters> counters,
                 forward_fn start, std::function<void()> stop_relay);
  void on_hello(const topic_hello& hello);
  void forwarder_ended(const std::string& topic, const std::string& node_id, const cancel_flag& cancelled);
  runtime& rt() noexcept { return rt_; }
  node& owner() noexcept { return node_; }

 private:
  struct topic_entry {
    std::string signature;
    std::shared_ptr<topic_counters> counters;
    forward_fn start;
    std::function<void()> stop_relay;
    std::map<std::string, cancel_flag> linked;  // node ids this topic is forwarded to, with their tasks' flags
  };
  static task<void> follow_view(std::weak_ptr<groups_core> self, watch::receiver<cluster_view> view);
  static task<void> say_hello(std::shared_ptr<groups_core> self, peer to, std::vector<topic_hello> hellos);
  void seen(const cluster_view& view);
  topic_hello hello_for(const std::string& topic, const std::string& signature) const;

  runtime& rt_;
  node& node_;
  std::mutex lock_;
  std::map<std::string, topic_entry> topics_;
  std::map<std::string, bool> greeted_;  // members (by id) told about this node's topics
  bool stopped_ = false;
  actor_ref<directory_message> directory_;
};

template <class T>
struct cluster_topic_state {
  cluster_topic_state(postal::topic<T> local, std::size_t capacity)
      : local(std::move(local)), outbox(broadcast::channel<T>(capacity).first) {}
  postal::topic<T> local;
  broadcast::sender<T> outbox;
  std::shared_ptr<topic_counters> counters = std::make_shared<topic_counters>();
};

// Takes the publishes of the other members and publishes them on this node.
template <class T>
class topic_relay : public actor<std::variant<T>> {
 public:
  explicit topic_relay(postal::topic<T> local) : local_(std::move(local)) {}
  void handle(T& message) { (void)local_.publish(std::move(message)); }

 private:
  postal::topic<T> local_;
};
}  // namespace detail

/// A handle to a topic of the cluster. Cheap to copy; thread-safe.
template <class T>
class topic {
 public:
  using message_type = T;

  /// Sends `message` to every subscriber on every member that has the topic. Never waits. Returns how many
  /// subscribers on this node it reached (those on other nodes are not counted here).
  std::size_t publish(T message) {
    if (state_->counters->nodes.load(std::memory_order_relaxed) > 0) (void)state_->outbox.send(T(message));
    return state_->local.publish(std::move(message));
  }
  /// A subscription on this node: what any member publishes from now on.
  subscription<T> subscribe() const { return state_->local.subscribe(); }
  /// Makes a local actor a member, as postal::topic<T>::join.
  template <class Message>
  group_membership join(runtime& rt, actor_ref<Message> member) const {
    return state_->local.join(rt, std::move(member));
  }
  std::string_view name() const noexcept { return state_->local.name(); }
  std::size_t capacity() const noexcept { return state_->local.capacity(); }
  topic_stats stats() const noexcept {
    return {state_->local.stats(), state_->counters->nodes.load(std::memory_order_relaxed),
            state_->counters->missed_by_links.load(std::memory_order_relaxed),
            state_->counters->refused.load(std::memory_order_relaxed)};
  }

 private:
  friend class groups;
  explicit topic(std::shared_ptr<detail::cluster_topic_state<T>> state) : state_(std::move(state)) {}
  std::shared_ptr<detail::cluster_topic_state<T>> state_;
};

/// The registry of a node's cluster topics. Make it after the node and destroy it before; one per node.
/// Destroying it stops this node's part: its relays and directory end (other members stop forwarding to
/// it), its forwarding tasks end once its topic handles are gone.
class groups {
 public:
  groups(runtime& rt, node& n) : core_(std::make_shared<detail::groups_core>(rt, n)) { core_->start(); }
  groups(const groups&) = delete;
  groups& operator=(const groups&) = delete;
  ~groups() { core_->stop(); }

  /// The topic `name` (made with postal::groups::default_capacity on first use). Throws std::logic_error if
  /// it was made with another type, as postal::groups does.
  template <class T>
  cluster::topic<T> topic(std::string_view name) {
    return topic<T>(name, postal::groups::default_capacity);
  }
  /// The topic `name`, made with `capacity` on first use (for this node's subscribers and for its outbox).
  template <class T>
  cluster::topic<T> topic(std::string_view name, std::size_t capacity) {
    auto local = local_.topic<T>(name, capacity);
    std::lock_guard lock(lock_);
    auto found = made_.find(std::string(name));
    if (found != made_.end())
      return cluster::topic<T>(std::static_pointer_cast<detail::cluster_topic_state<T>>(found->second));
    auto state = std::make_shared<detail::cluster_topic_state<T>>(local, capacity);
    made_.emplace(std::string(name), state);
    auto relay = spawn_actor<detail::topic_relay<T>>(core_->rt(), actor_options{}, local);
    core_->owner().publish("postal.topic." + std::string(name), relay);
    std::weak_ptr<detail::cluster_topic_state<T>> weak = state;
    std::weak_ptr<detail::groups_core> core = core_;
    core_->add_topic(
        std::string(name), detail::signature<std::variant<T>>(), state->counters,
        [weak, core, topic_name = std::string(name)](const peer& to, detail::groups_core::cancel_flag cancelled) {
          auto alive = weak.lock();
          auto registry = core.lock();
          if (!alive || !registry) return;
          registry->rt().spawn_detached(
              forward<T>(registry, alive->outbox.subscribe(), alive->counters, to, topic_name, std::move(cancelled)));
        },
        [relay]() mutable { relay.kill(); });
    return cluster::topic<T>(std::move(state));
  }
  /// The local registry under the cluster topics (a local topic of the same name is the same topic).
  postal::groups& local() noexcept { return local_; }

 private:
  // Carries this node's publishes to one member's relay until the member is seen down or left, a tell
  // fails (the member is gone), or the topic is.
  template <class T>
  static task<void> forward(std::shared_ptr<detail::groups_core> core, broadcast::receiver<T> outbox,
                            std::shared_ptr<detail::topic_counters> counters, peer to, std::string topic_name,
                            detail::groups_core::cancel_flag cancelled) {
    auto relay = co_await core->owner().lookup<std::variant<T>>(to, "postal.topic." + topic_name);
    if (relay) {
      for (;;) {
        auto next = co_await outbox.recv();
        if (cancelled->load(std::memory_order_acquire)) break;
        if (next) {
          if (!co_await relay->tell(std::move(*next))) break;
        } else if (next.error().is_lagged()) {
          counters->missed_by_links.fetch_add(next.error().missed, std::memory_order_relaxed);
        } else {
          break;
        }
      }
    }
    core->forwarder_ended(topic_name, to.id, cancelled);
  }

  std::shared_ptr<detail::groups_core> core_;
  postal::groups local_;
  std::mutex lock_;
  std::map<std::string, std::shared_ptr<void>> made_;
};

}  // namespace postal::cluster
