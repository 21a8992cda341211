// Tests of postal::net on loopback (127.0.0.1): echo with many clients, large transfers both ways, the
// backpressure of a peer that does not read, end of stream, connect failures and timeouts, read deadlines,
// close() and runtime shutdown waking or cancelling waiting tasks, and fd hygiene over 1000 connections.
// Ordering is made deterministic with a manual executor (a coroutine that suspends stays suspended until the
// test resumes it), never with sleeps. Catch2 is not thread-safe: tasks throw, the main thread checks.
#include <postal/net.hpp>
#include <postal/runtime.hpp>
#include <postal/task.hpp>

#include "support/manual_executor.hpp"

#include <sys/ioctl.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;
using postal::runtime;
using postal::runtime_options;
using postal::task;
using postal::net::tcp_listener;
using postal::net::tcp_stream;
using clock_type = std::chrono::steady_clock;

// The value of an expected, or a std::runtime_error naming what failed (for use inside tasks).
template <class T>
T must(postal::expected<T, std::error_code> result, const char* what) {
  if (!result) throw std::runtime_error(std::string(what) + ": " + result.error().message());
  return std::move(*result);
}
void must(postal::expected<void, std::error_code> result, const char* what) {
  if (!result) throw std::runtime_error(std::string(what) + ": " + result.error().message());
}

tcp_listener listen_on_loopback(int backlog = 1024) {
  return must(tcp_listener::bind("127.0.0.1", 0, backlog), "bind");
}

struct stream_pair {
  tcp_stream client;
  tcp_stream server;
};

// A connected pair: connect completes as soon as the kernel queued the connection, then it is accepted.
task<stream_pair> connect_pair() {
  auto listener = listen_on_loopback();
  auto client = must(co_await tcp_stream::connect("127.0.0.1", listener.port(), 5s), "connect");
  auto server = must(co_await listener.accept(), "accept");
  co_return stream_pair{std::move(client), std::move(server)};
}

// Reads until the peer closes; returns everything read.
task<std::string> read_to_end(tcp_stream& stream) {
  std::string received;
  char buffer[64 * 1024];
  for (;;) {
    std::size_t count = must(co_await stream.read_some(buffer), "read_some");
    if (count == 0) co_return received;
    received.append(buffer, count);
  }
}

// Reads exactly `size` bytes.
task<std::string> read_exactly(tcp_stream& stream, std::size_t size) {
  std::string received(size, '\0');
  std::size_t filled = 0;
  while (filled < size) {
    std::span<char> rest(received.data() + filled, size - filled);
    std::size_t count = must(co_await stream.read_some(rest), "read_some");
    if (count == 0) throw std::runtime_error("the peer closed early");
    filled += count;
  }
  co_return received;
}

task<void> echo(tcp_stream stream) {
  char buffer[4096];
  for (;;) {
    std::size_t count = must(co_await stream.read_some(buffer), "echo read");
    if (count == 0) co_return;
    must(co_await stream.write_all(std::string_view(buffer, count)), "echo write");
  }
}

// A deterministic pattern of `size` bytes, different for each seed.
std::string pattern(std::size_t size, unsigned seed) {
  std::string data(size, '\0');
  std::uint32_t state = seed * 2654435761u + 1;
  for (auto& byte : data) {
    state = state * 1664525u + 1013904223u;
    byte = static_cast<char>(state >> 24);
  }
  return data;
}

// Waits (spinning, no sleep) until `stream` has at least `bytes` in its kernel receive queue: loopback
// usually delivers within send(), but may leave it to a softirq under load.
void wait_until_readable(const tcp_stream& stream, int bytes) {
  int queued = 0;
  while (::ioctl(stream.native_handle(), FIONREAD, &queued) == 0 && queued < bytes) std::this_thread::yield();
}

std::size_t open_fd_count() {
  std::size_t count = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) ++count;
  return count;
}

// The most a peer that never reads can leave buffered in the kernel: the largest receive buffer plus the
// largest send buffer the kernel allows (net.ipv4.tcp_rmem / tcp_wmem maxima).
std::size_t kernel_buffering_bound() {
  auto maximum = [](const char* path) {
    std::ifstream file(path);
    std::size_t low = 0, initial = 0, high = 0;
    file >> low >> initial >> high;
    return high;
  };
  return maximum("/proc/sys/net/ipv4/tcp_rmem") + maximum("/proc/sys/net/ipv4/tcp_wmem");
}

}  // namespace

