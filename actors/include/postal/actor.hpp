// postal actors: a class with one bounded mailbox of one message type (a std::variant of message structs)
// and one handler per type, run as a task on postal's runtime; actor_ref<Message>, its typed address, with
// tell (backpressure), try_tell, blocking_tell, ask (a oneshot reply inside the request) and monitor; and
// the lifecycle around it: start and stop hooks, stop policies, supervision with restart intensity.
// Not for: the channels themselves (mailboxes/) or scheduling (runtime.hpp).
//
// The framework calls exactly these members of your actor class, and nothing else:
//   handle(M&)        one per message type M of the variant; returns void, postal::task<void>, or
//                     std::optional<postal::task<void>> (a task only when it has to wait: no coroutine frame
//                     for the messages it handles at once)
//   on_start()        optional; before the first message (and after each restart); void or task<void>
//   on_stop(reason)   optional; once, after the last message; void or task<void>
//   on_idle()         optional; each time the mailbox is found empty, before the actor waits for more (to
//                     flush work batched over the messages just handled); void or task<void>. The tasks
//                     queued on the actor's worker get one turn first (postal::yield_here), so messages
//                     they send at once still join the batch.
#pragma once

#include <postal/detail/intrusive_list.hpp>
#include <postal/detail/list_wait.hpp>
#include <postal/mpsc.hpp>
#include <postal/oneshot.hpp>
#include <postal/runtime.hpp>
#include <postal/task.hpp>
#include <postal/time.hpp>

#include <algorithm>
#include <limits>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace postal {

/// The reply half of a request (a oneshot sender). A request names its reply type in one of two ways:
///   struct get { std::string key; responder<std::optional<std::string>> reply; };   // or `resp`
///     the handler answers with `message.reply.send(value)`; dropping the responder unanswered gives the
///     asker ask_error::no_reply;
///   struct get { std::string key; using reply_type = std::optional<std::string>; };
///     the handler returns the reply (or a task<reply>), and the framework sends it.
/// Either way `co_await ref.ask(get{"k"})` or `ref.blocking_ask(get{"k"})` gives the reply or an ask_error.
template <class T>
using responder = oneshot::sender<T>;

/// How an actor ended.
struct exit_reason {
  enum class kind_type : std::uint8_t {
    normal,  // it called stop(), or every actor_ref to it was gone and its mailbox drained
    failed,  // a handler or hook threw and its supervision policy stopped it; `message` says what
    killed,  // stopped from outside: actor_ref::kill() or runtime shutdown
  };
  kind_type kind = kind_type::normal;
  std::string message;

  bool is_normal() const noexcept { return kind == kind_type::normal; }
  bool is_failed() const noexcept { return kind == kind_type::failed; }
  bool is_killed() const noexcept { return kind == kind_type::killed; }
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
};

/// Why an ask gave no answer.
enum class ask_error {
  closed,    // the actor was not taking messages (stopped, or stopping)
  no_reply,  // the request was dropped unanswered: the actor stopped, or its handler threw
  timeout,   // no answer before the deadline (a late answer is discarded)
};

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

template <class Message>
class actor_ref;
template <class Message>
class actor;

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

// A request from outside the actor's own handlers: stop or kill it, or a child's escalated failure.
struct control_request {
  enum class kind_type { stop, escalated_failure };
  kind_type kind = kind_type::stop;
  stop_mode mode = stop_mode::drop;
  exit_reason reason;
};

// Put in the mailbox only to wake an actor that waits for messages; the request itself is in the
// control block, so a full mailbox cannot lose it.
struct nudge {};

// A request whose message declares its reply type travels with its responder beside it.
template <class M>
struct asked {
  M message;
  oneshot::sender<typename reply_type_of<M>::type> reply;
};
template <class M>
struct not_asked {};
template <class T>
struct is_asked : std::false_type {};
template <class M>
struct is_asked<asked<M>> : std::true_type {};
template <class M>
using asked_slot = std::conditional_t<declares_reply<M>, asked<M>, not_asked<M>>;

// What an actor's mailbox holds: a message told (index 0), a nudge (1), or a request of the I-th message
// type that declares its reply type (2 + I; the other alternatives there are empty and never used).
template <class Message>
struct envelope_of;
template <class... Ts>
struct envelope_of<std::variant<Ts...>> {
  using type = std::variant<std::variant<Ts...>, nudge, asked_slot<Ts>...>;
};
template <class Message>
using envelope = typename envelope_of<Message>::type;

template <class T, class Variant>
struct alternative_index;
template <class T, class... Ts>
struct alternative_index<T, std::variant<Ts...>> {
  static constexpr std::size_t value = [] {
    constexpr bool same[] = {std::is_same_v<T, Ts>...};
    for (std::size_t i = 0; i < sizeof...(Ts); ++i)
      if (same[i]) return i;
    return sizeof...(Ts);
  }();
};

