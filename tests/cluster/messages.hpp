// The messages the cluster tests send between nodes, shared by the test and its node program
// (cluster_node.cpp), each with the inspect overload that lets it cross.
#pragma once

#include <postal/actor.hpp>
#include <postal/config_loader.hpp>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace cluster_test {

struct put {
  std::string key;
  std::string value;
};
struct get {
  std::string key;
  postal::responder<std::optional<std::string>> reply;
};
struct add {
  std::int64_t a = 0;
  std::int64_t b = 0;
  using reply_type = std::int64_t;
};
struct hold {  // kept unanswered until the actor ends
  postal::responder<std::int64_t> reply;
};
struct held {  // how many holds wait
  using reply_type = std::uint64_t;
};
struct crash {};  // the handler throws
using kv_message = std::variant<put, get, add, hold, held, crash>;

template <class Inspector>
auto inspect(Inspector& f, put& x) {
  return f(x.key, x.value);
}
template <class Inspector>
auto inspect(Inspector& f, get& x) {
  return f(x.key);
}
template <class Inspector>
auto inspect(Inspector& f, add& x) {
  return f(x.a, x.b);
}
template <class Inspector>
auto inspect(Inspector& f, hold&) {
  return f();
}
template <class Inspector>
auto inspect(Inspector& f, held&) {
  return f();
}
template <class Inspector>
auto inspect(Inspector& f, crash&) {
  return f();
}

// A consumer that can be made slow: it counts what it gets and checks the order.
struct item {  // 32 bytes on the wire
  std::uint64_t sequence = 0;
  std::array<char, 24> padding{};
};
struct blob {  // an item with a payload of any size
  std::uint64_t sequence = 0;
  std::string data;
};
struct tally {  // (items and blobs received, out of order)
  using reply_type = std::pair<std::uint64_t, std::uint64_t>;
};
using sink_message = std::variant<item, tally, blob>;

template <class Inspector>
auto inspect(Inspector& f, item& x) {
  return f(x.sequence, x.padding);
}
template <class Inspector>
auto inspect(Inspector& f, blob& x) {
  return f(x.sequence, x.data);
}
template <class Inspector>
auto inspect(Inspector& f, tally&) {
  return f();
}

// A counter, and a relay that keeps a ref to one (sent to it inside a message) and uses it.
struct bump {  // the count after this bump
  using reply_type = std::uint64_t;
};
using counter_message = std::variant<bump>;
template <class Inspector>
auto inspect(Inspector& f, bump&) {
  return f();
}

struct keep {  // keep this ref (replacing the one kept before)
  postal::actor_ref<counter_message> counter;
  using reply_type = bool;
};
struct bump_kept {  // ask the kept counter to bump `times` times; the reply is its last answer (0 on error)
  std::uint64_t times = 0;
  postal::responder<std::uint64_t> reply;
};
struct give_back {  // the kept ref
  using reply_type = postal::actor_ref<counter_message>;
};
struct drop_kept {  // let go of the kept ref
  using reply_type = bool;
};
using relay_message = std::variant<keep, bump_kept, give_back, drop_kept>;
template <class Inspector>
auto inspect(Inspector& f, keep& x) {
  return f(x.counter);
}
template <class Inspector>
auto inspect(Inspector& f, bump_kept& x) {
  return f(x.times);
}
template <class Inspector>
auto inspect(Inspector& f, give_back&) {
  return f();
}
template <class Inspector>
auto inspect(Inspector& f, drop_kept&) {
  return f();
}

// What a node's view of the cluster holds: "name=up|down|left" for each member, itself included.
struct members_query {
  using reply_type = std::vector<std::string>;
};
using members_message = std::variant<members_query>;
template <class Inspector>
auto inspect(Inspector& f, members_query&) {
  return f();
}

// A cluster topic ("news", cluster_node.cpp): what is published on it, and the node's "news" actor that
// reports what its two local member actors got and publishes on the node's behalf.
struct news {
  std::string from;  // the publishing node
  std::uint64_t sequence = 0;
};
template <class Inspector>
auto inspect(Inspector& f, news& x) {
  return f(x.from, x.sequence);
}
struct news_report {
  std::vector<std::uint64_t> received;  // per member actor
  std::vector<std::uint64_t> missed;    // per member actor, from group_lagged
  std::uint64_t out_of_order = 0;       // a sequence not above the last one from the same publisher
  std::uint64_t first = 0;              // the first sequence the first member got
  std::uint64_t published_here = 0;     // publishes the node's local topic took (its own and relayed)
  std::uint64_t nodes = 0;              // members the node forwards its publishes to
};
template <class Inspector>
auto inspect(Inspector& f, news_report& x) {
  return f(x.received, x.missed, x.out_of_order, x.first, x.published_here, x.nodes);
}
struct news_tally {
  using reply_type = news_report;
};
struct publish_news {  // publish `count` news from this node, sequences first, first + 1, ...
  std::uint64_t first = 0;
  std::uint64_t count = 0;
  using reply_type = std::uint64_t;
};
using news_message = std::variant<news_tally, publish_news>;
template <class Inspector>
auto inspect(Inspector& f, news_tally&) {
  return f();
}
template <class Inspector>
auto inspect(Inspector& f, publish_news& x) {
  return f(x.first, x.count);
}

// A configuration shared across nodes ("app", cluster_node.cpp): its type, and a node's "config" actor that
// reports what the node's handle of it holds.
struct app_settings {
  std::string greeting;
  std::int64_t version = 0;
  friend bool operator==(const app_settings&, const app_settings&) = default;
};
template <class Inspector>
auto inspect(Inspector& f, app_settings& x) {
  return f(x.greeting, x.version);
}
struct config_report {
  app_settings value;
  std::string error;  // the status's error, described; empty when the last load succeeded
  std::uint64_t loads = 0;
  std::uint64_t failures = 0;
};
template <class Inspector>
auto inspect(Inspector& f, config_report& x) {
  return f(x.value, x.error, x.loads, x.failures);
}
struct config_query {
  using reply_type = config_report;
};
template <class Inspector>
auto inspect(Inspector& f, config_query&) {
  return f();
}
using config_message = std::variant<config_query>;

// The same name as kv_message's, another message set: a node that publishes it under "kv" must be refused.
struct other {
  int value = 0;
};
using other_message = std::variant<other>;
template <class Inspector>
auto inspect(Inspector& f, other& x) {
  return f(x.value);
}

inline void from_json(const nlohmann::json& j, app_settings& x) {
  j.at("greeting").get_to(x.greeting);
  j.at("version").get_to(x.version);
}

}  // namespace cluster_test