TEST_CASE("an echo server serves 20 clients at once and every byte comes back intact", "[net]") {
  // With and without the driver's busy polling: the same bytes either way.
  const int busy_poll_us = GENERATE(0, 100);
  postal::net::set_busy_poll(std::chrono::microseconds(busy_poll_us));
  struct reset_busy_poll {
    ~reset_busy_poll() { postal::net::set_busy_poll(std::chrono::microseconds(0)); }
  } reset;
  runtime rt(runtime_options{.workers = 2});
  constexpr int clients = 20;
  constexpr int messages = 50;
  auto listener = listen_on_loopback();
  const std::uint16_t port = listener.port();

  auto server = rt.spawn([](tcp_listener listener) -> task<void> {
    std::vector<postal::join_handle<void>> connections;
    for (int i = 0; i < clients; ++i) {
      auto stream = must(co_await listener.accept(), "accept");
      connections.push_back(postal::spawn(echo(std::move(stream))));
    }
    for (auto& connection : connections) co_await connection;
  }(std::move(listener)));

  std::vector<postal::join_handle<std::size_t>> running;
  for (int client = 0; client < clients; ++client) {
    running.push_back(rt.spawn([](std::uint16_t port, int client) -> task<std::size_t> {
      auto stream = must(co_await tcp_stream::connect("127.0.0.1", port, 5s), "connect");
      std::size_t echoed = 0;
      for (int i = 0; i < messages; ++i) {
        const std::string message = pattern(1 + (client * 977 + i * 131) % 20000, client * 1000 + i);
        must(co_await stream.write_all(message), "write_all");
        const std::string answer = co_await read_exactly(stream, message.size());
        if (answer != message) throw std::runtime_error("an echo differs from its message");
        echoed += answer.size();
      }
      co_return echoed;
    }(port, client)));
  }
  std::size_t total = 0;
  for (auto& client : running) total += client.blocking_join();
  server.blocking_join();
  CHECK(total > 0);
}

TEST_CASE("16 MB cross in both directions at once, intact", "[net]") {
  runtime rt(runtime_options{.workers = 2});
  auto [a, b] = rt.block_on(connect_pair());
  const std::string a_to_b = pattern(16 << 20, 1);
  const std::string b_to_a = pattern(16 << 20, 2);

  auto send = [](tcp_stream& stream, const std::string& data) -> task<void> {
    must(co_await stream.write_all(data), "write_all");
    stream.shutdown_write();
  };
  // One task writes while another reads the same stream: each direction has its own waiting task.
  auto a_writes = rt.spawn(send(a, a_to_b));
  auto b_writes = rt.spawn(send(b, b_to_a));
  auto a_reads = rt.spawn(read_to_end(a));
  auto b_reads = rt.spawn(read_to_end(b));
  a_writes.blocking_join();
  b_writes.blocking_join();
  CHECK(b_reads.blocking_join() == a_to_b);
  CHECK(a_reads.blocking_join() == b_to_a);
}

TEST_CASE("read_some and write_all complete without suspending when the kernel can serve them", "[net]") {
  runtime rt(runtime_options{.workers = 2});
  auto [a, b] = rt.block_on(connect_pair());
  postal::test::manual_executor executor;

  auto write = [](tcp_stream& stream) -> postal::test::job<bool> {
    co_return static_cast<bool>(co_await stream.write_all("ping"));
  };
  auto writer = postal::test::spawn(executor, write(a));
  REQUIRE(writer.done());  // finished inside the first run, no suspension
  CHECK(writer.result());

  wait_until_readable(b, 4);
  auto read = [](tcp_stream& stream) -> postal::test::job<std::string> {
    char buffer[16];
    auto count = co_await stream.read_some(buffer);
    co_return count ? std::string(buffer, *count) : std::string("error");
  };
  auto reader = postal::test::spawn(executor, read(b));
  REQUIRE(reader.done());
  CHECK(reader.result() == "ping");
  CHECK(executor.wakes() == 0);
}

