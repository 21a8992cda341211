// Tests of the Redis connection manager against a real redis-server started by the test on 127.0.0.1 and a
// free port: every command type, typed error replies, pipelining from many tasks, a pool, a server killed
// and restarted mid-run (every request ends with a reply or an error; nothing is sent twice; the manager
// reconnects), a server that never answers (request timeout), backpressure when the manager is stuck, and
// the pipelining and reply polling settings (any of them answers everything; a reply after the poll window
// still completes; the window never delays a timeout; an idle connection does not spin).
#include <postal/net.hpp>
#include <postal/redis.hpp>
#include <postal/runtime.hpp>

#include <sys/resource.h>

#include <array>
#include <catch2/catch.hpp>
#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "support/processes.hpp"

namespace {

namespace redis = postal::redis;
using postal::runtime;
using postal::runtime_options;
using postal::task;

// A fake server: accepts one connection and reads what comes, never answering, until the client closes.
task<void> never_answers(postal::net::tcp_listener& listener) {
  auto stream = co_await listener.accept();
  if (!stream) co_return;
  std::array<char, 4096> buffer;
  for (;;) {
    auto got = co_await stream->read_some(std::span<char>(buffer));
    if (!got || *got == 0) co_return;
  }
}

redis::connection_options options_for(std::uint16_t port) {
  redis::connection_options options;
  options.port = port;
  return options;
}

// `tasks` tasks, each doing SET then GET `rounds` times through one manager; how many of their GETs
// returned what they set.
int pipeline_from_tasks(runtime& rt, redis::connection manager, int tasks, int rounds) {
  std::vector<postal::join_handle<int>> clients;
  for (int c = 0; c < tasks; ++c)
    clients.push_back(rt.spawn([](redis::connection manager, int c, int rounds) -> task<int> {
      int good = 0;
      for (int i = 0; i < rounds; ++i) {
        const std::string key = "p" + std::to_string(c) + ":" + std::to_string(i);
        redis::set store{key, std::to_string(c * 100000 + i), {}};
        if (!co_await redis::query(manager, std::move(store))) co_return good;
        redis::get load{key, {}};
        auto value = co_await redis::query(manager, std::move(load));
        if (value && *value == std::optional<std::string>(std::to_string(c * 100000 + i))) ++good;
      }
      co_return good;
    }(manager, c, rounds)));
  int good = 0;
  for (auto& client : clients) good += client.blocking_join();
  return good;
}

TEST_CASE("the connection manager runs every command against a real redis-server", "[redis]") {
  test_support::redis_server server;
  runtime rt(runtime_options{.workers = 2});
  auto manager = redis::spawn_connection_manager(rt, options_for(server.port()));

  REQUIRE(redis::blocking_query(manager, redis::set{"greeting", "hello", {}}));
  auto got = redis::blocking_query(manager, redis::get{"greeting", {}});
  REQUIRE(got);
  CHECK(*got == std::optional<std::string>("hello"));
  auto missing = redis::blocking_query(manager, redis::get{"nobody", {}});
  REQUIRE(missing);
  CHECK_FALSE(missing->has_value());

  CHECK(redis::blocking_query(manager, redis::incr{"counter", {}}).value() == 1);
  CHECK(redis::blocking_query(manager, redis::incr{"counter", {}}).value() == 2);
  CHECK(redis::blocking_query(manager, redis::expire{"counter", std::chrono::seconds(100), {}}).value());
  CHECK_FALSE(redis::blocking_query(manager, redis::expire{"nobody", std::chrono::seconds(100), {}}).value());
  auto ttl = redis::blocking_query(manager, redis::raw{{"TTL", "counter"}, {}});
  REQUIRE(ttl);
  CHECK(ttl->kind == postal::resp::value::kind_type::integer);
  CHECK(ttl->integer > 0);
  CHECK(redis::blocking_query(manager, redis::del{{"greeting", "counter", "nobody"}, {}}).value() == 2);
  CHECK(redis::blocking_query(manager, redis::publish{"news", "nobody listens", {}}).value() == 0);
  REQUIRE(redis::blocking_query(manager, redis::set{"short", "lived", {}, std::chrono::milliseconds(100000)}));
  auto pttl = redis::blocking_query(manager, redis::raw{{"PTTL", "short"}, {}});
  REQUIRE(pttl);
  CHECK(pttl->integer > 90000);

  SECTION("a Redis error reply is a typed error, and the connection goes on") {
    REQUIRE(redis::blocking_query(manager, redis::set{"text", "abc", {}}));
    auto failed = redis::blocking_query(manager, redis::incr{"text", {}});
    REQUIRE_FALSE(failed);
    CHECK(failed.error().kind == redis::error::kind_type::server);
    CHECK(failed.error().message.find("not an integer") != std::string::npos);
    auto wrong_type = redis::blocking_query(manager, redis::raw{{"LPUSH", "text", "x"}, {}});
    REQUIRE_FALSE(wrong_type);
    CHECK(wrong_type.error().message.rfind("WRONGTYPE", 0) == 0);
    CHECK(redis::blocking_query(manager, redis::get{"text", {}}).value() == std::optional<std::string>("abc"));
  }
  SECTION("fifty tasks pipeline through one manager; every reply matches its command") {
    CHECK(pipeline_from_tasks(rt, manager, 50, 200) == 50 * 200);
  }
  SECTION("a pool spreads commands over its managers behind one ref") {
    auto pool = redis::spawn_pool(rt, 3, options_for(server.port()));
    for (int i = 0; i < 30; ++i) REQUIRE(redis::blocking_query(pool, redis::incr{"pooled", {}}).value() == i + 1);
    auto clients = redis::blocking_query(pool, redis::raw{{"CLIENT", "LIST"}, {}});
    REQUIRE(clients);
    std::size_t lines = 0;
    for (char c : clients->text) lines += c == '\n';
    CHECK(lines >= 4);  // the pool's three connections and the first manager's
  }
}

TEST_CASE("pipelining and reply polling settings: every reply matches its command, whatever they are",
          "[redis]") {
  test_support::redis_server server;
  runtime rt(runtime_options{.workers = 2});
  struct setting {
    std::chrono::microseconds reply_poll;
    std::size_t write_batch;
  };
  for (const setting& each : {setting{std::chrono::microseconds(0), 0},     // no polling, a write per drain
                              setting{std::chrono::microseconds(50), 1},    // every command its own write
                              setting{std::chrono::microseconds(1), 16},    // the poll always runs out
                              setting{std::chrono::microseconds(50), 16},   // the defaults
                              setting{std::chrono::milliseconds(20), 3}}) { // a long window, small writes
    auto options = options_for(server.port());
    options.reply_poll = each.reply_poll;
    options.write_batch = each.write_batch;
    auto manager = redis::spawn_connection_manager(rt, options);
    CHECK(pipeline_from_tasks(rt, manager, 50, 100) == 50 * 100);
  }
  postal::net::set_busy_poll(std::chrono::microseconds(200));  // the driver polls: the reader does not
  CHECK(postal::net::busy_poll() == std::chrono::microseconds(200));
  auto manager = redis::spawn_connection_manager(rt, options_for(server.port()));
  CHECK(pipeline_from_tasks(rt, manager, 50, 100) == 50 * 100);
  postal::net::set_busy_poll(std::chrono::microseconds(0));
}

// A fake server that answers each GET with "$3\r\nhit\r\n", the first only once the test releases it: by
// then the reader's poll window (1 us) is long over, so the reply must come through the I/O driver.
TEST_CASE("a reply that comes after the poll window ran out still completes its command", "[redis]") {
  runtime rt(runtime_options{.workers = 2});
  auto listener = postal::net::tcp_listener::bind("127.0.0.1", 0);
  REQUIRE(listener);
  auto [received_tx, received] = postal::oneshot::channel<bool>();
  auto [release, released] = postal::oneshot::channel<bool>();
  auto fake = rt.spawn([](postal::net::tcp_listener& listener, postal::oneshot::sender<bool> received,
                          postal::oneshot::receiver<bool> released) -> task<int> {
    auto stream = co_await listener.accept();
    if (!stream) co_return -1;
    postal::resp::request_parser requests;
    std::array<char, 4096> buffer;
    int answered = 0;
    for (;;) {
      auto got = co_await stream->read_some(std::span<char>(buffer));
      if (!got || *got == 0) co_return answered;
      requests.feed(std::string_view(buffer.data(), *got));
      while (auto request = requests.next()) {
        if (!*request) break;
        if (answered == 0) {
          (void)received.send(true);
          (void)co_await released;
        }
        if (!co_await stream->write_all("$3\r\nhit\r\n")) co_return answered;
        ++answered;
      }
    }
  }(*listener, std::move(received_tx), std::move(released)));
  auto options = options_for(listener->port());
  options.reply_poll = std::chrono::microseconds(1);
  {
    auto manager = redis::spawn_connection_manager(rt, options);
    auto first = rt.spawn(redis::query(manager, redis::get{"late", {}}));
    REQUIRE(received.blocking_recv());
    (void)release.send(true);
    auto late = first.blocking_join();
    REQUIRE(late);
    CHECK(*late == std::optional<std::string>("hit"));
    for (int i = 0; i < 100; ++i) {  // and the reader goes on polling and waiting as before
      auto again = redis::blocking_query(manager, redis::get{"again", {}});
      CHECK(again.value() == std::optional<std::string>("hit"));
    }
  }  // the last ref is gone: the manager stops and closes the connection, and the fake server ends
  CHECK(fake.blocking_join() == 101);
}

TEST_CASE("a reply poll window longer than request_timeout does not delay the timeout", "[redis][failure]") {
  runtime rt(runtime_options{.workers = 2});
  auto listener = postal::net::tcp_listener::bind("127.0.0.1", 0);
  REQUIRE(listener);
  auto silent = rt.spawn(never_answers(*listener));
  auto options = options_for(listener->port());
  options.request_timeout = std::chrono::milliseconds(200);
  options.reply_poll = std::chrono::seconds(30);
  auto manager = redis::spawn_connection_manager(rt, options);
  const auto start = std::chrono::steady_clock::now();
  auto reply = redis::blocking_query(manager, redis::get{"anything", {}});
  REQUIRE_FALSE(reply);
  CHECK(reply.error().kind == redis::error::kind_type::timeout);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(10));
  silent.blocking_join();
}

