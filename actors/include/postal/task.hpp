// postal::task<T>: a lazy C++20 coroutine that runs on postal's runtime (CAF's scheduler), its join handle,
// and yield_now(). A task does nothing until it is spawned (runtime::spawn / postal::spawn) or awaited by
// another task; awaiting a task runs it inline on the awaiting task's worker and gives back its result.
// Not for: scheduling decisions (runtime.hpp) or channels (mailboxes/). This header includes no CAF header.
#pragma once

#include <postal/detail/channel_access.hpp>
#include <postal/oneshot.hpp>
#include <postal/waker.hpp>

#include <coroutine>
#include <cstdio>
#include <cstddef>
#include <exception>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <variant>

namespace postal {

template <class T = void>
class task;
template <class T>
class join_handle;
class runtime;

/// Thrown when joining a task that never finished because the runtime cancelled it at shutdown (see
/// runtime::shutdown for the rule), or because it was aborted.
class task_cancelled : public std::runtime_error {
 public:
  task_cancelled() : std::runtime_error("postal: the task was cancelled before it finished") {}
};

namespace detail {

// What a finished task hands to its join handle: its value (std::monostate for void) or its exception.
template <class T>
using task_value = std::conditional_t<std::is_void_v<T>, std::monostate, T>;
template <class T>
using task_outcome = std::variant<task_value<T>, std::exception_ptr>;

// Called when a spawned task ended with an exception and nobody holds its join handle: reports it on stderr.
// Inline, so that the task type needs no compiled library (postal::net uses it without the runtime).
inline void report_detached_failure(std::exception_ptr error) noexcept {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "postal: a task whose join handle was dropped ended with an exception: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "postal: a task whose join handle was dropped ended with a non-standard exception\n");
  }
}

// The part of a task's promise that does not depend on T.
class promise_base {
 public:
  suspend_hooks* postal_hooks() noexcept { return hooks_; }
  void set_hooks(suspend_hooks* hooks) noexcept { hooks_ = hooks; }
  void set_continuation(std::coroutine_handle<> continuation) noexcept { continuation_ = continuation; }

  std::suspend_always initial_suspend() noexcept { return {}; }

 protected:
  // A task awaited by another task resumes it by symmetric transfer; a spawned task (no continuation)
  // delivers its outcome to its join handle and stops, and the runtime destroys its frame.
  template <class Promise>
  struct final_awaiter {
    bool await_ready() const noexcept { return false; }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> self) noexcept {
      Promise& promise = self.promise();
      if (promise.continuation_) return promise.continuation_;
      promise.deliver();
      return std::noop_coroutine();
    }
    void await_resume() const noexcept {}
  };

  std::coroutine_handle<> continuation_;
  suspend_hooks* hooks_ = nullptr;
};

template <class T>
class task_promise : public promise_base {
 public:
  task<T> get_return_object() noexcept;
  final_awaiter<task_promise> final_suspend() noexcept { return {}; }

  template <class U>
  requires std::is_convertible_v<U&&, T>
  void return_value(U&& value) { outcome_.template emplace<0>(std::forward<U>(value)); }
  void unhandled_exception() noexcept { outcome_.template emplace<1>(std::current_exception()); }

  // The result for an awaiting task: the value, or the exception rethrown.
  T take_result() {
    if (outcome_.index() == 1) std::rethrow_exception(std::get<1>(outcome_));
    return std::move(std::get<0>(outcome_));
  }
  void set_reply(oneshot::sender<task_outcome<T>> reply) noexcept { reply_ = std::move(reply); }

 private:
  friend struct promise_base::final_awaiter<task_promise>;
  void deliver() noexcept {
    if (!reply_.is_closed()) {
      (void)reply_.send(std::move(outcome_));
    } else if (outcome_.index() == 1) {
      report_detached_failure(std::get<1>(outcome_));
    }
  }

  task_outcome<T> outcome_{std::in_place_index<1>, nullptr};  // never read before the body set it
  oneshot::sender<task_outcome<T>> reply_;                    // only for spawned tasks
};

template <>
class task_promise<void> : public promise_base {
 public:
  task<void> get_return_object() noexcept;
  final_awaiter<task_promise> final_suspend() noexcept { return {}; }