TEST_CASE("backpressure: write_all waits, suspended, while the peer does not read, and ends once it reads",
          "[net]") {
  runtime rt(runtime_options{.workers = 2});
  auto [writer_end, reader_end] = rt.block_on(connect_pair());
  // More than the kernel can hold for a peer that does not read, so write_all cannot finish before reading.
  const std::string data = pattern(kernel_buffering_bound() + (1 << 20), 3);
  std::atomic<std::size_t> read_so_far{0};
  std::size_t read_when_writer_finished = 0;

  // The writer runs on a manual executor: it runs only inside executor.run() on this thread, so what it
  // did before the reader starts is known exactly.
  postal::test::manual_executor executor;
  auto write = [&](tcp_stream& stream) -> postal::test::job<std::error_code> {
    auto written = co_await stream.write_all(data);
    read_when_writer_finished = read_so_far.load();
    co_return written ? std::error_code() : written.error();
  };
  auto writer = postal::test::spawn(executor, write(writer_end));
  REQUIRE_FALSE(writer.done());  // suspended in write_all: not finished, not failed
  executor.run();
  REQUIRE_FALSE(writer.done());  // and it stays so however often it is run: nobody reads
  CHECK(read_so_far.load() == 0);

  auto reading = rt.spawn(
      [](tcp_stream& stream, std::size_t size, std::atomic<std::size_t>& progress) -> task<std::string> {
        std::string received;
        char buffer[64 * 1024];
        while (received.size() < size) {
          std::size_t count = must(co_await stream.read_some(buffer), "read_some");
          if (count == 0) break;
          received.append(buffer, count);
          progress.store(received.size());
        }
        co_return received;
      }(reader_end, data.size(), read_so_far));

  while (!writer.done()) {
    if (executor.run() == 0) std::this_thread::yield();  // the reactor wakes the writer as room appears
  }
  CHECK(writer.result() == std::error_code());
  CHECK(read_when_writer_finished > 0);  // it finished only after the reader had read
  CHECK(executor.wakes() > 0);
  CHECK(reading.blocking_join() == data);
}

TEST_CASE("read_some returns 0 once the peer shut down its writing side or closed", "[net]") {
  runtime rt(runtime_options{.workers = 2});
  auto [a, b] = rt.block_on(connect_pair());
  auto read_once = [](tcp_stream& stream) -> task<std::size_t> {
    char buffer[64];
    co_return must(co_await stream.read_some(buffer), "read_some");
  };
  auto write = [](tcp_stream& stream, std::string_view data) -> task<void> {
    must(co_await stream.write_all(data), "write_all");
  };

  rt.block_on(write(a, "last words"));
  a.shutdown_write();
  CHECK(rt.block_on(read_exactly(b, 10)) == "last words");
  CHECK(rt.block_on(read_once(b)) == 0);
  CHECK(rt.block_on(read_once(b)) == 0);  // and stays so

  // Half-closed: the other direction still works.
  rt.block_on(write(b, "reply"));
  CHECK(rt.block_on(read_exactly(a, 5)) == "reply");

  b.close();
  CHECK_FALSE(b.is_open());
  CHECK(rt.block_on(read_once(a)) == 0);
}

TEST_CASE("try_read_some never waits: data, would_block, 0 at the end; misuse is reported", "[net]") {
  runtime rt(runtime_options{.workers = 2});
  auto [a, b] = rt.block_on(connect_pair());
  char buffer[64];
  auto none = b.try_read_some(buffer);
  REQUIRE_FALSE(none);
  CHECK(none.error() == std::errc::operation_would_block);

  rt.block_on([](tcp_stream& a) -> task<void> { must(co_await a.write_all("ping"), "write"); }(a));
  wait_until_readable(b, 4);
  auto got = b.try_read_some(buffer);
  REQUIRE(got);
  CHECK(std::string(buffer, *got) == "ping");
  CHECK(b.try_read_some(buffer).error() == std::errc::operation_would_block);

  a.shutdown_write();
  std::size_t end = 1;
  for (int attempt = 0; attempt < 1'000'000 && end != 0; ++attempt) {  // until the FIN is in
    auto last = b.try_read_some(buffer);
    if (last) end = *last;
    else REQUIRE(last.error() == std::errc::operation_would_block);
  }
  CHECK(end == 0);

  tcp_stream moved = std::move(a);
  CHECK(a.try_read_some(buffer).error() == std::errc::bad_file_descriptor);
  CHECK_THROWS_AS(moved.try_read_some(std::span<char>()), std::invalid_argument);
  b.close();
  CHECK(b.try_read_some(buffer).error() == std::errc::operation_canceled);
}

