// core_traits<T>: how the shared state (core) of a bounded mpsc channel of T is laid out and freed. The one
// customization point a runtime has in the channels; it is part of the seam <postal/detail/channel_access.hpp>
// and lives apart only because the channel's core must see it before that header can be included.
#pragma once

namespace postal::mpsc::detail {
template <class T>
class bounded_core;
}  // namespace postal::mpsc::detail

namespace postal::channel_access {

// The default: a core allocated by mpsc::channel() on its own, with the producer's and the consumer's words
// on cache lines of their own (the fastest layout when sender and receiver run on different cores). A
// specialization may trade that for size, and embed the core in a bigger object: postal's actors do, so that
// an actor is one allocation (see <postal/actor/detail/mailbox_cell.hpp>).
//   compact:  no cache-line alignment (the core takes about two lines instead of three);
//   dispose:  called once the last handle is gone, instead of `delete core`.
template <class T>
struct core_traits {
  static constexpr bool compact = false;
  static void dispose(mpsc::detail::bounded_core<T>* core) noexcept { delete core; }
};

}  // namespace postal::channel_access