  void return_void() noexcept {}
  void unhandled_exception() noexcept { error_ = std::current_exception(); }

  void take_result() {
    if (error_) std::rethrow_exception(error_);
  }
  void set_reply(oneshot::sender<task_outcome<void>> reply) noexcept { reply_ = std::move(reply); }

 private:
  friend struct promise_base::final_awaiter<task_promise>;
  void deliver() noexcept {
    if (!reply_.is_closed()) {
      if (error_)
        (void)reply_.send(task_outcome<void>(std::in_place_index<1>, error_));
      else
        (void)reply_.send(task_outcome<void>(std::in_place_index<0>));
    } else if (error_) {
      report_detached_failure(error_);
    }
  }

  std::exception_ptr error_;
  oneshot::sender<task_outcome<void>> reply_;
};

// Hands a task's frame to the runtime (defined in runtime.cpp, where CAF lives). Takes ownership of `root`.
void spawn_root(runtime* owner, std::coroutine_handle<> root, promise_base& promise);

// For a task_body awaiting a task: its handle, and its outcome once it has finished.
struct task_access {
  template <class T>
  static std::coroutine_handle<task_promise<T>> handle(task<T>& work) noexcept {
    return work.handle_;
  }
  template <class T>
  static T take_result(task<T>& work) {
    return work.handle_.promise().take_result();
  }
};

// A task written as a state machine instead of a coroutine: the runtime calls step() for each of its turns.
// It lives in its job's allocation (allocate_body, start_body), so it keeps no coroutine frame of its own
// while it waits: this is how an actor is one allocation (actor.hpp). Within a turn, `job` is the task's
// suspend_hooks, used as a coroutine's would be, with a null handle: waker_for({}) for a waker that
// schedules the next turn, yield({}) / yield_here({}) to run again after other work.
class task_body {
 public:
  enum class outcome : unsigned char {
    waiting,   // handed out a waker (or yielded): the next turn comes when it is woken
    awaiting,  // started `child` (see await_child): the job runs it, then calls step() once it has finished
    finished,  // done; the runtime ends the task (the memory stays while retain_body references remain)
  };
  struct result {
    outcome kind;
    std::coroutine_handle<> child = {};
  };

  task_body() = default;
  task_body(const task_body&) = delete;
  task_body& operator=(const task_body&) = delete;

  /// One turn. Exceptions must not escape.
  virtual result step(suspend_hooks& job) noexcept = 0;
  /// The runtime cancels the task at shutdown while it waits: release what the state machine holds (as
  /// destroying a coroutine frame would). Not called after step() returned finished.
  virtual void cancel() noexcept = 0;

  /// Prepares `child` to be run by the job (awaited: its outcome stays in its promise) and returns the
  /// outcome that says so.
  template <class Promise>
  static result await_child(std::coroutine_handle<Promise> child, suspend_hooks& job) noexcept {
    child.promise().set_continuation(std::noop_coroutine());
    child.promise().set_hooks(&job);
    return {outcome::awaiting, child};
  }

 protected:
  // Destroyed when its job's last reference goes (release_body).
  virtual ~task_body() = default;
  friend class body_access;
};

// Allocates a job of `owner` with room for a body of `size` bytes (aligned for std::max_align_t) and returns
// that room. Construct the body there (its task_body base at that very address) and start_body() it, or
// discard_storage() if its construction failed. The job starts with one reference, the runtime's, which it
// drops once the body has finished (or was cancelled).
void* allocate_body(runtime* owner, std::size_t size);
void discard_storage(void* storage) noexcept;
// Starts a constructed body on its runtime. After shutdown it throws std::logic_error, having cancelled the
// body and dropped the runtime's reference.
void start_body(task_body* body);
// References to the body's job, for what lives in the body beyond its task (an actor's mailbox, held by
// its refs): the memory goes with the last one.
void retain_body(task_body* body) noexcept;
void release_body(task_body* body) noexcept;
// The runtime a body runs on.
runtime& body_runtime(task_body* body) noexcept;

// The runtime whose task is running on this thread, or nullptr.
runtime* current_runtime() noexcept;

