// A coroutine wait on an intrusive list of waiters guarded by a mutex, until a condition holds: the shape
// of every channel's closed() wait, of watch's changed() and of broadcast's recv(). It registers under the
// lock unless the condition already holds; whoever makes the condition true takes the node off the list and
// wakes it; a wait destroyed while registered (a cancelled task) unlinks its node under the lock, so nothing
// is left dangling.
#pragma once

#include <postal/detail/intrusive_list.hpp>
#include <postal/waker.hpp>

#include <concepts>
#include <coroutine>
#include <mutex>
#include <type_traits>
#include <utility>

namespace postal::detail {

// Waiter: a list_node with a `waker target` member. Lock: std::mutex or any lockable the channel guards its
// lists with. Ready: a callable `bool()` that tells whether the wait is over, evaluated without the lock
// (await_ready) and then with it held (await_suspend). It may also offer, each one optional:
//   Lock& lock(), intrusive_list<Waiter>& list()
//                          where the wait registers, for the constructor list_wait(ready): an awaitable that
//                          does not keep two more pointers (for hot waits; the others pass them in);
//   bool prepare(Waiter& node)
//                          before the lock is taken (the node's waker is set): fills the node's own fields;
//                          true if the wait is over after all (a second look without the lock), and then no
//                          lock is taken;
//   bool locked(std::unique_lock<Lock>& guard)
//                          the check under the lock instead of `ready()`; it may release the guard, but only
//                          when it returns true (nothing to register);
//   R resume(bool woken)   what `co_await` gives (otherwise void); `woken` is true when the wait was
//                          registered, so a waker ended it; or R resume(), if that makes no difference.
// Ready lives inside the awaitable, so what await_ready or locked() found can be kept there for resume().
template <class Waiter, class Ready, class Lock>
concept knows_wait_list = requires(Ready& ready) {
  { ready.lock() } -> std::same_as<Lock&>;
  { ready.list() } -> std::same_as<intrusive_list<Waiter>&>;
};

template <class Ready>
constexpr bool list_wait_resume_is_noexcept() noexcept {
  if constexpr (requires(Ready& ready) { ready.resume(true); })
    return noexcept(std::declval<Ready&>().resume(true));
  else if constexpr (requires(Ready& ready) { ready.resume(); })
    return noexcept(std::declval<Ready&>().resume());
  else
    return true;
}

template <class Waiter, class Ready, class Lock = std::mutex>
class [[nodiscard]] list_wait {
  static constexpr bool ready_knows_list = knows_wait_list<Waiter, Ready, Lock>;

 public:
  list_wait(Lock& lock, intrusive_list<Waiter>& list, Ready ready) noexcept
    requires(!ready_knows_list)
      : place_{&lock, &list}, ready_(std::move(ready)) {}
  explicit list_wait(Ready ready) noexcept
    requires ready_knows_list
      : ready_(std::move(ready)) {}
  list_wait(const list_wait&) = delete;
  list_wait& operator=(const list_wait&) = delete;
  ~list_wait() {
    if (registered_) withdraw();
  }  // node_'s waker, if still here, is dropped after the lock is released

  bool await_ready() noexcept(noexcept(std::declval<Ready&>()())) { return ready_(); }
  template <class Promise>
  bool await_suspend(std::coroutine_handle<Promise> handle) {
    node_.target = waker_for(handle);
    if constexpr (requires(Ready& r, Waiter& n) { r.prepare(n); }) {
      if (ready_.prepare(node_)) {
        node_.target.reset();
        return false;
      }
    }
    {
      intrusive_list<Waiter>& waiting = list();
      std::unique_lock<Lock> guard(lock());
      if (!ready_locked(guard)) {
        registered_ = true;  // before the lock is released: the wait may end on another thread right after,
        waiting.push_back(&node_);  // so nothing here touches the awaitable once the node is on the list
        return true;
      }
    }
    node_.target.reset();
    return false;
  }
  decltype(auto) await_resume() noexcept(list_wait_resume_is_noexcept<Ready>()) {
    if constexpr (requires { ready_.resume(true); }) {
      if (registered_) {
        registered_ = false;
        return ready_.resume(true);
      }
      return ready_.resume(false);
    } else if constexpr (requires { ready_.resume(); }) {
      registered_ = false;
      return ready_.resume();
    } else {
      registered_ = false;
    }
  }

 private:
  struct stored_place {
    Lock* lock;
    intrusive_list<Waiter>* list;
  };
  struct no_place {};

  Lock& lock() noexcept {
    if constexpr (ready_knows_list)
      return ready_.lock();
    else
      return *place_.lock;
  }
  intrusive_list<Waiter>& list() noexcept {
    if constexpr (ready_knows_list)
      return ready_.list();
    else
      return *place_.list;
  }
  bool ready_locked(std::unique_lock<Lock>& guard) {
    if constexpr (requires { ready_.locked(guard); })
      return ready_.locked(guard);
    else
      return ready_();
  }
  // Takes the node off the list, unless a waker took it off already (a cancelled wait).
  [[gnu::noinline]] void withdraw() noexcept {
    std::lock_guard guard(lock());
    if (node_.linked()) list().remove(&node_);
  }

  [[no_unique_address]] std::conditional_t<ready_knows_list, no_place, stored_place> place_;
  Ready ready_;
  Waiter node_;
  bool registered_ = false;
};

}  // namespace postal::detail
