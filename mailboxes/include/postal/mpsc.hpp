// postal::mpsc: multi-producer, single-consumer channels (Tokio's tokio::sync::mpsc). Use them for a stream
// of values from any number of senders to one receiver: a task's or actor's mailbox, a work queue.
// - channel<T>(capacity): bounded. send() waits while the channel is full (backpressure); waiting senders
//   are served in the order they started waiting; reserve() gives a permit whose send cannot fail.
// - unbounded_channel<T>(): send() never waits; memory grows if the receiver falls behind.
// When the other side goes away: once every sender (and permit) is gone, the receiver drains what is
// buffered and then recv() gives an empty optional; once the receiver is destroyed or closed, every
// send fails and hands its value back, and senders' closed() waits complete.
// Not for one value (use oneshot), for many receivers (broadcast) or for the latest state (watch).
#pragma once

#include <postal/mpsc/bounded.hpp>
#include <postal/mpsc/errors.hpp>
#include <postal/mpsc/unbounded.hpp>
