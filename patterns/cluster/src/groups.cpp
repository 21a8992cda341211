// The untyped part of cluster groups (postal/cluster/group.hpp): the directory every node publishes, the
// hellos that tell members which topics a node has, and the bookkeeping of which members each topic is
// forwarded to. No CAF header here: it is written on the node's public interface alone.
#include <postal/cluster/group.hpp>

#include <cstdio>

namespace postal::cluster::detail {

namespace {
const char* const directory_name = "postal.groups";

class directory : public actor<directory_message> {
 public:
  explicit directory(std::weak_ptr<groups_core> core) : core_(std::move(core)) {}
  void handle(topic_hello& hello) {
    if (auto core = core_.lock()) core->on_hello(hello);
  }

 private:
  std::weak_ptr<groups_core> core_;
};
}  // namespace

void groups_core::start() {
  directory_ = spawn_actor<directory>(rt_, actor_options{}, weak_from_this());
  node_.publish(directory_name, directory_);
  rt_.spawn_detached(follow_view(weak_from_this(), node_.view()));
}

void groups_core::stop() {
  std::vector<std::function<void()>> relays;
  {
    std::lock_guard guard(lock_);
    stopped_ = true;
    for (auto& [name, entry] : topics_) relays.push_back(entry.stop_relay);
  }
  for (auto& stop_relay : relays) stop_relay();
  directory_.kill();
}

topic_hello groups_core::hello_for(const std::string& topic, const std::string& signature) const {
  return topic_hello{topic, signature, node_.name(), node_.id()};
}

void groups_core::add_topic(const std::string& name, std::string signature, std::shared_ptr<topic_counters> counters,
                            forward_fn start, std::function<void()> stop_relay) {
  std::vector<peer> up;
  const std::string self = node_.id();
  {
    auto view = node_.view();
    for (const auto& entry : view.borrow()->members)
      if (entry.status == member::status_type::up && entry.id != self) up.push_back(peer{entry.name, entry.id});
  }
  topic_hello hello = hello_for(name, signature);
  {
    std::lock_guard guard(lock_);
    topics_.emplace(name, topic_entry{std::move(signature), std::move(counters), std::move(start),
                                      std::move(stop_relay), {}});
  }
  for (auto& to : up) rt_.spawn_detached(say_hello(shared_from_this(), to, {hello}));
}

void groups_core::on_hello(const topic_hello& hello) {
  forward_fn start;
  std::string signature;
  auto cancelled = std::make_shared<std::atomic<bool>>(false);
  {
    std::lock_guard guard(lock_);
    if (stopped_) return;
    auto found = topics_.find(hello.topic);
    if (found == topics_.end()) return;  // this node has not made the topic: it tells the sender when it does
    topic_entry& entry = found->second;
    if (entry.signature != hello.signature) {
      entry.counters->refused.fetch_add(1, std::memory_order_relaxed);
      std::fprintf(stderr, "postal cluster: topic '%s' on node '%s' takes %s, here it takes %s: not joined\n",
                   hello.topic.c_str(), hello.from_name.c_str(), describe_signature(hello.signature).c_str(),
                   describe_signature(entry.signature).c_str());
      return;
    }
    if (!entry.linked.emplace(hello.from_id, cancelled).second) return;  // already forwarding there
    entry.counters->nodes.fetch_add(1, std::memory_order_relaxed);
    start = entry.start;
    signature = entry.signature;
  }
  peer from{hello.from_name, hello.from_id};
  start(from, cancelled);
  // The sender may not know yet that this node has the topic (it made it after this node said so).
  rt_.spawn_detached(say_hello(shared_from_this(), from, {hello_for(hello.topic, signature)}));
}

void groups_core::forwarder_ended(const std::string& topic, const std::string& node_id, const cancel_flag& cancelled) {
  std::lock_guard guard(lock_);
  auto found = topics_.find(topic);
  if (found == topics_.end()) return;
  auto& linked = found->second.linked;
  auto entry = linked.find(node_id);
  if (entry == linked.end() || entry->second != cancelled) return;  // already unlinked, or a newer task's
  linked.erase(entry);
  found->second.counters->nodes.fetch_sub(1, std::memory_order_relaxed);
}

void groups_core::seen(const cluster_view& view) {
  const std::string self = node_.id();
  std::vector<std::pair<peer, std::vector<topic_hello>>> to_greet;
  {
    std::lock_guard guard(lock_);
    if (stopped_) return;
    for (const auto& entry : view.members) {
      if (entry.id == self || entry.status != member::status_type::up) continue;
      if (!greeted_.emplace(entry.id, true).second) continue;
      std::vector<topic_hello> hellos;
      for (const auto& [name, topic] : topics_) hellos.push_back(hello_for(name, topic.signature));
      if (!hellos.empty()) to_greet.emplace_back(peer{entry.name, entry.id}, std::move(hellos));
    }
    // A member down or gone: it is greeted again if it comes back (a healed partition keeps its id), and its
    // forwarding tasks end at their next message, unlinked now so that stats() says so at once.
    for (const auto& entry : view.members) {
      if (entry.status == member::status_type::up) continue;
      greeted_.erase(entry.id);
      for (auto& [name, topic] : topics_) {
        auto linked = topic.linked.find(entry.id);
        if (linked == topic.linked.end()) continue;
        linked->second->store(true, std::memory_order_release);
        topic.linked.erase(linked);
        topic.counters->nodes.fetch_sub(1, std::memory_order_relaxed);
      }
    }
  }
  for (auto& [to, hellos] : to_greet) rt_.spawn_detached(say_hello(shared_from_this(), to, std::move(hellos)));
}

task<void> groups_core::follow_view(std::weak_ptr<groups_core> self, watch::receiver<cluster_view> view) {
  for (;;) {
    {
      auto core = self.lock();
      if (!core) co_return;
      cluster_view now = *view.borrow_and_update();
      core->seen(now);
    }
    if (!co_await view.changed()) co_return;  // the node is gone
  }
}

task<void> groups_core::say_hello(std::shared_ptr<groups_core> self, peer to, std::vector<topic_hello> hellos) {
  auto directory = co_await self->node_.lookup<directory_message>(to, directory_name);
  if (!directory) co_return;  // that member has no cluster groups (yet: it says hello when it makes a topic)
  for (auto& hello : hellos)
    if (!co_await directory->tell(std::move(hello))) co_return;
}

}  // namespace postal::cluster::detail
