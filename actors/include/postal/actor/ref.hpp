// postal actor refs: actor_ref<Message>, the typed address of an actor (tell with backpressure, try_tell,
// blocking_tell, ask, kill, monitor), and the errors a tell gives back with its message.
// Not for: defining an actor (base.hpp) or spawning one (spawn.hpp); what runs the actor is detail/runner.hpp.
#pragma once

#include <postal/actor/detail/control_block.hpp>
#include <postal/actor/detail/envelope.hpp>
#include <postal/actor/monitor.hpp>
#include <postal/actor/options.hpp>
#include <postal/actor/request.hpp>
#include <postal/expected.hpp>
#include <postal/mpsc.hpp>
#include <postal/oneshot.hpp>
#include <postal/task.hpp>

#include <chrono>
#include <compare>
#include <cstddef>
#include <functional>
#include <iosfwd>
#include <string>
#include <utility>
#include <variant>

namespace postal {

class runtime;

/// Why a tell failed; the message comes back.
template <class M>
struct tell_error {
  M message;
};
/// Why a try_tell failed; the message comes back.
template <class M>
struct try_tell_error {
  enum class kind_type { full, closed };
  kind_type kind;
  M message;
  bool is_full() const noexcept { return kind == kind_type::full; }
  bool is_closed() const noexcept { return kind == kind_type::closed; }
};

// Printing, as every postal error (the handed-back message is not printed).
template <class M>
std::string to_string(const tell_error<M>&) {
  return to_string(ask_error::closed);
}
template <class M>
std::string to_string(const try_tell_error<M>& error) {
  return error.is_full() ? "the actor's mailbox is full" : to_string(ask_error::closed);
}
template <class M>
std::ostream& operator<<(std::ostream& out, const tell_error<M>& error) {
  return out << to_string(error);
}
template <class M>
std::ostream& operator<<(std::ostream& out, const try_tell_error<M>& error) {
  return out << to_string(error);
}

template <class Message>
class actor_ref;
template <class Message>
class actor;

namespace detail {
template <class A, class Factory>
class actor_cell;
template <class A, class... Args>
actor_ref<typename A::message_type> spawn_actor_with(runtime& rt, control_ref supervisor,
                                                     actor_options options, Args&&... args);


template <class Message, class M>
class tell_operation {
 public:
  tell_operation(mpsc::sender<envelope<Message>>& mailbox, envelope<Message>&& item)
      : send_(mailbox.send(std::move(item))) {}
  bool await_ready() { return send_.await_ready(); }
  template <class Promise>
  auto await_suspend(std::coroutine_handle<Promise> handle) {
    return send_.await_suspend(handle);
  }
  expected<void, tell_error<M>> await_resume() {
    auto sent = send_.await_resume();
    if (sent) return {};
    return unexpected{tell_error<M>{std::get<M>(std::get<0>(std::move(sent.error().value)))}};
  }

 private:
  decltype(std::declval<mpsc::sender<envelope<Message>>&>().send(std::declval<envelope<Message>>())) send_;
};
}  // namespace detail

/// An actor's identity, the same for every ref to it. Two actors alive at the same time (or whose refs are
/// held) never share one; an id kept after every ref is gone may be reused by a later actor.
class actor_id {
 public:
  friend bool operator==(actor_id, actor_id) noexcept = default;
  friend auto operator<=>(actor_id, actor_id) noexcept = default;
  std::size_t hash() const noexcept { return std::hash<const void*>{}(cell_); }

 private:
  template <class Message>
  friend class actor_ref;
  explicit actor_id(const void* cell) noexcept : cell_(cell) {}
  const void* cell_;
};

/// The typed address of an actor whose mailbox takes `Message` (a std::variant of message types). Cheap to
/// copy. Telling a type that is not one of the variant's alternatives does not compile. While any ref
/// exists the actor keeps running (until it stops itself, is killed, or fails); once every ref is gone it
/// handles what is queued and stops normally.
namespace detail {
struct ref_access;
}  // namespace detail

template <class Message>
class actor_ref {
  using envelope = detail::envelope<Message>;

