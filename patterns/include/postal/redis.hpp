// postal::redis: the connection manager of the seed, as an actor. It owns one TCP connection to a Redis
// server and takes the seed's commands, each carrying its responder:
//
//   auto redis = postal::redis::spawn_connection_manager(rt, {.host = "127.0.0.1", .port = 6379});
//   postal::redis::set store{"hello", "world", {}};
//   auto stored = co_await redis.ask(std::move(store));      // expected<void_reply, redis::error>
//   auto value = redis.blocking_ask(postal::redis::get{"hello", {}});   // from main()
//
// It pipelines: the commands queued in its mailbox are written together (one write when the mailbox runs
// empty, every write_batch commands, or every 64 KiB), and a reader task matches the replies to them in
// order; while replies are due, the reader polls the socket for a moment before it waits for the I/O
// driver (reply_poll). Every command ends with a reply or an error, never a hang:
//   - a Redis error reply is error::server with Redis's message;
//   - when the connection drops, the commands in flight get error::connection_lost (they may or may not have
//     run; none is sent again), and the manager reconnects with exponential backoff; meanwhile commands fail
//     at once with error::not_connected (they were not sent);
//   - a connect that does not complete within connect_timeout counts as a failed attempt;
//   - a reply that does not come within request_timeout drops the connection (error::timeout).
// Backpressure holds end to end: a full mailbox makes the caller wait, and at most max_in_flight commands
// are on the wire.
// Not for: MULTI/EXEC transactions, blocking commands (BLPOP...) or SUBSCRIBE on a managed connection.
// The manager's non-template parts (connecting, writing, the reader task, spawning) are compiled in the
// patterns library (src/redis.cpp).
#pragma once

#include <postal/actor.hpp>
#include <postal/ask.hpp>
#include <postal/expected.hpp>
#include <postal/mpsc.hpp>
#include <postal/net.hpp>
#include <postal/resp.hpp>
#include <postal/runtime.hpp>
#include <postal/task.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace postal::redis {

/// Why a command got no reply.
struct error {
  enum class kind_type {
    not_connected,    // there was no connection (connecting failed, or the manager backs off): not sent
    connection_lost,  // the connection dropped while the command was in flight: it may or may not have run
    timeout,          // no reply within request_timeout; the connection was dropped
    protocol,         // the reply was not RESP, or not the type the command expects
    server,           // Redis answered with an error reply; `message` is its text ("WRONGTYPE ...")
    stopped,          // the connection manager has stopped
  };
  kind_type kind;
  std::string message;
  friend bool operator==(const error&, const error&) = default;
};

// Printing, as every postal error: "redis: <kind>: <message>".
inline std::string to_string(const error& failure) {
  const char* kind = "stopped";
  switch (failure.kind) {
    case error::kind_type::not_connected: kind = "not connected"; break;
    case error::kind_type::connection_lost: kind = "connection lost"; break;
    case error::kind_type::timeout: kind = "timeout"; break;
    case error::kind_type::protocol: kind = "protocol error"; break;
    case error::kind_type::server: kind = "server error"; break;
    case error::kind_type::stopped: kind = "stopped"; break;
  }
  return std::string("redis: ") + kind + (failure.message.empty() ? "" : ": " + failure.message);
}
inline std::ostream& operator<<(std::ostream& out, const error& failure) { return out << to_string(failure); }

template <class T>
using result = expected<T, error>;

// --- the commands: the seed's Get and Set, and a few more ---------------------------------------------
struct get {
  std::string key;
  responder<result<std::optional<std::string>>> resp;
};
struct set {
  std::string key;
  std::string value;
  responder<result<void_reply>> resp;
  std::optional<std::chrono::milliseconds> expire = std::nullopt;  // SET ... PX
};
struct del {
  std::vector<std::string> keys;
  responder<result<std::int64_t>> resp;  // how many keys were removed
};
struct incr {
  std::string key;
  responder<result<std::int64_t>> resp;  // the new value
};
struct expire {
  std::string key;
  std::chrono::seconds ttl;
  responder<result<bool>> resp;  // false if the key does not exist
};
struct publish {
  std::string channel;
  std::string message;
  responder<result<std::int64_t>> resp;  // how many subscribers received it
};
struct raw {  // any other command, e.g. {"HSET", "h", "f", "v"}
  std::vector<std::string> args;
  responder<result<resp::value>> resp;
};