// Builds the envelope of a request, its responder `reply` put where the message type wants it.
template <class Message, class M, class R>
envelope<Message> request_envelope(M message, oneshot::sender<R> reply) {
  if constexpr (has_responder<M>) {
    responder_member(message) = std::move(reply);
    return envelope<Message>(std::in_place_index<0>, std::move(message));
  } else {
    return envelope<Message>(std::in_place_index<2 + alternative_index<M, Message>::value>,
                             asked<M>{std::move(message), std::move(reply)});
  }
}

template <class Message>
class mailbox_cell;

}  // namespace detail
}  // namespace postal

namespace postal::mpsc::detail {
// An actor's mailbox core lives in the actor's cell (one allocation per actor), laid out compactly: an
// actor is spawned by the million, and the fast path of a tell touches the cell's lines anyway.
template <class... Ts, class... Rest>
struct core_traits<std::variant<std::variant<Ts...>, postal::detail::nudge, Rest...>> {
  using item = std::variant<std::variant<Ts...>, postal::detail::nudge, Rest...>;
  static constexpr bool compact = true;
  static void dispose(bounded_core<item>* core) noexcept {
    static_cast<postal::detail::mailbox_cell<std::variant<Ts...>>*>(core)->core_released();
  }
};
}  // namespace postal::mpsc::detail

namespace postal {
namespace detail {

// What an actor's refs, its runner and its children share besides the mailbox: pending control requests
// and the exit status that monitors watch. It is the base of the actor's cell (actor_cell below), the one
// allocation an actor is, so it is kept small: what only kills, escalations, failures and monitors need
// lives in `rare_state`, allocated the first time one needs it (an actor that is spawned, told and dropped
// never allocates it), and a one-byte spin lock guards it (every critical section is a few instructions;
// a std::mutex would be 40 bytes per actor).
class control_block : public task_body {
 public:
  control_block() = default;

  // Intrusive reference counting (see control_ref). The references together hold one reference to the
  // cell's memory (its job's), dropped with the last of them.
  void add_ref() noexcept { references_.fetch_add(1, std::memory_order_relaxed); }
  void release() noexcept {
    if (references_.fetch_sub(1, std::memory_order_acq_rel) == 1) release_body(this);
  }

  // Records a request (the first one wins, except that a failure replaces a stop), raises the flag and
  // nudges the actor in case it waits for messages.
  void post(control_request request) {
    {
      std::lock_guard lock(lock_);
      rare_state& rare = rare_locked();
      if (!rare.request || request.kind == control_request::kind_type::escalated_failure)
        rare.request = std::move(request);
    }
    pending_.store(true, std::memory_order_release);
    nudge();
  }
  bool pending() const noexcept { return pending_.load(std::memory_order_acquire); }
  std::optional<control_request> take() {
    std::lock_guard lock(lock_);
    pending_.store(false, std::memory_order_relaxed);
    if (!rare_) return std::nullopt;
    return std::exchange(rare_->request, std::nullopt);
  }

  // -- the exit status that monitors wait for: set once, then every waiting monitor is woken ------------
  struct exit_waiter : postal::detail::list_node {
    waker target;
  };
  struct has_finished {
    const control_block* block;
    bool operator()() const noexcept { return block->finished(); }
  };
  using lock_type = mpsc::detail::spinlock;
  using finish_wait = postal::detail::list_wait<exit_waiter, has_finished, lock_type>;

  // Records the exit reason (the first one stays) and wakes the monitors waiting for it. A reason without
  // a message is kept as its kind alone, so that most actors end without allocating.
  void finish(exit_reason reason) {
    std::vector<waker> wakers;
    {
      std::lock_guard lock(lock_);
      if (finished_.load(std::memory_order_relaxed)) return;
      exit_kind_ = reason.kind;
      if (!reason.message.empty()) rare_locked().exit_message = std::move(reason.message);
      finished_.store(true, std::memory_order_release);
      if (rare_)
        while (exit_waiter* waiting = rare_->exit_waiters.pop_front()) wakers.push_back(std::move(waiting->target));
    }
    for (waker& w : wakers) w.wake();
  }
  bool finished() const noexcept { return finished_.load(std::memory_order_acquire); }
  std::optional<exit_reason> exit() const {
    std::lock_guard lock(lock_);
    if (!finished_.load(std::memory_order_relaxed)) return std::nullopt;
    return exit_reason{exit_kind_, rare_ ? rare_->exit_message : std::string()};
  }
  finish_wait wait_finished() {
    std::lock_guard lock(lock_);
    return finish_wait(lock_, rare_locked().exit_waiters, has_finished{this});
  }
  // Blocks the calling thread until finish() was called.
  void block_until_finished() {
    if (postal::detail::spin_until([this] { return finished(); })) return;
    postal::detail::thread_parker parker;
    exit_waiter node;
    node.target = parker.make_waker();
    {
      std::lock_guard lock(lock_);
      if (finished_.load(std::memory_order_relaxed)) return;
      rare_locked().exit_waiters.push_back(&node);
    }
    parker.park();
  }

 protected:
  // Puts a nudge in the actor's mailbox if there is room (a full mailbox means the actor will look at the
  // flag after its current message anyway).
  virtual void nudge() noexcept = 0;

