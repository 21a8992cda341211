// A task computes a value and sends it back through a oneshot channel: the reply half of every request.
// If the sender were dropped without sending, the receiver would get an error instead of hanging.
#include <postal/oneshot.hpp>
#include <postal/runtime.hpp>

#include <iostream>

#include "samples.hpp"

postal::task<void> samples::oneshot_reply() {
  auto [tx, rx] = postal::oneshot::channel<int>();
  postal::spawn([](postal::oneshot::sender<int> reply) -> postal::task<void> {
    if (!reply.send(6 * 7)) std::cout << "the receiver went away\n";
    co_return;
  }(std::move(tx)));
  auto answer = co_await rx;
  if (answer)
    std::cout << "got = " << *answer << '\n';
  else
    std::cout << "the sender was dropped without replying\n";
}
