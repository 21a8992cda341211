// Tests of cluster groups (postal/cluster/group.hpp) across real processes on 127.0.0.1: this process is one
// member, node processes (cluster_node.cpp) are the others, each with the topic "news" and two member actors
// on it. Every publish reaches every subscriber on every node in order and crosses each link once; a slow
// node's subscribers lag without slowing another's; a killed node disturbs no one else; a node that joins
// later gets what is published after it joined.
#include "support.hpp"

#include <postal/cluster.hpp>

#include <signal.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <thread>
#include <vector>

using namespace cluster_test;

namespace {

// Asks a node's "news" actor until `holds` is true of its report (see ask_until); the last report either way.
std::pair<bool, news_report> report_reaches(postal::actor_ref<news_message>& desk,
                                            const std::function<bool(const news_report&)>& holds) {
  return ask_until<news_tally>(desk, holds);
}

// Waits (at most 10 s) until this node forwards `topic` to `nodes` other members.
bool forwards_to(const postal::cluster::topic<news>& topic, std::size_t nodes) {
  const auto deadline = clock_type::now() + 10s;
  while (clock_type::now() < deadline) {
    if (topic.stats().nodes == nodes) return true;
    std::this_thread::yield();
  }
  return false;
}

bool each_received(const news_report& report, std::uint64_t count) {
  for (auto received : report.received)
    if (received != count) return false;
  return true;
}

// This process as a member with the topic "news".
struct news_member_here {
  local_node here;
  postal::cluster::groups groups{here.rt, here.node};
  postal::cluster::topic<news> topic = groups.topic<news>("news");
};

// Stops the node processes and waits until this node has seen them go, so that it stops with no connection
// left: CAF 0.17.6 sometimes keeps its network broker alive when an actor system stops while connections
// are open and busy (LeakSanitizer reports the broker leaked at exit).
void stop_before(local_node& here, std::initializer_list<node_process*> others) {
  for (auto* other : others) other->process->kill(SIGKILL);
  CHECK(view_reaches(here.node, [](const cluster_view& view) { return view.up() == 1; }));
}

postal::actor_ref<news_message> desk_of(local_node& here, const node_process& process) {
  auto at = must(here.node.blocking_connect("127.0.0.1", process.port));
  return must(here.node.blocking_lookup<news_message>(at, "news"));
}

}  // namespace

TEST_CASE("a publish reaches every subscriber on every node, in order, crossing each link once",
          "[cluster][groups]") {
  node_process a({"--name", "a"});
  node_process b({"--name", "b", "--seeds", address_of(a)});
  news_member_here member;
  auto subscription = member.topic.subscribe();  // a subscriber on this node too
  REQUIRE(member.here.node.blocking_join({address_of(a)}));
  REQUIRE(forwards_to(member.topic, 2));
  auto a_desk = desk_of(member.here, a);
  auto b_desk = desk_of(member.here, b);

  // Ten rounds of 500 (under the topic's capacity of 1024, so nobody may lag): each round is seen whole on
  // every node before the next.
  constexpr std::uint64_t rounds = 10, round = 500;
  for (std::uint64_t r = 0; r < rounds; ++r) {
    for (std::uint64_t i = 0; i < round; ++i) member.topic.publish(news{"tester", r * round + i});
    const std::uint64_t total = (r + 1) * round;
    for (auto* desk : {&a_desk, &b_desk}) {
      auto [reached, report] = report_reaches(*desk, [&](const news_report& got) { return each_received(got, total); });
      INFO("round " << r << ": received " << report.received[0] << " and " << report.received[1]);
      REQUIRE(reached);
    }
    for (std::uint64_t i = 0; i < round; ++i) {
      auto next = subscription.try_recv();
      REQUIRE(next);
      CHECK(next->sequence == r * round + i);
    }
  }
  for (auto* desk : {&a_desk, &b_desk}) {
    auto report = desk->blocking_ask(news_tally{});
    REQUIRE(report);
    CHECK(report->out_of_order == 0);
    CHECK(report->missed == std::vector<std::uint64_t>{0, 0});
    // Two member actors on the node, one publish each on its local topic: the message crossed once.
    CHECK(report->published_here == rounds * round);
  }
  CHECK(member.topic.stats().missed_by_links == 0);

  // A publish from another node reaches this node's subscriber and the third node's members, in order.
  REQUIRE(report_reaches(a_desk, [](const news_report& got) { return got.nodes == 2; }).first);
  auto published = a_desk.blocking_ask(publish_news{0, 800});
  REQUIRE(published);
  CHECK(*published == 800);
  for (std::uint64_t i = 0; i < 800; ++i) {
    auto next = subscription.blocking_recv();
    REQUIRE(next);
    CHECK(next->from == "a");
    CHECK(next->sequence == i);
  }
  auto [reached, report] =
      report_reaches(b_desk, [&](const news_report& got) { return each_received(got, rounds * round + 800); });
  CHECK(reached);
  CHECK(report.out_of_order == 0);
  stop_before(member.here, {&a, &b});
}