 private:
  struct rare_state {
    std::optional<control_request> request;
    std::string exit_message;
    postal::detail::intrusive_list<exit_waiter> exit_waiters;
  };
  rare_state& rare_locked() {
    if (!rare_) rare_ = std::make_unique<rare_state>();
    return *rare_;
  }

  std::atomic<std::uint32_t> references_{1};
  std::atomic<bool> pending_{false};
  std::atomic<bool> finished_{false};
  mutable lock_type lock_;  // guards rare_ (and what it holds) and exit_kind_
  exit_reason::kind_type exit_kind_ = exit_reason::kind_type::normal;
  std::unique_ptr<rare_state> rare_;
};

// A counted reference to a control block: shared_ptr's job in one pointer and no extra allocation.
class control_ref {
 public:
  control_ref() noexcept = default;
  // Adopts the reference `block` was created with.
  explicit control_ref(control_block* block) noexcept : block_(block) {}
  control_ref(std::nullptr_t) noexcept {}
  control_ref(const control_ref& other) noexcept : block_(other.block_) {
    if (block_) block_->add_ref();
  }
  control_ref(control_ref&& other) noexcept : block_(std::exchange(other.block_, nullptr)) {}
  control_ref& operator=(control_ref other) noexcept {
    std::swap(block_, other.block_);
    return *this;
  }
  ~control_ref() {
    if (block_) block_->release();
  }
  control_block* get() const noexcept { return block_; }
  control_block* operator->() const noexcept { return block_; }
  explicit operator bool() const noexcept { return block_ != nullptr; }

 private:
  control_block* block_ = nullptr;
};

}  // namespace detail

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

namespace detail {
template <class M>
using reply_of = typename reply_type_of<M>::type;
template <class M, class Message>
concept tellable = is_alternative<std::remove_cvref_t<M>, Message>::value;
template <class M, class Message>
concept askable = tellable<M, Message> && (has_responder<M> || declares_reply<M>);
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

/// The typed address of an actor whose mailbox takes `Message` (a std::variant of message types). Cheap to
/// copy. Telling a type that is not one of the variant's alternatives does not compile. While any ref
/// exists the actor keeps running (until it stops itself, is killed, or fails); once every ref is gone it
/// handles what is queued and stops normally.
template <class Message>
class actor_ref {
  using envelope = detail::envelope<Message>;

 public:
  using message_type = Message;

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

  /// `co_await ref.ask(m)`: attaches a responder to the request (see postal::responder), tells it (waiting
  /// for room) and returns the handler's answer, or ask_error::closed (the actor takes no messages) / no_reply (the
  /// request was dropped unanswered: the actor stopped or the handler threw). Never hangs.
  template <detail::askable<Message> M>
  task<expected<detail::reply_of<M>, ask_error>> ask(M message) {
    auto [reply, answer] = oneshot::channel<detail::reply_of<M>>();
    envelope request = detail::request_envelope<Message>(std::move(message), std::move(reply));
    if (!co_await mailbox_.send(std::move(request))) co_return unexpected{ask_error::closed};
    auto value = co_await answer;
    if (!value) co_return unexpected{ask_error::no_reply};
    co_return std::move(*value);
  }

  /// ask with a deadline: ask_error::timeout if no answer came within `timeout` (the wait for mailbox room
  /// counts); a late answer is discarded.
  template <detail::askable<Message> M>
  task<expected<detail::reply_of<M>, ask_error>> ask(M message, std::chrono::steady_clock::duration timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    auto [reply, answer] = oneshot::channel<detail::reply_of<M>>();
    envelope request = detail::request_envelope<Message>(std::move(message), std::move(reply));
    auto sent = co_await mailbox_.send_timeout(std::move(request), timeout);
    if (!sent) co_return unexpected{sent.error().is_timeout() ? ask_error::timeout : ask_error::closed};
    auto value = co_await answer.recv_until(deadline);
    if (!value) co_return unexpected{value.error().is_timeout() ? ask_error::timeout : ask_error::no_reply};
    co_return std::move(*value);
  }

  /// ask for plain threads: blocks until the answer or the error. Throws std::logic_error on a worker thread.
  template <detail::askable<Message> M>
  expected<detail::reply_of<M>, ask_error> blocking_ask(M message) {
    auto [reply, answer] = oneshot::channel<detail::reply_of<M>>();
    if (!mailbox_.blocking_send(detail::request_envelope<Message>(std::move(message), std::move(reply))))
      return unexpected{ask_error::closed};
    auto value = answer.blocking_recv();
    if (!value) return unexpected{ask_error::no_reply};
    return std::move(*value);
  }

