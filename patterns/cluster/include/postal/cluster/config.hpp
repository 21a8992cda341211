// postal::cluster configuration across nodes: one node's config actor (the file it watches, config.hpp) is
// the source of a named configuration; every other node follows it and holds a config_handle<T> of its own,
// whose watch channels see each new version the source loads.
//
//   // on the node that has the file:
//   auto config = postal::spawn_config<app_config>(rt, {.file = "app.json"});
//   postal::cluster::share_config(rt, node, "app", *config);
//   // on every other node (after node.join(...)):
//   auto followed = co_await postal::cluster::follow_config<app_config>(rt, node, "app", "node-with-the-file");
//   auto settings = followed->subscribe();                  // as with a local config_handle
//
// What a follower sees: the source's current version at once when it starts following (and again when the
// source comes back after being down, or this node rejoins); then every load of the source, good or bad, as
// the source's own handle sees it: a good load publishes its value (when it differs) and the status, a bad
// load changes only the status, whose error (the file, the line, the reason) is then the same on every
// node. Versions never go backwards: each carries the source's incarnation and a sequence number, and a
// follower drops any version not newer than the one it has. While the source is down, followers keep the
// last version. reload() on a follower asks the source to reload its file. T crosses with an inspect
// overload (serialize.hpp), like any message.
// Not for: several sources of one configuration, or writing configuration back.
#pragma once

#include <postal/actor.hpp>
#include <postal/cluster/node.hpp>
#include <postal/config.hpp>
#include <postal/expected.hpp>
#include <postal/oneshot.hpp>
#include <postal/runtime.hpp>
#include <postal/task.hpp>
#include <postal/time.hpp>
#include <postal/watch.hpp>

#include <chrono>
#include <concepts>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace postal {
// How a configuration error crosses between nodes.
template <class Inspector>
auto inspect(Inspector& f, config_error& x) {
  return f(x.kind, x.file, x.line, x.column, x.path, x.reason);
}
}  // namespace postal

namespace postal::cluster {

namespace detail {
// One whole state of a shared configuration, as its source last published it.
template <class T>
struct config_version {
  std::uint64_t incarnation = 0;  // the source's run (its member incarnation)
  std::uint64_t sequence = 0;     // the source's status changes in that run
  T value{};
  std::string file;
  std::optional<config_error> error;
  std::uint64_t loads = 0;
  std::uint64_t failures = 0;
  bool newer_than(std::uint64_t other_incarnation, std::uint64_t other_sequence) const noexcept {
    return incarnation != other_incarnation ? incarnation > other_incarnation : sequence > other_sequence;
  }
};
template <class Inspector, class T>
auto inspect(Inspector& f, config_version<T>& x) {
  return f(x.incarnation, x.sequence, x.value, x.file, x.error, x.loads, x.failures);
}
template <class T>
using config_mirror_message = std::variant<config_version<T>>;

// Told to the source: push every version to `to`, the current one first.
template <class T>
struct config_follow {
  actor_ref<config_mirror_message<T>> to;
};
template <class Inspector, class T>
auto inspect(Inspector& f, config_follow<T>& x) {
  return f(x.to);
}
// Asked of the source by a follower's reload().
struct config_remote_reload {
  using reply_type = std::optional<config_error>;
};
template <class Inspector>
auto inspect(Inspector& f, config_remote_reload&) {
  return f();
}
template <class T>
using config_source_message = std::variant<config_follow<T>, config_remote_reload>;

inline std::string config_actor_name(const std::string& name) { return "postal.config." + name; }

// This node's incarnation, as its members know it.
inline std::uint64_t own_incarnation(node& n) {
  const std::string self = n.id();
  auto view = n.view();
  for (const auto& entry : view.borrow()->members)
    if (entry.id == self) return entry.incarnation;
  return 0;
}

// The source's side: a task follows the config handle's status and keeps the latest version in a watch
// channel; the source actor gives each follower a task that pushes it the latest version whenever it
// changes (a slow follower skips to the newest, and holds up no one).
template <class T>
config_version<T> current_version(const config_handle<T>& handle, std::uint64_t incarnation, std::uint64_t sequence) {
  auto status = handle.status();
  auto now = status.borrow();
  return config_version<T>{incarnation, sequence, handle.get(), now->file.string(), now->error, now->loads,
                           now->failures};
}

template <class T>
task<void> follow_status(config_handle<T> handle, watch::sender<config_version<T>> latest, std::uint64_t incarnation) {
  auto status = handle.status();
  (void)status.borrow_and_update();
  for (std::uint64_t sequence = 2; co_await status.changed(); ++sequence)
    if (!latest.send(current_version(handle, incarnation, sequence))) co_return;  // the source actor is gone
}

template <class T>
class config_source : public actor<config_source_message<T>> {
 public:
  config_source(config_handle<T> handle, watch::receiver<config_version<T>> latest)
      : handle_(std::move(handle)), latest_(std::move(latest)) {}
  void handle(config_follow<T>& m) { this->runtime().spawn_detached(push(latest_, std::move(m.to))); }
  task<std::optional<config_error>> handle(config_remote_reload&) {
    auto done = co_await handle_.reload();
    if (done) co_return std::nullopt;
    co_return std::move(done.error());
  }

