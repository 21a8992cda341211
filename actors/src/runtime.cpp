// The runtime's machinery: each spawned task becomes a task_job, a caf::resumable that CAF's workers run,
// with a state word so racing wake-ups never run it twice at once, and a per-worker run list so a task woken
// by another task on the same worker runs next there without a hop through CAF's queues.
// Not for: anything a user calls directly (runtime.hpp, task.hpp are the interface).
#include "timers.hpp"

#include <postal/detail/intrusive_list.hpp>
#include <postal/runtime.hpp>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/execution_unit.hpp>
#include <caf/policy/work_stealing.hpp>
#include <caf/resumable.hpp>
#include <caf/scheduler/abstract_coordinator.hpp>
#include <caf/scheduler/worker.hpp>
#include <caf/send.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace postal::detail {
// Destroys a task_body (its destructor is protected: only its job's last reference may end it).
class body_access {
 public:
  static void destroy(task_body* body) noexcept { body->~task_body(); }
};
}  // namespace postal::detail

namespace postal {

namespace {

constexpr std::size_t default_inline_budget = 256;

class task_job;
class spawn_drainer;

// A FIFO of jobs woken on this worker, each holding one reference. Emptied by the job that is running.
// The command pattern's ping-pong keeps at most one job here at a time: that one sits in `first_`, which
// costs a store and a load instead of the vector's bookkeeping; the vector holds the jobs queued behind it.
class run_list {
 public:
  void push_back(task_job* job) {
    if (first_ == nullptr && head_ == jobs_.size())
      first_ = job;  // nothing queued: the oldest job
    else
      jobs_.push_back(job);
  }
  bool empty() const noexcept { return first_ == nullptr && head_ == jobs_.size(); }
  // Empties the list, handing each job to `hand` from the newest to the oldest.
  template <class F>
  void drain_newest_first(F&& hand) {
    while (jobs_.size() > head_) {
      task_job* job = jobs_.back();
      jobs_.pop_back();
      hand(job);
    }
    jobs_.clear();
    head_ = 0;
    if (first_ != nullptr) hand(std::exchange(first_, nullptr));
  }
  task_job* pop_front() noexcept {
    if (first_ != nullptr) return std::exchange(first_, nullptr);
    if (head_ == jobs_.size()) {
      if (head_ != 0) {
        jobs_.clear();
        head_ = 0;
      }
      return nullptr;
    }
    return jobs_[head_++];
  }

 private:
  task_job* first_ = nullptr;  // if set, older than every job in jobs_
  std::vector<task_job*> jobs_;
  std::size_t head_ = 0;
};

// What the current thread is doing for postal: set while a worker runs this runtime's jobs.
struct worker_context {
  runtime_impl* owner = nullptr;
  caf::execution_unit* unit = nullptr;
  run_list woken;
};
thread_local worker_context this_worker;

using caf_worker = caf::scheduler::worker<caf::policy::work_stealing>;
// The CAF worker behind an execution unit, or null (another scheduler's unit, or none).
caf_worker* worker_of(caf::execution_unit* unit) noexcept {
  return dynamic_cast<caf_worker*>(unit);
}

// Marks this thread as running `owner`'s jobs on `unit` for one CAF turn; restores what was there before.
class worker_scope {
 public:
  worker_scope(runtime_impl* owner, caf::execution_unit* unit) noexcept
      : context_(this_worker),
        outer_owner_(std::exchange(context_.owner, owner)),
        outer_unit_(std::exchange(context_.unit, unit)),
        outer_flag_(std::exchange(postal::detail::on_executor_thread, true)) {}
  worker_scope(const worker_scope&) = delete;
  worker_scope& operator=(const worker_scope&) = delete;
  ~worker_scope() {
    context_.owner = outer_owner_;
    context_.unit = outer_unit_;
    postal::detail::on_executor_thread = outer_flag_;
  }
  worker_context& context() const noexcept { return context_; }

 private:
  worker_context& context_;
  runtime_impl* outer_owner_;
  caf::execution_unit* outer_unit_;
  bool outer_flag_;
};

}  // namespace

// The state shared by a runtime and its tasks. Members that running jobs touch are declared before the
// actor system, so they outlive CAF's worker threads (destroying the system joins them).
class runtime_impl {
 public:
  explicit runtime_impl(std::size_t inline_budget)
      : budget(inline_budget == 0 ? default_inline_budget : inline_budget) {}

