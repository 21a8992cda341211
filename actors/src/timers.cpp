// The runtime's timers on CAF's clock: delayed messages to one timer actor per runtime, which wakes the
// waker each carries. See timers.hpp.
#include "timers.hpp"

#include <caf/actor_system.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>

#include <memory>
#include <utility>

namespace postal::detail {
// A due timer: CAF's clock delivers it to the timer actor, which wakes the waker. Shared because CAF copies
// message contents; the waker itself is woken once.
struct timer_due {
  std::shared_ptr<waker> target;
};
}  // namespace postal::detail
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(postal::detail::timer_due)

namespace postal::detail {
namespace {
// A class rather than a lambda: CAF 0.17 spawns an argument-less lambda through a null
// shared_ptr<tuple<>> (undefined behaviour that UBSan reports).
class timer_actor final : public caf::event_based_actor {
 public:
  using caf::event_based_actor::event_based_actor;
  caf::behavior make_behavior() override {
    return {[](const timer_due& due) { due.target->wake(); }};
  }
};
}  // namespace

timers::timers(caf::actor_system& system) : actor_(system.spawn<timer_actor>()) {}

void timers::wake_at(std::chrono::steady_clock::time_point deadline, waker& target) {
  auto delay = deadline - std::chrono::steady_clock::now();
  if (delay <= std::chrono::steady_clock::duration::zero()) delay = {};
  caf::delayed_anon_send(actor_, delay, timer_due{std::make_shared<waker>(std::move(target))});
}

void timers::stop() {
  if (actor_) caf::anon_send_exit(actor_, caf::exit_reason::user_shutdown);
  actor_ = nullptr;
}

}  // namespace postal::detail