  /// blocking_ask with a deadline.
  template <detail::askable<Message> M>
  expected<detail::reply_of<M>, ask_error> blocking_ask(M message,
                                                        std::chrono::steady_clock::duration timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    auto [reply, answer] = oneshot::channel<detail::reply_of<M>>();
    auto sent = mailbox_.blocking_send_timeout(detail::request_envelope<Message>(std::move(message), std::move(reply)),
                                               timeout);
    if (!sent) return unexpected{sent.error().is_timeout() ? ask_error::timeout : ask_error::closed};
    auto value = answer.blocking_recv_until(deadline);
    if (!value) return unexpected{value.error().is_timeout() ? ask_error::timeout : ask_error::no_reply};
    return std::move(*value);
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
  bool same_actor(const actor_ref& other) const noexcept { return mailbox_.same_channel(other.mailbox_); }

 private:
  friend class actor<Message>;
  template <class A, class... Args>
  friend actor_ref<typename A::message_type> detail::spawn_actor_with(runtime&,
                                                                      detail::control_ref,
                                                                      actor_options, Args&&...);

  actor_ref(mpsc::sender<envelope> mailbox, detail::control_ref control)
      : mailbox_(std::move(mailbox)), control_(std::move(control)) {}

  template <class M>
  static M unwrap(envelope&& item) {
    return std::get<M>(std::get<0>(std::move(item)));
  }

  mpsc::sender<envelope> mailbox_;
  detail::control_ref control_;
};

namespace detail {
// The part of an actor's cell that depends on its message type only: the control block and the mailbox's
// core, as bases (the core's disposal, and the actor's self(), find the cell from them).
template <class Message>
class mailbox_cell : public control_block, public mpsc::detail::bounded_core<envelope<Message>> {
 public:
  using core_type = mpsc::detail::bounded_core<envelope<Message>>;

  explicit mailbox_cell(std::size_t capacity) : core_type(capacity) {
    retain_body(this);  // held by the mailbox's handles together (core_released)
    retain_body(this);  // held by the control block's references together (control_block::release)
  }

  core_type& core() noexcept { return *this; }
  postal::runtime& runtime() noexcept { return body_runtime(this); }
  // A sender while any ref to the actor exists (self() needs no weak sender of its own).
  std::optional<mpsc::sender<envelope<Message>>> upgrade() noexcept { return mpsc::detail::upgrade_core(core()); }
  // The mailbox's last handle is gone.
  void core_released() noexcept { release_body(this); }

 private:
  // Puts a nudge in the mailbox if there is room (a full mailbox means the actor will look at the flag
  // after its current message anyway).
  void nudge() noexcept override {
    auto mailbox = upgrade();
    if (!mailbox) return;
    try {
      (void)mailbox->try_send(envelope<Message>(std::in_place_index<1>));
    } catch (const std::bad_alloc&) {
      // The mailbox could not get its slots (its first message): the request waits in the control block
      // until the actor's next message.
    }
  }
};
}  // namespace detail

/// The base class of an actor whose mailbox takes `Message`. Derive from it, give your class a
/// `handle(M&)` per message type, and spawn it with postal::spawn_actor. The members the framework calls
/// are listed at the top of this header; everything else in your class is yours.
template <class Message>
class actor {
 public:
  using message_type = Message;

  actor() = default;
  actor(const actor&) = delete;
  actor& operator=(const actor&) = delete;
  virtual ~actor() = default;

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

namespace detail {

template <class A>
concept has_on_start = requires(A& a) {
  a.on_start();
};
template <class A>
concept has_on_stop = requires(A& a, const exit_reason& r) {
  a.on_stop(r);
};
template <class A>
concept has_on_idle = requires(A& a) {
  a.on_idle();
};

// Awaits a handler's task and drops its value (a request with a declared reply type that was told, not
// asked), or sends the value to the asker.
template <class R>
task<void> discard_reply(task<R> work) {
  (void)co_await std::move(work);
}
template <class R>
task<void> send_reply(task<R> work, oneshot::sender<R> reply) {
  (void)reply.send(co_await std::move(work));
}

template <class T>
struct is_task : std::false_type {};
template <class T>
struct is_task<task<T>> : std::true_type {};

// Calls a handler or hook: a void one at once (nothing returned), a coroutine one is returned to be awaited.
// A handler of a message that declares its reply type may return that value (or a task of it): it is
// dropped here, since the message was told, not asked.
template <class F>
std::optional<task<void>> invoke_member(F&& call) {
  using result = std::invoke_result_t<F>;
  if constexpr (std::is_void_v<result>) {
    std::forward<F>(call)();
    return std::nullopt;
  } else if constexpr (std::is_same_v<result, task<void>> || std::is_same_v<result, std::optional<task<void>>>) {
    return std::forward<F>(call)();
  } else if constexpr (is_task<result>::value) {
    return discard_reply(std::forward<F>(call)());
  } else {
    (void)std::forward<F>(call)();
    return std::nullopt;
  }
}

// Checks a handler's return type: void, task<void> or std::optional<task<void>>, or for a message with
// `using reply_type = R;` R or task<R> instead.
template <class M, class Result>
constexpr bool valid_handler_result() {
  if constexpr (std::is_void_v<Result> || std::is_same_v<Result, task<void>> ||
                std::is_same_v<Result, std::optional<task<void>>>) {
    return !declares_reply<M>;
  } else if constexpr (declares_reply<M>) {
    using R = typename M::reply_type;
    return std::is_same_v<Result, task<R>> || std::is_convertible_v<Result, R>;
  } else {
    return false;
  }
}

std::string describe(std::exception_ptr error);
void report_actor_failure(const std::string& what, bool restarting) noexcept;

// One actor, in one allocation: its runtime job (allocate_body), and behind it this cell, holding the control
// block (a base), the mailbox's core (a base, laid out compactly), the runner's state and the actor object
// itself. The runner is a state machine (task_body), not a coroutine: an idle actor keeps no frame. Each
// step() runs until the actor must wait: for a message (its waker is parked in the mailbox), for a
// coroutine handler or hook (the job runs that task, then steps again), or after a yield.
template <class A, class Factory>
class actor_cell final : public mailbox_cell<typename A::message_type> {
  using Message = typename A::message_type;
  using item = envelope<Message>;
  using outcome = task_body::outcome;
  using result = task_body::result;

