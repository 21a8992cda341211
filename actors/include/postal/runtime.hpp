// postal::runtime: owns CAF's actor system and runs postal tasks on CAF's worker threads (no thread pool
// of its own). Configure it like any CAF program (command line, caf-application.ini) or with
// runtime_options. Destroying it waits for every task (see shutdown() for tasks that can never finish).
// Not for: the task type itself (task.hpp). Only CAF's forward declarations are included here.
#pragma once

#include <postal/task.hpp>

#include <caf/fwd.hpp>

#include <cstddef>
#include <functional>
#include <memory>
#include <vector>

namespace postal {

/// Settings for a runtime built without a command line. Zero means "CAF's configuration decides".
struct runtime_options {
  /// Scheduler worker threads (CAF's scheduler.max-threads; CAF's default is max(cores, 4)).
  std::size_t workers = 0;
  /// How many tasks a worker runs inline, one after another, when tasks wake each other on that worker,
  /// before it hands the rest to CAF's queue (where idle workers can steal them). Default 256.
  std::size_t inline_budget = 0;
  /// Steps that adjust CAF's configuration before the actor system starts, in order, before the command
  /// line and caf-application.ini are read (which override what they set). This is how a layer that needs
  /// more of CAF joins the runtime: postal::cluster loads CAF's network layer this way.
  std::vector<std::function<void(caf::actor_system_config&)>> configure = {};
};

class runtime_impl;

/// The runtime: CAF's actor system plus the bookkeeping of postal's tasks.
///
/// Scheduling: a spawned task, or one woken from a thread that is not running this runtime's tasks, goes
/// to the runtime's injection queue, which one job per worker circulating in CAF's scheduler empties in
/// batches, so work spreads over the workers and a burst (a million spawns) never piles up in CAF's own
/// queues, whose work stealing slows down with their length. A woken task whose last worker looks idle
/// goes straight to that worker instead (a blocking ask from main costs a wake-up, not a queue). A task woken by another task running on a
/// worker runs next on that same worker, without a trip through CAF's queues (the command pattern's request
/// and reply cost a function call, not a queue hop), up to inline_budget tasks in a row. A task never runs on
/// two threads at once, however its wakes race.
class runtime {
 public:
  explicit runtime(runtime_options options = {});
  /// Reads CAF's options from the command line and caf-application.ini (e.g. --scheduler.max-threads=2).
  /// Throws std::invalid_argument with CAF's message on a bad option. If CAF printed its --help text,
  /// help_printed() is true and the program should exit. `options` are the defaults that the command line
  /// and the ini file override.
  runtime(int argc, char** argv, runtime_options options = {});
  runtime(const runtime&) = delete;
  runtime& operator=(const runtime&) = delete;
  /// Calls shutdown(), then stops CAF's actor system.
  ~runtime();

  /// Starts `work` on one of CAF's workers. Callable from any thread.
  template <class T>
  join_handle<T> spawn(task<T> work) {
    return detail::spawn_on(this, work);
  }

  /// Starts `work` like spawn, without a join handle (nothing to allocate for one). An exception it ends
  /// with is reported on stderr.
  void spawn_detached(task<void> work) { detail::spawn_detached_on(this, work); }

  /// Runs `work` to completion from a plain thread and returns its value (rethrowing its exception).
  /// Throws std::logic_error on a worker thread of a runtime (it would block the worker).
  template <class T>
  T block_on(task<T> work) {
    detail::check_may_block("postal::runtime::block_on");
    return spawn(std::move(work)).blocking_join();
  }

  /// Waits until every task has finished. Tasks that are suspended while no task of this runtime is running
  /// or queued cannot be resumed by this runtime any more (only by another thread, which shutdown does not
  /// wait for): they are cancelled one at a time, oldest first. Cancelling a task destroys its coroutine
  /// frame, which drops the channel handles it held, so tasks waiting on those channels wake up with the
  /// channel's closed error and can finish normally before the next one is cancelled. A cancelled task's
  /// join handle throws task_cancelled. Idempotent; spawning after shutdown throws std::logic_error.
  /// Must not be called from a task.
  void shutdown();

  /// Worker threads of CAF's scheduler.
  std::size_t worker_count() const noexcept;
  /// Tasks spawned and not yet finished or cancelled. A task counts until its frame is destroyed, which
  /// happens just after its result reaches its join handle.
  std::size_t live_tasks() const noexcept;
  /// True if CAF printed its --help text while parsing the command line.
  bool help_printed() const noexcept;
  /// The CAF actor system, for code that uses CAF directly.
  caf::actor_system& system() noexcept;

 private:
  friend void detail::spawn_root(runtime*, std::coroutine_handle<>, detail::promise_base&);
  friend void* detail::allocate_body(runtime*, std::size_t);
  std::unique_ptr<runtime_impl> impl_;
};

}  // namespace postal