  // postal's defaults for CAF's scheduler. An idle worker polls briefly, then sleeps on its condition
  // variable, which an enqueue from another thread notifies. CAF's default adds a phase of 50 us naps
  // (moderate polling), which puts up to 50 us on every wake from a plain thread (a blocking ask from
  // main) and burns CPU while idle.
  void set_postal_defaults() { config.set("work-stealing.moderate-poll-attempts", std::int64_t{0}); }
  // postal's defaults, then what the options set.
  void apply(const runtime_options& options) {
    set_postal_defaults();
    if (options.workers != 0) config.set("scheduler.max-threads", static_cast<std::int64_t>(options.workers));
    for (const auto& step : options.configure) step(config);
  }

  void start(runtime* self) {
    handle = self;
    system = std::make_unique<caf::actor_system>(config);
    for (std::size_t i = 0; i < system->scheduler().num_workers(); ++i) {
      drainers.push_back(std::make_unique<spawn_drainer>(this));
      idle_drainers.push_back(drainers.back().get());
    }
    clock.emplace(*system);
  }

  // Wakes `target` at `deadline` through CAF's clock (no thread of postal's own).
  void wake_at(std::chrono::steady_clock::time_point deadline, waker& target) { clock->wake_at(deadline, target); }
  void stop_timers() {
    if (clock) clock->stop();
  }

  // Hands a scheduled job, with a reference, to a worker. A task woken from outside goes back to the
  // worker that ran it last if that worker has nothing queued: its caches hold the task's data and it has
  // most likely not gone to sleep yet (CAF's round robin often picks a sleeping one, which costs a thread
  // wake-up: a blocking ask from main went from ~5 us to ~100 us that way). Otherwise the injection queue
  // (see spawned) spreads the work.
  void enqueue_with_reference(task_job* job, caf::execution_unit* preferred = nullptr);
  // Hands `job` to `preferred` if that is a worker of this runtime with nothing queued.
  bool try_idle_worker(caf::resumable* job, caf::execution_unit* preferred);
  // For a job yielding in a poll loop on `unit`: whether that worker's CAF queue is empty, and a hand-over
  // with reference to the back of that queue.
  bool nothing_queued_on(caf::execution_unit* unit) const noexcept;
  void append_here(task_job* job, caf::execution_unit* unit);
  // A job that CAF resumed is done with its turn.
  void hop_done() noexcept {
    if (active.fetch_sub(1, std::memory_order_acq_rel) == 1 &&
        shutdown_waiting.load(std::memory_order_acquire)) {
      std::lock_guard lock(mutex);
      idle.notify_all();
    }
  }
  // Queues a scheduled task (holding one reference) to run on some worker; see spawned. inject_counted is
  // for a caller that has already counted it in `active`.
  void inject(task_job* job);
  void inject_counted(task_job* job);
  // Takes up to `limit` queued tasks into `out`. If there are none and `self` is given, that drainer is
  // idle from now on.
  std::size_t take_spawned(task_job** out, std::size_t limit, spawn_drainer* self);
  void add_task(task_job* job);
  void task_ended(task_job* job) noexcept;
  void shutdown();

