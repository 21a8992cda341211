// postal ask: the command pattern of the seed over a plain mpsc channel. A manager task owns a resource and
// receives commands from an mpsc::receiver<Command> (a std::variant of request structs); each request
// carries its responder (see postal::responder in actor.hpp), and the asker awaits the answer:
//
//   struct get { std::string key; postal::responder<std::optional<std::string>> resp; };
//   struct set { std::string key; std::string value; postal::responder<void_reply> resp; };
//   using command = std::variant<get, set>;
//   auto value = co_await postal::ask(tx, get{"hello"});       // in a task
//   auto done = postal::blocking_ask(tx, set{"hello", "world"}); // on a plain thread
//
// For actors, actor_ref::ask does the same and also accepts requests that declare `using reply_type = R;`.
// Not for: request routing or retries (build those from actors).
#pragma once

#include <postal/actor.hpp>
#include <postal/expected.hpp>
#include <postal/mpsc.hpp>
#include <postal/oneshot.hpp>
#include <postal/task.hpp>

#include <chrono>
#include <utility>

namespace postal {

/// A reply that carries nothing but "done" (oneshot channels need a value type).
struct void_reply {
  friend bool operator==(void_reply, void_reply) = default;
};

namespace detail {
template <class M, class Command>
concept channel_request = is_alternative<M, Command>::value && has_responder<M>;
}  // namespace detail

/// `co_await ask(tx, request)`: attaches a fresh responder to `request`, sends it (waiting for room while
/// the channel is full) and awaits the answer. ask_error::closed if the receiver is gone or closed,
/// no_reply if the request was dropped unanswered (the manager stopped, or dropped the responder).
template <class Command, detail::channel_request<Command> M>
task<expected<detail::reply_of<M>, ask_error>> ask(mpsc::sender<Command>& tx, M request) {
  auto [reply, answer] = oneshot::channel<detail::reply_of<M>>();
  detail::responder_member(request) = std::move(reply);
  Command command(std::in_place_type<M>, std::move(request));
  if (!co_await tx.send(std::move(command))) co_return unexpected{ask_error::closed};
  auto value = co_await answer;
  if (!value) co_return unexpected{ask_error::no_reply};
  co_return std::move(*value);
}

/// ask with a deadline: ask_error::timeout if no answer came within `timeout` (the wait for room counts);
/// a late answer is discarded.
template <class Command, detail::channel_request<Command> M>
task<expected<detail::reply_of<M>, ask_error>> ask(mpsc::sender<Command>& tx, M request,
                                                   std::chrono::steady_clock::duration timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto [reply, answer] = oneshot::channel<detail::reply_of<M>>();
  detail::responder_member(request) = std::move(reply);
  Command command(std::in_place_type<M>, std::move(request));
  auto sent = co_await tx.send_timeout(std::move(command), timeout);
  if (!sent) co_return unexpected{sent.error().is_timeout() ? ask_error::timeout : ask_error::closed};
  auto value = co_await answer.recv_until(deadline);
  if (!value) co_return unexpected{value.error().is_timeout() ? ask_error::timeout : ask_error::no_reply};
  co_return std::move(*value);
}

/// ask for plain threads: blocks until the answer or the error. Throws std::logic_error on a worker thread
/// of a runtime (it would block the worker).
template <class Command, detail::channel_request<Command> M>
expected<detail::reply_of<M>, ask_error> blocking_ask(mpsc::sender<Command>& tx, M request) {
  auto [reply, answer] = oneshot::channel<detail::reply_of<M>>();
  detail::responder_member(request) = std::move(reply);
  if (!tx.blocking_send(Command(std::in_place_type<M>, std::move(request)))) return unexpected{ask_error::closed};
  auto value = answer.blocking_recv();
  if (!value) return unexpected{ask_error::no_reply};
  return std::move(*value);
}

}  // namespace postal
