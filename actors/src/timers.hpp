// The runtime's timers (private to actors/src): sleeps and timed waits are served by CAF's clock, which
// delivers each due timer to one timer actor that wakes its waker. No thread of postal's own.
// Not for: users (time.hpp is the interface: sleep_for, sleep_until, and the channels' timed waits).
#pragma once

#include <postal/waker.hpp>

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

#include <chrono>

namespace postal::detail {

class timers {
 public:
  explicit timers(caf::actor_system& system);
  // Wakes `target` at `deadline` (at once if it passed).
  void wake_at(std::chrono::steady_clock::time_point deadline, waker& target);
  // Stops the timer actor: timers still pending are dropped with it (their wakers released, never woken).
  void stop();

 private:
  caf::actor actor_;
};

}  // namespace postal::detail
