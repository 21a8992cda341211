// postal actor monitors: awaiting an actor's end and its exit reason (from a task or a plain thread).
// Not for: stopping an actor (actor_ref::kill) or supervision (options.hpp).
#pragma once

#include <postal/actor/detail/control_block.hpp>
#include <postal/actor/options.hpp>
#include <postal/task.hpp>

#include <optional>
#include <utility>

namespace postal {

/// Awaits an actor's end: `co_await monitor.exit()` in a task, `monitor.blocking_exit()` on a plain thread.
class actor_monitor {
 public:
  explicit actor_monitor(detail::control_ref control) : control_(std::move(control)) {}

  /// The exit reason, once the actor has ended (at once if it already has). Cancel-safety: destroying the
  /// waiting task withdraws the wait.
  task<exit_reason> exit() {
    co_await control_->wait_finished();
    co_return *control_->exit();
  }
  /// exit() for plain threads. Throws std::logic_error on a runtime worker thread.
  exit_reason blocking_exit() {
    postal::detail::check_may_block("postal::actor_monitor::blocking_exit");
    control_->block_until_finished();
    return *control_->exit();
  }
  /// The exit reason if the actor has ended, without waiting.
  std::optional<exit_reason> try_exit() const { return control_->exit(); }

 private:
  detail::control_ref control_;
};

}  // namespace postal