 public:
  // Builds the cell in the storage of allocate_body; `first` receives the mailbox's first sender.
  actor_cell(control_ref supervisor, const actor_options& options, Factory factory,
             std::optional<mpsc::sender<item>>& first)
      : mailbox_cell<Message>(options.mailbox_capacity),
        mailbox_(adopt(*this, first)),
        supervisor_(std::move(supervisor)),
        period_(options.on_failure.period),
        max_restarts_(clamp32(options.on_failure.max_restarts)),
        batch_(clamp32(options.batch)),
        policy_(options.on_failure.policy),
        factory_(std::move(factory)) {}

  ~actor_cell() override = default;

  result step(suspend_hooks& job) noexcept override {
    parked_ = false;  // a parked waker has been used: this turn is its wake-up
    for (;;) {
      if (phase_ == phase::stopped) {
        if (pending_) {
          try {
            take_pending();
          } catch (...) {
            report_on_stop_failure();
          }
        }
        end();
        return {outcome::finished};
      }
      try {
        if (pending_) take_pending();  // a handler's or hook's task has finished: its exception is thrown here
        switch (phase_) {
          case phase::start:
            build();
            phase_ = phase::receive;
            if constexpr (has_on_start<A>) {
              if (auto work = invoke_member([this] { return instance().on_start(); })) return await(work, job);
            }
            break;
          case phase::receive:
            apply_requests();
            if (take_next()) {
              phase_ = phase::dispatch;
              if (++in_a_row_ >= batch_) {  // a batch handled: other work on this worker runs first
                in_a_row_ = 0;
                job.yield({});
                return {outcome::waiting};
              }
              break;
            }
            in_a_row_ = 0;
            if constexpr (has_on_idle<A>) {
              // The tasks queued on this worker get one turn before on_idle: they are often the senders of
              // the next messages (callers just answered), which then join the batch that on_idle flushes.
              // With nothing else queued here this costs nothing.
              phase_ = phase::idle_yielded;
              if (job.yield_here({})) return {outcome::waiting};
              phase_ = phase::idle;  // nothing else ran here, so nothing new to look for
            } else {
              phase_ = phase::park;
            }
            break;
          case phase::idle_yielded:
            phase_ = take_next() ? phase::dispatch : phase::idle;
            break;
          case phase::idle:
            phase_ = phase::idle_hooked;
            if constexpr (has_on_idle<A>) {
              if (auto work = invoke_member([this] { return instance().on_idle(); })) return await(work, job);
            }
            break;
          case phase::idle_hooked:
            phase_ = take_next() ? phase::dispatch : phase::park;
            break;
          case phase::park: {
            auto next = mailbox_.try_recv();
            if (next) {
              current_.emplace(std::move(*next));
              phase_ = phase::dispatch;
            } else if (next.error() == mpsc::try_recv_error::disconnected) {
              phase_ = phase::stop;  // closed (or every ref gone) and drained
            } else if (this->core().park(job.waker_for({}))) {
              parked_ = true;
              return {outcome::waiting};
            }  // else a message is on its way, or the mailbox just finished: look again
            break;
          }
          case phase::dispatch:
            phase_ = phase::dispatched;
            if (auto work = dispatch(instance(), *current_)) return await(work, job);
            break;
          case phase::dispatched:
            current_.reset();
            phase_ = phase::receive;
            break;
          case phase::stop:
            phase_ = phase::stopped;
            if constexpr (has_on_stop<A>) {
              if (alive_) {
                try {
                  const exit_reason& why = reason_ ? *reason_ : normal_exit();
                  if (auto work = invoke_member([&] { return instance().on_stop(why); })) return await(work, job);
                } catch (...) {
                  report_on_stop_failure();
                }
              }
            }
            break;
          case phase::stopped:
            break;
        }
      } catch (...) {
        fail(std::current_exception());
      }
    }
  }

  // Runtime shutdown cancels the actor while it waits: as if its frame were destroyed. The actor object
  // goes, and the actor is marked ended (killed), so monitors never hang; its mailbox closes and what is
  // queued is destroyed (askers get no_reply).
  void cancel() noexcept override {
    if (std::exchange(parked_, false)) this->core().unpark();
    pending_.reset();
    current_.reset();
    destroy_instance();
    if (!control_block::finished()) control_block::finish(exit_reason{exit_reason::kind_type::killed, "cancelled at runtime shutdown"});
    release_state();
  }