 private:
  static task<void> push(watch::receiver<config_version<T>> latest, actor_ref<config_mirror_message<T>> to) {
    for (;;) {
      config_version<T> next = *latest.borrow_and_update();
      if (!co_await to.tell(std::move(next))) co_return;  // the follower is gone
      if (!co_await latest.changed()) co_return;
    }
  }

  config_handle<T> handle_;
  watch::receiver<config_version<T>> latest_;
};

// A follower's state: the channels its handle gives out, the newest version taken, the source to reload.
// The handle owns it; the follower's actors and task hold it weakly.
template <class T>
struct config_follower_state {
  std::mutex lock;
  std::optional<watch::sender<T>> value;
  std::optional<watch::sender<config_status>> status;
  std::uint64_t incarnation = 0;
  std::uint64_t sequence = 0;
  std::optional<oneshot::sender<bool>> first;  // fulfilled by the first version
  actor_ref<config_source_message<T>> source;   // the source followed now, if any
  actor_ref<config_mirror_message<T>> mirror;   // killed with the state: the source stops pushing to it
  ~config_follower_state() {
    if (mirror) mirror.kill();
  }
};

template <class T>
class config_mirror : public actor<config_mirror_message<T>> {
 public:
  explicit config_mirror(std::weak_ptr<config_follower_state<T>> state) : weak_(std::move(state)) {}
  void handle(config_version<T>& m) {
    auto state_ = weak_.lock();
    if (!state_) return;  // the handle is gone
    std::lock_guard guard(state_->lock);
    if (!m.newer_than(state_->incarnation, state_->sequence)) return;  // never backwards
    state_->incarnation = m.incarnation;
    state_->sequence = m.sequence;
    if constexpr (std::equality_comparable<T>) {
      state_->value->send_if_modified([&](T& current) {
        if (current == m.value) return false;
        current = std::move(m.value);
        return true;
      });
    } else {
      (void)state_->value->send_replace(std::move(m.value));
    }
    (void)state_->status->send_replace(config_status{m.file, std::move(m.error), m.loads, m.failures});
    if (state_->first) {
      (void)state_->first->send(true);
      state_->first.reset();
    }
  }

 private:
  std::weak_ptr<config_follower_state<T>> weak_;
};

// A follower's handle asks this actor to reload: it asks the source.
template <class T>
class config_reloader : public actor<postal::detail::config_message> {
 public:
  config_reloader(std::weak_ptr<config_follower_state<T>> state, std::string name, std::string source_name)
      : weak_(std::move(state)), name_(std::move(name)), source_name_(std::move(source_name)) {}
  task<expected<void, config_error>> handle(postal::detail::config_reload&) {
    actor_ref<config_source_message<T>> source;
    std::string file;
    if (auto state_ = weak_.lock()) {
      std::lock_guard guard(state_->lock);
      source = state_->source;
      file = state_->status->borrow()->file.string();
    }
    if (!source) co_return unexpected{not_reachable(file, "it is not connected")};
    config_remote_reload request;
    auto done = co_await source.ask(std::move(request));
    if (!done) co_return unexpected{not_reachable(file, "the request failed (node down?)")};
    if (*done) co_return unexpected{std::move(**done)};
    co_return expected<void, config_error>{};
  }
  void handle(postal::detail::config_file_changed&) {}

