// postal::expected<T, E>: a value or an error, the return type of every channel operation that can fail in a
// way the caller must handle (a full or closed channel hands the unsent value back inside the error).
// It is a small subset of C++23's std::expected, kept here because postal targets C++20. Not an exception
// carrier: misuse of an API still throws.
#pragma once

#include <memory>
#include <stdexcept>
#include <type_traits>
#include <utility>

namespace postal {

/// Thrown by expected::value() when the expected holds an error.
class bad_expected_access : public std::logic_error {
 public:
  bad_expected_access() : std::logic_error("postal::expected::value() called on an error") {}
};

/// Wraps an error so that expected<T, E> can be built from it unambiguously: `return unexpected{err};`.
template <class E>
struct unexpected {
  E error;
};
template <class E>
unexpected(E) -> unexpected<E>;

/// Holds either a T (success) or an E (failure). T may be void.
template <class T, class E>
class [[nodiscard]] expected {
 public:
  using value_type = T;
  using error_type = E;

  template <class U = T>
  requires(std::is_constructible_v<T, U&&> && !std::is_same_v<std::remove_cvref_t<U>, expected>)
      expected(U&& value)
      : has_value_(true) {  // NOLINT(google-explicit-constructor): implicit like std::expected
    std::construct_at(&value_, std::forward<U>(value));
  }
  template <class G>
  expected(unexpected<G> failure) : has_value_(false) {  // NOLINT(google-explicit-constructor)
    std::construct_at(&error_, std::move(failure.error));
  }
  expected(expected&& other) noexcept(
      std::is_nothrow_move_constructible_v<T>&& std::is_nothrow_move_constructible_v<E>)
      : has_value_(other.has_value_) {
    if (has_value_)
      std::construct_at(&value_, std::move(other.value_));
    else
      std::construct_at(&error_, std::move(other.error_));
  }
  expected(const expected& other) requires(std::is_copy_constructible_v<T>&& std::is_copy_constructible_v<E>)
      : has_value_(other.has_value_) {
    if (has_value_)
      std::construct_at(&value_, other.value_);
    else
      std::construct_at(&error_, other.error_);
  }
  expected& operator=(expected other) noexcept(
      std::is_nothrow_move_constructible_v<T>&& std::is_nothrow_move_constructible_v<E>) {
    if (this != &other) {
      destroy();
      has_value_ = other.has_value_;
      if (has_value_)
        std::construct_at(&value_, std::move(other.value_));
      else
        std::construct_at(&error_, std::move(other.error_));
    }
    return *this;
  }
  ~expected() { destroy(); }

  bool has_value() const noexcept { return has_value_; }
  explicit operator bool() const noexcept { return has_value_; }

  T& value() & {
    if (!has_value_) throw bad_expected_access();
    return value_;
  }
  const T& value() const& {
    if (!has_value_) throw bad_expected_access();
    return value_;
  }
  T&& value() && {
    if (!has_value_) throw bad_expected_access();
    return std::move(value_);
  }
  T& operator*() & noexcept { return value_; }
  const T& operator*() const& noexcept { return value_; }
  T&& operator*() && noexcept { return std::move(value_); }
  T* operator->() noexcept { return &value_; }
  const T* operator->() const noexcept { return &value_; }

  /// The error; only valid when !has_value().
  E& error() & noexcept { return error_; }
  const E& error() const& noexcept { return error_; }
  E&& error() && noexcept { return std::move(error_); }

 private:
  void destroy() noexcept {
    if (has_value_)
      std::destroy_at(&value_);
    else
      std::destroy_at(&error_);
  }

  union {
    T value_;
    E error_;
  };
  bool has_value_;
};

/// expected<void, E>: success carries no value.
template <class E>
class [[nodiscard]] expected<void, E> {
 public:
  using value_type = void;
  using error_type = E;

  expected() noexcept : has_value_(true) {}
  template <class G>
  expected(unexpected<G> failure) : has_value_(false) {  // NOLINT(google-explicit-constructor)
    std::construct_at(&error_, std::move(failure.error));
  }
  expected(expected&& other) noexcept(std::is_nothrow_move_constructible_v<E>)
      : has_value_(other.has_value_) {
    if (!has_value_) std::construct_at(&error_, std::move(other.error_));
  }
  expected(const expected& other) requires std::is_copy_constructible_v<E> : has_value_(other.has_value_) {
    if (!has_value_) std::construct_at(&error_, other.error_);
  }
  expected& operator=(expected other) noexcept(std::is_nothrow_move_constructible_v<E>) {
    if (this != &other) {
      destroy();
      has_value_ = other.has_value_;
      if (!has_value_) std::construct_at(&error_, std::move(other.error_));
    }
    return *this;
  }
  ~expected() { destroy(); }

  bool has_value() const noexcept { return has_value_; }
  explicit operator bool() const noexcept { return has_value_; }
  void value() const {
    if (!has_value_) throw bad_expected_access();
  }
  E& error() & noexcept { return error_; }
  const E& error() const& noexcept { return error_; }
  E&& error() && noexcept { return std::move(error_); }

 private:
  void destroy() noexcept {
    if (!has_value_) std::destroy_at(&error_);
  }

  union {
    E error_;
  };
  bool has_value_;
};

}  // namespace postal