// Starts `work` on `owner` and returns its join handle (runtime::spawn and postal::spawn).
template <class T>
join_handle<T> spawn_on(runtime* owner, task<T>& work);
// Starts `work` on `owner` without a join handle (runtime::spawn_detached).
void spawn_detached_on(runtime* owner, task<void>& work);

}  // namespace detail

namespace detail {

// co_await on a task: starts it by symmetric transfer; it resumes the awaiting coroutine when it ends.
template <class T>
class task_awaiter {
 public:
  explicit task_awaiter(std::coroutine_handle<task_promise<T>> child) noexcept : child_(child) {}
  bool await_ready() const noexcept { return false; }
  template <class Promise>
  std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> parent) noexcept {
    child_.promise().set_continuation(parent);
    child_.promise().set_hooks(hooks_of(parent));
    return child_;
  }
  T await_resume() { return child_.promise().take_result(); }

 private:
  std::coroutine_handle<task_promise<T>> child_;
};

// The value a join gives: the task's value, its exception rethrown, or task_cancelled.
template <class T>
T unwrap_outcome(expected<task_outcome<T>, oneshot::recv_error> received) {
  if (!received) throw task_cancelled();
  if (received->index() == 1) std::rethrow_exception(std::get<1>(*received));
  if constexpr (!std::is_void_v<T>) return std::move(std::get<0>(*received));
}

// co_await on a join handle: a oneshot receive of the task's outcome.
template <class T>
class join_awaiter {
 public:
  explicit join_awaiter(oneshot::receiver<task_outcome<T>>& outcome) noexcept : wait_(outcome) {}
  bool await_ready() const noexcept { return wait_.await_ready(); }
  template <class Promise>
  bool await_suspend(std::coroutine_handle<Promise> handle) {
    return wait_.await_suspend(handle);
  }
  T await_resume() { return unwrap_outcome<T>(wait_.await_resume()); }

 private:
  channel_access::oneshot_receive<task_outcome<T>> wait_;
};

// co_await yield_now().
struct yield_awaiter {
  bool await_ready() const noexcept { return false; }
  template <class Promise>
  bool await_suspend(std::coroutine_handle<Promise> handle) noexcept {
    suspend_hooks* hooks = hooks_of(handle);
    if (hooks == nullptr) return false;
    hooks->yield(handle);
    return true;
  }
  void await_resume() const noexcept {}
};

// co_await yield_here(): true if the task went behind other work, false if it went on at once.
class yield_here_awaiter {
 public:
  bool await_ready() const noexcept { return false; }
  template <class Promise>
  bool await_suspend(std::coroutine_handle<Promise> handle) noexcept {
    suspend_hooks* hooks = hooks_of(handle);
    if (hooks == nullptr) return false;
    yielded_ = hooks->yield_here(handle);
    return yielded_;
  }
  bool await_resume() const noexcept { return yielded_; }

 private:
  bool yielded_ = false;
};

}  // namespace detail

/// A lazy coroutine returning T. Move-only; owns its frame until it is spawned or finishes being awaited.
/// `co_await some_task()` inside another task runs it inline (no scheduling) and yields its value or
/// rethrows its exception. To run a task concurrently, spawn it.
template <class T>
class [[nodiscard]] task {
 public:
  using promise_type = detail::task_promise<T>;
  using value_type = T;

  task(task&& other) noexcept : handle_(std::exchange(other.handle_, {})) {}
  task& operator=(task&& other) noexcept {
    if (this != &other) {
      if (handle_) handle_.destroy();
      handle_ = std::exchange(other.handle_, {});
    }
    return *this;
  }
  task(const task&) = delete;
  task& operator=(const task&) = delete;
  /// Destroying a task that was never started destroys its frame (its body never runs).
  ~task() {
    if (handle_) handle_.destroy();
  }

  /// Runs this task inside the awaiting coroutine's task and returns its result (rethrowing its exception).
  detail::task_awaiter<T> operator co_await() && noexcept { return detail::task_awaiter<T>(handle_); }

 private:
  friend class detail::task_promise<T>;
  template <class U>
  friend join_handle<U> detail::spawn_on(runtime*, task<U>&);
  friend void detail::spawn_detached_on(runtime*, task<void>&);
  friend struct detail::task_access;
  explicit task(std::coroutine_handle<promise_type> handle) noexcept : handle_(handle) {}

