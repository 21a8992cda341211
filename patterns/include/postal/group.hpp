// postal groups: named pub/sub topics backed by broadcast channels, typed per topic. Publishers publish;
// tasks subscribe (a subscription is a broadcast receiver); actors join (each message is told to the
// actor). A subscriber that falls behind by more than the topic's capacity loses the oldest messages and
// learns how many it missed; a publish with no subscribers is counted, not an error.
//
//   postal::groups groups;                                   // the registry: one per application
//   auto prices = groups.topic<price>("prices");             // created on first use (capacity 1024)
//   auto membership = prices.join(rt, some_actor);           // some_actor takes price and group_lagged
//   auto sub = prices.subscribe();                           // a task's subscription
//   prices.publish(price{"ACME", 12.5});                     // -> how many subscribers it reached
//
// Topics are created on first use: the first groups::topic<T>(name) creates the topic with its type and
// capacity; later calls with the same name get the same topic, and a different type is an error. A topic's
// channel lives while the registry or any topic handle to it exists; once all are gone its subscribers see
// it closed (after taking what is left).
// Not for: delivery guarantees to slow subscribers (a topic never waits for them: use an actor's mailbox
// for that) or topics across processes.
#pragma once

#include <postal/actor.hpp>
#include <postal/broadcast.hpp>
#include <postal/runtime.hpp>
#include <postal/task.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <typeindex>
#include <typeinfo>
#include <unordered_map>
#include <unordered_set>
#include <utility>

namespace postal {

/// Told to a member actor that fell behind: `missed` messages of `topic` were overwritten before it could
/// take them. The next message it gets is the oldest one the topic still holds. `topic` stays valid for
/// the life of the program (topic names are interned), so the notice is trivially copyable and cheap.
struct group_lagged {
  std::string_view topic;
  std::uint64_t missed = 0;
};

/// A topic's counters, read with topic::stats().
struct topic_stats {
  std::uint64_t published = 0;  // publish() calls
  std::uint64_t unheard = 0;    // of those, the ones that reached no subscriber
  std::size_t subscribers = 0;  // current subscriptions and member actors
};

namespace detail {
// The one copy of a topic name, kept for the life of the program (names are few; group_lagged points at it).
inline std::string_view intern_topic_name(std::string_view name) {
  static std::mutex lock;
  static std::unordered_set<std::string>* names = new std::unordered_set<std::string>();  // never destroyed
  std::lock_guard guard(lock);
  return *names->emplace(name).first;
}

// What a topic's handles, subscriptions and members share besides the channel.
struct topic_core {
  explicit topic_core(std::string_view name, std::size_t capacity)
      : name(intern_topic_name(name)), capacity(capacity) {}
  const std::string_view name;
  const std::size_t capacity;
  std::atomic<std::uint64_t> published{0};
  std::atomic<std::uint64_t> unheard{0};
  std::atomic<std::size_t> subscribers{0};
};

template <class T>
struct topic_state {
  topic_state(std::string_view name, std::size_t capacity)
      : core(std::make_shared<topic_core>(name, round_up(capacity))),
        tx(broadcast::channel<T>(capacity).first) {}
  static std::size_t round_up(std::size_t capacity) noexcept {
    std::size_t power = 1;
    while (power < capacity) power <<= 1;
    return power;
  }
  std::shared_ptr<topic_core> core;
  broadcast::sender<T> tx;
};

// One subscriber's place in the count: taken at subscribe / join, given back once (leave, or its end).
class subscriber_slot {
 public:
  explicit subscriber_slot(std::shared_ptr<topic_core> core) : core_(std::move(core)) {
    core_->subscribers.fetch_add(1, std::memory_order_relaxed);
  }
  subscriber_slot(const subscriber_slot&) = delete;
  subscriber_slot& operator=(const subscriber_slot&) = delete;
  ~subscriber_slot() { release(); }
  void release() noexcept {
    if (!released_.exchange(true, std::memory_order_acq_rel))
      core_->subscribers.fetch_sub(1, std::memory_order_relaxed);
  }
  bool released() const noexcept { return released_.load(std::memory_order_acquire); }
  const topic_core& core() const noexcept { return *core_; }

