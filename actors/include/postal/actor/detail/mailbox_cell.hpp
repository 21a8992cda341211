// The part of an actor's cell that depends on its message type only: its control block and its mailbox's
// core, laid out compactly inside the cell (one allocation per actor). Internal to postal's actors.
#pragma once

#include <postal/actor/detail/control_block.hpp>
#include <postal/actor/detail/envelope.hpp>
#include <postal/detail/channel_access.hpp>
#include <postal/mpsc.hpp>
#include <postal/runtime.hpp>

#include <cstddef>
#include <new>
#include <optional>
#include <variant>

namespace postal::detail {
template <class Message>
class mailbox_cell;
}  // namespace postal::detail

namespace postal::channel_access {
// An actor's mailbox core lives in the actor's cell (one allocation per actor), laid out compactly: an
// actor is spawned by the million, and the fast path of a tell touches the cell's lines anyway.
template <class... Ts, class... Rest>
struct core_traits<std::variant<std::variant<Ts...>, postal::detail::nudge, Rest...>> {
  using item = std::variant<std::variant<Ts...>, postal::detail::nudge, Rest...>;
  static constexpr bool compact = true;
  static void dispose(bounded_core<item>* core) noexcept {
    static_cast<postal::detail::mailbox_cell<std::variant<Ts...>>*>(core)->core_released();
  }
};
}  // namespace postal::channel_access

namespace postal {
namespace detail {
// The part of an actor's cell that depends on its message type only: the control block and the mailbox's
// core, as bases (the core's disposal, and the actor's self(), find the cell from them).
template <class Message>
class mailbox_cell : public control_block, public channel_access::bounded_core<envelope<Message>> {
 public:
  using core_type = channel_access::bounded_core<envelope<Message>>;

  explicit mailbox_cell(std::size_t capacity) : core_type(capacity) {
    retain_body(this);  // held by the mailbox's handles together (core_released)
    retain_body(this);  // held by the control block's references together (control_block::release)
  }

  core_type& core() noexcept { return *this; }
  postal::runtime& runtime() noexcept { return body_runtime(this); }
  // A sender while any ref to the actor exists (self() needs no weak sender of its own).
  std::optional<mpsc::sender<envelope<Message>>> upgrade() noexcept { return channel_access::upgrade(core()); }
  // The mailbox's last handle is gone.
  void core_released() noexcept { release_body(this); }

 private:
  // Puts a nudge in the mailbox if there is room (a full mailbox means the actor will look at the flag
  // after its current message anyway).
  void nudge() noexcept override {
    auto mailbox = upgrade();
    if (!mailbox) return;
    try {
      (void)mailbox->try_send(envelope<Message>(std::in_place_index<1>));
    } catch (const std::bad_alloc&) {
      // The mailbox could not get its slots (its first message): the request waits in the control block
      // until the actor's next message.
    }
  }
};
}  // namespace detail

}  // namespace postal