// try_read_some takes EPOLLIN out of the socket's registration when it finds nothing; a read that then waits
// must put it back, or data arriving afterwards would never wake it.
TEST_CASE("a read that waits after try_read_some found nothing is woken by the next data", "[net]") {
  runtime rt(runtime_options{.workers = 2});
  auto [a, b] = rt.block_on(connect_pair());
  postal::test::manual_executor executor;
  char buffer[64];
  REQUIRE(b.try_read_some(buffer).error() == std::errc::operation_would_block);
  auto read = [](tcp_stream& stream, clock_type::time_point deadline) -> postal::test::job<std::string> {
    char buffer[64];
    auto count = co_await stream.read_some(buffer, deadline);
    co_return count ? std::string(buffer, *count) : count.error().message();
  };
  auto waiting = postal::test::spawn(executor, read(b, clock_type::now() + 10s));
  REQUIRE_FALSE(waiting.done());  // registered with the driver
  rt.block_on([](tcp_stream& a) -> task<void> { must(co_await a.write_all("late"), "write"); }(a));
  while (executor.wakes() == 0) std::this_thread::yield();  // the driver wakes it (or, if lost, its deadline)
  executor.run();
  REQUIRE(waiting.done());
  CHECK(waiting.result() == "late");

  // Many rounds of poll-then-wait against an echoing peer, on the runtime: every reply arrives, none late.
  auto echoing = rt.spawn(echo(std::move(a)));
  auto rounds = rt.block_on([](tcp_stream& b) -> task<int> {
    char buffer[64];
    int good = 0;
    for (int i = 0; i < 2000; ++i) {
      const char byte = static_cast<char>('a' + i % 26);
      must(co_await b.write_all(std::string_view(&byte, 1)), "write");
      auto got = b.try_read_some(buffer);
      if (!got && got.error() == std::errc::operation_would_block) {
        if (i % 2 == 0) co_await postal::yield_here();  // a poll round first, or straight to waiting
        got = b.try_read_some(buffer);
        if (!got && got.error() == std::errc::operation_would_block)
          got = co_await b.read_some(buffer, clock_type::now() + 10s);
      }
      if (got && *got == 1 && buffer[0] == byte) ++good;
    }
    b.shutdown_write();  // the echo task reads 0 and ends
    co_return good;
  }(b));
  CHECK(rounds == 2000);
  echoing.blocking_join();
}

TEST_CASE("connect fails with connection_refused when nobody listens, invalid_argument for a name", "[net]") {
  runtime rt(runtime_options{.workers = 2});
  std::uint16_t unused_port = 0;
  {
    auto listener = listen_on_loopback();
    unused_port = listener.port();
  }  // closed: nothing listens there now
  auto result = rt.block_on(tcp_stream::connect("127.0.0.1", unused_port, 5s));
  REQUIRE_FALSE(result);
  CHECK(result.error() == std::errc::connection_refused);

  auto named = rt.block_on(tcp_stream::connect("example.org", 80, 5s));
  REQUIRE_FALSE(named);
  CHECK(named.error() == std::errc::invalid_argument);

  auto listener = must(tcp_listener::bind("localhost", 0), "bind localhost");
  auto local = rt.block_on(tcp_stream::connect("localhost", listener.port(), 5s));
  REQUIRE(local);
  CHECK(local->peer_port() == listener.port());
  CHECK(local->local_port() != 0);
}

TEST_CASE("connect fails with timed_out when the listener's accept queue is full", "[net]") {
  runtime rt(runtime_options{.workers = 2});
  // listen(fd, 0) and never accept: once the accept queue is full, Linux drops further SYNs, so the next
  // connect stays pending until its timeout.
  auto listener = listen_on_loopback(/*backlog=*/0);
  const std::uint16_t port = listener.port();
  auto result = rt.block_on([](std::uint16_t port) -> task<std::pair<int, std::error_code>> {
    std::vector<tcp_stream> queued;
    for (int attempt = 0; attempt < 8; ++attempt) {
      const auto started = clock_type::now();
      auto connected = co_await tcp_stream::connect("127.0.0.1", port, 200ms);
      if (!connected) {
        if (clock_type::now() - started < 200ms) throw std::runtime_error("timed out before its timeout");
        co_return std::pair(attempt, connected.error());
      }
      queued.push_back(std::move(*connected));
    }
    co_return std::pair(8, std::error_code());
  }(port));
  CHECK(result.first >= 1);  // the queue took at least one connection
  CHECK(result.first < 8);
  CHECK(result.second == std::errc::timed_out);
}

