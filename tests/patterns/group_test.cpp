// Tests of pub/sub groups: the registry (created on first use, one type per name), task subscriptions
// that see every message in order or learn how many they missed, member actors told each message (and
// group_lagged when they fall behind), leaving, and publishes with no subscriber counted. Ordering is made
// deterministic with end markers and gates, never with sleeps.
#include <postal/group.hpp>
#include <postal/runtime.hpp>

#include <catch2/catch.hpp>
#include <memory>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

namespace {

using postal::runtime;
using postal::runtime_options;
using postal::task;

constexpr int end_marker = -1;

// What a member actor saw, handed over when the end marker arrives.
struct seen {
  std::vector<int> values;
  std::uint64_t missed = 0;
  int lag_notices = 0;
};

struct gate {  // holds the actor until the oneshot fires
  postal::oneshot::receiver<bool> open;
};
using member_message = std::variant<int, postal::group_lagged, gate>;

class collector : public postal::actor<member_message> {
 public:
  explicit collector(std::shared_ptr<postal::oneshot::sender<seen>> done) : done_(std::move(done)) {}
  void handle(int& value) {
    if (value == end_marker) {
      (void)done_->send(std::move(seen_));
      return;
    }
    seen_.values.push_back(value);
  }
  void handle(postal::group_lagged& lagged) {
    CHECK(lagged.topic == "numbers");
    seen_.missed += lagged.missed;
    ++seen_.lag_notices;
  }
  task<void> handle(gate& g) { (void)co_await g.open; }

