// A watch channel holds one value (say, configuration); receivers wait for changes and read the latest.
// Intermediate values may be skipped: a watch is for state, not for a stream of events.
#include <postal/runtime.hpp>
#include <postal/watch.hpp>

#include <iostream>
#include <string>

#include "samples.hpp"

postal::task<void> samples::watch_changes() {
  auto [tx, rx] = postal::watch::channel<std::string>("hello");
  auto reader = postal::spawn([](postal::watch::receiver<std::string> config) -> postal::task<void> {
    std::cout << "initial = " << *config.borrow() << '\n';
    // changed() completes when a value newer than the last one seen is sent; an error once the sender is gone.
    while (co_await config.changed()) std::cout << "changed to = " << *config.borrow_and_update() << '\n';
    std::cout << "sender dropped\n";
  }(rx));
  tx.send_replace("world");
  co_await postal::yield_now();
  tx.send_replace("again");
  { auto gone = std::move(tx); }
  co_await reader;
}
