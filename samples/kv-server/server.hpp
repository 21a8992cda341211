// kv-server: a mini Redis server built from postal actors, which the real redis-cli and redis-benchmark talk
// to. An acceptor task takes connections; each connection is an actor fed by a reader task (parsed
// requests) and by the pub/sub groups it subscribed to; shard actors own the data (a key's shard is its hash
// modulo the shard count, shard.hpp). Commands: PING, ECHO, GET, SET (EX / PX), DEL, EXISTS, INCR, PUBLISH,
// SUBSCRIBE, UNSUBSCRIBE, INFO, QUIT (and CONFIG GET, answered with nothing, for redis-benchmark).
//
// Backpressure: a connection asks the shards for its requests and waits for room in their mailboxes; while it
// waits it does not take the next batch from its reader, whose tell then waits, so the reader stops reading
// the socket (the kernel's buffers fill and the client's writes block). Nothing is buffered without bound.
#pragma once

#include "shard.hpp"

#include <postal/runtime.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace kv {

/// A message on a pub/sub channel (the group's topic is the channel's name).
struct published {
  std::string channel;
  std::string payload;
};
template <class Inspector>
auto inspect(Inspector& f, published& x) {
  return f(x.channel, x.payload);
}

struct server_options {
  std::string host = "127.0.0.1";
  std::uint16_t port = 6380;  // 0: the kernel picks one (see server::port())
  std::size_t shards = 4;
  std::size_t max_connections = 10'000;
  std::size_t max_bulk = 512 * 1024 * 1024;  // the longest bulk string a request may carry
  std::size_t shard_mailbox = 1024;
  /// The shards that own the keys. Empty: the server spawns `shards` shards of its own. Given (the cluster
  /// sample shares one table of local and remote shards): a key whose owner is unreachable answers
  /// "-CLUSTERDOWN the node that owns this key (<owner>) is unreachable", and the other keys work.
  std::shared_ptr<shard_table> table{};
  /// Where PUBLISH goes. Empty: to this server's subscribers. Given (the cluster sample: a group across
  /// nodes, whose every node calls server::deliver), PUBLISH answers how many subscribers this server has.
  std::function<void(published)> publish{};
  /// More lines for INFO's reply ("name:value\r\n" each).
  std::function<std::string()> info{};
};

/// A running server. Destroying it stops accepting and closes every connection.
class server {
 public:
  /// Binds options.host:options.port and starts serving on `rt`. Throws std::system_error if it cannot bind.
  server(postal::runtime& rt, server_options options);
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  std::uint16_t port() const noexcept;
  /// Gives `message` to this server's subscribers of its channel; returns how many there are.
  std::size_t deliver(published message);
  /// Connections open now.
  std::size_t connections() const noexcept;

  struct state;

 private:
  std::shared_ptr<state> state_;
};

}  // namespace kv
