// postal actor options: what is chosen when an actor is spawned (mailbox capacity, batch, supervision) and
// how an actor ends (exit_reason, stop_mode). Plain values, no behaviour.
// Not for: the actor's address (ref.hpp) or its life (detail/runner.hpp).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

namespace postal {

/// How an actor ended.
struct exit_reason {
  enum class kind_type : std::uint8_t {
    normal,  // it called stop(), or every actor_ref to it was gone and its mailbox drained
    failed,  // a handler or hook threw and its supervision policy stopped it; `message` says what
    killed,     // stopped from outside: actor_ref::kill() or runtime shutdown
    node_down,  // a remote actor whose node was declared down (it died, froze, or the link broke)
  };
  kind_type kind = kind_type::normal;
  std::string message;

  bool is_normal() const noexcept { return kind == kind_type::normal; }
  bool is_failed() const noexcept { return kind == kind_type::failed; }
  bool is_killed() const noexcept { return kind == kind_type::killed; }
  bool is_node_down() const noexcept { return kind == kind_type::node_down; }
  friend bool operator==(const exit_reason&, const exit_reason&) = default;
};

/// What an actor does with the messages still queued when it stops.
enum class stop_mode {
  drain,  // handle every message already queued, then stop (new tells fail)
  drop,   // destroy them unhandled: their askers get ask_error::no_reply
};

/// What happens when a handler (or on_start) throws.
struct supervision {
  enum class policy_type {
    stop,      // the actor stops, its exit reason is failed
    restart,   // a fresh actor object (built again from the spawn arguments) takes over the same mailbox
    escalate,  // the failure becomes its supervisor's failure (the actor that spawned it as a child);
               // without a supervisor, the same as stop
  };
  policy_type policy = policy_type::stop;
  /// Restart intensity, as in Erlang/OTP: more than max_restarts restarts within `period` stop the actor.
  std::size_t max_restarts = 3;
  std::chrono::steady_clock::duration period = std::chrono::seconds(5);

  static supervision stop() { return {}; }
  static supervision restart(std::size_t max_restarts = 3,
                             std::chrono::steady_clock::duration period = std::chrono::seconds(5)) {
    return {policy_type::restart, max_restarts, period};
  }
  static supervision escalate() { return {policy_type::escalate}; }
};

/// Settings chosen when spawning an actor.
struct actor_options {
  /// Mailbox capacity: a tell waits (backpressure) while this many messages are queued. The mailbox's ring
  /// (this many slots, rounded up to a power of two, each a little larger than the largest message type)
  /// is allocated by the first message and kept while the actor lives: for many mostly idle actors, a
  /// small capacity saves memory (an actor that never got a message has no ring).
  std::size_t mailbox_capacity = 1024;
  /// Messages handled in a row before the actor yields its worker to other work.
  std::size_t batch = 128;
  supervision on_failure = {};
  /// A name for reports about the actor (its failures) and for actor_ref::name(); not unique, not an
  /// address. Empty: no name (and no bytes spent on one).
  std::string name = {};
};
}  // namespace postal
