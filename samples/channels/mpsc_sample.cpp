// Two producer tasks send into one bounded mpsc channel; the receiver gets every message, and recv() ends
// (returns an empty optional) once both senders are gone.
#include <postal/mpsc.hpp>
#include <postal/runtime.hpp>

#include <iostream>
#include <string>

#include "samples.hpp"

namespace {
postal::task<void> produce(postal::mpsc::sender<std::string> tx, std::string name) {
  for (int i = 0; i < 3; ++i) {
    // Waits while the channel is full (capacity 2): backpressure instead of unbounded memory.
    if (!co_await tx.send(name + " #" + std::to_string(i))) co_return;  // the receiver is gone
  }
}
}  // namespace

postal::task<void> samples::two_producers_one_mpsc() {
  auto [tx, rx] = postal::mpsc::channel<std::string>(2);
  postal::spawn(produce(tx, "first handle"));
  postal::spawn(produce(std::move(tx), "second handle"));
  while (auto message = co_await rx.recv()) std::cout << "got = " << *message << '\n';
  std::cout << "both senders dropped: channel closed\n";
}
