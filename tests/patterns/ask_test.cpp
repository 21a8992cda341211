// Tests of the command pattern: requests that carry their responder (named `reply` or, as in the seed,
// `resp`), requests that declare their reply type and let the handler return it, and postal::ask over a
// plain mpsc channel to a manager task (the seed's shape), from tasks and from main. Every ask ends with an
// answer or an error.
#include <postal/actor.hpp>
#include <postal/ask.hpp>
#include <postal/runtime.hpp>

#include <catch2/catch.hpp>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <variant>

namespace {

using postal::ask_error;
using postal::runtime;
using postal::runtime_options;
using postal::task;

// --- the seed's command enum: each request carries its responder as `resp` -----------------------------
struct get {
  std::string key;
  postal::responder<std::optional<std::string>> resp;
};
struct set {
  std::string key;
  std::string value;
  postal::responder<postal::void_reply> resp;
};
struct forget {  // the manager drops this request's responder without answering
  postal::responder<int> resp;
};
using command = std::variant<get, set, forget>;

// The manager task of the seed: owns the map, answers every command through its responder.
task<void> manager(postal::mpsc::receiver<command> rx) {
  std::map<std::string, std::string> data;
  while (auto next = co_await rx.recv()) {
    if (auto* g = std::get_if<get>(&*next)) {
      auto found = data.find(g->key);
      (void)g->resp.send(found == data.end() ? std::nullopt : std::optional(found->second));
    } else if (auto* s = std::get_if<set>(&*next)) {
      data[s->key] = s->value;
      (void)s->resp.send(postal::void_reply{});
    }
    // forget: the responder is destroyed with the command
  }
}

TEST_CASE("ask over an mpsc channel: the seed's manager task, from a task and from main", "[ask]") {
  runtime rt(runtime_options{.workers = 2});
  auto [tx, rx] = postal::mpsc::channel<command>(8);
  auto done = rt.spawn(manager(std::move(rx)));

  REQUIRE(postal::blocking_ask(tx, set{"hello", "world", {}}));
  auto from_task = rt.block_on([](postal::mpsc::sender<command> tx) -> task<std::optional<std::string>> {
    get request{"hello", {}};  // a named local: g++ 12 miscompiles braced temporaries inside co_await
    auto value = co_await postal::ask(tx, std::move(request));
    REQUIRE(value);
    co_return *value;
  }(tx));
  CHECK(from_task == "world");
  auto missing = postal::blocking_ask(tx, get{"nobody", {}});
  REQUIRE(missing);
  CHECK(*missing == std::nullopt);

  SECTION("a dropped responder is no_reply") {
    auto dropped = postal::blocking_ask(tx, forget{});
    REQUIRE_FALSE(dropped);
    CHECK(dropped.error() == ask_error::no_reply);
  }
  SECTION("ask to a manager that is gone is closed") {
    auto [other_tx, other_rx] = postal::mpsc::channel<command>(1);
    other_rx.close();
    auto closed = postal::blocking_ask(other_tx, get{"hello", {}});
    REQUIRE_FALSE(closed);
    CHECK(closed.error() == ask_error::closed);
  }
  SECTION("ask with a timeout gives timeout when nobody answers in time") {
    auto [slow_tx, slow_rx] = postal::mpsc::channel<command>(1);  // nobody receives
    auto late = rt.block_on([](postal::mpsc::sender<command> tx) -> task<postal::expected<int, ask_error>> {
      forget request;
      co_return co_await postal::ask(tx, std::move(request), std::chrono::milliseconds(20));
    }(slow_tx));
    REQUIRE_FALSE(late);
    CHECK(late.error() == ask_error::timeout);
  }
  { auto last = std::move(tx); }
  done.blocking_join();  // the manager ends once every sender is gone
}

// --- an actor whose requests declare their reply type ------------------------------------------------------
struct lookup {
  std::string key;
  using reply_type = std::optional<int>;
};
struct store {
  std::string key;
  int value = 0;
  using reply_type = bool;  // true if the key was new
};
struct slow_sum {  // answered by a coroutine handler
  int a = 0;
  int b = 0;
  using reply_type = int;
};
struct explode {
  using reply_type = int;
};
struct old_style {  // a responder member named like the seed's
  postal::responder<std::string> resp;
};
using table_message = std::variant<lookup, store, slow_sum, explode, old_style>;

class table : public postal::actor<table_message> {
 public:
  std::optional<int> handle(lookup& m) {
    auto found = data_.find(m.key);
    if (found == data_.end()) return std::nullopt;
    return found->second;
  }
  bool handle(store& m) { return data_.insert_or_assign(m.key, m.value).second; }
  task<int> handle(slow_sum& m) {
    co_await postal::yield_now();
    co_return m.a + m.b;
  }
  int handle(explode&) { throw std::runtime_error("explode"); }
  void handle(old_style& m) { (void)m.resp.send("answered through resp"); }

 private:
  std::map<std::string, int> data_;
};

TEST_CASE("a request that declares its reply type is answered by the handler's return value", "[ask][actor]") {
  runtime rt(runtime_options{.workers = 2});
  auto ref = postal::spawn_actor<table>(rt, {.on_failure = postal::supervision::restart()});

  auto fresh = ref.blocking_ask(store{"a", 1});
  REQUIRE(fresh);
  CHECK(*fresh);
  auto again = ref.blocking_ask(store{"a", 2});
  REQUIRE(again);
  CHECK_FALSE(*again);
  auto found = ref.blocking_ask(lookup{"a"});
  REQUIRE(found);
  CHECK(*found == std::optional(2));

  SECTION("a coroutine handler's value is sent once it finishes") {
    auto sum = rt.block_on([](postal::actor_ref<table_message> ref) -> task<postal::expected<int, ask_error>> {
      slow_sum request{20, 22};
      co_return co_await ref.ask(request);
    }(ref));
    REQUIRE(sum);
    CHECK(*sum == 42);
  }
  SECTION("told instead of asked, the handler runs and its value is dropped") {
    REQUIRE(ref.blocking_tell(store{"b", 7}));
    auto b = ref.blocking_ask(lookup{"b"});
    REQUIRE(b);
    CHECK(*b == std::optional(7));
  }
  SECTION("a handler that throws gives its asker no_reply") {
    auto failed = ref.blocking_ask(explode{});
    REQUIRE_FALSE(failed);
    CHECK(failed.error() == ask_error::no_reply);
  }
  SECTION("a responder member named resp works like reply") {
    auto answer = ref.blocking_ask(old_style{});
    REQUIRE(answer);
    CHECK(*answer == "answered through resp");
  }
  SECTION("ask with a timeout and a declared reply type") {
    auto quick = ref.blocking_ask(lookup{"a"}, std::chrono::seconds(10));
    REQUIRE(quick);
    CHECK(*quick == std::optional(2));
  }
  ref.kill();
  auto closed = ref.monitor().blocking_exit();
  CHECK(closed.is_killed());
  auto after = ref.blocking_ask(lookup{"a"});
  REQUIRE_FALSE(after);
  CHECK(after.error() == ask_error::closed);
}

}  // namespace
