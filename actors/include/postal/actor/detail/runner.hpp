// What runs an actor: its cell (one allocation: the runtime's job, the control block, the mailbox's core,
// the runner's state and the actor object) and the runner, a state machine that takes messages, calls the
// handlers and hooks, applies stop requests and supervision. Internal to postal's actors.
#pragma once

#include <postal/actor/base.hpp>
#include <postal/actor/detail/control_block.hpp>
#include <postal/actor/detail/envelope.hpp>
#include <postal/actor/detail/mailbox_cell.hpp>
#include <postal/actor/options.hpp>
#include <postal/detail/channel_access.hpp>
#include <postal/mpsc.hpp>
#include <postal/oneshot.hpp>
#include <postal/runtime.hpp>
#include <postal/task.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <exception>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace postal {
namespace detail {

// Marks an actor class that takes its mailbox's envelopes whole, `handle_envelope(envelope<Message>&)`,
// instead of one handler per message type: a stand-in that forwards messages and requests elsewhere (a
// remote actor's proxy in postal::cluster), responders included. Not for users' actors.
struct takes_envelopes {};

// Which hooks an actor class overrides: where the member a hook's name finds is the class's own (or an
// intermediate base's), not postal::actor's default. A hook the class keeps private or protected is a
// compile error, not a hook the framework silently never calls.
template <class A>
struct actor_hooks {
  using base = actor<typename A::message_type>;
  static_assert(requires {
    &A::on_start;
    &A::on_start_async;
    &A::on_stop;
    &A::on_stop_async;
    &A::on_idle;
    &A::on_idle_async;
  }, "postal: an actor's hooks (on_start, on_stop, on_idle and their _async forms) must be public");
  static constexpr bool on_start = !std::is_same_v<decltype(&A::on_start), void (base::*)()>;
  static constexpr bool on_start_async = !std::is_same_v<decltype(&A::on_start_async), task<void> (base::*)()>;
  static constexpr bool on_stop = !std::is_same_v<decltype(&A::on_stop), void (base::*)(const exit_reason&)>;
  static constexpr bool on_stop_async =
      !std::is_same_v<decltype(&A::on_stop_async), task<void> (base::*)(const exit_reason&)>;
  static constexpr bool on_idle = !std::is_same_v<decltype(&A::on_idle), void (base::*)()>;
  static constexpr bool on_idle_async = !std::is_same_v<decltype(&A::on_idle_async), task<void> (base::*)()>;
  static constexpr bool any_on_start = on_start || on_start_async;
  static constexpr bool any_on_stop = on_stop || on_stop_async;
  static constexpr bool any_on_idle = on_idle || on_idle_async;
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
void report_actor_failure(const std::string& name, const std::string& what, bool restarting) noexcept;

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
            if constexpr (hooks::any_on_start) {
              if (auto work = start_hook()) return await(work, job);
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
            if constexpr (hooks::any_on_idle) {
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
            if constexpr (hooks::any_on_idle) {
              if (auto work = idle_hook()) return await(work, job);
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
            if constexpr (hooks::any_on_stop) {
              if (alive_) {
                try {
                  if (auto work = stop_hook(reason_ ? *reason_ : normal_exit())) return await(work, job);
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

  using hooks = actor_hooks<A>;
  // The hooks the class overrides, called as its own members (no virtual call): the plain form runs at once,
  // the _async form's task is returned to be awaited.
  std::optional<task<void>> start_hook() {
    if constexpr (hooks::on_start) instance().A::on_start();
    if constexpr (hooks::on_start_async) return instance().A::on_start_async();
    return std::nullopt;
  }
  std::optional<task<void>> idle_hook() {
    if constexpr (hooks::on_idle) instance().A::on_idle();
    if constexpr (hooks::on_idle_async) return instance().A::on_idle_async();
    return std::nullopt;
  }
  std::optional<task<void>> stop_hook(const exit_reason& why) {
    if constexpr (hooks::on_stop) instance().A::on_stop(why);
    if constexpr (hooks::on_stop_async) return instance().A::on_stop_async(why);
    return std::nullopt;
  }

  static std::uint32_t clamp32(std::size_t n) noexcept {
    return static_cast<std::uint32_t>(std::min<std::size_t>(n, std::numeric_limits<std::uint32_t>::max()));
  }
  static mpsc::receiver<item> adopt(mailbox_cell<Message>& cell, std::optional<mpsc::sender<item>>& first) {
    auto [tx, rx] = channel_access::adopt(cell.core());
    first.emplace(std::move(tx));
    return std::move(rx);
  }
  // In a handler of an exception from on_stop: reported, not supervised (the actor is stopping anyway).
  void report_on_stop_failure() const noexcept {
    try {
      report_actor_failure(control_block::name(), "on_stop threw: " + describe(std::current_exception()), false);
    } catch (...) {  // no memory to describe it
    }
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
    if constexpr (std::is_base_of_v<takes_envelopes, A>) {
      return instance.handle_envelope(next);
    } else {
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
        report_actor_failure(control_block::name(), what, true);
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
    report_actor_failure(control_block::name(), what, false);
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

}  // namespace detail
}  // namespace postal