 private:
  enum class phase : std::uint8_t {
    start,         // build the actor object, run on_start
    receive,       // apply stop requests, take the next message
    idle_yielded,  // found the mailbox empty and let this worker's queued tasks run: look again
    idle,          // run on_idle
    idle_hooked,   // ran on_idle: look again
    park,          // wait for a message
    dispatch,      // run the handler of current_
    dispatched,    // its handler is done
    stop,          // run on_stop
    stopped,       // on_stop is done: end
  };

  static std::uint32_t clamp32(std::size_t n) noexcept {
    return static_cast<std::uint32_t>(std::min<std::size_t>(n, std::numeric_limits<std::uint32_t>::max()));
  }
  static mpsc::receiver<item> adopt(mailbox_cell<Message>& cell, std::optional<mpsc::sender<item>>& first) {
    auto [tx, rx] = mpsc::detail::adopt_core(cell.core());
    first.emplace(std::move(tx));
    return std::move(rx);
  }
  // In a handler of an exception from on_stop: reported, not supervised (the actor is stopping anyway).
  static void report_on_stop_failure() {
    report_actor_failure("on_stop threw: " + describe(std::current_exception()), false);
  }
  static const exit_reason& normal_exit() {
    static const exit_reason normal{};
    return normal;
  }

  // -- the actor object: in the cell, or on the heap if it needs more than malloc's alignment ------------
  static constexpr bool inline_instance = alignof(A) <= alignof(std::max_align_t);
  A& instance() noexcept {
    if constexpr (inline_instance)
      return *std::launder(reinterpret_cast<A*>(instance_storage_));
    else
      return *instance_storage_;
  }
  void build() {
    if constexpr (inline_instance) {
      factory_(static_cast<void*>(instance_storage_));
    } else {
      instance_storage_ = std::unique_ptr<A>(static_cast<A*>(factory_(nullptr)));
    }
    alive_ = true;
    instance().cell_ = this;
  }
  void destroy_instance() noexcept {
    if (!std::exchange(alive_, false)) return;
    if constexpr (inline_instance)
      std::destroy_at(&instance());
    else
      instance_storage_.reset();
  }

  // Awaits a handler's or hook's task: the job runs it, then calls step() again.
  result await(std::optional<task<void>>& work, suspend_hooks& job) noexcept {
    pending_ = std::move(work);
    return task_body::await_child(task_access::handle(*pending_), job);
  }
  void take_pending() {
    std::optional<task<void>> done = std::move(pending_);
    pending_.reset();
    task_access::take_result(*done);
  }

  bool take_next() {
    auto next = mailbox_.try_recv();
    if (!next) return false;
    current_.emplace(std::move(*next));
    return true;
  }

  template <class M>
  static auto call_handler(A& instance, M& message) {
    static_assert(
        requires { instance.handle(message); },
        "the actor class has no handle(M&) for one of its message types");
    using handler_result = decltype(instance.handle(message));
    static_assert(valid_handler_result<M, handler_result>(),
                  "a handler returns void, postal::task<void> or std::optional<postal::task<void>>; a "
                  "handler of a message that declares "
                  "`using reply_type = R;` returns R or postal::task<R> instead");
    return instance.handle(message);
  }

  // Runs the handler of an envelope; a coroutine handler's task is returned to be awaited.
  static std::optional<task<void>> dispatch(A& instance, item& next) {
    return std::visit(
        [&instance](auto& content) -> std::optional<task<void>> {
          using content_type = std::remove_cvref_t<decltype(content)>;
          if constexpr (std::is_same_v<content_type, Message>) {
            return std::visit(
                [&instance](auto& message) { return invoke_member([&] { return call_handler(instance, message); }); },
                content);
          } else if constexpr (is_asked<content_type>::value) {
            using handler_result = decltype(call_handler(instance, content.message));
            if constexpr (is_task<handler_result>::value) {
              return send_reply(call_handler(instance, content.message), std::move(content.reply));
            } else {
              (void)content.reply.send(call_handler(instance, content.message));
              return std::nullopt;
            }
          } else {
            return std::nullopt;  // a nudge: the control block was checked already
          }
        },
        next);
  }

  // Closes the mailbox; with drop, destroys what is queued (their askers get no_reply).
  void close_mailbox(stop_mode mode) {
    mailbox_.close();
    if (mode == stop_mode::drop)
      while (mailbox_.try_recv()) {
      }
  }

  // Applies a stop the actor asked for (stop()) or a control request (kill, a child's escalated failure)
  // once, before the next message. Throws the escalated failure, so that supervision handles it like a
  // handler's exception.
  void apply_requests() {
    A& self = instance();
    if (self.requested_stop_ && !closed_) {
      closed_ = true;
      close_mailbox(*self.requested_stop_);
      reason_.reset();  // normal
    }
    if (control_block::pending()) {
      if (auto request = control_block::take()) {
        if (request->kind == control_request::kind_type::escalated_failure)
          throw std::runtime_error(request->reason.message);
        closed_ = true;
        close_mailbox(request->mode);
        reason_ = std::make_unique<exit_reason>(std::move(request->reason));
      }
    }
  }