  runtime* handle = nullptr;
  const std::size_t budget;
  // The injection queue: new tasks, and tasks woken from outside a worker, wait here rather than in CAF's
  // queues. CAF's work stealing takes a queue's tail in time linear in the queue's length, so a burst (a
  // million actors spawned by main, or all their refs dropped at once) queued there made every steal
  // scan it: spawning and stopping became quadratic. A few drainer jobs, at most one per worker,
  // circulate in CAF's queues instead and run the queued tasks in batches. Guarded by spawn_mutex.
  std::mutex spawn_mutex;
  std::deque<task_job*> spawned;
  std::vector<spawn_drainer*> idle_drainers;  // not in CAF's queues; the rest are
  std::vector<std::unique_ptr<spawn_drainer>> drainers;
  std::atomic<std::size_t> active{0};  // jobs queued in CAF or being resumed by a worker
  std::atomic<std::size_t> live{0};    // spawned tasks not yet finished or cancelled
  std::atomic<bool> shutdown_waiting{false};
  bool stopped = false;  // guarded by mutex
  std::mutex mutex;
  std::condition_variable idle;
  postal::detail::intrusive_list<task_job> tasks;  // guarded by mutex; oldest first
  caf::actor_system_config config;
  std::unique_ptr<caf::actor_system> system;
  std::optional<detail::timers> clock;  // pending timers die with it at shutdown
};

namespace {

enum class yield_kind : std::uint8_t { none, anywhere, here };

enum job_state : std::uint8_t {
  idle,       // suspended; a wake schedules it
  scheduled,  // in a run list, a CAF queue or the injection queue
  running,    // being resumed by a worker
  notified,   // woken while running: runs again after this turn
  finished,
  cancelled,
};

class task_job final : public caf::resumable, public suspend_hooks, public postal::detail::list_node {
 public:
  using task_body = postal::detail::task_body;

  task_job(runtime_impl* owner, std::coroutine_handle<> root) noexcept
      : owner_(owner), root_(root), resume_point_(root) {}

  // -- jobs with a body (task_body): the body lives right behind the job, in the same allocation --------
  static std::size_t body_offset_of() noexcept;
  // A job with room for a body of `size` bytes behind it, not yet started; returns that room.
  static void* allocate_with_body(runtime_impl* owner, std::size_t size) {
    void* memory = ::operator new(body_offset_of() + size);
    auto* job = new (memory) task_job(owner, std::coroutine_handle<>{});
    job->has_body_ = true;
    return static_cast<char*>(memory) + body_offset_of();
  }
  static task_job* of_storage(void* storage) noexcept {
    return std::launder(reinterpret_cast<task_job*>(static_cast<char*>(storage) - body_offset_of()));
  }
  static task_job* of_body(task_body* body) noexcept { return of_storage(body); }
  task_body* body() noexcept {
    return std::launder(reinterpret_cast<task_body*>(reinterpret_cast<char*>(this) + body_offset_of()));
  }
  // Destroys a job allocated with room for a body, and frees that memory: the body is destroyed already,
  // or was never constructed.
  void free_with_storage() noexcept {
    this->~task_job();
    ::operator delete(static_cast<void*>(this));
  }

  // -- caf::resumable ------------------------------------------------------------------------------------
  subtype_t subtype() const override { return function_object; }
  void intrusive_ptr_add_ref_impl() override { add_ref(); }
  void intrusive_ptr_release_impl() override { release(); }

  // One turn on a CAF worker: this task, then the tasks it (transitively) woke on this worker, up to the
  // inline budget; the rest go to this worker's CAF queue, where idle workers may steal them.
  resume_result resume(caf::execution_unit* unit, std::size_t) override {
    runtime_impl* owner = owner_;
    {
      const worker_scope scope(owner, unit);
      run_turn(scope.context(), /*donate_reference=*/false);
      run_woken(scope.context(), owner, unit);
    }
    owner->hop_done();
    return done;  // CAF drops its reference; wakers and run lists hold their own
  }

  // Runs the tasks woken on this worker (see resume), up to the runtime's inline budget.
  static void run_woken(worker_context& context, runtime_impl* owner, caf::execution_unit* unit) {
    for (std::size_t budget = owner->budget; budget != 0; --budget) {
      task_job* next = context.woken.pop_front();
      if (next == nullptr) return;
      next->run_turn(context, /*donate_reference=*/true);
    }
    // Over budget: the rest go to this worker's CAF queue with the run list's references, where idle
    // workers may steal them. exec_later puts a job at the front, so the newest goes first and the oldest
    // ends up in front: they still run in the order they were woken.
    context.woken.drain_newest_first([&](task_job* rest) {
      owner->active.fetch_add(1, std::memory_order_relaxed);
      unit->exec_later(rest);
    });
  }

  // A turn run by a drainer, with the reference that the injection queue held.
  void run_queued_turn(worker_context& context) { run_turn(context, /*donate_reference=*/true); }