namespace detail {
struct link;
}  // namespace detail

/// What the manager's mailbox takes: the commands above (tell or ask them).
using message = std::variant<get, set, del, incr, expire, publish, raw>;
/// A connection manager (or a pool of them).
using connection = actor_ref<message>;

struct connection_options {
  std::string host = "127.0.0.1";
  std::uint16_t port = 6379;
  std::chrono::milliseconds connect_timeout{1000};
  std::chrono::milliseconds request_timeout{5000};
  /// Reconnection backoff: the first retry after backoff_initial, doubling up to backoff_max.
  std::chrono::milliseconds backoff_initial{10};
  std::chrono::milliseconds backoff_max{2000};
  /// Commands written and not yet answered; beyond it the manager waits for replies before writing more.
  std::size_t max_in_flight = 4096;
  std::size_t mailbox_capacity = 1024;
  /// Reply polling: while commands are in flight, a read that finds nothing is retried for up to this long
  /// after the later of the last write and the first try, with postal::yield_here between tries (other
  /// tasks on the worker run in between), before the reader waits for the I/O driver. A server that answers
  /// within the window costs no wake-up of the driver thread and of a sleeping worker. The price is CPU: a
  /// worker with nothing else to do spins for up to reply_poll per burst of replies (one recv per try),
  /// and a server slower than that gets it in full every time. It never spins on an idle connection: with
  /// nothing in flight the reader retries only while other tasks on its worker run (the callers it just
  /// answered, who usually send again at once), and then waits. 0, or the I/O driver busy polling
  /// (net::set_busy_poll, which then sees replies at once), turns it off, and write_batch with it.
  std::chrono::microseconds reply_poll{50};
  /// While the reader polls for replies: the manager writes every write_batch commands it encodes, so the
  /// server starts on them while the manager handles the rest, besides the write when its mailbox runs
  /// empty (after the tasks queued on its worker had a turn to add theirs) and every 64 KiB. Small writes
  /// pay off only when their replies are read without a wake-up each, hence only with polling. 0: no
  /// such writes. With 50 tasks each waiting for its reply, 16 made the conn_manager benchmark ~1.3x faster
  /// than one write per burst (and reply polling ~1.5x before that).
  std::size_t write_batch = 16;
};

namespace detail {

// The responder of any command, and the time it was written.
using any_responder =
    std::variant<responder<result<std::optional<std::string>>>, responder<result<void_reply>>,
                 responder<result<std::int64_t>>, responder<result<bool>>, responder<result<resp::value>>>;
struct in_flight {
  any_responder reply;
  std::chrono::steady_clock::time_point written;
};

// Answers a command with an error: through its own responder, or through whichever one `reply` holds.
template <class T>
void fail(responder<result<T>>& reply, const error& why) {
  (void)reply.send(unexpected{why});
}
void fail(any_responder& reply, const error& why);

// One connection: the stream, written by the manager and read by its reader task (src/redis.cpp), and the
// queue of the commands in flight, in the order written.
struct link {
  link(net::tcp_stream stream, std::size_t max_in_flight)
      : stream(std::move(stream)), queue(mpsc::channel<in_flight>(max_in_flight)) {}
  net::tcp_stream stream;
  std::pair<mpsc::sender<in_flight>, mpsc::receiver<in_flight>> queue;
  std::atomic<bool> open{true};
  // When the manager's last write ended (steady_clock ticks): replies are due from then on.
  std::atomic<std::chrono::steady_clock::rep> last_write{0};
};

// Whether the reader polls for replies: reply_poll is set and the I/O driver does not busy-poll itself (then
// it sees replies at once, and a polling reader would only take CPU from it).
bool polls_replies(std::chrono::microseconds reply_poll) noexcept;

// The manager itself. handle() takes each command (a template over the command types); the rest, and the
// reader task that completes the commands in flight, is compiled in the library (src/redis.cpp).
class connection_manager : public actor<message> {
 public:
  explicit connection_manager(connection_options options)
      : options_(std::move(options)), backoff_(options_.backoff_initial) {}

