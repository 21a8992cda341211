// The seam between the channels and the runtime built on them: everything of a channel's insides that
// postal's actors and tasks may use, named in one place, so that a change inside the channels breaks the
// runtime here and nowhere else. Users never need it: it is for <postal/actor.hpp> and <postal/task.hpp>.
// Not for: anything the public channel handles already offer.
//
// What a runtime may do with a bounded mpsc channel's core: embed it in an object of its own (core_traits,
// bounded_core), check a capacity as mpsc::channel() does, adopt the first sender and the receiver of an
// embedded core, upgrade to a new sender while the core lives by other means, park and unpark the receiver's
// waker (bounded_core::park / unpark), and lock with the channels' small spin lock. Of oneshot: await a
// receiver held by reference (receive_awaitable), as a join handle does.
#pragma once

#include <postal/detail/core_traits.hpp>
#include <postal/mpsc.hpp>
#include <postal/oneshot.hpp>

#include <cstddef>
#include <optional>
#include <utility>

namespace postal::channel_access {

// The shared state of a bounded mpsc channel of T. Embeddable (see core_traits); `park(waker)` publishes
// the receiver's waker unless a value is on its way or the channel is finished (then false), `unpark()`
// withdraws it.
template <class T>
using bounded_core = mpsc::detail::bounded_core<T>;

// Throws std::invalid_argument, naming `who`, unless 1 <= capacity <= mpsc::max_channel_capacity.
inline void check_capacity(std::size_t capacity, const char* who) { mpsc::detail::check_capacity(capacity, who); }

// The first sender and the receiver of a core built in place (they take over the counts a new core starts
// with); core_traits<T>::dispose frees it after its last handle.
template <class T>
std::pair<mpsc::sender<T>, mpsc::receiver<T>> adopt(bounded_core<T>& core) noexcept {
  return mpsc::detail::adopt_core(core);
}

// A new sender of such a core while any strong sender exists, for an owner that keeps the core's memory
// alive by other means.
template <class T>
std::optional<mpsc::sender<T>> upgrade(bounded_core<T>& core) noexcept {
  return mpsc::detail::upgrade_core(core);
}

// A one-byte test-and-test-and-set lock for critical sections of a few instructions.
using spinlock = mpsc::detail::spinlock;

// Awaits a oneshot receiver held by reference (or owned), as `co_await receiver` does.
template <class T>
using oneshot_receive = oneshot::detail::receive_awaitable<T>;

}  // namespace postal::channel_access
