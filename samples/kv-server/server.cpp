// kv-server's actors: shards that own the data, a connection actor per client, and the tasks that accept
// connections and read requests. See server.hpp.
#include "server.hpp"

#include <postal/actor.hpp>
#include <postal/group.hpp>
#include <postal/net.hpp>
#include <postal/resp.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <charconv>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <unordered_set>
#include <variant>
#include <vector>

namespace kv {

namespace detail {

// --- connections -------------------------------------------------------------------------------------------

struct request_batch {  // the requests of one read, in order
  std::vector<std::vector<std::string>> requests;
  std::optional<std::string> protocol_error;  // after the requests: the rest of the input was not RESP
};
struct peer_closed {};
using connection_message = std::variant<request_batch, published, postal::group_lagged, peer_closed>;

std::string upper(std::string_view text) {
  std::string result(text);
  for (char& c : result) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return result;
}

}  // namespace detail

using namespace detail;

// What the acceptor, the connections and the server handle share.
struct server::state {
  postal::runtime* rt = nullptr;
  server_options options;
  postal::net::tcp_listener listener;
  std::shared_ptr<shard_table> table;
  postal::groups channels;
  std::atomic<std::size_t> connections{0};
  std::mutex open_lock;
  std::unordered_set<std::shared_ptr<postal::net::tcp_stream>> open;  // to close them when the server goes
  bool closing = false;                                                // guarded by open_lock
};

namespace {

// Publishes to this server's subscribers of the channel. Only channels somebody subscribed to exist as
// topics: delivering creates nothing.
std::size_t deliver_here(server::state& server, published message) {
  if (!server.channels.contains(message.channel)) return 0;
  auto topic = server.channels.topic<published>(message.channel);
  return topic.publish(std::move(message));
}

// One client. Takes the request batches its reader parsed, in order: each request is answered at once (PING,
// ECHO, errors) or by the shards; the replies are written in request order, one write per batch.
class connection : public postal::actor<connection_message> {
 public:
  connection(std::shared_ptr<server::state> server, std::shared_ptr<postal::net::tcp_stream> stream)
      : server_(std::move(server)), stream_(std::move(stream)) {}
  ~connection() override {
    server_->connections.fetch_sub(1, std::memory_order_relaxed);
    std::lock_guard lock(server_->open_lock);
    server_->open.erase(stream_);
  }

  postal::task<void> handle(request_batch& batch) {
    // A reply is known now (ready), or made of shard answers: the positions of its operations in the
    // batches sent to the shards (summed for DEL and EXISTS).
    struct slot {
      std::string ready;
      std::vector<std::pair<std::size_t, std::size_t>> answers;  // (shard, index in that shard's batch)
      bool sum = false;
    };
    std::vector<slot> slots;
    slots.reserve(batch.requests.size());
    const auto table = server_->table->snapshot();  // the owners of the keys, as they are now
    std::vector<std::vector<shard_op>> per_shard(table->size());
    bool quit = false;
    for (auto& request : batch.requests) {
      if (quit) break;
      slot& reply = slots.emplace_back();
      const std::string command = upper(request[0]);
      if (command == "GET" || command == "SET" || command == "DEL" || command == "EXISTS" || command == "INCR") {
        if (!subscriptions_.empty())
          subscribed_only(reply.ready, command);
        else
          plan(command, request, reply.ready, reply.answers, reply.sum, per_shard, table->size());
      } else {
        quit = answer_here(command, request, reply.ready);
      }
    }
    // One message per shard, then the answers in order (each shard answers its batch in one vector). A
    // shard that is unreachable, or ends before it answers, leaves its answers empty.
    std::vector<std::optional<postal::oneshot::receiver<std::vector<shard_reply>>>> waiting(per_shard.size());
    for (std::size_t i = 0; i < per_shard.size(); ++i) {
      if (per_shard[i].empty() || !(*table)[i].ref) continue;
      auto [reply, answer] = postal::oneshot::channel<std::vector<shard_reply>>();
      shard_request request{std::move(per_shard[i]), std::move(reply)};
      waiting[i].emplace(std::move(answer));
      (void)co_await (*table)[i].ref.tell(std::move(request));  // waits for room: backpressure
    }
    std::vector<std::vector<shard_reply>> answers(per_shard.size());
    bool shards_gone = false;
    for (std::size_t i = 0; i < waiting.size(); ++i) {
      if (!waiting[i]) continue;
      auto answer = co_await *waiting[i];
      if (answer)
        answers[i] = std::move(*answer);
      else if ((*table)[i].owner.empty())
        shards_gone = true;  // one of this server's own shards stopped: the server is going away
    }
    std::string out;
    for (slot& reply : slots) {
      if (reply.answers.empty()) {
        out += reply.ready;
        continue;
      }
      std::int64_t total = 0;
      const std::string* missing = nullptr;  // the owner of a key whose answer is missing
      for (auto [shard_index, position] : reply.answers) {
        if (position >= answers[shard_index].size()) {
          missing = &(*table)[shard_index].owner;
          break;
        }
        shard_reply& answer = answers[shard_index][position];
        if (reply.sum)
          total += answer.count;
        else
          out += answer.encoded;
      }
      if (missing && missing->empty())
        postal::resp::append_error(out, "ERR server shutting down");
      else if (missing)
        postal::resp::append_error(out, "CLUSTERDOWN the node that owns this key (" + *missing + ") is unreachable");
      else if (reply.sum)
        postal::resp::append_integer(out, total);
    }
    if (batch.protocol_error) {
      postal::resp::append_error(out, "ERR Protocol error: " + *batch.protocol_error);
      quit = true;
    }
    if (shards_gone) quit = true;
    if (!out.empty() && !co_await write(out)) quit = true;
    if (quit) close();
  }