// The process's CPU time (all threads).
std::chrono::microseconds cpu_time() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return std::chrono::seconds(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         std::chrono::microseconds(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
}

// With a poll window of a whole second, a reader that polled with nothing in flight would keep a core busy
// for all of the idle half second measured here.
TEST_CASE("reply polling never spins on an idle connection", "[redis]") {
  test_support::redis_server server;
  runtime rt(runtime_options{.workers = 2});
  auto options = options_for(server.port());
  options.reply_poll = std::chrono::seconds(1);
  auto manager = redis::spawn_connection_manager(rt, options);
  for (int i = 0; i < 10; ++i) REQUIRE(redis::blocking_query(manager, redis::incr{"idle", {}}));
  const auto before = cpu_time();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  CHECK(cpu_time() - before < std::chrono::milliseconds(250));
  CHECK(redis::blocking_query(manager, redis::incr{"idle", {}}).value() == 11);
}

TEST_CASE("a redis-server killed and restarted mid-run: every request ends, none is sent twice, the manager "
          "reconnects",
          "[redis][failure]") {
  test_support::redis_server server;
  runtime rt(runtime_options{.workers = 2});
  auto options = options_for(server.port());
  options.backoff_initial = std::chrono::milliseconds(5);
  options.backoff_max = std::chrono::milliseconds(50);
  auto manager = redis::spawn_connection_manager(rt, options);
  REQUIRE(redis::blocking_query(manager, redis::incr{"warm", {}}));

  // Four tasks INCR until told to stop, counting outcomes: every ask must end (a reply or an error).
  struct tally {
    std::int64_t ok = 0, lost = 0, not_connected = 0, other = 0;
  };
  std::atomic<bool> running{true};
  std::vector<postal::join_handle<tally>> workers;
  for (int w = 0; w < 4; ++w)
    workers.push_back(rt.spawn([](redis::connection manager, std::atomic<bool>* running) -> task<tally> {
      tally seen;
      while (running->load()) {
        redis::incr command{"counter", {}};
        auto reply = co_await redis::query(manager, std::move(command));
        if (reply) ++seen.ok;
        else if (reply.error().kind == redis::error::kind_type::connection_lost) ++seen.lost;
        else if (reply.error().kind == redis::error::kind_type::not_connected) ++seen.not_connected;
        else ++seen.other;
        if (!reply) co_await postal::yield_now();
      }
      co_return seen;
    }(manager, &running)));

  // Let some succeed, kill the server, let the failures show, restart it, and wait for a success again.
  auto successes_after = [&](std::int64_t at_least) {
    for (int attempt = 0; attempt < 100'000; ++attempt) {
      auto reply = redis::blocking_query(manager, redis::get{"marker", {}});
      if (reply && at_least-- <= 0) return true;
      if (!reply) std::this_thread::yield();
    }
    return false;
  };
  REQUIRE(successes_after(100));
  server.stop();  // SIGKILL: the connection drops with commands in flight
  auto down = redis::blocking_query(manager, redis::get{"marker", {}});
  while (down) down = redis::blocking_query(manager, redis::get{"marker", {}});  // until the drop is seen
  CHECK((down.error().kind == redis::error::kind_type::not_connected ||
         down.error().kind == redis::error::kind_type::connection_lost));
  server.start();  // a fresh, empty server on the same port
  REQUIRE(successes_after(1));  // the manager reconnected
  // The counter restarts from 0 on the new server: count the INCRs from here on.
  REQUIRE(redis::blocking_query(manager, redis::set{"counter", "0", {}}));
  running = false;
  tally total;
  for (auto& worker : workers) {
    auto seen = worker.blocking_join();
    total.ok += seen.ok;
    total.lost += seen.lost;
    total.not_connected += seen.not_connected;
    total.other += seen.other;
  }
  CHECK(total.other == 0);
  CHECK(total.lost + total.not_connected > 0);  // the kill was seen by the workers
  CHECK(total.ok > 0);
}

TEST_CASE("no command is sent twice: after a drop, the counter equals the replies plus at most the lost",
          "[redis][failure]") {
  test_support::redis_server server;
  runtime rt(runtime_options{.workers = 2});
  auto manager = redis::spawn_connection_manager(rt, options_for(server.port()));
  REQUIRE(redis::blocking_query(manager, redis::set{"n", "0", {}}));
  // Drop the connection from the server's side while INCRs are in flight.
  std::int64_t ok = 0, lost = 0, refused = 0;
  std::vector<postal::join_handle<std::vector<int>>> batches;
  for (int b = 0; b < 4; ++b)
    batches.push_back(rt.spawn([](redis::connection manager) -> task<std::vector<int>> {
      std::vector<int> kinds;
      for (int i = 0; i < 500; ++i) {
        redis::incr command{"n", {}};
        auto reply = co_await redis::query(manager, std::move(command));
        kinds.push_back(reply ? 0 : reply.error().kind == redis::error::kind_type::connection_lost ? 1 : 2);
      }
      co_return kinds;
    }(manager)));
  auto killer = redis::spawn_connection_manager(rt, options_for(server.port()));
  (void)redis::blocking_query(killer, redis::raw{{"CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"}, {}});
  for (auto& batch : batches)
    for (int kind : batch.blocking_join()) (kind == 0 ? ok : kind == 1 ? lost : refused) += 1;
  auto value = redis::blocking_query(manager, redis::get{"n", {}});
  REQUIRE(value);
  REQUIRE(value->has_value());
  const std::int64_t counted = std::stoll(**value);
  CHECK(counted >= ok);
  CHECK(counted <= ok + lost);
  CHECK(ok + lost + refused == 2000);
}

TEST_CASE("a server that never answers: the request times out, the connection is dropped", "[redis][failure]") {
  runtime rt(runtime_options{.workers = 2});
  auto listener = postal::net::tcp_listener::bind("127.0.0.1", 0);
  REQUIRE(listener);
  auto silent = rt.spawn(never_answers(*listener));
  auto options = options_for(listener->port());
  options.request_timeout = std::chrono::milliseconds(200);
  auto manager = redis::spawn_connection_manager(rt, options);
  auto reply = redis::blocking_query(manager, redis::get{"anything", {}});
  REQUIRE_FALSE(reply);
  CHECK(reply.error().kind == redis::error::kind_type::timeout);
  silent.blocking_join();  // the manager closed the connection
}

TEST_CASE("commands fail with not_connected while nothing listens; a connect is retried with backoff",
          "[redis][failure]") {
  runtime rt(runtime_options{.workers = 2});
  const auto port = test_support::free_port();
  auto manager = redis::spawn_connection_manager(rt, options_for(port));
  auto reply = redis::blocking_query(manager, redis::get{"x", {}});
  REQUIRE_FALSE(reply);
  CHECK(reply.error().kind == redis::error::kind_type::not_connected);
  CHECK(reply.error().message.find("cannot connect") != std::string::npos);
}

TEST_CASE("a connect that times out is an error, not a hang", "[redis][failure]") {
  runtime rt(runtime_options{.workers = 2});
  // A listener that never accepts, with a full accept queue: Linux drops further SYNs, so a connect to it
  // stays pending until its timeout.
  auto listener = postal::net::tcp_listener::bind("127.0.0.1", 0, /*backlog=*/0);
  REQUIRE(listener);
  std::vector<postal::net::tcp_stream> queued;
  for (int i = 0; i < 8; ++i) {
    auto filler = rt.block_on(postal::net::tcp_stream::connect("127.0.0.1", listener->port(),
                                                               std::chrono::milliseconds(200)));
    if (!filler) break;  // the queue is full
    queued.push_back(std::move(*filler));
  }
  auto options = options_for(listener->port());
  options.connect_timeout = std::chrono::milliseconds(200);
  auto manager = redis::spawn_connection_manager(rt, options);
  auto reply = redis::blocking_query(manager, redis::get{"x", {}});
  REQUIRE_FALSE(reply);
  CHECK(reply.error().kind == redis::error::kind_type::not_connected);
  CHECK(reply.error().message.find("timed out") != std::string::npos);
}

TEST_CASE("when the manager is stuck, its mailbox fills and callers wait (backpressure)", "[redis][backpressure]") {
  runtime rt(runtime_options{.workers = 2});
  auto listener = postal::net::tcp_listener::bind("127.0.0.1", 0);
  REQUIRE(listener);
  auto [release, released] = postal::oneshot::channel<bool>();
  auto silent = rt.spawn([](postal::net::tcp_listener& listener, postal::oneshot::receiver<bool> released) -> task<void> {
    auto stream = co_await listener.accept();
    (void)co_await released;  // holds the connection open, unanswered, until released
  }(*listener, std::move(released)));
  auto options = options_for(listener->port());
  options.max_in_flight = 2;
  options.mailbox_capacity = 2;
  options.request_timeout = std::chrono::seconds(60);
  auto manager = redis::spawn_connection_manager(rt, options);
  std::vector<postal::join_handle<bool>> askers;
  for (int i = 0; i < 10; ++i)
    askers.push_back(rt.spawn([](redis::connection manager) -> task<bool> {
      redis::get command{"x", {}};
      auto reply = co_await redis::query(manager, std::move(command));
      co_return !reply && reply.error().kind == redis::error::kind_type::connection_lost;
    }(manager)));
  // Two in flight, one waiting in the manager for room, two in the mailbox: the rest wait to get in.
  while (manager.capacity() != 0) std::this_thread::yield();
  redis::get extra{"y", {}};
  auto full = manager.try_tell(std::move(extra));
  REQUIRE_FALSE(full);
  CHECK(full.error().is_full());
  listener->close();          // reconnecting will be refused,
  (void)release.send(true);   // and the fake server closes: what is in flight is lost, the rest not sent
  for (auto& asker : askers) (void)asker.blocking_join();
  silent.blocking_join();
}

}  // namespace
