// What an actor's mailbox holds (an envelope): a message told, a nudge that only wakes the actor, or a
// request that declares its reply type travelling with its responder; and the concepts that check at
// compile time what may be told or asked of an actor. Internal to postal's actors.
#pragma once

#include <postal/actor/request.hpp>

#include <cstddef>
#include <type_traits>
#include <utility>
#include <variant>

namespace postal::detail {

// Put in the mailbox only to wake an actor that waits for messages; the request itself is in the
// control block, so a full mailbox cannot lose it.
struct nudge {};

// A request whose message declares its reply type travels with its responder beside it.
template <class M>
struct asked {
  M message;
  oneshot::sender<typename reply_type_of<M>::type> reply;
};
template <class M>
struct not_asked {};
template <class T>
struct is_asked : std::false_type {};
template <class M>
struct is_asked<asked<M>> : std::true_type {};
template <class M>
using asked_slot = std::conditional_t<declares_reply<M>, asked<M>, not_asked<M>>;

// What an actor's mailbox holds: a message told (index 0), a nudge (1), or a request of the I-th message
// type that declares its reply type (2 + I; the other alternatives there are empty and never used).
template <class Message>
struct envelope_of;
template <class... Ts>
struct envelope_of<std::variant<Ts...>> {
  using type = std::variant<std::variant<Ts...>, nudge, asked_slot<Ts>...>;
};
template <class Message>
using envelope = typename envelope_of<Message>::type;

template <class T, class Variant>
struct alternative_index;
template <class T, class... Ts>
struct alternative_index<T, std::variant<Ts...>> {
  static constexpr std::size_t value = [] {
    constexpr bool same[] = {std::is_same_v<T, Ts>...};
    for (std::size_t i = 0; i < sizeof...(Ts); ++i)
      if (same[i]) return i;
    return sizeof...(Ts);
  }();
};

// Builds the envelope of a request, its responder `reply` put where the message type wants it.
template <class Message, class M, class R>
envelope<Message> request_envelope(M message, oneshot::sender<R> reply) {
  if constexpr (has_responder<M>) {
    responder_member(message) = std::move(reply);
    return envelope<Message>(std::in_place_index<0>, std::move(message));
  } else {
    return envelope<Message>(std::in_place_index<2 + alternative_index<M, Message>::value>,
                             asked<M>{std::move(message), std::move(reply)});
  }
}
template <class M, class Message>
concept tellable = is_alternative<std::remove_cvref_t<M>, Message>::value;
template <class M, class Message>
concept askable = tellable<M, Message> && (has_responder<M> || declares_reply<M>);

}  // namespace postal::detail
