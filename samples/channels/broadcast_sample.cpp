// One sender, two receivers: every receiver sees every value in order. A receiver that falls more than
// the capacity behind would be told how many values it missed (lagged) instead of blocking the sender.
#include <postal/broadcast.hpp>
#include <postal/runtime.hpp>

#include <iostream>
#include <string>

#include "samples.hpp"

namespace {
postal::task<void> listen(postal::broadcast::receiver<int> rx, std::string name) {
  for (;;) {
    auto value = co_await rx.recv();
    if (!value) {
      if (value.error().is_lagged()) {
        std::cout << name << " missed " << value.error().missed << " values\n";
        continue;
      }
      co_return;  // closed: every sender is gone and everything was seen
    }
    std::cout << name << " got " << *value << '\n';
  }
}
}  // namespace

postal::task<void> samples::broadcast_two_receivers() {
  auto [tx, rx1] = postal::broadcast::channel<int>(16);
  auto rx2 = tx.subscribe();
  auto first = postal::spawn(listen(std::move(rx1), "receiver 1"));
  auto second = postal::spawn(listen(std::move(rx2), "receiver 2"));
  (void)tx.send(10);
  (void)tx.send(20);
  { auto gone = std::move(tx); }  // dropping the last sender closes the channel once receivers drain it
  co_await first;
  co_await second;
}