  // -- suspend_hooks ---------------------------------------------------------------------------------------
  waker waker_for(std::coroutine_handle<> handle) noexcept override {
    resume_point_ = handle;
    if (!std::exchange(spare_reference_, false)) add_ref();
    return waker(static_cast<void*>(this), &waker_table);
  }
  bool wake_at(std::chrono::steady_clock::time_point deadline, waker& target) override {
    owner_->wake_at(deadline, target);
    return true;
  }
  void yield(std::coroutine_handle<> handle) noexcept override { yield_as(handle, yield_kind::anywhere); }
  bool yield_here(std::coroutine_handle<> handle) noexcept override {
    // Only a task running on its runtime's worker has a run list to go behind.
    if (this_worker.owner != owner_) {
      yield(handle);
      return true;
    }
    if (this_worker.woken.empty() && owner_->nothing_queued_on(this_worker.unit)) return false;
    yield_as(handle, yield_kind::here);
    return true;
  }

  // -- scheduling ------------------------------------------------------------------------------------------
  // A wake that carries one reference to this job (a waker's), which it hands on or drops: an idle task is
  // scheduled (on this worker's run list if this worker runs the same runtime, else through
  // enqueue_with_reference); a running one is told to run again after its turn; otherwise there is nothing to do.
  void wake_with_reference() noexcept {
    std::uint8_t state = state_.load(std::memory_order_acquire);
    for (;;) {
      if (state == idle) {
        if (state_.compare_exchange_weak(state, scheduled, std::memory_order_acq_rel)) {
          if (this_worker.owner == owner_)
            this_worker.woken.push_back(this);
          else
            owner_->enqueue_with_reference(this, last_worker_);
          return;
        }
      } else if (state == running) {
        if (state_.compare_exchange_weak(state, notified, std::memory_order_acq_rel)) break;
      } else {
        break;
      }
    }
    release();
  }

  // Marks a new task scheduled and queues it for a worker (see runtime_impl::spawned).
  void start() {
    state_.store(scheduled, std::memory_order_relaxed);
    add_ref();
    owner_->inject(this);
  }

  // Cancels the task if it is suspended with nobody running or scheduling it. The caller then destroys it.
  bool try_cancel() noexcept {
    std::uint8_t expected = idle;
    return state_.compare_exchange_strong(expected, cancelled, std::memory_order_acq_rel);
  }
  // Destroys a cancelled task's frame (a body's state: its cancel() also ends the child task it may be
  // awaiting, which it owns) and drops the reference it kept for its next waker.
  void destroy_frame() noexcept {
    if (has_body_)
      body()->cancel();
    else
      root_.destroy();
    if (std::exchange(spare_reference_, false)) release();
  }