  postal::task<void> handle(published& message) {
    std::string out;
    postal::resp::append_array_header(out, 3);
    postal::resp::append_bulk(out, "message");
    postal::resp::append_bulk(out, message.channel);
    postal::resp::append_bulk(out, message.payload);
    if (!co_await write(out)) close();
  }
  void handle(postal::group_lagged&) {}  // a slow subscriber misses messages, as the topic's capacity says
  void handle(peer_closed&) { close(); }

 private:
  postal::task<bool> write(const std::string& out) {
    auto written = co_await stream_->write_all(out);
    co_return written.has_value();
  }

  void close() {
    subscriptions_.clear();  // leave every channel
    stream_->close();        // the reader wakes and ends
    stop(postal::stop_mode::drop);
  }

  static void wrong_arity(std::string& out, const std::string& command) {
    std::string lower = command;
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    postal::resp::append_error(out, "ERR wrong number of arguments for '" + lower + "' command");
  }
  static void subscribed_only(std::string& out, const std::string& command) {
    postal::resp::append_error(out, "ERR Can't execute '" + command +
                                        "': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are "
                                        "allowed in this context");
  }

  // Plans a key command: its operations go to the batches of the shards that own its keys; a syntax or
  // arity error is the reply instead.
  void plan(const std::string& command, std::vector<std::string>& request, std::string& ready,
            std::vector<std::pair<std::size_t, std::size_t>>& answers, bool& sum,
            std::vector<std::vector<shard_op>>& per_shard, std::size_t shards) {
    auto add = [&](shard_op one) {
      const std::size_t index = shard_table::index_of(one.key, shards);
      answers.emplace_back(index, per_shard[index].size());
      per_shard[index].push_back(std::move(one));
    };
    shard_op base;
    if (command == "GET" || command == "INCR") {
      if (request.size() != 2) return wrong_arity(ready, command);
      base.what = command == "GET" ? op::get : op::incr;
    } else if (command == "SET") {
      if (request.size() < 3) return wrong_arity(ready, command);
      base.what = op::set;
      for (std::size_t i = 3; i < request.size(); ++i) {
        const std::string option = upper(request[i]);
        std::int64_t amount = 0;
        if ((option == "EX" || option == "PX") && i + 1 < request.size() && !base.ttl_ms) {
          const std::string& text = request[++i];
          auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), amount);
          if (error != std::errc() || end != text.data() + text.size() || amount <= 0 ||
              amount > std::int64_t{1} << 40)
            return postal::resp::append_error(ready, "ERR invalid expire time in 'set' command");
          base.ttl_ms = option == "EX" ? amount * 1000 : amount;
        } else {
          return postal::resp::append_error(ready, "ERR syntax error");
        }
      }
      base.value = std::move(request[2]);
    } else {  // DEL, EXISTS: one operation per key, summed
      if (request.size() < 2) return wrong_arity(ready, command);
      sum = true;
      for (std::size_t i = 1; i < request.size(); ++i) {
        shard_op one;
        one.what = command == "DEL" ? op::del : op::exists;
        one.key = std::move(request[i]);
        add(std::move(one));
      }
      return;
    }
    base.key = std::move(request[1]);
    add(std::move(base));
  }