  std::coroutine_handle<promise_type> release() noexcept { return std::exchange(handle_, {}); }

  std::coroutine_handle<promise_type> handle_;
};

template <class T>
task<T> detail::task_promise<T>::get_return_object() noexcept {
  return task<T>(std::coroutine_handle<task_promise>::from_promise(*this));
}
inline task<void> detail::task_promise<void>::get_return_object() noexcept {
  return task<void>(std::coroutine_handle<task_promise>::from_promise(*this));
}

/// The handle of a spawned task: `co_await handle` in a task, or `handle.blocking_join()` on a plain thread,
/// gives the task's value, rethrows its exception, or throws task_cancelled if it never finished.
/// Move-only; joined at most once. Destroying it detaches the task, which keeps running (an exception it
/// ends with is then reported on stderr).
template <class T>
class join_handle {
 public:
  join_handle() = default;
  join_handle(join_handle&&) noexcept = default;
  join_handle& operator=(join_handle&&) noexcept = default;

  /// True once the task finished (or was cancelled): joining will not wait.
  bool is_finished() const noexcept { return outcome_.is_closed(); }

  /// Waits for the task in a coroutine. Cancel-safety: destroying the waiting coroutine leaves the task
  /// running.
  detail::join_awaiter<T> operator co_await() & noexcept { return detail::join_awaiter<T>(outcome_); }
  detail::join_awaiter<T> operator co_await() && noexcept { return detail::join_awaiter<T>(outcome_); }

  /// Blocks the calling thread until the task ends. Throws std::logic_error on a runtime worker thread.
  T blocking_join() { return detail::unwrap_outcome<T>(outcome_.blocking_recv()); }

 private:
  template <class U>
  friend join_handle<U> detail::spawn_on(runtime*, task<U>&);
  explicit join_handle(oneshot::receiver<detail::task_outcome<T>> outcome) noexcept
      : outcome_(std::move(outcome)) {}

  oneshot::receiver<detail::task_outcome<T>> outcome_;
};

template <class T>
join_handle<T> detail::spawn_on(runtime* owner, task<T>& work) {
  if (!work.handle_) throw std::logic_error("postal::spawn: this task was already started or moved from");
  auto [reply, outcome] = oneshot::channel<task_outcome<T>>();
  auto handle = work.release();
  handle.promise().set_reply(std::move(reply));
  spawn_root(owner, handle, handle.promise());
  return join_handle<T>(std::move(outcome));
}

inline void detail::spawn_detached_on(runtime* owner, task<void>& work) {
  if (!work.handle_) throw std::logic_error("postal::spawn: this task was already started or moved from");
  auto handle = work.release();
  spawn_root(owner, handle, handle.promise());
}

/// Spawns `work` on the runtime whose task is calling; throws std::logic_error when called from outside a
/// task (use runtime::spawn there). The task starts on one of CAF's worker threads, not inline.
template <class T>
join_handle<T> spawn(task<T> work) {
  runtime* owner = detail::current_runtime();
  if (owner == nullptr)
    throw std::logic_error("postal::spawn outside a task: call runtime::spawn on a postal::runtime instead");
  return detail::spawn_on(owner, work);
}

/// `co_await postal::yield_now()` lets the other tasks woken on this worker run, then continues this task.
/// Outside postal's runtime it does nothing.
inline detail::yield_awaiter yield_now() noexcept {
  return {};
}

/// `bool behind_others = co_await postal::yield_here()`, for a poll loop (a task retrying something it
/// expects soon, such as a reply): if other tasks are queued on this worker (those that tasks running here
/// woke, and the jobs in this worker's CAF queue), it lets them run first and then continues this task on
/// the same worker, and gives true; if there is nothing else to run here, it gives false at once, without
/// suspending. Unlike yield_now it never hands the task to another worker (waking a sleeping worker costs
/// more than a short poll saves). Tasks in the runtime's injection queue (new ones, and those woken from
/// outside while this worker was busy) are not waited for: the other workers' drainers take them, or this
/// worker's once the poll ends. Outside postal's runtime it gives false and does nothing.
inline detail::yield_here_awaiter yield_here() noexcept {
  return {};
}

}  // namespace postal
