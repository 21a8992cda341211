// A watch channel holds one value (say, configuration); receivers wait for changes and read the latest.
// Intermediate values may be skipped: a watch is for state, not for a stream of events.
#include <postal/oneshot.hpp>
#include <postal/runtime.hpp>
#include <postal/watch.hpp>

#include <iostream>
#include <string>

#include "samples.hpp"

postal::task<void> samples::watch_changes() {
  auto [tx, rx] = postal::watch::channel<std::string>("hello");
  auto [ready_tx, ready_rx] = postal::oneshot::channel<bool>();
  auto reader = postal::spawn([](postal::watch::receiver<std::string> config,
                                 postal::oneshot::sender<bool> ready) -> postal::task<void> {
    std::cout << "initial = " << *config.borrow() << '\n';
    (void)ready.send(true);
    // changed() completes when a value newer than the last one seen is sent; an error once the sender is
    // gone.
    while (co_await config.changed()) std::cout << "changed to = " << *config.borrow_and_update() << '\n';
    std::cout << "sender dropped\n";
  }(rx, std::move(ready_tx)));
  (void)co_await ready_rx;  // the reader has read the initial value
  tx.send_replace("world");
  { auto gone = std::move(tx); }  // the reader still sees "world", then learns the sender is gone
  co_await reader;
}
