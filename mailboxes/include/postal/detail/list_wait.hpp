// A coroutine wait on an intrusive list of waiters guarded by a mutex, until a condition holds: the shape
// of watch's and broadcast's closed() waits. It registers under the lock unless the condition already
// holds; whoever makes the condition true takes the node off the list and wakes it; a wait destroyed while
// registered (a cancelled task) unlinks its node under the lock, so nothing is left dangling.
#pragma once

#include <postal/detail/intrusive_list.hpp>
#include <postal/waker.hpp>

#include <coroutine>
#include <mutex>
#include <utility>

namespace postal::detail {

// Waiter: a list_node with a `waker target` member. Ready: a callable `bool()`, evaluated with and without
// the lock held. Lock: std::mutex or any lockable the channel guards its lists with.
template <class Waiter, class Ready, class Lock = std::mutex>
class [[nodiscard]] list_wait {
 public:
  list_wait(Lock& lock, intrusive_list<Waiter>& list, Ready ready) noexcept
      : lock_(&lock), list_(&list), ready_(std::move(ready)) {}
  list_wait(const list_wait&) = delete;
  list_wait& operator=(const list_wait&) = delete;
  ~list_wait() {
    if (registered_) {
      std::lock_guard guard(*lock_);
      if (node_.linked()) list_->remove(&node_);
    }
  }

  bool await_ready() const { return ready_(); }
  template <class Promise>
  bool await_suspend(std::coroutine_handle<Promise> handle) {
    node_.target = waker_for(handle);
    {
      std::lock_guard guard(*lock_);
      if (!ready_()) {
        registered_ = true;  // before the lock is released: the wait may end on another thread right after
        list_->push_back(&node_);
        return true;
      }
    }
    node_.target.reset();
    return false;
  }
  void await_resume() noexcept { registered_ = false; }

 private:
  Lock* lock_;
  intrusive_list<Waiter>* list_;
  Ready ready_;
  Waiter node_;
  bool registered_ = false;
};

}  // namespace postal::detail