TEST_CASE("read_some with a deadline fails with timed_out on a silent peer; the stream stays usable",
          "[net]") {
  runtime rt(runtime_options{.workers = 2});
  auto [a, b] = rt.block_on(connect_pair());
  auto read_until = [](tcp_stream& stream, std::chrono::milliseconds wait) -> task<std::string> {
    char buffer[64];
    auto count = co_await stream.read_some(buffer, clock_type::now() + wait);
    if (!count) co_return count.error() == std::errc::timed_out ? "timed out" : count.error().message();
    co_return std::string(buffer, *count);
  };
  const auto started = clock_type::now();
  CHECK(rt.block_on(read_until(b, 50ms)) == "timed out");
  CHECK(clock_type::now() - started >= 50ms);

  // A deadline that already passed: data that is there is still returned; otherwise timed_out at once.
  CHECK(rt.block_on(read_until(b, 0ms)) == "timed out");
  rt.block_on([](tcp_stream& stream) -> task<void> { must(co_await stream.write_all("hello"), "write"); }(a));
  CHECK(rt.block_on(read_until(b, 0ms)) == "hello");

  // Still usable, and a long deadline that is never reached leaves nothing behind.
  auto later = rt.spawn(read_until(b, 1h));
  rt.block_on([](tcp_stream& stream) -> task<void> { must(co_await stream.write_all("again"), "write"); }(a));
  CHECK(later.blocking_join() == "again");
}

TEST_CASE("deadlines on several streams fire in deadline order, none early", "[net]") {
  runtime rt(runtime_options{.workers = 2});
  std::vector<stream_pair> pairs;
  for (int i = 0; i < 3; ++i) pairs.push_back(rt.block_on(connect_pair()));
  const auto started = clock_type::now();
  const std::chrono::milliseconds waits[] = {60ms, 20ms, 40ms};
  std::vector<postal::join_handle<clock_type::time_point>> readers;
  for (int i = 0; i < 3; ++i) {
    readers.push_back(
        rt.spawn([](tcp_stream& stream, clock_type::time_point deadline) -> task<clock_type::time_point> {
          char buffer[16];
          auto count = co_await stream.read_some(buffer, deadline);
          if (count || count.error() != std::errc::timed_out) throw std::runtime_error("expected timed_out");
          co_return clock_type::now();
        }(pairs[i].server, started + waits[i])));
  }
  clock_type::time_point ended[3];
  for (int i = 0; i < 3; ++i) ended[i] = readers[i].blocking_join();
  for (int i = 0; i < 3; ++i) CHECK(ended[i] >= started + waits[i]);
  CHECK(ended[1] <= ended[2]);
  CHECK(ended[2] <= ended[0]);
}

TEST_CASE("destroying a coroutine that waits in read_some withdraws the wait and loses no data", "[net]") {
  runtime rt(runtime_options{.workers = 2});
  auto [a, b] = rt.block_on(connect_pair());
  postal::test::manual_executor executor;
  auto read = [](tcp_stream& stream, clock_type::time_point deadline) -> postal::test::job<std::string> {
    char buffer[64];
    auto count = co_await stream.read_some(buffer, deadline);
    co_return count ? std::string(buffer, *count) : count.error().message();
  };
  {
    auto plain = postal::test::spawn(executor, read(b, postal::net::detail::no_deadline));
    auto with_deadline = postal::test::spawn(executor, read(a, clock_type::now() + 1h));
    REQUIRE_FALSE(plain.done());
    REQUIRE_FALSE(with_deadline.done());
  }  // both frames destroyed while waiting
  rt.block_on([](tcp_stream& a, tcp_stream& b) -> task<void> {
    must(co_await a.write_all("kept"), "write");
    must(co_await b.write_all("also kept"), "write");
  }(a, b));
  wait_until_readable(b, 4);
  wait_until_readable(a, 9);
  executor.run();
  CHECK(executor.wakes() == 0);  // the withdrawn wakers were dropped, never woken

  // The next reads of the same streams get the data.
  auto again = postal::test::spawn(executor, read(b, clock_type::now() + 5s));
  REQUIRE(again.done());
  CHECK(again.result() == "kept");
  auto other = postal::test::spawn(executor, read(a, clock_type::now() + 5s));
  REQUIRE(other.done());
  CHECK(other.result() == "also kept");
}