 private:
  config_error not_reachable(const std::string& file, const char* why) const {
    return config_error{config_error::kind_type::unreadable, file, 0, 0, {},
                        "cannot reload configuration '" + name_ + "' on its source node '" + source_name_ +
                            "': " + why};
  }
  std::weak_ptr<config_follower_state<T>> weak_;
  std::string name_;
  std::string source_name_;
};

// Follows the view: whenever the source is up as a run this node does not follow yet, asks it for its
// versions (retrying while the source has not shared the configuration yet).
template <class T>
task<void> follow_source(node& n, std::weak_ptr<config_follower_state<T>> weak, std::string name,
                         std::string source_name, actor_ref<config_mirror_message<T>> mirror) {
  auto view = n.view();
  std::string following;  // the source's node id followed now
  for (;;) {
    std::optional<peer> source;
    for (const auto& entry : view.borrow_and_update()->members)
      if (entry.name == source_name && entry.status == member::status_type::up) source = peer{entry.name, entry.id};
    if (!weak.lock()) co_return;  // the handle is gone
    if (source && source->id != following) {
      auto found = co_await n.lookup<config_source_message<T>>(*source, config_actor_name(name));
      if (found) {
        config_follow<T> follow{mirror};
        if (co_await found->tell(std::move(follow))) {
          following = source->id;
          if (auto state = weak.lock()) {
            std::lock_guard guard(state->lock);
            state->source = std::move(*found);
          }
        }
      } else if (found.error().kind == cluster_error::kind_type::no_such_actor) {
        co_await sleep_for(std::chrono::milliseconds(100));  // the source has not shared it yet
        continue;
      }
    }
    if (!co_await view.changed()) co_return;  // the node is gone
  }
}
}  // namespace detail

/// Makes this node the source of the configuration `name`: every node that follows it gets each version
/// `handle` publishes. The configuration stays shared (and its actor and file watch run) while the node
/// runs. Published as "postal.config.<name>".
template <class T>
void share_config(runtime& rt, node& n, const std::string& name, config_handle<T> handle) {
  const std::uint64_t incarnation = detail::own_incarnation(n);
  auto [latest_tx, latest_rx] = watch::channel<detail::config_version<T>>(detail::current_version(handle, incarnation, 1));
  rt.spawn_detached(detail::follow_status(handle, std::move(latest_tx), incarnation));
  n.publish(detail::config_actor_name(name),
            spawn_actor<detail::config_source<T>>(rt, actor_options{}, std::move(handle), std::move(latest_rx)));
}

/// Follows the configuration `name` that the member called `source_node` shares: a config_handle<T> fed
/// by the source, once its current version has arrived. Fails with timeout when none arrives within the
/// node's request_timeout (the source is not a member, not up, or does not share `name`). The handle
/// follows the source for as long as a copy of it exists, through restarts of the source.
template <class T>
task<expected<config_handle<T>, cluster_error>> follow_config(runtime& rt, node& n, std::string name,
                                                              std::string source_node) {
  auto state = std::make_shared<detail::config_follower_state<T>>();
  auto [value_tx, value_rx] = watch::channel<T>(T{});
  auto [status_tx, status_rx] = watch::channel<config_status>(config_status{});
  auto [first_tx, first_rx] = oneshot::channel<bool>();
  state->value.emplace(std::move(value_tx));
  state->status.emplace(std::move(status_tx));
  state->first.emplace(std::move(first_tx));
  auto mirror = spawn_actor<detail::config_mirror<T>>(rt, actor_options{.mailbox_capacity = 16},
                                                      std::weak_ptr<detail::config_follower_state<T>>(state));
  state->mirror = mirror;
  auto reloader = spawn_actor<detail::config_reloader<T>>(
      rt, actor_options{.mailbox_capacity = 16}, std::weak_ptr<detail::config_follower_state<T>>(state), name,
      source_node);
  rt.spawn_detached(detail::follow_source<T>(n, state, name, source_node, mirror));
  auto arrived = co_await first_rx.recv_until(std::chrono::steady_clock::now() + n.options().request_timeout);
  if (!arrived)
    co_return unexpected{cluster_error{cluster_error::kind_type::timeout,
                                       "no version of configuration '" + name + "' from node '" + source_node +
                                           "' within the request timeout"}};
  (void)value_rx.borrow_and_update();
  (void)status_rx.borrow_and_update();
  const std::string file = status_rx.borrow()->file.string();
  co_return postal::detail::config_handle_access::make<T>(file, std::move(reloader), std::move(value_rx),
                                                         std::move(status_rx), std::move(state));
}

/// follow_config for plain threads.
template <class T>
expected<config_handle<T>, cluster_error> blocking_follow_config(runtime& rt, node& n, std::string name,
                                                                 std::string source_node) {
  return rt.block_on(follow_config<T>(rt, n, std::move(name), std::move(source_node)));
}

}  // namespace postal::cluster