 public:
  using message_type = Message;

  /// An empty ref, as a moved-from one: it may be assigned to, compared, hashed, copied and tested with
  /// `explicit operator bool`; telling or asking it is undefined. Exists so that a message struct with a
  /// ref member can be default-constructed (as a message crossing to another node is, before it is read).
  actor_ref() noexcept = default;
  /// False for an empty (default-constructed or moved-from) ref.
  explicit operator bool() const noexcept { return static_cast<bool>(control_); }

  /// `co_await ref.tell(m)`: queues `m`, waiting while the mailbox is full (backpressure: the task waits,
  /// its worker thread does not). Gives expected<void, tell_error<M>>: fails, handing the message back,
  /// once the actor no longer takes messages. Cancel-safety: a tell destroyed while waiting sends nothing.
  template <detail::tellable<Message> M>
  detail::tell_operation<Message, M> tell(M message) {
    return detail::tell_operation<Message, M>(mailbox_, envelope(std::in_place_index<0>, std::move(message)));
  }

  /// Queues `message` if there is room now; full or closed otherwise, with the message back. Never waits.
  template <detail::tellable<Message> M>
  expected<void, try_tell_error<M>> try_tell(M message) {
    auto sent = mailbox_.try_send(envelope(std::in_place_index<0>, std::move(message)));
    if (sent) return {};
    using kind = typename try_tell_error<M>::kind_type;
    return unexpected{try_tell_error<M>{sent.error().is_full() ? kind::full : kind::closed,
                                        unwrap<M>(std::move(sent.error().value))}};
  }

  /// tell for plain threads: blocks while the mailbox is full. Throws std::logic_error on a worker thread.
  template <detail::tellable<Message> M>
  expected<void, tell_error<M>> blocking_tell(M message) {
    auto sent = mailbox_.blocking_send(envelope(std::in_place_index<0>, std::move(message)));
    if (sent) return {};
    return unexpected{tell_error<M>{unwrap<M>(std::move(sent.error().value))}};
  }

  /// `co_await ref.ask(request)`: attaches a responder to the request (see postal::responder), tells it
  /// (waiting for room) and returns the handler's answer, or ask_error::closed (the actor takes no messages)
  /// / no_reply (the request was dropped unanswered: the actor stopped or the handler threw). Never hangs.
  /// Build the request as a named local first (`get request{"k"}; co_await ref.ask(std::move(request));`):
  /// g++ 12 miscompiles a braced temporary inside a co_await expression.
  template <detail::askable<Message> M>
  task<expected<detail::reply_of<M>, ask_error>> ask(M message) {
    return ask_with(std::move(message), detail::no_deadline{});
  }

  /// ask with a deadline: ask_error::timeout if no answer came within `timeout` (the wait for mailbox room
  /// counts); a late answer is discarded.
  template <detail::askable<Message> M>
  task<expected<detail::reply_of<M>, ask_error>> ask(M message, std::chrono::steady_clock::duration timeout) {
    return ask_with(std::move(message), detail::ask_deadline(timeout));
  }

  /// ask for plain threads: blocks until the answer or the error. Throws std::logic_error on a worker thread.
  template <detail::askable<Message> M>
  expected<detail::reply_of<M>, ask_error> blocking_ask(M message) {
    return blocking_ask_with(std::move(message), detail::no_deadline{});
  }

  /// blocking_ask with a deadline.
  template <detail::askable<Message> M>
  expected<detail::reply_of<M>, ask_error> blocking_ask(M message, std::chrono::steady_clock::duration timeout) {
    return blocking_ask_with(std::move(message), detail::ask_deadline(timeout));
  }