  // A handler, hook or the actor's constructor threw: the message being handled is destroyed (its asker
  // gets no_reply) and the supervision policy decides between a fresh actor object and the end.
  void fail(std::exception_ptr failure) noexcept {
    pending_.reset();
    current_.reset();
    bool restart = false;
    try {
      restart = recover(std::move(failure));
    } catch (...) {  // no memory to describe the failure
      reason_.reset();
      close_mailbox(stop_mode::drop);
    }
    if (restart) {
      destroy_instance();
      phase_ = phase::start;
    } else {
      phase_ = phase::stop;
    }
  }

  // Applies the supervision policy: true if the actor restarts; otherwise reason_ says why it stops, its
  // mailbox is closed and emptied, and an escalating failure has been posted to the supervisor.
  bool recover(std::exception_ptr failure) {
    const std::string what = describe(failure);
    if (policy_ == supervision::policy_type::restart) {
      const auto now = std::chrono::steady_clock::now();
      if (!restarts_) restarts_ = std::make_unique<std::vector<std::chrono::steady_clock::time_point>>();
      std::erase_if(*restarts_, [&](auto at) { return now - at > period_; });
      if (restarts_->size() < max_restarts_) {
        restarts_->push_back(now);
        report_actor_failure(what, true);
        return true;
      }
      reason_ = std::make_unique<exit_reason>(
          exit_reason::kind_type::failed,
          what + " (restarted " + std::to_string(max_restarts_) + " times within " +
              std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(period_).count()) +
              " ms: giving up)");
    } else {
      reason_ = std::make_unique<exit_reason>(exit_reason::kind_type::failed, what);
      if (policy_ == supervision::policy_type::escalate && supervisor_)
        supervisor_->post({control_request::kind_type::escalated_failure, stop_mode::drop,
                           exit_reason{exit_reason::kind_type::failed, "a child actor failed: " + what}});
    }
    report_actor_failure(what, false);
    close_mailbox(stop_mode::drop);
    return false;
  }

  // The end: the actor object goes, monitors learn the exit reason, and the cell lets go of its mailbox
  // and supervisor. (The cell's memory stays while refs and monitors hold it.)
  void end() noexcept {
    destroy_instance();
    control_block::finish(reason_ ? std::move(*reason_) : exit_reason{});
    release_state();
  }
  void release_state() noexcept {
    { auto gone = std::move(mailbox_); }  // closes the mailbox and destroys what is still queued
    supervisor_ = nullptr;
    restarts_.reset();
    reason_.reset();
  }

  // Every byte below is in every actor, so the state is packed and what only failures need is allocated
  // by the first failure.
  mpsc::receiver<item> mailbox_;
  control_ref supervisor_;  // the parent's, when spawned as a child
  std::chrono::steady_clock::duration period_;  // of the restart intensity
  std::uint32_t max_restarts_;  // counts past 2^32 - 1 mean "no limit" either way
  std::uint32_t batch_;
  std::uint32_t in_a_row_ = 0;  // messages handled since the last yield
  supervision::policy_type policy_;
  phase phase_ = phase::start;
  bool alive_ = false;   // the actor object exists
  bool closed_ = false;  // a stop closed the mailbox
  bool parked_ = false;  // a waker is parked in the mailbox
  // The message being handled (a coroutine handler refers to it). Here, a small one fills the padding.
  std::optional<item> current_;
  std::unique_ptr<exit_reason> reason_;  // why the actor stops, once it does; null for a normal stop
  std::optional<task<void>> pending_;    // the handler's or hook's task being awaited
  std::unique_ptr<std::vector<std::chrono::steady_clock::time_point>> restarts_;  // recent restarts
  [[no_unique_address]] Factory factory_;  // builds the actor object (again after a restart)
  alignas(inline_instance ? alignof(A) : alignof(std::unique_ptr<A>))
      std::conditional_t<inline_instance, unsigned char[sizeof(A)], std::unique_ptr<A>> instance_storage_;
};

template <class A, class... Args>
actor_ref<typename A::message_type> spawn_actor_with(runtime& rt, control_ref supervisor,
                                                     actor_options options, Args&&... args) {
  using Message = typename A::message_type;
  static_assert(std::is_base_of_v<actor<Message>, A>, "an actor class derives from postal::actor<Message>");
  mpsc::detail::check_capacity(options.mailbox_capacity, "postal::spawn_actor: the mailbox");
  // Builds the actor object in `storage`, or on the heap when given none; keeps the spawn arguments for a
  // restart (an actor spawned without arguments keeps no bytes for them).
  auto factory = [... saved = std::forward<Args>(args)](void* storage) -> void* {
    if (storage == nullptr) return new A(saved...);
    return ::new (storage) A(saved...);
  };
  using cell = actor_cell<A, decltype(factory)>;
  void* storage = allocate_body(&rt, sizeof(cell));
  std::optional<mpsc::sender<envelope<Message>>> first;
  cell* built;
  try {
    built = ::new (storage) cell(std::move(supervisor), options, std::move(factory), first);
  } catch (...) {
    discard_storage(storage);
    throw;
  }
  // The runtime finds the body at the start of the storage (the first base's first base).
  if (static_cast<void*>(static_cast<task_body*>(built)) != storage) std::terminate();
  actor_ref<Message> ref(std::move(*first), control_ref(built));
  start_body(built);  // after shutdown: throws, and ref's destructor lets go of the cell
  return ref;
}

}  // namespace detail

/// Spawns an actor of class A (derived from postal::actor<Message>) on `rt`, built as A(args...). The
/// arguments are copied and kept, to build a fresh A when its supervision policy restarts it.
template <class A, class... Args>
actor_ref<typename A::message_type> spawn_actor(runtime& rt, actor_options options, Args&&... args) {
  return detail::spawn_actor_with<A>(rt, nullptr, options, std::forward<Args>(args)...);
}

/// Cancels a delayed or periodic tell (tell_after, tell_every). Move-only. Destroying the handle without
/// calling cancel() leaves the timer running (fire and forget).
class timer_handle {
 public:
  timer_handle() = default;
  timer_handle(timer_handle&&) noexcept = default;
  timer_handle& operator=(timer_handle&&) noexcept = default;
  /// Cancels the timer: a message not yet told never will be. Idempotent; never waits.
  void cancel() {
    if (cancel_) {
      (void)cancel_->send(true);
      cancel_.reset();
    }
  }