 private:
  std::shared_ptr<postal::oneshot::sender<seen>> done_;
  seen seen_;
};

struct collector_handle {
  postal::actor_ref<member_message> ref;
  postal::oneshot::receiver<seen> done;
};
collector_handle spawn_collector(runtime& rt, std::size_t mailbox_capacity = 1024) {
  auto [tx, rx] = postal::oneshot::channel<seen>();
  auto ref = postal::spawn_actor<collector>(rt, {.mailbox_capacity = mailbox_capacity},
                                            std::make_shared<postal::oneshot::sender<seen>>(std::move(tx)));
  return {std::move(ref), std::move(rx)};
}

TEST_CASE("the registry creates a topic on first use and keeps one type per name", "[group]") {
  postal::groups groups;
  CHECK_FALSE(groups.contains("numbers"));
  auto numbers = groups.topic<int>("numbers", 100);
  CHECK(groups.contains("numbers"));
  CHECK(numbers.capacity() == 128);  // rounded up to a power of two, as broadcast channels are
  auto same = groups.topic<int>("numbers");
  auto sub = numbers.subscribe();
  CHECK(same.publish(5) == 1);  // the same topic
  CHECK(sub.try_recv().value() == 5);
  CHECK(groups.topic<int>("numbers", 128).name() == "numbers");

  CHECK_THROWS_AS(groups.topic<std::string>("numbers"), std::logic_error);
  CHECK_THROWS_AS(groups.topic<int>("numbers", 4), std::invalid_argument);
  CHECK_THROWS_AS(groups.topic<int>("other", 0), std::invalid_argument);
  CHECK(groups.topic<int>("default").capacity() == postal::groups::default_capacity);
}

TEST_CASE("a publish with no subscriber is counted, not an error", "[group]") {
  postal::groups groups;
  auto numbers = groups.topic<int>("numbers");
  CHECK(numbers.publish(1) == 0);
  CHECK(numbers.publish(2) == 0);
  auto sub = numbers.subscribe();
  CHECK(numbers.publish(3) == 1);
  sub.leave();
  CHECK(numbers.publish(4) == 0);
  auto stats = numbers.stats();
  CHECK(stats.published == 4);
  CHECK(stats.unheard == 3);
  CHECK(stats.subscribers == 0);
}

TEST_CASE("task subscribers see every message in order", "[group]") {
  runtime rt(runtime_options{.workers = 2});
  postal::groups groups;
  auto numbers = groups.topic<int>("numbers", 1024);  // more than is published: nothing can lag
  std::vector<postal::join_handle<std::vector<int>>> readers;
  for (int i = 0; i < 3; ++i)
    readers.push_back(rt.spawn([](postal::subscription<int> sub) -> task<std::vector<int>> {
      std::vector<int> got;
      for (;;) {
        auto next = co_await sub.recv();
        if (!next) throw std::runtime_error("unexpected lag or close");
        if (*next == end_marker) co_return got;
        got.push_back(*next);
      }
    }(numbers.subscribe())));
  CHECK(numbers.stats().subscribers == 3);
  for (int i = 0; i < 1000; ++i) CHECK(numbers.publish(i) == 3);
  numbers.publish(end_marker);
  for (auto& reader : readers) {
    auto got = reader.blocking_join();
    REQUIRE(got.size() == 1000);
    for (int i = 0; i < 1000; ++i) CHECK(got[i] == i);
  }
  CHECK(numbers.stats().subscribers == 0);  // the subscriptions ended with their tasks
}

TEST_CASE("a subscriber that falls behind learns how many messages it missed", "[group]") {
  postal::groups groups;
  auto numbers = groups.topic<int>("numbers", 4);
  auto sub = numbers.subscribe();
  for (int i = 0; i < 10; ++i) numbers.publish(i);
  auto lagged = sub.try_recv();
  REQUIRE_FALSE(lagged);
  CHECK(lagged.error() == postal::broadcast::try_recv_error::lagged(6));
  for (int i = 6; i < 10; ++i) CHECK(sub.blocking_recv().value() == i);  // the oldest still held, on
  CHECK(sub.try_recv().error().is_empty());
}

TEST_CASE("a topic ends when the registry and every handle are gone", "[group]") {
  std::optional<postal::subscription<int>> sub;
  {
    postal::groups groups;
    auto numbers = groups.topic<int>("numbers");
    sub = numbers.subscribe();
    numbers.publish(1);
  }
  CHECK(sub->blocking_recv().value() == 1);  // what was published stays readable
  CHECK(sub->blocking_recv().error().is_closed());
}

TEST_CASE("member actors are told every message in order", "[group][actor]") {
  runtime rt(runtime_options{.workers = 2});
  postal::groups groups;
  auto numbers = groups.topic<int>("numbers", 4096);
  std::vector<collector_handle> members;
  std::vector<postal::group_membership> memberships;
  for (int i = 0; i < 4; ++i) {
    members.push_back(spawn_collector(rt));
    memberships.push_back(numbers.join(rt, members.back().ref));
  }
  CHECK(numbers.stats().subscribers == 4);
  for (int i = 0; i < 2000; ++i) CHECK(numbers.publish(i) == 4);
  numbers.publish(end_marker);
  for (auto& member : members) {
    auto result = member.done.blocking_recv();
    REQUIRE(result);
    CHECK(result->missed == 0);
    REQUIRE(result->values.size() == 2000);
    for (int i = 0; i < 2000; ++i) CHECK(result->values[i] == i);
  }
}

TEST_CASE("a slow member actor is told group_lagged and every other message arrives once, in order",
          "[group][actor]") {
  runtime rt(runtime_options{.workers = 2});
  postal::groups groups;
  auto numbers = groups.topic<int>("numbers", 4);
  auto member = spawn_collector(rt, 2);
  auto [open, opened] = postal::oneshot::channel<bool>();
  REQUIRE(member.ref.blocking_tell(gate{std::move(opened)}));  // the actor waits in its handler
  auto membership = numbers.join(rt, member.ref);
  const int published = 50;
  for (int i = 0; i < published; ++i) numbers.publish(i);
  (void)open.send(true);
  numbers.publish(end_marker);  // the newest message is never overwritten: it always arrives
  auto result = member.done.blocking_recv();
  REQUIRE(result);
  CHECK(result->lag_notices >= 1);
  CHECK(result->missed >= static_cast<std::uint64_t>(published - 4 - 2 - 1));  // ring + mailbox + in hand
  CHECK(result->values.size() + result->missed == static_cast<std::size_t>(published));
  for (std::size_t i = 1; i < result->values.size(); ++i) CHECK(result->values[i - 1] < result->values[i]);
}

TEST_CASE("a member that leaves is told nothing more; one that stays gets everything", "[group][actor]") {
  runtime rt(runtime_options{.workers = 2});
  postal::groups groups;
  auto numbers = groups.topic<int>("numbers");
  auto leaving = spawn_collector(rt);
  auto staying = spawn_collector(rt);
  auto leaving_membership = numbers.join(rt, leaving.ref);
  auto staying_membership = numbers.join(rt, staying.ref);
  CHECK(numbers.publish(1) == 2);
  leaving_membership.leave();
  CHECK_FALSE(leaving_membership.active());
  CHECK(numbers.stats().subscribers == 1);
  CHECK(numbers.publish(2) == 1);
  numbers.publish(end_marker);
  auto stayed = staying.done.blocking_recv();
  REQUIRE(stayed);
  CHECK(stayed->values == std::vector<int>{1, 2});
  // The leaver may have got 1 (if it was told before leave()) but nothing published after it left: tell it
  // the end marker directly.
  REQUIRE(leaving.ref.blocking_tell(end_marker));
  auto left = leaving.done.blocking_recv();
  REQUIRE(left);
  CHECK((left->values.empty() || left->values == std::vector<int>{1}));
}

}  // namespace
