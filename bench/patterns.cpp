// The pattern scenarios of postal-bench: group_fanout and group_fanout100 (one publisher task, 4 or 100
// subscriber actors joined to a pub/sub group, 1 M messages; deliveries per second, lagged messages counted
// as in bcast) and config_reload (see below). Every scenario checks what arrived and fails loudly when a
// message is lost, duplicated or out of order.
#include <postal/group.hpp>
#include <postal/runtime.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "bench.hpp"

namespace {

constexpr std::uint64_t fanout_messages = 1'000'000;
constexpr std::size_t fanout_capacity = 1024;  // the topic's, as bcast's channel

struct fanout_tally {
  std::uint64_t got = 0;
  std::uint64_t lagged = 0;
};

using fanout_message = std::variant<std::uint64_t, postal::group_lagged>;

// A subscriber actor: every value must be the next one expected, after skipping what it lagged by. It
// reports when it has accounted for the last value (the newest message is never overwritten, so it comes).
class fanout_member : public postal::actor<fanout_message> {
 public:
  explicit fanout_member(std::shared_ptr<postal::oneshot::sender<fanout_tally>> done) : done_(std::move(done)) {}
  void handle(std::uint64_t& value) {
    bench::check(value == next_, "group_fanout: a member saw a value out of order or twice");
    ++next_;
    ++tally_.got;
    finish_if_done();
  }
  void handle(postal::group_lagged& lagged) {
    tally_.lagged += lagged.missed;
    next_ += lagged.missed;
    finish_if_done();
  }

 private:
  void finish_if_done() {
    if (next_ == fanout_messages) (void)done_->send(tally_);
  }
  std::shared_ptr<postal::oneshot::sender<fanout_tally>> done_;
  std::uint64_t next_ = 0;
  fanout_tally tally_;
};

bench::outcome group_fanout(std::size_t members) {
  postal::runtime rt(postal::runtime_options{.workers = bench::workers()});
  postal::groups groups;
  auto topic = groups.topic<std::uint64_t>("fanout", fanout_capacity);
  std::vector<postal::oneshot::receiver<fanout_tally>> tallies;
  std::vector<postal::group_membership> memberships;
  std::vector<postal::actor_ref<fanout_message>> refs;
  for (std::size_t m = 0; m < members; ++m) {
    auto [done, tally] = postal::oneshot::channel<fanout_tally>();
    refs.push_back(postal::spawn_actor<fanout_member>(
        rt, {}, std::make_shared<postal::oneshot::sender<fanout_tally>>(std::move(done))));
    memberships.push_back(topic.join(rt, refs.back()));
    tallies.push_back(std::move(tally));
  }
  auto start = bench::clock::now();
  rt.block_on([](postal::topic<std::uint64_t> topic, std::size_t members) -> postal::task<void> {
    for (std::uint64_t i = 0; i < fanout_messages; ++i) {
      bench::check(topic.publish(i) == members, "group_fanout: a publish missed a member");
      if (i % 256 == 255) co_await postal::yield_now();
    }
  }(topic, members));
  fanout_tally total;
  for (auto& tally : tallies) {
    auto one = tally.blocking_recv();
    bench::check(one.has_value(), "group_fanout: a member ended without reporting");
    bench::check(one->got + one->lagged == fanout_messages, "group_fanout: received + lagged != published");
    total.got += one->got;
    total.lagged += one->lagged;
  }
  double seconds = bench::seconds_since(start);
  return bench::outcome{total.got, seconds, "lagged=" + std::to_string(total.lagged)};
}

const bench::scenario fanout4("group_fanout", [] { return group_fanout(4); });
const bench::scenario fanout100("group_fanout100", [] { return group_fanout(100); });

}  // namespace
