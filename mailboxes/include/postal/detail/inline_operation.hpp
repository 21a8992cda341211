// A lazy coroutine that a channel returns for a wait made of several steps (watch's wait_for, broadcast's
// closed): the awaiting coroutine starts it by symmetric transfer and is resumed the same way when it
// finishes, and the waits inside it use the awaiting coroutine's executor (its suspend_hooks). Destroying
// it destroys its frame, which withdraws the wait inside (cancel-safety). Not a task: it never runs on
// its own and is not for users to spawn.
#pragma once

#include <postal/waker.hpp>

#include <coroutine>
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

namespace postal::detail {

template <class R>
class [[nodiscard]] inline_operation {
 public:
  struct promise_type;

 private:
  struct promise_base {
    std::coroutine_handle<> continuation;
    suspend_hooks* hooks = nullptr;
    std::exception_ptr error;

    std::suspend_always initial_suspend() noexcept { return {}; }
    auto final_suspend() noexcept {
      struct resume_continuation {
        bool await_ready() const noexcept { return false; }
        std::coroutine_handle<> await_suspend(std::coroutine_handle<promise_type> self) noexcept {
          return self.promise().continuation;
        }
        void await_resume() const noexcept {}
      };
      return resume_continuation{};
    }
    void unhandled_exception() noexcept { error = std::current_exception(); }
    suspend_hooks* postal_hooks() noexcept { return hooks; }
  };
  struct value_promise : promise_base {
    std::optional<R> result;
    template <class U>
    void return_value(U&& value) {
      result.emplace(std::forward<U>(value));
    }
  };
  struct void_promise : promise_base {
    void return_void() noexcept {}
  };

 public:
  struct promise_type : std::conditional_t<std::is_void_v<R>, void_promise, value_promise> {
    inline_operation get_return_object() noexcept {
      return inline_operation(std::coroutine_handle<promise_type>::from_promise(*this));
    }
  };

  inline_operation(inline_operation&& other) noexcept : handle_(std::exchange(other.handle_, {})) {}
  inline_operation& operator=(inline_operation&&) = delete;
  ~inline_operation() {
    if (handle_) handle_.destroy();
  }

  bool await_ready() const noexcept { return false; }
  template <class Promise>
  std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> awaiting) noexcept {
    handle_.promise().continuation = awaiting;
    handle_.promise().hooks = hooks_of(awaiting);
    return handle_;
  }
  R await_resume() {
    if (handle_.promise().error) std::rethrow_exception(handle_.promise().error);
    if constexpr (!std::is_void_v<R>) return std::move(*handle_.promise().result);
  }

 private:
  explicit inline_operation(std::coroutine_handle<promise_type> handle) noexcept : handle_(handle) {}
  std::coroutine_handle<promise_type> handle_;
};

}  // namespace postal::detail