  runtime_impl* owner() const noexcept { return owner_; }
  void add_ref() noexcept { references_.fetch_add(1, std::memory_order_relaxed); }
  void release() noexcept {
    if (references_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    if (!has_body_) {
      delete this;
      return;
    }
    postal::detail::body_access::destroy(body());
    free_with_storage();
  }

 private:
  static constexpr waker::vtable waker_table{
      [](void* data) noexcept { static_cast<task_job*>(data)->wake_with_reference(); },
      [](void* data) noexcept { static_cast<task_job*>(data)->release(); },
  };

  // Runs the task until it suspends or finishes. The caller owns the "scheduled" state and one reference.
  // With donate_reference (a run from the run list), that reference is this function's: instead of being
  // dropped after the turn it is kept for the task's next waker, which then needs no atomic increment (the
  // command pattern makes one waker per hop). CAF drops its own reference itself.
  void run_turn(worker_context& context, bool donate_reference) {
    state_.store(running, std::memory_order_relaxed);
    last_worker_ = context.unit;
    bool done;
    if (has_body_) {
      done = run_body();
    } else {
      resume_point_.resume();
      done = root_.done();
    }
    if (done) {
      state_.store(finished, std::memory_order_release);
      if (!has_body_) root_.destroy();
      // Never the last reference: the runtime holds one until task_ended.
      if (std::exchange(spare_reference_, false)) references_.fetch_sub(1, std::memory_order_relaxed);
      owner_->task_ended(this);
      if (donate_reference) release();
      return;
    }
    // Set while this thread still owns the task: a runner elsewhere may read it once the state says idle.
    const bool kept = donate_reference && !spare_reference_;
    if (kept) spare_reference_ = true;
    std::uint8_t expected = running;
    if (state_.compare_exchange_strong(expected, idle, std::memory_order_acq_rel)) {
      if (donate_reference && !kept) release();
      return;
    }
    // Woken while it ran (or yielding): it needs a queue reference again.
    state_.store(scheduled, std::memory_order_relaxed);
    if (!kept && donate_reference) {
      // the donated reference goes on with the task
    } else if (kept) {
      spare_reference_ = false;  // the donated reference goes on with the task after all
    } else {
      add_ref();
    }
    const yield_kind yielded = std::exchange(yielding_, yield_kind::none);
    if (yielded == yield_kind::anywhere) {
      // yield_now: to the back of the injection queue, behind the tasks queued there.
      owner_->enqueue_with_reference(this, nullptr);
    } else if (yielded == yield_kind::here && !owner_->nothing_queued_on(context.unit)) {
      // A poll loop's yield with jobs waiting in this worker's CAF queue (tasks woken from other threads):
      // behind them, on this worker. Never to another worker: waking a sleeping one costs more than the
      // poll saves. With nothing queued there, it goes behind the tasks woken on this worker (below).
      owner_->append_here(this, context.unit);
    } else {
      // Woken while it ran: it runs again behind the tasks already woken on this worker.
      context.woken.push_back(this);
    }
  }

  // A body's turn: the child task it awaits (root_, if any) until that suspends or finishes, then the
  // body's steps while they start children that finish at once. True once the body has finished.
  bool run_body() {
    for (;;) {
      if (root_) {
        resume_point_.resume();
        if (!root_.done()) return false;  // suspended inside the child: its waker resumes it there
        root_ = {};  // the body owns the child's frame and takes its outcome
      }
      const task_body::result next = body()->step(*this);
      switch (next.kind) {
        case task_body::outcome::waiting:
          return false;
        case task_body::outcome::finished:
          return true;
        case task_body::outcome::awaiting:
          root_ = resume_point_ = next.child;
          break;
      }
    }
  }

  void yield_as(std::coroutine_handle<> handle, yield_kind kind) noexcept {
    resume_point_ = handle;
    yielding_ = kind;
    add_ref();
    wake_with_reference();  // the task is running: this only marks it to run again
  }

  runtime_impl* owner_;
  std::coroutine_handle<> root_;
  std::coroutine_handle<> resume_point_;      // the innermost suspended coroutine of this task
  std::atomic<std::uint32_t> references_{1};  // the runtime's own, dropped when the task ends
  std::atomic<std::uint8_t> state_{idle};
  yield_kind yielding_ = yield_kind::none;  // set by the running task itself (yield_now, yield_here)
  // A reference kept for the next waker_for (see run_turn); touched only by whoever owns the task's state.
  bool spare_reference_ = false;
  // A body lives behind this job (allocate_with_body); root_ is then the child task it awaits, if any.
  bool has_body_ = false;
  // The worker that ran this task last (read by a waker only after the state word handed the task over).
  caf::execution_unit* last_worker_ = nullptr;
};

// Where a body starts behind its job (the job's size, rounded up for the body's alignment).
std::size_t task_job::body_offset_of() noexcept {
  constexpr std::size_t align = alignof(std::max_align_t);
  return (sizeof(task_job) + align - 1) / align * align;
}

// Empties the injection queue: a job in CAF's queues that runs a batch of queued tasks per turn, then goes
// to the back of its worker's queue while more wait, so they interleave with the tasks running there and
// spread over the workers.
// Owned by the runtime; CAF's references to it are not counted.
class spawn_drainer final : public caf::resumable {
 public:
  explicit spawn_drainer(runtime_impl* owner) noexcept : owner_(owner) {}

  subtype_t subtype() const override { return function_object; }
  void intrusive_ptr_add_ref_impl() override {}
  void intrusive_ptr_release_impl() override {}