  /// Stops the actor from outside: after the message it is handling now, it drops what is queued (their
  /// askers get no_reply) and stops with exit reason killed. Never waits; monitor() to wait for the end.
  void kill() {
    control_->post({detail::control_request::kind_type::stop, stop_mode::drop,
                    exit_reason{exit_reason::kind_type::killed, "killed"}});
  }

  /// A monitor whose exit() gives this actor's exit reason.
  actor_monitor monitor() const { return actor_monitor(control_); }

  /// True once the actor no longer takes messages.
  bool is_closed() const noexcept { return mailbox_.is_closed(); }
  /// Free mailbox slots now.
  std::size_t capacity() const noexcept { return mailbox_.capacity(); }
  /// The actor's identity: refs to one actor compare equal, hash alike and give the same id, so refs can key
  /// maps and sets.
  actor_id id() const noexcept { return actor_id(control_.get()); }
  friend bool operator==(const actor_ref& a, const actor_ref& b) noexcept { return a.id() == b.id(); }
  /// The name given at spawn (actor_options::name), or an empty string.
  std::string name() const { return control_ ? control_->name() : std::string(); }

 private:
  friend class actor<Message>;
  friend struct detail::ref_access;
  template <class A, class... Args>
  friend actor_ref<typename A::message_type> detail::spawn_actor_with(runtime&,
                                                                      detail::control_ref,
                                                                      actor_options, Args&&...);

  actor_ref(mpsc::sender<envelope> mailbox, detail::control_ref control)
      : mailbox_(std::move(mailbox)), control_(std::move(control)) {}

  // An ask of a remote actor whose node went down ends with node_down, not closed or no_reply.
  struct why_unanswered {
    const detail::control_block* control;
    ask_error operator()(ask_error error) const noexcept {
      return control != nullptr && control->node_down() ? ask_error::node_down : error;
    }
  };
  // Every ask is detail::ask_through with the request in this mailbox's envelope.
  template <class M, class Deadline>
  task<expected<detail::reply_of<M>, ask_error>> ask_with(M message, Deadline deadline) {
    auto [reply, answer] = oneshot::channel<detail::reply_of<M>>();
    return detail::ask_through(mailbox_, detail::request_envelope<Message>(std::move(message), std::move(reply)),
                               std::move(answer), deadline, why_unanswered{control_.get()});
  }
  template <class M, class Deadline>
  expected<detail::reply_of<M>, ask_error> blocking_ask_with(M message, Deadline deadline) {
    auto [reply, answer] = oneshot::channel<detail::reply_of<M>>();
    return detail::blocking_ask_through(
        mailbox_, detail::request_envelope<Message>(std::move(message), std::move(reply)), std::move(answer),
        deadline, why_unanswered{control_.get()});
  }

  template <class M>
  static M unwrap(envelope&& item) {
    return std::get<M>(std::get<0>(std::move(item)));
  }

  mpsc::sender<envelope> mailbox_;
  detail::control_ref control_;
};

namespace detail {
// What a layer that forwards messages for an actor (postal::cluster) may use of its ref: the mailbox, to put a
// request in with a responder of its own, and the control block, to end a stand-in with a reason.
struct ref_access {
  template <class Message>
  static mpsc::sender<envelope<Message>>& mailbox(actor_ref<Message>& ref) noexcept {
    return ref.mailbox_;
  }
  template <class Message>
  static control_ref control(const actor_ref<Message>& ref) noexcept {
    return ref.control_;
  }
  template <class Message>
  static actor_ref<Message> make(mpsc::sender<envelope<Message>> mailbox, control_ref control) noexcept {
    return actor_ref<Message>(std::move(mailbox), std::move(control));
  }
};
}  // namespace detail

}  // namespace postal

template <>
struct std::hash<postal::actor_id> {
  std::size_t operator()(postal::actor_id id) const noexcept { return id.hash(); }
};
template <class Message>
struct std::hash<postal::actor_ref<Message>> {
  std::size_t operator()(const postal::actor_ref<Message>& ref) const noexcept { return ref.id().hash(); }
};
