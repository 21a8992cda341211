// Tests of samples/kv-server with the real redis-cli: every command, PUB/SUB with a subscribed redis-cli, bad
// input (a protocol error, a bulk over the limit) answered with an error and a closed connection, the
// connection limit, QUIT, and many pipelined clients. The server runs in-process on 127.0.0.1 and a free
// port; redis-cli runs as a child process.
#include <postal/net.hpp>
#include <postal/runtime.hpp>

#include <catch2/catch.hpp>
#include <algorithm>
#include <array>
#include <string>
#include <vector>

#include <postal/resp.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "server.hpp"
#include "support/processes.hpp"

namespace {

using postal::runtime;
using postal::runtime_options;
using postal::task;

struct running_server {
  runtime rt{runtime_options{.workers = 2}};
  kv::server server;
  explicit running_server(kv::server_options options = {}) : server(rt, with_free_port(options)) {}
  static kv::server_options with_free_port(kv::server_options options) {
    options.port = 0;
    return options;
  }
  // redis-cli's output without its trailing newlines (it prints a nil as an empty line, an error with an
  // extra blank line).
  std::string cli(const std::string& arguments) {
    std::string out =
        test_support::output_of("redis-cli -p " + std::to_string(server.port()) + " " + arguments + " 2>&1");
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
  }
};

// Sends raw bytes on a fresh connection and returns everything the server sends back until it closes.
std::string raw_exchange(runtime& rt, std::uint16_t port, std::string bytes) {
  return rt.block_on([](std::uint16_t port, std::string bytes) -> task<std::string> {
    auto stream = co_await postal::net::tcp_stream::connect("127.0.0.1", port, std::chrono::seconds(5));
    if (!stream) co_return "connect failed";
    if (!co_await stream->write_all(bytes)) co_return "write failed";
    std::string received;
    std::array<char, 4096> buffer;
    for (;;) {
      auto got = co_await stream->read_some(std::span<char>(buffer), std::chrono::steady_clock::now() + std::chrono::seconds(10));
      if (!got || *got == 0) co_return received;
      received.append(buffer.data(), *got);
    }
  }(port, std::move(bytes)));
}

TEST_CASE("kv-server answers redis-cli: strings, counters, expiry, errors", "[kv-server]") {
  running_server s;
  CHECK(s.cli("PING") == "PONG");
  CHECK(s.cli("ECHO hello") == "hello");
  CHECK(s.cli("SET greeting hi") == "OK");
  CHECK(s.cli("GET greeting") == "hi");
  CHECK(s.cli("GET nobody") == "");  // nil
  CHECK(s.cli("INCR visits") == "1");
  CHECK(s.cli("INCR visits") == "2");
  CHECK(s.cli("INCR greeting") == "ERR value is not an integer or out of range");
  CHECK(s.cli("EXISTS greeting visits nobody") == "2");
  CHECK(s.cli("DEL greeting visits nobody") == "2");
  CHECK(s.cli("EXISTS greeting") == "0");
  CHECK(s.cli("SET short lived PX 1") == "OK");
  CHECK(s.cli("SET long lived EX 1000") == "OK");
  CHECK(s.cli("GET long") == "lived");
  CHECK(s.cli("SET bad expiry EX -5") == "ERR invalid expire time in 'set' command");
  CHECK(s.cli("SET bad option XYZ") == "ERR syntax error");
  CHECK(s.cli("GET") == "ERR wrong number of arguments for 'get' command");
  CHECK(s.cli("NOSUCH thing") == "ERR unknown command 'NOSUCH'");
  CHECK(s.cli("PUBLISH nobody-listens hello") == "0");
  // The key set to expire after 1 ms goes away (each redis-cli run takes longer than that; bounded).
  std::string short_lived = s.cli("GET short");
  for (int i = 0; i < 100 && !short_lived.empty(); ++i) short_lived = s.cli("GET short");
  CHECK(short_lived.empty());
}

TEST_CASE("kv-server PUB/SUB with a subscribed redis-cli", "[kv-server][pubsub]") {
  running_server s;
  test_support::child_process subscriber(
      {"redis-cli", "-p", std::to_string(s.server.port()), "SUBSCRIBE", "news", "sport"});
  // redis-cli prints the confirmations (kind, channel, count), one line each; the second channel's count is 2.
  REQUIRE(subscriber.wait_for_line("sport"));
  REQUIRE(subscriber.wait_for_line("2"));
  CHECK(s.cli("PUBLISH news hello") == "1");
  CHECK(s.cli("PUBLISH weather rain") == "0");
  CHECK(s.cli("PUBLISH sport goal") == "1");
  REQUIRE(subscriber.wait_for_line("goal"));
  const auto lines = subscriber.lines();
  std::vector<std::string> expected_tail{"message", "news", "hello", "message", "sport", "goal"};
  REQUIRE(lines.size() >= expected_tail.size());
  CHECK(std::vector<std::string>(lines.end() - 6, lines.end()) == expected_tail);
  CHECK(std::find(lines.begin(), lines.end(), "rain") == lines.end());
}

TEST_CASE("kv-server: in subscribed mode only the pub/sub commands run; UNSUBSCRIBE leaves", "[kv-server][pubsub]") {
  running_server s;
  const std::string reply = raw_exchange(
      s.rt, s.server.port(),
      "SUBSCRIBE a\r\nGET x\r\nPING\r\nUNSUBSCRIBE\r\nGET x\r\nQUIT\r\n");
  CHECK(reply ==
        "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"
        "-ERR Can't execute 'GET': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in "
        "this context\r\n"
        "*2\r\n$4\r\npong\r\n$0\r\n\r\n"
        "*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n"
        "$-1\r\n"
        "+OK\r\n");
}

TEST_CASE("kv-server: bad input gets an error and a closed connection, never a crash", "[kv-server][protocol]") {
  kv::server_options options;
  options.max_bulk = 1024;
  running_server s(options);
  CHECK(raw_exchange(s.rt, s.server.port(), "*1\r\n$abc\r\n") == "-ERR Protocol error: bad bulk string length\r\n");
  CHECK(raw_exchange(s.rt, s.server.port(), "*2\r\n$3\r\nGET\r\n$999999\r\n") ==
        "-ERR Protocol error: bulk string longer than the limit\r\n");
  CHECK(raw_exchange(s.rt, s.server.port(), "PING\r\n*1\r\n:5\r\n") ==
        "+PONG\r\n-ERR Protocol error: a request must be a non-empty array of bulk strings\r\n");
  // The server is still fine.
  CHECK(s.cli("PING") == "PONG");
}

TEST_CASE("kv-server: QUIT, and the connection limit", "[kv-server]") {
  kv::server_options options;
  options.max_connections = 1;
  running_server s(options);
  CHECK(raw_exchange(s.rt, s.server.port(), "PING\r\nQUIT\r\nPING\r\n") == "+PONG\r\n+OK\r\n");
  // One client holds the only connection; the next is refused with an error.
  test_support::child_process holder({"redis-cli", "-p", std::to_string(s.server.port()), "SUBSCRIBE", "hold"});
  REQUIRE(holder.wait_for_line("hold"));
  CHECK(raw_exchange(s.rt, s.server.port(), "PING\r\n") == "-ERR max number of clients reached\r\n");
}

TEST_CASE("kv-server: a client that sends without reading replies is stopped, not buffered", "[kv-server][backpressure]") {
  running_server s;
  // A plain non-blocking socket, written until the kernel refuses more and stays full: the server only
  // stops reading if it does not buffer what it cannot answer (the client reads no reply).
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(s.server.port());
  (void)::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  pollfd connected{fd, POLLOUT, 0};
  REQUIRE(::poll(&connected, 1, 10'000) == 1);
  std::string block;
  while (block.size() < (1 << 20)) postal::resp::append_command(block, {"SET", "key", "value"});
  const std::size_t planned = std::size_t{512} << 20;  // far more than any kernel buffers on loopback
  std::size_t sent = 0;
  for (;;) {
    const std::size_t offset = sent % block.size();  // the stream stays whole commands, block after block
    const ssize_t n = ::send(fd, block.data() + offset, block.size() - offset, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<std::size_t>(n);
      if (sent >= planned) break;
      continue;
    }
    if (errno != EAGAIN) {
      const int error = errno;
      std::string said;
      char reply[65536];
      ssize_t got;
      while ((got = ::recv(fd, reply, sizeof reply, 0)) > 0) said.append(reply, static_cast<std::size_t>(got));
      FAIL("send failed with errno " << error << " after " << sent << " bytes; the server said " << said.size()
                                     << " bytes ending in: " << said.substr(said.size() > 200 ? said.size() - 200 : 0));
    }
    // Full: if the server still read, room would come back soon. It must stay full.
    pollfd writable{fd, POLLOUT, 0};
    if (::poll(&writable, 1, 2'000) == 0) break;
  }
  ::close(fd);
  INFO("bytes the server took before it stopped reading: " << sent);
  CHECK(sent < planned / 4);
  CHECK(s.cli("PING") == "PONG");  // other clients are still served
}

TEST_CASE("kv-server: fifty pipelined clients (redis-benchmark) get every reply", "[kv-server]") {
  running_server s;
  const std::string result = test_support::output_of(
      "timeout 120 redis-benchmark -p " + std::to_string(s.server.port()) + " -t set,get -n 20000 -P 16 -c 50 -q 2>&1");
  INFO(result);
  CHECK(result.find("SET: ") != std::string::npos);
  CHECK(result.find("GET: ") != std::string::npos);
  CHECK(s.cli("GET key:__rand_int__").size() == 3);  // redis-benchmark's key, with its 3-byte value
}

}  // namespace
