// The small coroutines and checks that the mpsc tests run on a manual_executor: one receive or send as a
// job, and helpers for operations that must complete at once. Shared by mpsc_test.cpp and
// mpsc_weak_test.cpp. Not for production use.
#pragma once

#include <postal/mpsc.hpp>

#include <catch2/catch.hpp>
#include <chrono>
#include <optional>
#include <type_traits>
#include <utility>

#include "support/manual_executor.hpp"

namespace postal::test {

template <template <class> class Receiver, class T>
job<std::optional<T>> receive(Receiver<T>& rx) {
  co_return co_await rx.recv();
}
template <class T>
job<expected<void, mpsc::send_error<T>>> send_value(mpsc::sender<T>& tx, std::type_identity_t<T> value) {
  co_return co_await tx.send(std::move(value));
}

// The error of a result that must have failed.
template <class T, class E>
E error_of(expected<T, E> result) {
  REQUIRE_FALSE(result.has_value());
  return std::move(result.error());
}

// Runs `j` on an executor of its own; it must finish without suspending. Returns what it returned.
template <class T>
T completed(job<T> j) {
  manual_executor executor;
  auto running = spawn(executor, std::move(j));
  REQUIRE(running.done());
  return std::move(running.result());
}
template <template <class> class Receiver, class T>
std::optional<T> recv_now(Receiver<T>& rx) {
  return completed(receive(rx));
}

}  // namespace postal::test
