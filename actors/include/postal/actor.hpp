// postal actors, the one header to include: a class with one bounded mailbox of one message type (a
// std::variant of message structs) and one handler per type, run on postal's runtime; actor_ref<Message>,
// its typed address, with tell (backpressure), try_tell, blocking_tell, ask (a oneshot reply inside the
// request) and monitor; and the lifecycle around it: start and stop hooks, stop policies, supervision.
// Not for: the channels themselves (mailboxes/) or scheduling (runtime.hpp).
//
// The framework calls exactly these members of your actor class, and nothing else:
//   handle(M&)        one per message type M of the variant; returns void, postal::task<void>, or
//                     std::optional<postal::task<void>> (a task only when it has to wait: no coroutine frame
//                     for the messages it handles at once)
//   on_start()        optional; before the first message (and after each restart); void or task<void>
//   on_stop(reason)   optional; once, after the last message; void or task<void>
//   on_idle()         optional; each time the mailbox is found empty, before the actor waits for more (to
//                     flush work batched over the messages just handled); void or task<void>. The tasks
//                     queued on the actor's worker get one turn first (postal::yield_here), so messages
//                     they send at once still join the batch.
//
// Where each concept lives (all under <postal/actor/>), in the order a message travels:
//   request.hpp   responder<T>, reply types, ask_error, and the one "send, then await the answer" of ask
//   ref.hpp       actor_ref<Message>: tell, try_tell, blocking_tell, ask, kill, monitor; the tell errors
//   monitor.hpp   actor_monitor: an actor's end and its exit reason
//   options.hpp   actor_options, supervision, stop_mode, exit_reason
//   base.hpp      postal::actor<Message>, the base class: self, stop, runtime, spawn_child
//   spawn.hpp     spawn_actor
//   timers.hpp    tell_after, tell_every, timer_handle
//   detail/       the envelope a mailbox holds, the control block, the cell and its runner
#pragma once

#include <postal/actor/base.hpp>
#include <postal/actor/monitor.hpp>
#include <postal/actor/options.hpp>
#include <postal/actor/ref.hpp>
#include <postal/actor/request.hpp>
#include <postal/actor/spawn.hpp>
#include <postal/actor/timers.hpp>
