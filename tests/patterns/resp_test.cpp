// Tests of the RESP2 parser and encoder: every value type, frames split at every byte and pipelined in one
// read, requests in both forms, and bad input (unknown types, bad lengths, lengths over the limits, deep
// nesting, missing CRLFs) as protocol errors that allocate nothing for what the header announced.
#include <postal/resp.hpp>

#include <catch2/catch.hpp>
#include <string>
#include <vector>

namespace {

using postal::resp::value;

// Parses `wire` fed in pieces of `chunk` bytes; returns the values, or the error's reason as the last
// element's text with kind error... kept apart to keep the assertions plain.
struct outcome {
  std::vector<value> values;
  std::optional<std::string> error;
};
outcome parse(std::string_view wire, std::size_t chunk, postal::resp::limits limits = {}) {
  postal::resp::parser parser(limits);
  outcome result;
  for (std::size_t at = 0; at < wire.size() && !result.error; at += chunk) {
    parser.feed(wire.substr(at, chunk));
    for (;;) {
      auto next = parser.next();
      if (!next) {
        result.error = next.error().reason;
        break;
      }
      if (!*next) break;
      result.values.push_back(std::move(**next));
    }
  }
  return result;
}

TEST_CASE("resp: every value type, split at every byte and pipelined", "[resp]") {
  const std::string wire =
      "+OK\r\n-ERR wrong type\r\n:-42\r\n$5\r\nhello\r\n$0\r\n\r\n$-1\r\n*-1\r\n*0\r\n"
      "*3\r\n:1\r\n*2\r\n$1\r\na\r\n+b\r\n$2\r\n\r\n\r\n";
  const std::vector<value> expected{
      value::simple("OK"),
      value::error_reply("ERR wrong type"),
      value::number(-42),
      value::bulk("hello"),
      value::bulk(""),
      value::nil(),
      value{value::kind_type::null_array, {}, 0, {}},
      value::array({}),
      value::array({value::number(1), value::array({value::bulk("a"), value::simple("b")}), value::bulk("\r\n")}),
  };
  for (std::size_t chunk = 1; chunk <= wire.size(); ++chunk) {
    auto result = parse(wire, chunk);
    INFO("chunk size " << chunk);
    REQUIRE_FALSE(result.error);
    CHECK(result.values == expected);
  }
}

TEST_CASE("resp: the encoder's output parses back to the same values", "[resp]") {
  const value nested = value::array({value::simple("a\r\nb"), value::error_reply("ERR x"), value::number(7),
                                     value::bulk(std::string("bin\0ary", 7)), value::nil(),
                                     value::array({value::bulk("deep")})});
  std::string wire;
  postal::resp::append_value(wire, nested);
  postal::resp::append_command(wire, {"SET", "key", "value with spaces"});
  auto result = parse(wire, wire.size());
  REQUIRE_FALSE(result.error);
  REQUIRE(result.values.size() == 2);
  CHECK(result.values[0].elements[0].text == "a  b");  // CR and LF cannot travel in a simple string
  CHECK(result.values[0].elements[3].text == std::string("bin\0ary", 7));
  CHECK(result.values[0].elements[5] == value::array({value::bulk("deep")}));
  CHECK(result.values[1] ==
        value::array({value::bulk("SET"), value::bulk("key"), value::bulk("value with spaces")}));
}

TEST_CASE("resp: bad input is a protocol error, and the parser stays failed", "[resp]") {
  struct bad_case {
    std::string wire;
    std::string reason;
  };
  postal::resp::limits small;
  small.max_bulk = 1000;
  small.max_elements = 10;
  small.max_depth = 3;
  small.max_line = 100;
  small.max_value = 5000;
  const std::vector<bad_case> cases{
      {"?what\r\n", "unknown type byte '?'"},
      {"\x01\r\n", "unknown type byte '\\x01'"},
      {"\r\n", "empty line where a value was expected"},
      {":12a\r\n", "bad integer"},
      {":\r\n", "bad integer"},
      {":99999999999999999999\r\n", "bad integer"},
      {"$-2\r\n", "bad bulk string length"},
      {"$abc\r\n", "bad bulk string length"},
      {"$1001\r\n", "bulk string longer than the limit"},
      {"$9223372036854775807\r\n", "bulk string longer than the limit"},
      {"*11\r\n", "array longer than the limit"},
      {"*-5\r\n", "bad array length"},
      {"*1\r\n*1\r\n*1\r\n*1\r\n", "arrays nested too deep"},
      {"$3\r\nabcXY", "bulk string not followed by CRLF"},
      {"+" + std::string(101, 'x') + "\r\n", "line too long"},
      {"+" + std::string(200, 'x'), "line too long"},
      {"*6\r\n$1000\r\n" + std::string(1000, 'x') + "\r\n$1000\r\n" + std::string(1000, 'x') + "\r\n$1000\r\n" +
           std::string(1000, 'x') + "\r\n$1000\r\n" + std::string(1000, 'x') + "\r\n$1000\r\n",
       "value larger than the limit"},
  };
  for (const auto& bad : cases) {
    INFO("input: " << bad.wire.substr(0, 40));
    postal::resp::parser parser(small);
    parser.feed(bad.wire);
    std::optional<std::string> error;
    for (int guard = 0; guard < 20 && !error; ++guard) {
      auto next = parser.next();
      if (!next) error = next.error().reason;
      else if (!*next) break;
    }
    REQUIRE(error);
    CHECK(*error == bad.reason);
    parser.feed("+OK\r\n");
    CHECK_FALSE(parser.next());  // failed for good: the connection must be closed
  }
}

TEST_CASE("resp: an announced length allocates nothing until the bytes arrive", "[resp]") {
  postal::resp::parser parser;
  parser.feed("$536870912\r\n");  // 512 MiB announced, the limit, nothing sent
  auto next = parser.next();
  REQUIRE(next);
  CHECK_FALSE(*next);
  CHECK(parser.buffered() < 100);
  postal::resp::parser arrays;
  arrays.feed("*1048576\r\n");  // a million elements announced
  REQUIRE(arrays.next());
  CHECK(arrays.buffered() < 100);
}

TEST_CASE("resp: requests as arrays of bulk strings and as inline commands", "[resp]") {
  postal::resp::request_parser requests;
  requests.feed("*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n");
  auto first = requests.next();
  REQUIRE(first);
  REQUIRE(*first);
  CHECK(**first == std::vector<std::string>{"GET", "key"});
  CHECK_FALSE(*requests.next());

  requests.feed("\r\nSET  key   value\r\nPING\n");  // an empty line is skipped
  auto set = requests.next();
  REQUIRE(set);
  REQUIRE(*set);
  CHECK(**set == std::vector<std::string>{"SET", "key", "value"});
  auto ping = requests.next();
  REQUIRE(ping);
  REQUIRE(*ping);
  CHECK(**ping == std::vector<std::string>{"PING"});

  requests.feed("*1\r\n:1\r\n");
  auto bad = requests.next();
  REQUIRE_FALSE(bad);
  CHECK(bad.error().reason == "a request must be a non-empty array of bulk strings");

  // Requests split at every byte, in both forms, come out whole and in order.
  const std::string mixed = "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\nPING\r\n*1\r\n$4\r\nPING\r\n";
  for (std::size_t chunk = 1; chunk <= mixed.size(); ++chunk) {
    postal::resp::request_parser split;
    std::vector<std::vector<std::string>> got;
    for (std::size_t at = 0; at < mixed.size(); at += chunk) {
      split.feed(std::string_view(mixed).substr(at, chunk));
      for (;;) {
        auto next = split.next();
        REQUIRE(next);
        if (!*next) break;
        got.push_back(std::move(**next));
      }
    }
    INFO("chunk size " << chunk);
    CHECK(got == std::vector<std::vector<std::string>>{{"SET", "key", "value"}, {"PING"}, {"PING"}});
  }

  postal::resp::request_parser empty;
  empty.feed("*0\r\n");
  CHECK_FALSE(empty.next());
}

}  // namespace