  resume_result resume(caf::execution_unit* unit, std::size_t) override {
    constexpr std::size_t batch = 32;
    runtime_impl* owner = owner_;
    task_job* jobs[batch];
    last_worker_ = unit;  // before take_spawned may publish this drainer as idle
    // Found empty, it stays in CAF's queue for a few more turns before it goes idle: in a burst (main
    // spawning a million actors) the next task is then most likely queued by that time, and no thread is
    // put to sleep and woken again for it.
    const bool may_idle = empty_turns_ >= empty_turns_before_idle;
    const std::size_t count = owner->take_spawned(jobs, batch, may_idle ? this : nullptr);
    if (count == 0) {
      if (may_idle) {
        empty_turns_ = 0;
        return done;  // counted idle: the next injection queues this drainer again
      }
      ++empty_turns_;
      return resume_later;
    }
    empty_turns_ = 0;
    const worker_scope scope(owner, unit);
    for (std::size_t i = 0; i < count; ++i) {
      jobs[i]->run_queued_turn(scope.context());
      task_job::run_woken(scope.context(), owner, unit);
      owner->hop_done();
    }
    return resume_later;  // the next turn finds the queue empty and goes idle, or starts the next batch
  }

  // The worker that ran this drainer last (written by the drainer, read under spawn_mutex once it is idle).
  caf::execution_unit* last_worker_ = nullptr;