TEST_CASE("a slow node's subscribers lag and are told so; another node's get everything", "[cluster][groups]") {
  node_process slow({"--name", "slow", "--news-capacity", "16", "--news-delay-us", "2000"});
  node_process fast({"--name", "fast", "--seeds", address_of(slow)});
  news_member_here member;
  REQUIRE(member.here.node.blocking_join({address_of(slow)}));
  REQUIRE(forwards_to(member.topic, 2));
  auto slow_desk = desk_of(member.here, slow);
  auto fast_desk = desk_of(member.here, fast);

  constexpr std::uint64_t rounds = 4, round = 500;
  for (std::uint64_t r = 0; r < rounds; ++r) {
    for (std::uint64_t i = 0; i < round; ++i) member.topic.publish(news{"tester", r * round + i});
    auto [reached, report] =
        report_reaches(fast_desk, [&](const news_report& got) { return each_received(got, (r + 1) * round); });
    REQUIRE(reached);
  }
  // The slow node's members took what they could and were told how many they missed: nothing is lost
  // without a word, and nothing arrives twice or out of order.
  auto [settled, report] = report_reaches(slow_desk, [&](const news_report& got) {
    for (std::size_t m = 0; m < 2; ++m)
      if (got.received[m] + got.missed[m] != rounds * round) return false;
    return true;
  });
  INFO("received " << report.received[0] << " + missed " << report.missed[0]);
  CHECK(settled);
  CHECK(report.missed[0] > 0);
  CHECK(report.missed[1] > 0);
  CHECK(report.out_of_order == 0);
  auto fast_report = fast_desk.blocking_ask(news_tally{});
  REQUIRE(fast_report);
  CHECK(fast_report->missed == std::vector<std::uint64_t>{0, 0});
  CHECK(fast_report->out_of_order == 0);
  stop_before(member.here, {&slow, &fast});
}

TEST_CASE("a killed node disturbs no one else; a node that joins later gets what is published after",
          "[cluster][groups][failure]") {
  node_process a({"--name", "a"});
  auto b = std::make_unique<node_process>(std::vector<std::string>{"--name", "b", "--seeds", address_of(a)});
  news_member_here member;
  REQUIRE(member.here.node.blocking_join({address_of(a)}));
  REQUIRE(forwards_to(member.topic, 2));
  auto a_desk = desk_of(member.here, a);

  b->process->kill(SIGKILL);
  b.reset();
  REQUIRE(view_reaches(member.here.node, [](const cluster_view& view) { return has_status(view, "b", member::status_type::down); }));
  for (std::uint64_t i = 0; i < 500; ++i) member.topic.publish(news{"tester", i});
  auto [reached, report] = report_reaches(a_desk, [](const news_report& got) { return each_received(got, 500); });
  CHECK(reached);
  CHECK(report.out_of_order == 0);
  CHECK(forwards_to(member.topic, 1));  // the forwarding to b ended

  node_process c({"--name", "c", "--seeds", address_of(a)});
  REQUIRE(forwards_to(member.topic, 2));
  auto c_desk = desk_of(member.here, c);
  for (std::uint64_t i = 500; i < 800; ++i) member.topic.publish(news{"tester", i});
  auto [c_reached, c_report] = report_reaches(c_desk, [](const news_report& got) { return each_received(got, 300); });
  CHECK(c_reached);
  CHECK(c_report.first == 500);  // nothing from before it joined
  CHECK(c_report.out_of_order == 0);
  auto [a_reached, a_report] = report_reaches(a_desk, [](const news_report& got) { return each_received(got, 800); });
  CHECK(a_reached);
  stop_before(member.here, {&a, &c});
}
