// postal ask: the command pattern of the seed over a plain mpsc channel. A manager task owns a resource and
// receives commands from an mpsc::receiver<Command> (a std::variant of request structs); each request
// carries its responder (see postal::responder in <postal/actor/request.hpp>), and the asker awaits the answer:
//
//   struct get { std::string key; postal::responder<std::optional<std::string>> resp; };
//   struct set { std::string key; std::string value; postal::responder<void_reply> resp; };
//   using command = std::variant<get, set>;
//   get request{"hello", {}};
//   auto value = co_await postal::ask(tx, std::move(request));      // in a task (a named request: g++ 12
//                                                                    // miscompiles a braced temporary here)
//   auto done = postal::blocking_ask(tx, set{"hello", "world", {}}); // on a plain thread
//
// For actors, actor_ref::ask does the same and also accepts requests that declare `using reply_type = R;`.
// Not for: request routing or retries (build those from actors).
#pragma once

#include <postal/actor/request.hpp>
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

// The command that carries `request` with a fresh responder inside, and the receiver of its answer.
template <class Command, class M>
std::pair<Command, oneshot::receiver<reply_of<M>>> command_with_responder(M request) {
  auto [reply, answer] = oneshot::channel<reply_of<M>>();
  responder_member(request) = std::move(reply);
  return {Command(std::in_place_type<M>, std::move(request)), std::move(answer)};
}
}  // namespace detail

/// `co_await ask(tx, request)`: attaches a fresh responder to `request`, sends it (waiting for room while
/// the channel is full) and awaits the answer. ask_error::closed if the receiver is gone or closed,
/// no_reply if the request was dropped unanswered (the manager stopped, or dropped the responder).
template <class Command, detail::channel_request<Command> M>
task<expected<detail::reply_of<M>, ask_error>> ask(mpsc::sender<Command>& tx, M request) {
  auto [command, answer] = detail::command_with_responder<Command>(std::move(request));
  return detail::ask_through(tx, std::move(command), std::move(answer), detail::no_deadline{});
}

/// ask with a deadline: ask_error::timeout if no answer came within `timeout` (the wait for room counts);
/// a late answer is discarded.
template <class Command, detail::channel_request<Command> M>
task<expected<detail::reply_of<M>, ask_error>> ask(mpsc::sender<Command>& tx, M request,
                                                   std::chrono::steady_clock::duration timeout) {
  auto [command, answer] = detail::command_with_responder<Command>(std::move(request));
  return detail::ask_through(tx, std::move(command), std::move(answer), detail::ask_deadline(timeout));
}

/// ask for plain threads: blocks until the answer or the error. Throws std::logic_error on a worker thread
/// of a runtime (it would block the worker).
template <class Command, detail::channel_request<Command> M>
expected<detail::reply_of<M>, ask_error> blocking_ask(mpsc::sender<Command>& tx, M request) {
  auto [command, answer] = detail::command_with_responder<Command>(std::move(request));
  return detail::blocking_ask_through(tx, std::move(command), std::move(answer), detail::no_deadline{});
}

}  // namespace postal
