// postal's actor base class: derive from postal::actor<Message> and give the class a handle(M&) per message
// type. What the framework calls of the class is listed in <postal/actor.hpp>; what the base offers the
// class (self, stop, runtime, spawn_child) is here.
// Not for: running the actor (detail/runner.hpp) or addressing it from outside (ref.hpp).
#pragma once

#include <postal/actor/detail/control_block.hpp>
#include <postal/actor/detail/mailbox_cell.hpp>
#include <postal/actor/options.hpp>
#include <postal/actor/ref.hpp>
#include <postal/task.hpp>

#include <optional>
#include <stdexcept>
#include <utility>

namespace postal {

/// The base class of an actor whose mailbox takes `Message`. Derive from it, give your class a
/// `handle(M&)` per message type, and spawn it with postal::spawn_actor. The members the framework calls
/// are listed at the top of <postal/actor.hpp>; everything else in your class is yours.
template <class Message>
class actor {
 public:
  using message_type = Message;

  actor() = default;
  actor(const actor&) = delete;
  actor& operator=(const actor&) = delete;
  virtual ~actor() = default;

  // -- Hooks. Override the ones you need, public, and write `override`: a misspelled hook then does not
  // compile. The framework calls the actor class's own (no virtual call on the message path), and only
  // those it overrides. Where both forms of a hook are overridden, the plain one runs first, then the
  // task of the _async one is awaited (the actor takes no message meanwhile).

  /// Before the first message, and after each restart.
  virtual void on_start() {}
  virtual task<void> on_start_async() { co_return; }
  /// Once, after the last message; `reason` says why the actor stops.
  virtual void on_stop(const exit_reason& reason) { (void)reason; }
  virtual task<void> on_stop_async(const exit_reason& reason) {
    (void)reason;
    co_return;
  }
  /// Each time the mailbox is found empty, before the actor waits for more: to flush work batched over the
  /// messages just handled. The tasks queued on the actor's worker get one turn first
  /// (postal::yield_here), so messages they send at once still join the batch.
  virtual void on_idle() {}
  virtual task<void> on_idle_async() { co_return; }

 protected:
  /// This actor's own address. It does not keep the actor alive. Throws std::logic_error when no other
  /// ref exists any more (the actor is then handling its last queued messages before it stops).
  actor_ref<Message> self() const {
    auto mailbox = cell_->upgrade();
    if (!mailbox)
      throw std::logic_error("postal::actor::self: every ref to this actor is gone; it is stopping");
    cell_->add_ref();
    return actor_ref<Message>(std::move(*mailbox), detail::control_ref(cell_));
  }
  /// Stops the actor after the current message: drain handles what is queued first, drop destroys it
  /// (askers get no_reply). New tells fail from now on. The exit reason is normal.
  void stop(stop_mode mode = stop_mode::drain) { requested_stop_ = mode; }
  /// The runtime the actor runs on (to spawn tasks or other actors).
  postal::runtime& runtime() const { return cell_->runtime(); }
  /// Spawns an actor that this one supervises: when the child's policy is supervision::escalate, its
  /// failure becomes this actor's failure, to which this actor's own policy applies.
  template <class A, class... Args>
  actor_ref<typename A::message_type> spawn_child(actor_options options, Args&&... args) {
    cell_->add_ref();
    return detail::spawn_actor_with<A>(runtime(), detail::control_ref(cell_), options, std::forward<Args>(args)...);
  }

 private:
  template <class A, class Factory>
  friend class detail::actor_cell;

  detail::mailbox_cell<Message>* cell_ = nullptr;
  std::optional<stop_mode> requested_stop_;
};

}  // namespace postal
