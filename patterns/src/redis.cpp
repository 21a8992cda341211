// postal::redis: the connection manager's non-template parts, declared in postal/redis.hpp: the reader task
// that completes the commands in flight, connecting, writing, encoding, and spawning managers and pools.
#include <postal/redis.hpp>

#include <postal/net.hpp>
#include <postal/resp.hpp>
#include <postal/runtime.hpp>
#include <postal/task.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace postal::redis {

namespace detail {

namespace {

error protocol_error(std::string what) { return {error::kind_type::protocol, std::move(what)}; }

// Turns a reply into the result type the command's responder wants, and sends it.
void complete(any_responder& reply, resp::value&& value) {
  if (value.is_error()) {
    std::visit([&](auto& r) { (void)r.send(unexpected{error{error::kind_type::server, std::move(value.text)}}); },
               reply);
    return;
  }
  std::visit(
      [&](auto& r) {
        using result_type = typename postal::detail::responder_traits<std::remove_cvref_t<decltype(r)>>::value_type;
        using T = typename result_type::value_type;
        using kind = resp::value::kind_type;
        if constexpr (std::is_same_v<T, std::optional<std::string>>) {
          if (value.kind == kind::bulk_string) (void)r.send(std::optional<std::string>(std::move(value.text)));
          else if (value.kind == kind::null) (void)r.send(std::optional<std::string>());
          else (void)r.send(unexpected{protocol_error("expected a bulk string or nil")});
        } else if constexpr (std::is_same_v<T, void_reply>) {
          if (value.kind == kind::simple_string) (void)r.send(void_reply{});
          else (void)r.send(unexpected{protocol_error("expected +OK")});
        } else if constexpr (std::is_same_v<T, std::int64_t>) {
          if (value.kind == kind::integer) (void)r.send(value.integer);
          else (void)r.send(unexpected{protocol_error("expected an integer")});
        } else if constexpr (std::is_same_v<T, bool>) {
          if (value.kind == kind::integer) (void)r.send(value.integer != 0);
          else (void)r.send(unexpected{protocol_error("expected an integer")});
        } else {
          (void)r.send(std::move(value));
        }
      },
      reply);
}

// Reads replies and completes the commands in flight, in order, until the connection ends; then fails what
// is left. A reply overdue by request_timeout ends the connection. It takes a command off the queue only
// when it needs it, so the queue's capacity bounds the commands in flight.
//
// Reply polling (reply_poll > 0, see connection_options): a read that finds nothing is retried with
// yield_here between tries, before the reader waits for the I/O driver, as long as
//   - commands are in flight, until reply_poll after the later of the last write and the first try (and
//     never past the oldest command's request_timeout), or
//   - nothing is in flight but other tasks ran on this worker since the last try: the callers it just
//     answered, who usually send their next commands at once (bounded by the same window).
// So it never spins alone on an idle connection.
task<void> read_replies(std::shared_ptr<link> connection, std::chrono::milliseconds request_timeout,
                               std::chrono::microseconds reply_poll) {
  using clock = std::chrono::steady_clock;
  auto& queue = connection->queue.second;
  std::optional<in_flight> oldest;  // the command the next reply answers
  auto take = [&] {
    if (!oldest)
      if (auto next = queue.try_recv()) oldest.emplace(std::move(*next));
  };
  const auto would_block = std::make_error_code(std::errc::operation_would_block);
  resp::parser parser;
  std::array<char, 64 * 1024> buffer;
  std::optional<error> ended;
  bool answered = false;  // the last read completed commands
  while (!ended) {
    take();
    expected<std::size_t, std::error_code> got = unexpected{would_block};
    if (polls_replies(reply_poll) && (oldest || answered)) {
      const auto started = clock::now();
      bool others_ran = true;
      for (;;) {
        got = connection->stream.try_read_some(std::span<char>(buffer));
        if (got || got.error() != would_block) break;
        take();
        if (!oldest && !others_ran) break;
        const clock::time_point last_write(
            clock::duration(connection->last_write.load(std::memory_order_relaxed)));
        auto until = std::max(started, last_write) + reply_poll;
        if (oldest) until = std::min(until, oldest->written + request_timeout);
        if (clock::now() >= until) break;
        others_ran = co_await postal::yield_here();
      }
    }
    answered = false;
    if (!got && got.error() == would_block) {
      take();
      const auto deadline = oldest ? oldest->written + request_timeout : clock::now() + request_timeout;
      got = co_await connection->stream.read_some(std::span<char>(buffer), deadline);
    }
    if (!got) {
      if (got.error() == std::errc::timed_out) {
        take();
        if (oldest && clock::now() >= oldest->written + request_timeout)
          ended = error{error::kind_type::timeout,
                        "no reply within " + std::to_string(request_timeout.count()) + " ms; connection dropped"};
        continue;
      }
      ended = error{error::kind_type::connection_lost, "connection lost: " + got.error().message()};
    } else if (*got == 0) {
      ended = error{error::kind_type::connection_lost, "connection closed by the server"};
    } else {
      parser.feed(std::string_view(buffer.data(), *got));
      for (;;) {
        auto reply = parser.next();
        if (!reply) {
          ended = error{error::kind_type::protocol, "bad reply from the server: " + reply.error().reason};
          break;
        }
        if (!*reply) break;
        take();
        if (!oldest) {
          ended = error{error::kind_type::protocol, "a reply to no command"};
          break;
        }
        complete(oldest->reply, std::move(**reply));
        oldest.reset();
        answered = true;
      }
    }
  }
  connection->open.store(false, std::memory_order_release);
  connection->stream.close();
  queue.close();  // from now on the manager's queueing fails: those commands are not sent
  const error lost = ended->kind == error::kind_type::timeout || ended->kind == error::kind_type::protocol
                         ? *ended
                         : error{error::kind_type::connection_lost, ended->message};
  if (oldest) fail(oldest->reply, lost);
  while (auto next = queue.try_recv()) fail(next->reply, lost);
}

}  // namespace

void fail(any_responder& reply, const error& why) {
  std::visit([&](auto& r) { fail(r, why); }, reply);
}

bool polls_replies(std::chrono::microseconds reply_poll) noexcept {
  return reply_poll.count() > 0 && net::busy_poll().count() == 0;
}

// --- connection_manager ---------------------------------------------------------------------------------

task<void> connection_manager::on_start_async() { co_await connect(); }
task<void> connection_manager::on_idle_async() { co_await flush(); }
void connection_manager::on_stop(const exit_reason&) {
  if (link_) link_->stream.close();  // the reader fails what is in flight
}

void connection_manager::encode(const get& c) { resp::append_command(out_, {"GET", c.key}); }
void connection_manager::encode(const set& c) {
  if (c.expire) {
    const std::string ms = std::to_string(c.expire->count());
    resp::append_command(out_, {"SET", c.key, c.value, "PX", ms});
  } else {
    resp::append_command(out_, {"SET", c.key, c.value});
  }
}
void connection_manager::encode(const del& c) {
  std::vector<std::string_view> args{"DEL"};
  args.insert(args.end(), c.keys.begin(), c.keys.end());
  resp::append_command(out_, args);
}
void connection_manager::encode(const incr& c) { resp::append_command(out_, {"INCR", c.key}); }
void connection_manager::encode(const expire& c) {
  resp::append_command(out_, {"EXPIRE", c.key, std::to_string(c.ttl.count())});
}
void connection_manager::encode(const publish& c) { resp::append_command(out_, {"PUBLISH", c.channel, c.message}); }
void connection_manager::encode(const raw& c) {
  std::vector<std::string_view> args(c.args.begin(), c.args.end());
  resp::append_command(out_, args);
}

task<void> connection_manager::flush() {
  unwritten_ = 0;
  if (out_.empty()) co_return;
  if (!connected()) {
    out_.clear();
    co_return;
  }
  std::string writing;
  writing.swap(out_);
  auto written = co_await link_->stream.write_all(writing);
  link_->last_write.store(std::chrono::steady_clock::now().time_since_epoch().count(),
                          std::memory_order_relaxed);
  if (!written) {
    last_failure_ = "write failed: " + written.error().message();
    link_->stream.close();
    link_.reset();
  }
  writing.clear();
  if (out_.empty()) out_.swap(writing);  // keep the capacity
}

task<void> connection_manager::connect() {
  link_.reset();
  out_.clear();
  unwritten_ = 0;
  auto stream = co_await net::tcp_stream::connect(options_.host, options_.port, options_.connect_timeout);
  if (!stream) {
    last_failure_ = "cannot connect to " + options_.host + ":" + std::to_string(options_.port) + ": " +
                    stream.error().message();
    next_attempt_ = std::chrono::steady_clock::now() + backoff_;
    backoff_ = std::min(backoff_ * 2, options_.backoff_max);
    co_return;
  }
  backoff_ = options_.backoff_initial;
  link_ = std::make_shared<link>(std::move(*stream), options_.max_in_flight);
  runtime().spawn_detached(read_replies(link_, options_.request_timeout, options_.reply_poll));
}

error ask_failure(ask_error why) {
  return why == ask_error::timeout ? error{error::kind_type::timeout, "no reply in time"}
                                   : error{error::kind_type::stopped, "the connection manager has stopped"};
}

}  // namespace detail

connection spawn_connection_manager(runtime& rt, connection_options options) {
  const std::size_t capacity = options.mailbox_capacity;
  return spawn_actor<detail::connection_manager>(rt, actor_options{.mailbox_capacity = capacity}, std::move(options));
}

connection spawn_pool(runtime& rt, std::size_t size, connection_options options) {
  if (size == 0) throw std::invalid_argument("postal::redis::spawn_pool: a pool needs at least one manager");
  std::vector<connection> managers;
  for (std::size_t i = 0; i < size; ++i) managers.push_back(spawn_connection_manager(rt, options));
  return spawn_actor<detail::pool_router>(rt, actor_options{.mailbox_capacity = options.mailbox_capacity},
                                          std::move(managers));
}

}  // namespace postal::redis