 private:
  template <class Message, class M>
  friend timer_handle tell_after(runtime&, actor_ref<Message>, std::chrono::steady_clock::duration, M);
  template <class Message, class M>
  friend timer_handle tell_every(runtime&, actor_ref<Message>, std::chrono::steady_clock::duration, M);
  explicit timer_handle(oneshot::sender<bool> cancel)
      : cancel_(std::make_unique<oneshot::sender<bool>>(std::move(cancel))) {}

  std::unique_ptr<oneshot::sender<bool>> cancel_;
};

namespace detail {
// Waits until `deadline` unless the handle cancels first; true if the timer should fire. A dropped handle
// (its sender gone) means "keep going": the rest of the wait is a plain sleep, and so are later ones.
inline task<bool> wait_or_cancel(oneshot::receiver<bool>& cancel, bool& detached,
                                 std::chrono::steady_clock::time_point deadline) {
  if (!detached) {
    auto outcome = co_await cancel.recv_until(deadline);
    if (outcome) co_return false;  // cancelled
    detached = outcome.error().is_closed();
    if (!detached) co_return true;  // the deadline passed
  }
  co_await sleep_until(deadline);
  co_return true;
}
}  // namespace detail

/// Tells `message` to `target` once `delay` has passed (through CAF's clock; no thread of postal's own).
/// The tell waits for mailbox room like any tell. Returns a handle whose cancel() withdraws it.
template <class Message, class M>
timer_handle tell_after(runtime& rt, actor_ref<Message> target, std::chrono::steady_clock::duration delay,
                        M message) {
  static_assert(detail::tellable<M, Message>, "the actor's mailbox does not take this message type");
  auto [cancel_tx, cancel_rx] = oneshot::channel<bool>();
  const auto deadline = std::chrono::steady_clock::now() + delay;
  rt.spawn([](actor_ref<Message> target, M message, oneshot::receiver<bool> cancel,
              std::chrono::steady_clock::time_point deadline) -> task<void> {
    bool detached = false;
    if (co_await detail::wait_or_cancel(cancel, detached, deadline))
      (void)co_await target.tell(std::move(message));
  }(std::move(target), std::move(message), std::move(cancel_rx), deadline));
  return timer_handle(std::move(cancel_tx));
}

/// Tells a copy of `message` to `target` every `period` (the first after one period), until cancel() or
/// until the actor stops taking messages. Ticks do not pile up: a tick that waits for mailbox room delays
/// the next one (the schedule stays anchored to the start, so it catches up without bursts beyond that).
template <class Message, class M>
timer_handle tell_every(runtime& rt, actor_ref<Message> target, std::chrono::steady_clock::duration period,
                        M message) {
  static_assert(detail::tellable<M, Message>, "the actor's mailbox does not take this message type");
  static_assert(std::is_copy_constructible_v<M>, "tell_every tells copies of the message");
  if (period <= std::chrono::steady_clock::duration::zero())
    throw std::invalid_argument("postal::tell_every: the period must be positive");
  auto [cancel_tx, cancel_rx] = oneshot::channel<bool>();
  rt.spawn([](actor_ref<Message> target, M message, oneshot::receiver<bool> cancel,
              std::chrono::steady_clock::duration period) -> task<void> {
    bool detached = false;
    auto next = std::chrono::steady_clock::now() + period;
    for (;;) {
      if (!co_await detail::wait_or_cancel(cancel, detached, next)) co_return;
      M tick = message;
      if (!co_await target.tell(std::move(tick))) co_return;  // the actor stopped
      next = std::max(next + period, std::chrono::steady_clock::now());
    }
  }(std::move(target), std::move(message), std::move(cancel_rx), period));
  return timer_handle(std::move(cancel_tx));
}

}  // namespace postal