  // Commands answered by the connection itself. Returns true for QUIT.
  bool answer_here(const std::string& command, std::vector<std::string>& request, std::string& out) {
    if (command == "PING") {
      if (request.size() > 2) {
        wrong_arity(out, command);
      } else if (!subscriptions_.empty()) {
        postal::resp::append_array_header(out, 2);
        postal::resp::append_bulk(out, "pong");
        postal::resp::append_bulk(out, request.size() == 2 ? request[1] : "");
      } else if (request.size() == 2) {
        postal::resp::append_bulk(out, request[1]);
      } else {
        out += "+PONG\r\n";
      }
    } else if (command == "QUIT") {
      out += "+OK\r\n";
      return true;
    } else if (command == "SUBSCRIBE") {
      if (request.size() < 2) {
        wrong_arity(out, command);
      } else {
        for (std::size_t i = 1; i < request.size(); ++i) subscribe(request[i], out);
      }
    } else if (command == "UNSUBSCRIBE") {
      std::vector<std::string> channels(request.begin() + 1, request.end());
      if (channels.empty())
        for (auto& [channel, membership] : subscriptions_) channels.push_back(channel);
      if (channels.empty()) reply_subscription(out, "unsubscribe", std::nullopt);
      for (auto& channel : channels) {
        subscriptions_.erase(channel);
        reply_subscription(out, "unsubscribe", channel);
      }
    } else if (!subscriptions_.empty()) {
      subscribed_only(out, command);
    } else if (command == "ECHO") {
      if (request.size() != 2)
        wrong_arity(out, command);
      else
        postal::resp::append_bulk(out, request[1]);
    } else if (command == "PUBLISH") {
      if (request.size() != 3) {
        wrong_arity(out, command);
      } else {
        std::int64_t receivers = 0;
        if (server_->options.publish) {
          // Handed on (the cluster sample's group): the reply counts this server's subscribers, as a Redis
          // Cluster node does.
          if (server_->channels.contains(request[1]))
            receivers = static_cast<std::int64_t>(server_->channels.topic<published>(request[1]).stats().subscribers);
          server_->options.publish(published{request[1], std::move(request[2])});
        } else {
          receivers = static_cast<std::int64_t>(deliver_here(*server_, published{request[1], std::move(request[2])}));
        }
        postal::resp::append_integer(out, receivers);
      }
    } else if (command == "INFO") {
      std::string text = "# Server\r\nserver:postal kv-server\r\n";
      if (server_->options.info) text += server_->options.info();
      postal::resp::append_bulk(out, text);
    } else if (command == "CONFIG") {
      out += "*0\r\n";  // redis-benchmark asks for a couple of settings; there are none to report
    } else {
      std::string shown = request[0].substr(0, 128);
      postal::resp::append_error(out, "ERR unknown command '" + shown + "'");
    }
    return false;
  }

  void subscribe(const std::string& channel, std::string& out) {
    if (!subscriptions_.contains(channel))
      subscriptions_.emplace(channel, server_->channels.topic<published>(channel).join(*server_->rt, self()));
    reply_subscription(out, "subscribe", channel);
  }
  void reply_subscription(std::string& out, std::string_view kind, const std::optional<std::string>& channel) {
    postal::resp::append_array_header(out, 3);
    postal::resp::append_bulk(out, kind);
    if (channel)
      postal::resp::append_bulk(out, *channel);
    else
      postal::resp::append_null(out);
    postal::resp::append_integer(out, static_cast<std::int64_t>(subscriptions_.size()));
  }