TEST_CASE("close() wakes a task waiting in read_some or accept with operation_canceled", "[net]") {
  runtime rt(runtime_options{.workers = 2});
  auto [a, b] = rt.block_on(connect_pair());
  auto listener = listen_on_loopback();
  postal::test::manual_executor executor;

  auto read = [](tcp_stream& stream) -> postal::test::job<std::error_code> {
    char buffer[64];
    auto count = co_await stream.read_some(buffer);
    co_return count ? std::error_code() : count.error();
  };
  auto accept = [](tcp_listener& listener) -> postal::test::job<std::error_code> {
    auto stream = co_await listener.accept();
    co_return stream ? std::error_code() : stream.error();
  };
  auto reader = postal::test::spawn(executor, read(b));
  auto acceptor = postal::test::spawn(executor, accept(listener));
  REQUIRE_FALSE(reader.done());  // both suspended, waiting
  REQUIRE_FALSE(acceptor.done());

  b.close();
  listener.close();
  executor.run();
  REQUIRE(reader.done());
  REQUIRE(acceptor.done());
  CHECK(reader.result() == std::errc::operation_canceled);
  CHECK(acceptor.result() == std::errc::operation_canceled);

  // Later operations on the closed objects fail the same way, at once.
  auto again = postal::test::spawn(executor, read(b));
  REQUIRE(again.done());
  CHECK(again.result() == std::errc::operation_canceled);

  // The same between two tasks of the runtime: one waits in read_some, another closes the stream (the
  // peer stays open and silent).
  auto [c, d] = rt.block_on(connect_pair());
  auto waiting = rt.spawn([](tcp_stream& stream) -> task<std::error_code> {
    char buffer[64];
    auto count = co_await stream.read_some(buffer);
    co_return count ? std::error_code() : count.error();
  }(c));
  rt.block_on([](tcp_stream& stream) -> task<void> {
    stream.close();
    co_return;
  }(c));
  CHECK(waiting.blocking_join() == std::errc::operation_canceled);
}

TEST_CASE("close() racing with a reader on another worker and a writing peer: no hang, clean errors",
          "[net]") {
  runtime rt(runtime_options{.workers = 2});
  constexpr int rounds = 200;
  int canceled = 0;
  for (int round = 0; round < rounds; ++round) {
    auto [a, b] = rt.block_on(connect_pair());
    auto writer = rt.spawn([](tcp_stream& stream) -> task<std::error_code> {
      const std::string chunk(4096, 'w');
      for (;;) {
        auto written = co_await stream.write_all(chunk);
        if (!written) co_return written.error();
      }
    }(a));
    auto reader = rt.spawn([](tcp_stream& stream) -> task<std::error_code> {
      char buffer[1024];
      for (;;) {
        auto count = co_await stream.read_some(buffer);
        if (!count) co_return count.error();
        if (*count == 0) co_return std::error_code();
      }
    }(b));
    auto closer = rt.spawn([](tcp_stream& stream, int round) -> task<void> {
      for (int i = 0; i < round % 7; ++i) co_await postal::yield_now();
      stream.close();
    }(b, round));
    closer.blocking_join();
    const std::error_code read_error = reader.blocking_join();
    CHECK(read_error == std::errc::operation_canceled);
    const std::error_code write_error = writer.blocking_join();
    const bool peer_gone =
        write_error == std::errc::broken_pipe || write_error == std::errc::connection_reset;
    CHECK(peer_gone);
    canceled += read_error == std::errc::operation_canceled;
  }
  CHECK(canceled == rounds);
}