 private:
  std::shared_ptr<topic_core> core_;
  std::atomic<bool> released_{false};
};
}  // namespace detail

/// A task's subscription to a topic: the messages published after subscribe(), in order. Move-only.
/// Destroying it (or leave()) stops counting it as a subscriber.
template <class T>
class subscription {
 public:
  subscription(subscription&&) noexcept = default;
  subscription& operator=(subscription&&) noexcept = default;

  /// `co_await sub.recv()` -> the next message, or broadcast::recv_error: lagged(n) when this subscriber
  /// fell behind and missed n messages (the next recv gives the oldest one still held), closed once the
  /// topic is gone and everything was taken. Cancel-safe, as broadcast::receiver::recv.
  /// Must not be called after leave().
  auto recv() noexcept { return receiver_->recv(); }
  /// recv() for plain threads.
  expected<T, broadcast::recv_error> blocking_recv() { return receiver_->blocking_recv(); }
  /// The next message if there is one now; otherwise empty, lagged(n) or closed. Never waits.
  expected<T, broadcast::try_recv_error> try_recv() { return receiver_->try_recv(); }
  /// Leaves the topic now (the destructor does the same). The subscription may only be destroyed after.
  void leave() {
    slot_->release();
    receiver_.reset();
  }
  std::string_view topic_name() const noexcept { return slot_->core().name; }

 private:
  template <class U>
  friend class topic;
  subscription(broadcast::receiver<T> receiver, std::shared_ptr<detail::topic_core> core)
      : receiver_(std::move(receiver)), slot_(std::make_unique<detail::subscriber_slot>(std::move(core))) {}

  std::optional<broadcast::receiver<T>> receiver_;
  std::unique_ptr<detail::subscriber_slot> slot_;
};

/// An actor's membership of a topic, from topic::join. While it lasts, every message published to the
/// topic is told to the actor (the tell waits for mailbox room; meanwhile the topic goes on, and an actor
/// that falls more than the topic's capacity behind is told group_lagged). The membership keeps the actor
/// alive, as an actor_ref does. It ends with leave() (or the handle's destruction, unless detach()ed), when
/// the actor stops taking messages, or when the topic is gone. A member that left stops getting messages
/// at once; its place in the channel is released at the topic's next publish.
class group_membership {
 public:
  group_membership() = default;
  group_membership(group_membership&&) noexcept = default;
  group_membership& operator=(group_membership&& other) noexcept {
    if (this != &other) {
      leave();
      slot_ = std::move(other.slot_);
    }
    return *this;
  }
  ~group_membership() { leave(); }

  /// Leaves the topic: from now on no message is told to the actor, not even one published earlier that
  /// was not told yet. Idempotent.
  void leave() noexcept {
    if (slot_) slot_->release();
    slot_.reset();
  }
  /// Lets the membership last until the actor stops or the topic is gone, without this handle.
  void detach() noexcept { slot_.reset(); }
  /// False once it ended (left, the actor stopped, or the topic is gone).
  bool active() const noexcept { return slot_ && !slot_->released(); }

 private:
  template <class U>
  friend class topic;
  explicit group_membership(std::shared_ptr<detail::subscriber_slot> slot) : slot_(std::move(slot)) {}
  std::shared_ptr<detail::subscriber_slot> slot_;
};

/// A handle to a named topic whose messages are T. Cheap to copy; thread-safe.
template <class T>
class topic {
 public:
  using message_type = T;

  /// Sends `message` to every current subscriber and member and returns how many there are. With none, the
  /// message is dropped, counted in stats().unheard, and 0 returned. Never waits for subscribers.
  std::size_t publish(T message) {
    state_->core->published.fetch_add(1, std::memory_order_relaxed);
    auto sent = state_->tx.send(std::move(message));
    const std::size_t reached = sent ? state_->core->subscribers.load(std::memory_order_relaxed) : 0;
    if (reached == 0) state_->core->unheard.fetch_add(1, std::memory_order_relaxed);
    return reached;
  }

  /// A subscription for a task or a plain thread: the messages published from now on.
  subscription<T> subscribe() const { return subscription<T>(state_->tx.subscribe(), state_->core); }