  std::shared_ptr<server::state> server_;
  std::shared_ptr<postal::net::tcp_stream> stream_;
  std::map<std::string, postal::group_membership> subscriptions_;
};

// Reads a connection's socket and hands the parsed requests to its actor, one batch per read. While the actor
// is busy (its mailbox full), the tell waits and the socket is not read.
postal::task<void> read_requests(std::shared_ptr<postal::net::tcp_stream> stream,
                                 postal::actor_ref<connection_message> connection, postal::resp::limits limits) {
  postal::resp::request_parser parser(limits);
  std::array<char, 16 * 1024> buffer;
  for (;;) {
    auto got = co_await stream->read_some(std::span<char>(buffer));
    if (!got || *got == 0) break;
    parser.feed(std::string_view(buffer.data(), *got));
    request_batch batch;
    for (;;) {
      auto next = parser.next();
      if (!next) {
        batch.protocol_error = next.error().reason;
        break;
      }
      if (!*next) break;
      batch.requests.push_back(std::move(**next));
    }
    const bool failed = batch.protocol_error.has_value();
    if (batch.requests.empty() && !failed) continue;
    if (!co_await connection.tell(std::move(batch))) co_return;  // the connection has closed
    if (failed) co_return;
  }
  peer_closed closed;
  (void)co_await connection.tell(std::move(closed));
}

postal::task<void> accept_connections(std::shared_ptr<server::state> server) {
  postal::resp::limits limits;
  limits.max_bulk = server->options.max_bulk;
  limits.max_value = std::max(limits.max_value, server->options.max_bulk + 64 * 1024);
  for (;;) {
    auto accepted = co_await server->listener.accept();
    if (!accepted) {
      if (accepted.error() == std::errc::operation_canceled) co_return;  // the server is going away
      continue;  // e.g. EMFILE: the client is refused, the server goes on
    }
    auto stream = std::make_shared<postal::net::tcp_stream>(std::move(*accepted));
    if (server->connections.load(std::memory_order_relaxed) >= server->options.max_connections) {
      (void)co_await stream->write_all("-ERR max number of clients reached\r\n");
      continue;
    }
    {
      std::lock_guard lock(server->open_lock);
      if (server->closing) co_return;
      server->open.insert(stream);
    }
    server->connections.fetch_add(1, std::memory_order_relaxed);
    auto connection_ref = postal::spawn_actor<connection>(*server->rt, postal::actor_options{.mailbox_capacity = 4},
                                                          server, stream);
    server->rt->spawn_detached(read_requests(stream, std::move(connection_ref), limits));
  }
}

}  // namespace

server::server(postal::runtime& rt, server_options options) : state_(std::make_shared<state>()) {
  if (options.shards == 0 && !options.table) throw std::invalid_argument("kv::server: at least one shard");
  auto listener = postal::net::tcp_listener::bind(options.host, options.port);
  if (!listener)
    throw std::system_error(listener.error(), "kv-server: cannot listen on " + options.host + ":" +
                                                  std::to_string(options.port));
  state_->rt = &rt;
  state_->listener = std::move(*listener);
  if (options.table) {
    state_->table = options.table;
  } else {
    shard_table::entries own;
    for (std::size_t i = 0; i < options.shards; ++i)
      own.push_back({postal::spawn_actor<shard>(rt, postal::actor_options{.mailbox_capacity = options.shard_mailbox}), {}});
    state_->table = std::make_shared<shard_table>(std::move(own));
  }
  state_->options = std::move(options);
  rt.spawn_detached(accept_connections(state_));
}

server::~server() {
  state_->listener.close();
  std::lock_guard lock(state_->open_lock);
  state_->closing = true;
  for (auto& stream : state_->open) stream->close();
}

std::size_t server::deliver(published message) { return deliver_here(*state_, std::move(message)); }

std::uint16_t server::port() const noexcept { return state_->listener.port(); }
std::size_t server::connections() const noexcept { return state_->connections.load(std::memory_order_relaxed); }

}  // namespace kv
