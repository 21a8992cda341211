// Spawning actors: postal::spawn_actor builds an actor's cell on a runtime and returns its actor_ref.
// Not for: what the actor does (base.hpp) or how it runs (detail/runner.hpp).
#pragma once

#include <postal/actor/base.hpp>
#include <postal/actor/detail/runner.hpp>
#include <postal/actor/options.hpp>
#include <postal/actor/ref.hpp>
#include <postal/detail/channel_access.hpp>
#include <postal/runtime.hpp>

#include <exception>
#include <new>
#include <optional>
#include <type_traits>
#include <utility>

namespace postal {
namespace detail {

template <class A, class... Args>
actor_ref<typename A::message_type> spawn_actor_with(runtime& rt, control_ref supervisor,
                                                     actor_options options, Args&&... args) {
  using Message = typename A::message_type;
  static_assert(std::is_base_of_v<actor<Message>, A>, "an actor class derives from postal::actor<Message>");
  channel_access::check_capacity(options.mailbox_capacity, "postal::spawn_actor: the mailbox");
  // Builds the actor object in `storage`, or on the heap when given none; keeps the spawn arguments for a
  // restart (an actor spawned without arguments keeps no bytes for them).
  auto factory = [... saved = std::forward<Args>(args)](void* storage) -> void* {
    if (storage == nullptr) return new A(saved...);
    return ::new (storage) A(saved...);
  };
  using cell = actor_cell<A, decltype(factory)>;
  void* storage = allocate_body(&rt, sizeof(cell));
  std::optional<mpsc::sender<envelope<Message>>> first;
  cell* built;
  try {
    built = ::new (storage) cell(std::move(supervisor), options, std::move(factory), first);
  } catch (...) {
    discard_storage(storage);
    throw;
  }
  // The runtime finds the body at the start of the storage (the first base's first base).
  if (static_cast<void*>(static_cast<task_body*>(built)) != storage) std::terminate();
  actor_ref<Message> ref(std::move(*first), control_ref(built));
  built->set_name(std::move(options.name));  // throws only before the actor started: ref lets go of it
  start_body(built);  // after shutdown: throws, and ref's destructor lets go of the cell
  return ref;
}

}  // namespace detail

/// Spawns an actor of class A (derived from postal::actor<Message>) on `rt`, built as A(args...). The
/// arguments are copied and kept, to build a fresh A when its supervision policy restarts it.
template <class A, class... Args>
actor_ref<typename A::message_type> spawn_actor(runtime& rt, actor_options options, Args&&... args) {
  return detail::spawn_actor_with<A>(rt, nullptr, options, std::forward<Args>(args)...);
}

}  // namespace postal