 private:
  static constexpr std::uint32_t empty_turns_before_idle = 128;
  runtime_impl* owner_;
  std::uint32_t empty_turns_ = 0;  // turns in a row that found the queue empty
};

}  // namespace

void runtime_impl::inject(task_job* job) {
  active.fetch_add(1, std::memory_order_relaxed);  // done when a drainer has run its turn
  inject_counted(job);
}

void runtime_impl::inject_counted(task_job* job) {
  spawn_drainer* wake = nullptr;
  {
    std::lock_guard lock(spawn_mutex);
    spawned.push_back(job);
    // A drainer for the first queued task, and one more for each task found still waiting, up to one per
    // worker: a single spawn costs one hop, a burst gets every worker.
    if (!idle_drainers.empty() && (spawned.size() > 1 || idle_drainers.size() == drainers.size())) {
      wake = idle_drainers.back();
      idle_drainers.pop_back();
    }
  }
  // To the worker that ran it last if that one has nothing queued (it is most likely still awake: a
  // burst of spawns then wakes no sleeping thread per task), else to CAF's round robin.
  if (wake != nullptr && !try_idle_worker(wake, wake->last_worker_)) system->scheduler().enqueue(wake);
}

bool runtime_impl::try_idle_worker(caf::resumable* job, caf::execution_unit* preferred) {
  caf_worker* target = worker_of(preferred);
  if (target == nullptr || !target->data().queue.empty()) return false;
  target->external_enqueue(job);
  return true;
}

std::size_t runtime_impl::take_spawned(task_job** out, std::size_t limit, spawn_drainer* self) {
  std::lock_guard lock(spawn_mutex);
  std::size_t count = 0;
  while (count < limit && !spawned.empty()) {
    out[count++] = spawned.front();
    spawned.pop_front();
  }
  if (count == 0 && self != nullptr) idle_drainers.push_back(self);
  return count;
}

void runtime_impl::enqueue_with_reference(task_job* job, caf::execution_unit* preferred) {
  // Straight to the preferred worker only if it looks idle; otherwise through the injection queue, never
  // CAF's round robin: a burst of wakes from outside (a million actors' refs dropped by main) piled onto
  // CAF's queues would make every steal scan them (see spawned).
  active.fetch_add(1, std::memory_order_relaxed);  // before the job can run and count itself done
  if (!try_idle_worker(job, preferred)) inject_counted(job);
}

bool runtime_impl::nothing_queued_on(caf::execution_unit* unit) const noexcept {
  caf_worker* here = worker_of(unit);
  return here == nullptr || here->data().queue.empty();
}

void runtime_impl::append_here(task_job* job, caf::execution_unit* unit) {
  active.fetch_add(1, std::memory_order_relaxed);
  if (caf_worker* here = worker_of(unit))
    here->external_enqueue(job);
  else
    system->scheduler().enqueue(job);
}

void runtime_impl::add_task(task_job* job) {
  std::lock_guard lock(mutex);
  if (stopped) throw std::logic_error("postal: spawn on a runtime that was shut down");
  tasks.push_back(job);
  live.fetch_add(1, std::memory_order_relaxed);
}

void runtime_impl::task_ended(task_job* job) noexcept {
  {
    std::lock_guard lock(mutex);
    tasks.remove(job);
    if (live.fetch_sub(1, std::memory_order_acq_rel) == 1 && shutdown_waiting.load(std::memory_order_relaxed))
      idle.notify_all();
  }
  job->release();
}

void runtime_impl::shutdown() {
  if (this_worker.owner != nullptr || postal::detail::on_executor_thread)
    throw std::logic_error("postal::runtime::shutdown called from a task: it would wait for itself");
  std::unique_lock lock(mutex);
  shutdown_waiting.store(true, std::memory_order_release);
  for (;;) {
    idle.wait(lock, [this] {
      return live.load(std::memory_order_acquire) == 0 || active.load(std::memory_order_acquire) == 0;
    });
    if (live.load(std::memory_order_acquire) == 0) break;
    // Nothing runs or is queued: every live task is suspended, waiting for something only another task of
    // this runtime could have done. Cancel the oldest; what its frame's destruction wakes runs first.
    task_job* victim = nullptr;
    tasks.for_each([&](task_job* job) {
      if (victim == nullptr && job->try_cancel()) victim = job;
    });
    if (victim == nullptr) {  // a wake is between its state change and its enqueue: let it land
      lock.unlock();
      std::this_thread::yield();
      lock.lock();
      continue;
    }
    tasks.remove(victim);
    live.fetch_sub(1, std::memory_order_acq_rel);
    lock.unlock();
    victim->destroy_frame();
    victim->release();
    lock.lock();
  }
  stopped = true;
  shutdown_waiting.store(false, std::memory_order_release);
}

// -- runtime ---------------------------------------------------------------------------------------------

runtime::runtime(runtime_options options) : impl_(std::make_unique<runtime_impl>(options.inline_budget)) {
  impl_->apply(options);
  impl_->start(this);
}

runtime::runtime(int argc, char** argv, runtime_options options)
    : impl_(std::make_unique<runtime_impl>(options.inline_budget)) {
  impl_->apply(options);  // the command line and caf-application.ini override them
  if (auto error = impl_->config.parse(argc, argv))
    throw std::invalid_argument("postal::runtime: bad CAF option: " + caf::to_string(error));
  impl_->start(this);
}

runtime::~runtime() {
  shutdown();
  impl_->stop_timers();
  impl_->system.reset();
}

void runtime::shutdown() {
  impl_->shutdown();
}

std::size_t runtime::worker_count() const noexcept {
  return impl_->system->scheduler().num_workers();
}
std::size_t runtime::live_tasks() const noexcept {
  return impl_->live.load(std::memory_order_acquire);
}
bool runtime::help_printed() const noexcept {
  return impl_->config.cli_helptext_printed;
}
caf::actor_system& runtime::system() noexcept {
  return *impl_->system;
}

// -- task.hpp's hooks into the runtime -------------------------------------------------------------------

void detail::spawn_root(runtime* owner, std::coroutine_handle<> root, promise_base& promise) {
  runtime_impl* impl = owner->impl_.get();
  auto* job = new task_job(impl, root);
  promise.set_hooks(job);
  try {
    impl->add_task(job);
  } catch (...) {
    root.destroy();  // its join handle reports task_cancelled
    job->release();
    throw;
  }
  job->start();
}

void* detail::allocate_body(runtime* owner, std::size_t size) {
  return task_job::allocate_with_body(owner->impl_.get(), size);
}

void detail::discard_storage(void* storage) noexcept {
  task_job::of_storage(storage)->free_with_storage();
}

void detail::start_body(task_body* body) {
  task_job* job = task_job::of_body(body);
  try {
    job->owner()->add_task(job);
  } catch (...) {
    body->cancel();
    job->release();
    throw;
  }
  job->start();
}

void detail::retain_body(task_body* body) noexcept {
  task_job::of_body(body)->add_ref();
}

void detail::release_body(task_body* body) noexcept {
  task_job::of_body(body)->release();
}

runtime& detail::body_runtime(task_body* body) noexcept {
  return *task_job::of_body(body)->owner()->handle;
}

runtime* detail::current_runtime() noexcept {
  return this_worker.owner != nullptr ? this_worker.owner->handle : nullptr;
}

}  // namespace postal