  /// Makes the actor behind `member` a member: every message published from now on is told to it. Its
  /// mailbox must take T and group_lagged (it is told how many messages it missed when it falls behind).
  /// The messages are carried by a task on `rt`.
  template <class Message>
  group_membership join(runtime& rt, actor_ref<Message> member) const {
    static_assert(detail::tellable<T, Message>, "the actor's mailbox does not take this topic's message type");
    static_assert(detail::tellable<group_lagged, Message>,
                  "an actor joins a topic only if its mailbox also takes postal::group_lagged: it is told how "
                  "many messages it missed when it falls behind");
    auto slot = std::make_shared<detail::subscriber_slot>(state_->core);
    rt.spawn_detached(forward(state_->tx.subscribe(), std::move(member), slot));
    return group_membership(std::move(slot));
  }

  std::string_view name() const noexcept { return state_->core->name; }
  /// The topic's capacity: how far a subscriber may fall behind before it loses messages.
  std::size_t capacity() const noexcept { return state_->core->capacity; }
  topic_stats stats() const noexcept {
    const auto& core = *state_->core;
    return {core.published.load(std::memory_order_relaxed), core.unheard.load(std::memory_order_relaxed),
            core.subscribers.load(std::memory_order_relaxed)};
  }

 private:
  friend class groups;
  explicit topic(std::shared_ptr<detail::topic_state<T>> state) : state_(std::move(state)) {}

  // Carries the topic's messages into a member's mailbox until the membership ends.
  template <class Message>
  static task<void> forward(broadcast::receiver<T> receiver, actor_ref<Message> member,
                            std::shared_ptr<detail::subscriber_slot> slot) {
    for (;;) {
      auto next = co_await receiver.recv();
      if (slot->released()) break;
      if (next) {
        if (!co_await member.tell(std::move(*next))) break;  // the actor stopped
      } else if (next.error().is_lagged()) {
        group_lagged notice{slot->core().name, next.error().missed};
        if (!co_await member.tell(std::move(notice))) break;
      } else {
        break;  // the topic is gone
      }
    }
    slot->release();
  }

  std::shared_ptr<detail::topic_state<T>> state_;
};

/// The registry of named topics. Thread-safe. Destroying it ends the topics that no handle keeps.
class groups {
 public:
  /// The default capacity of a topic created without one.
  static constexpr std::size_t default_capacity = 1024;

  groups() = default;
  groups(const groups&) = delete;
  groups& operator=(const groups&) = delete;

  /// The topic `name`, created with `default_capacity` if it does not exist yet. Throws std::logic_error if
  /// it exists with another message type.
  template <class T>
  postal::topic<T> topic(std::string_view name) {
    return find_or_create<T>(name, std::nullopt);
  }
  /// The topic `name`, created with `capacity` (rounded up to a power of two, as broadcast channels are) if
  /// it does not exist yet. Throws std::logic_error if it exists with another type, std::invalid_argument if
  /// it exists with another capacity or capacity is 0.
  template <class T>
  postal::topic<T> topic(std::string_view name, std::size_t capacity) {
    return find_or_create<T>(name, capacity);
  }
  /// True if a topic of that name exists.
  bool contains(std::string_view name) const {
    std::lock_guard lock(lock_);
    return topics_.find(std::string(name)) != topics_.end();
  }

 private:
  struct entry {
    std::type_index type;
    std::size_t capacity;
    std::shared_ptr<void> state;
  };

  template <class T>
  postal::topic<T> find_or_create(std::string_view name, std::optional<std::size_t> capacity) {
    if (capacity && *capacity == 0) throw std::invalid_argument("postal::groups: a topic's capacity must be positive");
    std::lock_guard lock(lock_);
    auto found = topics_.find(std::string(name));
    if (found == topics_.end()) {
      auto state = std::make_shared<detail::topic_state<T>>(name, capacity.value_or(default_capacity));
      topics_.emplace(std::string(name), entry{typeid(T), state->core->capacity, state});
      return postal::topic<T>(std::move(state));
    }
    if (found->second.type != std::type_index(typeid(T)))
      throw std::logic_error("postal::groups: topic '" + std::string(name) + "' exists with message type " +
                             found->second.type.name() + ", not " + typeid(T).name());
    if (capacity && detail::topic_state<T>::round_up(*capacity) != found->second.capacity)
      throw std::invalid_argument("postal::groups: topic '" + std::string(name) + "' exists with capacity " +
                                  std::to_string(found->second.capacity) + ", not " + std::to_string(*capacity));
    return postal::topic<T>(std::static_pointer_cast<detail::topic_state<T>>(found->second.state));
  }
  mutable std::mutex lock_;
  std::unordered_map<std::string, entry> topics_;
};

}  // namespace postal
