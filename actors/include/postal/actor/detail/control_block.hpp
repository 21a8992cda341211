// An actor's control block: what its refs, its runner, its monitors and its children share besides the
// mailbox (control requests such as kill, and the exit status), and control_ref, a counted reference to it.
// Internal to postal's actors; the runner (detail/runner.hpp) builds it as a base of the actor's cell.
#pragma once

#include <postal/actor/options.hpp>
#include <postal/detail/channel_access.hpp>
#include <postal/detail/intrusive_list.hpp>
#include <postal/detail/list_wait.hpp>
#include <postal/runtime.hpp>
#include <postal/waker.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace postal::detail {

// A request from outside the actor's own handlers: stop or kill it, or a child's escalated failure.
struct control_request {
  enum class kind_type { stop, escalated_failure };
  kind_type kind = kind_type::stop;
  stop_mode mode = stop_mode::drop;
  exit_reason reason;
};

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
    flags_.fetch_or(pending_flag, std::memory_order_release);
    nudge();
  }
  bool pending() const noexcept { return (flags_.load(std::memory_order_acquire) & pending_flag) != 0; }

  // The name given at spawn (empty if none). Set once, before any ref exists.
  void set_name(std::string name) {
    if (name.empty()) return;
    std::lock_guard lock(lock_);
    rare_locked().name = std::move(name);
  }
  std::string name() const {
    std::lock_guard lock(lock_);
    return rare_ ? rare_->name : std::string();
  }
  std::optional<control_request> take() {
    std::lock_guard lock(lock_);
    flags_.fetch_and(static_cast<std::uint8_t>(~pending_flag), std::memory_order_relaxed);
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
  using lock_type = channel_access::spinlock;
  using finish_wait = postal::detail::list_wait<exit_waiter, has_finished, lock_type>;

  // Records the exit reason (the first one stays) and wakes the monitors waiting for it. A reason without
  // a message is kept as its kind alone, so that most actors end without allocating.
  void finish(exit_reason reason) {
    std::vector<waker> wakers;
    {
      std::lock_guard lock(lock_);
      if (finished_locked()) return;
      exit_kind_ = reason.kind;
      if (!reason.message.empty()) rare_locked().exit_message = std::move(reason.message);
      flags_.fetch_or(finished_flag, std::memory_order_release);
      if (rare_)
        while (exit_waiter* waiting = rare_->exit_waiters.pop_front()) wakers.push_back(std::move(waiting->target));
    }
    for (waker& w : wakers) w.wake();
  }
  bool finished() const noexcept { return (flags_.load(std::memory_order_acquire) & finished_flag) != 0; }

  // The actor is a remote actor's stand-in whose node was declared down: set before its pending requests
  // are dropped, so that their askers learn why (ask_error::node_down rather than no_reply).
  void mark_node_down() noexcept { flags_.fetch_or(node_down_flag, std::memory_order_release); }
  bool node_down() const noexcept { return (flags_.load(std::memory_order_acquire) & node_down_flag) != 0; }
  std::optional<exit_reason> exit() const {
    std::lock_guard lock(lock_);
    if (!finished_locked()) return std::nullopt;
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
      if (finished_locked()) return;
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
    std::string name;  // given at spawn (actor_options::name)
    std::optional<control_request> request;
    std::string exit_message;
    postal::detail::intrusive_list<exit_waiter> exit_waiters;
  };
  rare_state& rare_locked() {
    if (!rare_) rare_ = std::make_unique<rare_state>();
    return *rare_;
  }

  std::atomic<std::uint32_t> references_{1};
  bool finished_locked() const noexcept { return (flags_.load(std::memory_order_relaxed) & finished_flag) != 0; }

  static constexpr std::uint8_t pending_flag = 1;    // a control request waits in rare_
  static constexpr std::uint8_t finished_flag = 2;   // the exit reason is set
  static constexpr std::uint8_t node_down_flag = 4;  // see mark_node_down
  std::atomic<std::uint8_t> flags_{0};
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

}  // namespace postal::detail
