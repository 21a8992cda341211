// samples/pubsub: a pub/sub group with several subscribers, one of them slow. A publisher task publishes
// price ticks to the topic "prices"; two fast actors and one task keep up; a slow actor falls behind by
// more than the topic's capacity, is told how many ticks it missed (group_lagged), and carries on from the
// oldest tick the topic still holds. The publisher never waits for anyone.
#include <postal/group.hpp>
#include <postal/runtime.hpp>
#include <postal/time.hpp>

#include <chrono>
#include <cstdint>
#include <iostream>
#include <memory>
#include <string>
#include <variant>

namespace {

struct tick {
  std::uint64_t sequence = 0;
  double price = 0;
};
constexpr std::uint64_t ticks = 2'000;
constexpr std::size_t topic_capacity = 64;

struct summary {
  std::string name;
  std::uint64_t received = 0;
  std::uint64_t missed = 0;
  double last_price = 0;
};

struct done_signal {  // the publisher's end marker reached this subscriber
  postal::responder<summary> reply;
};
using subscriber_message = std::variant<tick, postal::group_lagged, done_signal>;

// A subscriber actor; `delay` makes it slow (its handler waits that long per tick).
class subscriber : public postal::actor<subscriber_message> {
 public:
  subscriber(std::string name, std::chrono::microseconds delay) : delay_(delay) { summary_.name = std::move(name); }

  postal::task<void> handle(tick& t) {
    ++summary_.received;
    summary_.last_price = t.price;
    if (delay_.count() > 0) co_await postal::sleep_for(delay_);
  }
  void handle(postal::group_lagged& lagged) {
    if (summary_.missed == 0)
      std::cout << "  " << summary_.name << ": fell behind on '" << lagged.topic << "', missed " << lagged.missed
                << " ticks (told again on every later gap)" << std::endl;
    summary_.missed += lagged.missed;
  }
  void handle(done_signal& done) { (void)done.reply.send(summary_); }

 private:
  std::chrono::microseconds delay_;
  summary summary_;
};

}  // namespace

int main() {
  postal::runtime rt;
  postal::groups groups;
  auto prices = groups.topic<tick>("prices", topic_capacity);

  auto fast_a = postal::spawn_actor<subscriber>(rt, {}, std::string("fast-a"), std::chrono::microseconds(0));
  auto fast_b = postal::spawn_actor<subscriber>(rt, {}, std::string("fast-b"), std::chrono::microseconds(0));
  auto slow = postal::spawn_actor<subscriber>(rt, {.mailbox_capacity = 8}, std::string("slow"),
                                              std::chrono::microseconds(500));
  auto a = prices.join(rt, fast_a);
  auto b = prices.join(rt, fast_b);
  auto s = prices.join(rt, slow);

  // A task subscriber, reading the topic directly.
  auto task_subscriber = rt.spawn([](postal::subscription<tick> sub) -> postal::task<summary> {
    summary seen{"task", 0, 0, 0};
    for (;;) {
      auto next = co_await sub.recv();
      if (next) {
        ++seen.received;
        seen.last_price = next->price;
        if (next->sequence == ticks - 1) co_return seen;
      } else if (next.error().is_lagged()) {
        seen.missed += next.error().missed;
      } else {
        co_return seen;
      }
    }
  }(prices.subscribe()));

  std::cout << "publishing " << ticks << " ticks to '" << prices.name() << "' (capacity " << prices.capacity()
            << ") for " << prices.stats().subscribers << " subscribers" << std::endl;
  rt.block_on([](postal::topic<tick> prices) -> postal::task<void> {
    double price = 100;
    for (std::uint64_t i = 0; i < ticks; ++i) {
      price += (i % 7 == 0) ? -0.25 : 0.1;
      prices.publish(tick{i, price});
      if (i % 32 == 31) co_await postal::sleep_for(std::chrono::microseconds(200));  // a market, not a flood
    }
  }(prices));

  // Every tick is published. Ask each actor, through its mailbox (so after every tick it was told), for its
  // summary. The slow one answers once it has worked through its backlog.
  auto task_seen = task_subscriber.blocking_join();
  std::cout << "  " << task_seen.name << ": received " << task_seen.received << ", missed " << task_seen.missed
            << std::endl;
  for (auto* member : {&fast_a, &fast_b, &slow}) {
    auto seen = member->blocking_ask(done_signal{});
    if (!seen) continue;
    std::cout << "  " << seen->name << ": received " << seen->received << ", missed " << seen->missed
              << ", last price " << seen->last_price << std::endl;
  }
  auto stats = prices.stats();
  std::cout << "topic: " << stats.published << " published, " << stats.unheard << " reached nobody" << std::endl;
  std::cout << "a publish with no subscribers is counted, not an error: "
            << groups.topic<tick>("empty").publish(tick{}) << " reached, unheard="
            << groups.topic<tick>("empty").stats().unheard << std::endl;
  return 0;
}
