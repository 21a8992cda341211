// Every error a user gets from postal prints the same way: to_string(e) gives one line, and operator<< writes
// that line. Checked for each error type of the channels, the actors and the patterns (the cluster's in
// tests/cluster/discovery_test.cpp); the value or message an error hands back is never printed.
#include <postal/actor.hpp>
#include <postal/broadcast.hpp>
#include <postal/config_loader.hpp>
#include <postal/mpsc.hpp>
#include <postal/oneshot.hpp>
#include <postal/redis.hpp>
#include <postal/resp.hpp>
#include <postal/watch.hpp>

#include <catch2/catch.hpp>
#include <sstream>
#include <string>
#include <variant>

namespace {

// What operator<< writes, which must be what to_string gives, and that line.
template <class Error>
std::string printed(const Error& error) {
  std::ostringstream out;
  out << error;
  CHECK(out.str() == to_string(error));  // found by argument-dependent lookup, as user code finds it
  CHECK(out.str().find('\n') == std::string::npos);
  return out.str();
}

struct ping {};
using ping_message = std::variant<ping>;

}  // namespace

TEST_CASE("channel errors print as one line, the same through to_string and operator<<", "[errors]") {
  using postal::mpsc::try_send_failure;
  CHECK(printed(postal::mpsc::send_error<std::string>{"kept"}).find("closed") != std::string::npos);
  CHECK(printed(postal::mpsc::send_error<std::string>{"kept"}).find("kept") == std::string::npos);
  CHECK(printed(postal::mpsc::try_send_error<int>{try_send_failure::full, 1}) == "the channel is full");
  CHECK(printed(postal::mpsc::try_send_error<int>{try_send_failure::closed, 1}).find("closed") != std::string::npos);
  CHECK(printed(postal::mpsc::send_timeout_error<int>{postal::mpsc::send_timeout_failure::timeout, 1})
            .find("deadline") != std::string::npos);
  CHECK(printed(postal::mpsc::try_recv_error::empty) == "the channel is empty");
  CHECK(printed(postal::mpsc::try_recv_error::disconnected).find("nothing more") != std::string::npos);
  CHECK(printed(postal::mpsc::closed_error{}).find("closed") != std::string::npos);
  CHECK(printed(postal::mpsc::try_reserve_error::full) == "the channel is full");

  CHECK(printed(postal::oneshot::recv_error{}).find("no value will arrive") == 0);
  CHECK(printed(postal::oneshot::recv_timeout_error{postal::oneshot::recv_timeout_error::kind_type::timeout}) ==
        "no value before the deadline");
  CHECK(printed(postal::oneshot::try_recv_error::empty) == "no value yet");

  CHECK(printed(postal::broadcast::recv_error::lagged(12)) == "lagged: 12 values were missed");
  CHECK(printed(postal::broadcast::recv_error::closed()).find("closed") != std::string::npos);
  CHECK(printed(postal::broadcast::try_recv_error::lagged(3)) == "lagged: 3 values were missed");
  CHECK(printed(postal::broadcast::try_recv_error::empty()) == "nothing new yet");
  CHECK(printed(postal::broadcast::send_error<int>{7}) == "no receiver");

  CHECK(printed(postal::watch::recv_error{}) == "every sender is gone");
  CHECK(printed(postal::watch::send_error<int>{7}) == "no receiver");
}

TEST_CASE("actor and pattern errors print as one line, the same through to_string and operator<<", "[errors]") {
  CHECK(printed(postal::ask_error::closed).find("takes no messages") != std::string::npos);
  CHECK(printed(postal::ask_error::no_reply).find("unanswered") != std::string::npos);
  CHECK(printed(postal::ask_error::timeout) == "no answer before the deadline");
  CHECK(printed(postal::ask_error::node_down).find("node went down") != std::string::npos);
  CHECK(printed(postal::tell_error<ping_message>{ping{}}) == to_string(postal::ask_error::closed));
  using try_kind = postal::try_tell_error<ping_message>::kind_type;
  CHECK(printed(postal::try_tell_error<ping_message>{try_kind::full, ping{}}) == "the actor's mailbox is full");

  CHECK(printed(postal::redis::error{postal::redis::error::kind_type::server, "WRONGTYPE wrong kind of value"}) ==
        "redis: server error: WRONGTYPE wrong kind of value");
  CHECK(printed(postal::redis::error{postal::redis::error::kind_type::stopped, ""}) == "redis: stopped");
  CHECK(printed(postal::resp::protocol_error{"expected '$', got ':'"}) == "RESP protocol error: expected '$', got ':'");

  auto broken = postal::parse_config<int>("{\n  \"x\": }", "app.json");
  REQUIRE_FALSE(broken);
  CHECK(printed(broken.error()) == broken.error().describe());
  CHECK(printed(broken.error()).find("app.json:2") == 0);
}