TEST_CASE("misuse: a moved-from stream, an empty buffer, two tasks reading one stream at once", "[net]") {
  runtime rt(runtime_options{.workers = 2});
  auto [a, b] = rt.block_on(connect_pair());
  tcp_stream moved = std::move(a);
  auto read_from = [](tcp_stream& stream, std::size_t size) -> task<std::error_code> {
    std::vector<char> buffer(size);
    auto count = co_await stream.read_some(buffer);
    co_return count ? std::error_code() : count.error();
  };
  CHECK(rt.block_on(read_from(a, 8)) == std::errc::bad_file_descriptor);
  CHECK_FALSE(a.is_open());
  CHECK_THROWS_AS(rt.block_on(read_from(moved, 0)), std::invalid_argument);

  postal::test::manual_executor executor;
  auto read = [](tcp_stream& stream) -> postal::test::job<bool> {
    char buffer[8];
    co_return static_cast<bool>(co_await stream.read_some(buffer));
  };
  auto first = postal::test::spawn(executor, read(b));
  auto second = postal::test::spawn(executor, read(b));
  REQUIRE_FALSE(first.done());
  REQUIRE(second.done());
  CHECK_THROWS_AS(second.result(), std::logic_error);
}

TEST_CASE("runtime shutdown cancels tasks waiting in read_some and accept: no hang, no fd left open",
          "[net][shutdown]") {
  auto warm_up = listen_on_loopback();  // starts the I/O driver (its epoll and eventfd stay open)
  const std::size_t fds_before = open_fd_count();
  postal::join_handle<void> reading;
  postal::join_handle<void> reading_with_deadline;
  postal::join_handle<void> accepting;
  tcp_stream silent_peers[2];  // the other ends stay open (and silent) until the runtime is gone
  {
    runtime rt(runtime_options{.workers = 2});
    auto first = rt.block_on(connect_pair());
    auto second = rt.block_on(connect_pair());
    silent_peers[0] = std::move(first.server);
    silent_peers[1] = std::move(second.server);
    auto listener = listen_on_loopback();
    reading = rt.spawn([](tcp_stream stream) -> task<void> {
      char buffer[64];
      (void)co_await stream.read_some(buffer);
      throw std::runtime_error("read_some returned");
    }(std::move(first.client)));
    reading_with_deadline = rt.spawn([](tcp_stream stream) -> task<void> {
      char buffer[64];
      (void)co_await stream.read_some(buffer, clock_type::now() + 1h);
      throw std::runtime_error("read_some returned");
    }(std::move(second.client)));
    accepting = rt.spawn([](tcp_listener listener) -> task<void> {
      (void)co_await listener.accept();
      throw std::runtime_error("accept returned");
    }(std::move(listener)));
  }  // the runtime waits, finds them all suspended, and cancels them (their frames close the sockets)
  CHECK_THROWS_AS(reading.blocking_join(), postal::task_cancelled);
  CHECK_THROWS_AS(reading_with_deadline.blocking_join(), postal::task_cancelled);
  CHECK_THROWS_AS(accepting.blocking_join(), postal::task_cancelled);
  for (auto& peer : silent_peers) peer.close();
  CHECK(open_fd_count() == fds_before);
}

TEST_CASE("1000 connections accepted and closed leave no fd open", "[net]") {
  runtime rt(runtime_options{.workers = 2});
  auto listener = listen_on_loopback();
  const std::uint16_t port = listener.port();
  const std::size_t fds_before = open_fd_count();
  constexpr int connections = 1000;
  constexpr int clients = 10;

  auto server = rt.spawn([](tcp_listener& listener) -> task<std::size_t> {
    std::vector<postal::join_handle<std::size_t>> handlers;
    for (int i = 0; i < connections; ++i) {
      auto stream = must(co_await listener.accept(), "accept");
      handlers.push_back(postal::spawn([](tcp_stream stream) -> task<std::size_t> {
        co_return (co_await read_to_end(stream)).size();
      }(std::move(stream))));
    }
    std::size_t received = 0;
    for (auto& handler : handlers) received += co_await handler;
    co_return received;
  }(listener));

  std::vector<postal::join_handle<void>> running;
  for (int client = 0; client < clients; ++client) {
    running.push_back(rt.spawn([](std::uint16_t port) -> task<void> {
      for (int i = 0; i < connections / clients; ++i) {
        auto stream = must(co_await tcp_stream::connect("127.0.0.1", port, 5s), "connect");
        must(co_await stream.write_all("x"), "write_all");
      }  // each stream is closed here
    }(port)));
  }
  for (auto& client : running) client.blocking_join();
  CHECK(server.blocking_join() == connections);
  CHECK(open_fd_count() == fds_before);
}