  task<void> on_start_async() override;
  template <class Command>
  task<void> handle(Command& command) {
    if (!connected()) {
      if (std::chrono::steady_clock::now() >= next_attempt_) co_await connect();
      if (!connected()) {
        fail(command.resp, error{error::kind_type::not_connected, last_failure_});
        co_return;
      }
    }
    in_flight entry{any_responder(std::move(command.resp)), std::chrono::steady_clock::now()};
    auto& queue = link_->queue.first;
    auto queued = queue.try_send(std::move(entry));
    if (!queued && queued.error().is_full()) {
      co_await flush();  // the replies to what is written make room
      if (connected()) {
        auto sent = co_await queue.send(std::move(queued.error().value));
        if (!sent) {
          fail(sent.error().value.reply, error{error::kind_type::not_connected, "connection lost before sending"});
          co_return;
        }
      } else {
        fail(queued.error().value.reply, error{error::kind_type::not_connected, last_failure_});
        co_return;
      }
    } else if (!queued) {  // closed: the reader saw the connection end
      fail(queued.error().value.reply, error{error::kind_type::not_connected, "connection lost before sending"});
      co_return;
    }
    encode(command);
    ++unwritten_;
    const bool batch_full = unwritten_ == options_.write_batch && polls_replies(options_.reply_poll);
    if (out_.size() >= flush_threshold || batch_full) co_await flush();
  }
  task<void> on_idle_async() override;
  void on_stop(const exit_reason&) override;

 private:
  static constexpr std::size_t flush_threshold = 64 * 1024;

  bool connected() const noexcept { return link_ && link_->open.load(std::memory_order_acquire); }

  void encode(const get& c);
  void encode(const set& c);
  void encode(const del& c);
  void encode(const incr& c);
  void encode(const expire& c);
  void encode(const publish& c);
  void encode(const raw& c);

  // Writes what is queued. A failed write ends the connection (the reader fails what is in flight).
  task<void> flush();
  // One connection attempt; on failure, the next one waits for the backoff.
  task<void> connect();

  connection_options options_;
  std::shared_ptr<link> link_;
  std::string out_;
  std::size_t unwritten_ = 0;  // commands encoded in out_
  std::chrono::milliseconds backoff_;
  std::chrono::steady_clock::time_point next_attempt_{};
  std::string last_failure_ = "not connected yet";
};

// A pool: hands each command to the next manager in turn.
class pool_router : public actor<message> {
 public:
  explicit pool_router(std::vector<connection> managers) : managers_(std::move(managers)) {}
  template <class Command>
  task<void> handle(Command& command) {
    auto& target = managers_[next_++ % managers_.size()];
    auto told = co_await target.tell(std::move(command));
    if (!told) (void)told.error().message.resp.send(unexpected{error{error::kind_type::stopped, "the manager stopped"}});
  }

 private:
  std::vector<connection> managers_;
  std::size_t next_ = 0;
};

}  // namespace detail

namespace detail {
template <class Command>
using value_of = typename postal::detail::reply_of<Command>::value_type;
// A failed ask as one redis::error: timeout, or stopped.
error ask_failure(ask_error why);
}  // namespace detail

/// `co_await redis::query(connection, redis::get{"k", {}})`: asks the manager and gives the reply or one
/// redis::error (a stopped manager is error::stopped), instead of ask's expected of an expected.
template <class Command>
task<result<detail::value_of<Command>>> query(connection target, Command command) {
  auto answer = co_await target.ask(std::move(command));
  if (!answer) co_return unexpected{detail::ask_failure(answer.error())};
  co_return std::move(*answer);
}
/// query for plain threads.
template <class Command>
result<detail::value_of<Command>> blocking_query(connection& target, Command command) {
  auto answer = target.blocking_ask(std::move(command));
  if (!answer) return unexpected{detail::ask_failure(answer.error())};
  return std::move(*answer);
}

/// Spawns a connection manager for the Redis server at options.host:options.port. It connects at once (a
/// failure only means the first commands fail with not_connected while it retries).
connection spawn_connection_manager(runtime& rt, connection_options options = {});

/// A pool of `size` connection managers behind one ref: each command goes to the next manager in turn.
/// Throws std::invalid_argument if size is 0.
connection spawn_pool(runtime& rt, std::size_t size, connection_options options = {});

}  // namespace postal::redis
