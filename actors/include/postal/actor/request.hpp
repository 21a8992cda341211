// postal requests and replies: a request carries its reply channel (responder<T>, a oneshot sender) or
// declares its reply type; ask_error says why an ask gave no answer. The traits that tell a request's reply
// type, and the one implementation of "send a request, then await its answer" that every ask uses.
// Not for: actor addresses (ref.hpp); the command pattern over a plain channel is <postal/ask.hpp>.
#pragma once

#include <postal/expected.hpp>
#include <postal/mpsc.hpp>
#include <postal/oneshot.hpp>
#include <postal/task.hpp>

#include <chrono>
#include <iosfwd>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

namespace postal {

/// The reply half of a request (a oneshot sender). A request names its reply type in one of two ways:
///   struct get { std::string key; responder<std::optional<std::string>> reply; };   // or `resp`
///     the handler answers with `message.reply.send(value)`; dropping the responder unanswered gives the
///     asker ask_error::no_reply;
///   struct get { std::string key; using reply_type = std::optional<std::string>; };
///     the handler returns the reply (or a task<reply>), and the framework sends it.
/// Either way `co_await ref.ask(request)` or `ref.blocking_ask(request)` gives the reply or an ask_error.
/// (Build the request as a named local first, `get request{"k"};`, never as a braced temporary inside the
/// co_await expression: g++ 12 destroys such a temporary's moved-from members twice.)
template <class T>
using responder = oneshot::sender<T>;
/// Why an ask gave no answer.
enum class ask_error {
  closed,    // the actor was not taking messages (stopped, or stopping)
  no_reply,  // the request was dropped unanswered: the actor stopped, or its handler threw
  timeout,    // no answer before the deadline (a late answer is discarded)
  node_down,  // a remote actor's node was declared down before the answer came (a request in flight may
              // or may not have been handled there)
};

// Printing, as every postal error: to_string(e) is one line for a log or a user; operator<< writes the same.
inline std::string to_string(ask_error error) {
  switch (error) {
    case ask_error::closed:
      return "the actor takes no messages (it stopped, or is stopping)";
    case ask_error::no_reply:
      return "the request was dropped unanswered (the actor stopped, or its handler threw)";
    case ask_error::timeout:
      return "no answer before the deadline";
    case ask_error::node_down:
      return "the actor's node went down before it answered";
  }
  return "unknown ask_error";
}
inline std::ostream& operator<<(std::ostream& out, ask_error error) { return out << to_string(error); }

namespace detail {

template <class T, class Variant>
struct is_alternative : std::false_type {};
template <class T, class... Ts>
struct is_alternative<T, std::variant<Ts...>> : std::disjunction<std::is_same<T, Ts>...> {};

template <class R>
struct responder_traits : std::false_type {};
template <class T>
struct responder_traits<oneshot::sender<T>> : std::true_type {
  using value_type = T;
};

// A request names its reply in one of two ways. Either it carries the responder itself, as a member named
// `reply` (or `resp`, the seed's name) of type responder<T>, and its handler answers through it; or it
// declares `using reply_type = T;` and its handler returns the T (or a task<T>), which the framework sends.
template <class M>
concept has_reply_member = requires(M& m) {
  m.reply;
}
&&responder_traits<std::remove_cvref_t<decltype(M::reply)>>::value;
template <class M>
concept has_resp_member = requires(M& m) {
  m.resp;
}
&&responder_traits<std::remove_cvref_t<decltype(M::resp)>>::value;
template <class M>
concept has_responder = has_reply_member<M> || has_resp_member<M>;
template <class M>
concept declares_reply = !has_responder<M> && requires { typename M::reply_type; };

// The responder member of a request that carries one (`reply` wins if a type has both names).
template <has_responder M>
auto& responder_member(M& message) noexcept {
  if constexpr (has_reply_member<M>)
    return message.reply;
  else
    return message.resp;
}

template <class M>
struct reply_type_of;
template <has_responder M>
struct reply_type_of<M> {
  using type = typename responder_traits<std::remove_cvref_t<decltype(responder_member(std::declval<M&>()))>>::value_type;
};
template <declares_reply M>
struct reply_type_of<M> {
  using type = typename M::reply_type;
};
template <class M>
using reply_of = typename reply_type_of<M>::type;

// How long an ask may take: no limit, or a timeout that covers the wait for room and the wait for the answer.
struct no_deadline {};
struct ask_deadline {
  explicit ask_deadline(std::chrono::steady_clock::duration limit)
      : timeout(limit), at(std::chrono::steady_clock::now() + limit) {}
  std::chrono::steady_clock::duration timeout;
  std::chrono::steady_clock::time_point at;
};

// Why an ask that got no answer failed: as it is, for a plain channel (see ask_through's `why`).
struct as_is {
  ask_error operator()(ask_error error) const noexcept { return error; }
};

// The one ask. Every ask of postal (actor_ref::ask and blocking_ask, postal::ask over a plain channel) builds
// its request with the responder of `answer` inside, in its own envelope `Item`, and hands it here: it is
// sent through `tx` (waiting for room), then the answer is awaited. ask_error::closed when the receiver is
// gone or closed, no_reply when the responder was dropped unanswered, timeout when a deadline passed first
// (a late answer is discarded). `why` may refine closed and no_reply (an actor ref says node_down when the
// remote actor's node is gone).
template <class Item, class R, class Deadline, class Why = as_is>
task<expected<R, ask_error>> ask_through(mpsc::sender<Item>& tx, Item request, oneshot::receiver<R> answer,
                                         Deadline deadline, Why why = {}) {
  if constexpr (std::is_same_v<Deadline, no_deadline>) {
    if (!co_await tx.send(std::move(request))) co_return unexpected{why(ask_error::closed)};
    auto value = co_await answer;
    if (!value) co_return unexpected{why(ask_error::no_reply)};
    co_return std::move(*value);
  } else {
    auto sent = co_await tx.send_timeout(std::move(request), deadline.timeout);
    if (!sent) co_return unexpected{sent.error().is_timeout() ? ask_error::timeout : why(ask_error::closed)};
    auto value = co_await answer.recv_until(deadline.at);
    if (!value)
      co_return unexpected{value.error().is_timeout() ? ask_error::timeout : why(ask_error::no_reply)};
    co_return std::move(*value);
  }
}

// The one ask for plain threads: as ask_through, blocking the calling thread. Throws std::logic_error on a
// runtime worker thread (it would block the worker).
template <class Item, class R, class Deadline, class Why = as_is>
expected<R, ask_error> blocking_ask_through(mpsc::sender<Item>& tx, Item request, oneshot::receiver<R> answer,
                                            Deadline deadline, Why why = {}) {
  if constexpr (std::is_same_v<Deadline, no_deadline>) {
    if (!tx.blocking_send(std::move(request))) return unexpected{why(ask_error::closed)};
    auto value = answer.blocking_recv();
    if (!value) return unexpected{why(ask_error::no_reply)};
    return std::move(*value);
  } else {
    auto sent = tx.blocking_send_timeout(std::move(request), deadline.timeout);
    if (!sent) return unexpected{sent.error().is_timeout() ? ask_error::timeout : why(ask_error::closed)};
    auto value = answer.blocking_recv_until(deadline.at);
    if (!value) return unexpected{value.error().is_timeout() ? ask_error::timeout : why(ask_error::no_reply)};
    return std::move(*value);
  }
}

}  // namespace detail
}  // namespace postal
