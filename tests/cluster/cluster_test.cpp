// Tests of postal::cluster across real processes on 127.0.0.1: this test process is one node, and it starts
// the others (cluster_node.cpp) and always stops them, by pid. Tell and ask through remote refs (both
// request forms, from tasks and plain threads), lookups refused for a wrong name or message type, a wrong
// cookie and differing message types refused at connection, backpressure with a slow consumer, a killed
// and a frozen node declared down with every pending ask ended, a restarted node as a new incarnation,
// remote ends seen by monitors, and kill through a remote ref.
#include "support.hpp"

#include <postal/actor.hpp>
#include <postal/cluster.hpp>
#include <postal/runtime.hpp>

#include "support/files.hpp"
#include "support/processes.hpp"

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

using namespace cluster_test;

TEST_CASE("tell and ask cross nodes through a remote ref, from a plain thread and from tasks", "[cluster]") {
  connected_kv setup;
  auto& [server, here, at, kv] = setup;

  REQUIRE(kv.blocking_tell(put{"a", "1"}));
  auto value = kv.blocking_ask(get{"a", {}});
  REQUIRE(value);
  CHECK(*value == std::optional<std::string>("1"));
  auto missing = kv.blocking_ask(get{"nothing", {}});
  REQUIRE(missing);
  CHECK_FALSE(missing->has_value());
  auto sum = kv.blocking_ask(add{40, 2});  // a request that declares its reply type
  REQUIRE(sum);
  CHECK(*sum == 42);

  // Fifty tasks, each telling then asking in turn: every answer is its own.
  std::atomic<int> wrong{0};
  std::vector<postal::join_handle<void>> clients;
  for (int c = 0; c < 50; ++c)
    clients.push_back(here.rt.spawn([](postal::actor_ref<kv_message> kv, int c, std::atomic<int>& wrong) -> task<void> {
      for (int i = 0; i < 40; ++i) {
        const std::string key = "k" + std::to_string(c) + "-" + std::to_string(i);
        put store{key, std::to_string(i * c)};
        if (!co_await kv.tell(std::move(store))) ++wrong;
        get request{key, {}};
        auto got = co_await kv.ask(std::move(request));
        if (!got || *got != std::optional<std::string>(std::to_string(i * c))) ++wrong;
        add both{i, c};
        auto added = co_await kv.ask(std::move(both), 5s);
        if (!added || *added != i + c) ++wrong;
      }
    }(kv, c, wrong)));
  for (auto& client : clients) client.blocking_join();
  CHECK(wrong.load() == 0);
}

TEST_CASE("a lookup is refused for a name nothing published, and for other message types", "[cluster]") {
  node_process server;
  local_node here;
  auto at = must(here.node.blocking_connect("127.0.0.1", server.port));
  auto none = here.node.blocking_lookup<kv_message>(at, "no-such-name");
  REQUIRE_FALSE(none);
  CHECK(none.error().kind == cluster_error::kind_type::no_such_actor);
  auto wrong = here.node.blocking_lookup<other_message>(at, "kv");
  REQUIRE_FALSE(wrong);
  CHECK(wrong.error().kind == cluster_error::kind_type::type_mismatch);
  CHECK(wrong.error().message.find("other") != std::string::npos);  // it names the types
}

TEST_CASE("a node with the wrong cookie is refused, and one whose message types differ", "[cluster]") {
  node_process server;
  {
    local_node intruder("not-the-cookie");
    auto refused = intruder.node.blocking_connect("127.0.0.1", server.port);
    REQUIRE_FALSE(refused);
    CHECK(refused.error().kind == cluster_error::kind_type::refused);
    CHECK(refused.error().message.find("cookie") != std::string::npos);
  }
  CHECK(server.process->wait_for_line("refused node 'tester': it does not know the cluster's cookie"));
  {
    local_node other;
    class unrelated : public postal::actor<other_message> {
     public:
      void handle(cluster_test::other&) {}
    };
    other.node.publish("kv", postal::spawn_actor<unrelated>(other.rt, postal::actor_options{}));
    auto refused = other.node.blocking_connect("127.0.0.1", server.port);
    REQUIRE_FALSE(refused);
    CHECK(refused.error().kind == cluster_error::kind_type::refused);
    CHECK(refused.error().message.find("'kv' takes") != std::string::npos);
  }
}

TEST_CASE("a producer 100x faster than a remote consumer waits: memory stays bounded, nothing lost",
          "[cluster][backpressure]") {
  node_process server({"--sink-delay-us", "20"});
  local_node here;
  auto at = must(here.node.blocking_connect("127.0.0.1", server.port));
  auto consumer = must(here.node.blocking_lookup<sink_message>(at, "sink"));
  const std::size_t server_before = resident_kb(server.process->pid());
  const std::size_t here_before = resident_kb(::getpid());
  constexpr std::uint64_t total = 30000;
  std::size_t peak_server = 0, peak_here = 0;
  // try_tell never waits: against a consumer this much slower it soon finds no credit and a full stand-in
  // mailbox, and says so.
  std::uint64_t i = 0;
  bool saw_full = false;
  while (!saw_full && i < total) {
    auto sent = consumer.try_tell(item{i, {}});
    if (sent)
      ++i;
    else
      saw_full = sent.error().is_full();
  }
  CHECK(saw_full);
  for (; i < total; ++i) {
    if (i % 1000 == 0) {
      peak_server = std::max(peak_server, resident_kb(server.process->pid()));
      peak_here = std::max(peak_here, resident_kb(::getpid()));
    }
    REQUIRE(consumer.blocking_tell(item{i, {}}));
  }
  auto counted = consumer.blocking_ask(tally{});
  REQUIRE(counted);
  CHECK(counted->first == total);
  CHECK(counted->second == 0);  // in order, none twice
  CHECK(peak_server < server_before + 64 * 1024);
  CHECK(peak_here < here_before + 64 * 1024);
}

TEST_CASE("large messages are bounded by the bytes in flight, not only by their count", "[cluster][backpressure]") {
  node_process server({"--sink-delay-us", "50"});
  local_node here(cookie, 8);  // a small stand-in mailbox: this side holds at most 8 waiting blobs
  auto at = must(here.node.blocking_connect("127.0.0.1", server.port));
  auto consumer = must(here.node.blocking_lookup<sink_message>(at, "sink"));
  const std::size_t server_before = resident_kb(server.process->pid());
  const std::string payload(64 * 1024, 'x');
  constexpr std::uint64_t total = 1500;  // 96 MiB in all
  std::size_t peak_server = 0;
  for (std::uint64_t i = 0; i < total; ++i) {
    if (i % 25 == 0) peak_server = std::max(peak_server, resident_kb(server.process->pid()));
    REQUIRE(consumer.blocking_tell(blob{i, payload}));
  }
  auto counted = consumer.blocking_ask(tally{});
  REQUIRE(counted);
  CHECK(counted->first == total);
  CHECK(counted->second == 0);
  // The sink's mailbox (64 blobs, 4 MiB) and credit_bytes (4 MiB) in flight; the message window alone would
  // let 1024 blobs (64 MiB) be in flight.
  if (memory_is_measurable) CHECK(peak_server < server_before + 18 * 1024);
}

TEST_CASE("asks pending on a killed node end with node_down within 0.5 s; its refs end", "[cluster][failure]") {
  connected_kv setup;
  auto& [server, here, at, kv] = setup;
  auto monitor = kv.monitor();
  std::vector<postal::join_handle<postal::expected<std::int64_t, ask_error>>> asks;
  for (int i = 0; i < 10; ++i) asks.push_back(held_ask(here.rt, kv));
  wait_until_held(kv, 10);
  const auto killed_at = clock_type::now();
  server.process->kill(SIGKILL);
  for (auto& ask : asks) {
    auto outcome = ask.blocking_join();
    REQUIRE_FALSE(outcome);
    CHECK(outcome.error() == ask_error::node_down);
  }
  CHECK(clock_type::now() - killed_at < 500ms);
  auto reason = monitor.blocking_exit();
  CHECK(reason.is_node_down());
  CHECK_FALSE(kv.blocking_tell(put{"after", "death"}));  // tells fail as closed
  auto late = kv.blocking_ask(add{1, 2});
  REQUIRE_FALSE(late);
  CHECK(late.error() == ask_error::node_down);
}

TEST_CASE("a frozen node (SIGSTOP) is declared down within its failure timeout plus 0.5 s", "[cluster][failure]") {
  connected_kv setup;
  auto& [server, here, at, kv] = setup;
  auto pending = held_ask(here.rt, kv);
  wait_until_held(kv, 1);
  const auto frozen_at = clock_type::now();
  server.process->signal(SIGSTOP);
  auto outcome = pending.blocking_join();
  const auto took = clock_type::now() - frozen_at;
  REQUIRE_FALSE(outcome);
  CHECK(outcome.error() == ask_error::node_down);
  CHECK(took < 500ms + 500ms);  // the timeout both nodes use (--timeout-ms 500), plus 0.5 s
  CHECK(kv.monitor().blocking_exit().is_node_down());
}

TEST_CASE("a restarted node is a new incarnation: old refs stay down, a new lookup works", "[cluster][failure]") {
  local_node here;
  const std::uint16_t port = test_support::free_port();
  auto first = std::make_unique<node_process>(std::vector<std::string>{"--port", std::to_string(port)});
  auto before = must(here.node.blocking_connect("127.0.0.1", port));
  auto old_ref = must(here.node.blocking_lookup<kv_message>(before, "kv"));
  REQUIRE(old_ref.blocking_tell(put{"k", "old"}));
  first.reset();  // killed
  CHECK(old_ref.monitor().blocking_exit().is_node_down());
  node_process second({"--port", std::to_string(port)});
  auto after = must(here.node.blocking_connect("127.0.0.1", port));
  CHECK(after.id != before.id);
  auto new_ref = must(here.node.blocking_lookup<kv_message>(after, "kv"));
  auto fresh = new_ref.blocking_ask(get{"k", {}});
  REQUIRE(fresh);
  CHECK_FALSE(fresh->has_value());  // a new process: its state is new
  auto stale = old_ref.blocking_ask(get{"k", {}});
  REQUIRE_FALSE(stale);
  CHECK(stale.error() == ask_error::node_down);
}

TEST_CASE("a remote actor's end reaches its refs: monitors, pending asks, and kill through a ref", "[cluster]") {
  connected_kv setup;
  auto& [server, here, at, kv] = setup;
  auto watcher = must(here.node.blocking_lookup<kv_message>(at, "kv"));
  auto pending = held_ask(here.rt, kv);
  wait_until_held(kv, 1);
  REQUIRE(kv.blocking_tell(crash{}));
  auto reason = watcher.monitor().blocking_exit();
  CHECK(reason.is_failed());
  CHECK(reason.message.find("asked to crash") != std::string::npos);
  auto outcome = pending.blocking_join();
  REQUIRE_FALSE(outcome);
  CHECK(outcome.error() == ask_error::no_reply);
  CHECK(kv.monitor().blocking_exit().is_failed());
  auto gone = here.node.blocking_lookup<kv_message>(at, "kv");  // unpublished at its end
  REQUIRE_FALSE(gone);
  CHECK(gone.error().kind == cluster_error::kind_type::no_such_actor);

  auto consumer = must(here.node.blocking_lookup<sink_message>(at, "sink"));
  auto second = must(here.node.blocking_lookup<sink_message>(at, "sink"));
  consumer.kill();
  CHECK(second.monitor().blocking_exit().is_killed());
}

// -- refs inside messages ------------------------------------------------------------------------------------

namespace {

class local_counter : public postal::actor<counter_message> {
 public:
  std::uint64_t handle(bump&) { return ++count_; }

 private:
  std::uint64_t count_ = 0;
};

// An actor's end, waited for on a thread of its own for at most `limit` (a guard against a hang: the end
// is an event the test causes, not a timing it hopes for).
std::optional<postal::exit_reason> exit_within(postal::actor_monitor monitor, std::chrono::seconds limit) {
  auto ended = std::make_shared<std::promise<postal::exit_reason>>();
  auto result = ended->get_future();
  std::thread([monitor = std::move(monitor), ended]() mutable { ended->set_value(monitor.blocking_exit()); }).detach();
  if (result.wait_for(limit) != std::future_status::ready) return std::nullopt;
  return result.get();
}

}  // namespace

TEST_CASE("a ref inside a message reaches the same actor from another node and comes back as the same ref",
          "[cluster][refs]") {
  node_process server;
  local_node here;
  auto at = must(here.node.blocking_connect("127.0.0.1", server.port));
  auto relay = must(here.node.blocking_lookup<relay_message>(at, "relay"));
  auto mine = postal::spawn_actor<local_counter>(here.rt, postal::actor_options{});

  auto kept = relay.blocking_ask(keep{mine});
  REQUIRE(kept);
  CHECK(*kept);
  auto last = relay.blocking_ask(bump_kept{5, {}});  // the other node asks this node's actor 5 times
  REQUIRE(last);
  CHECK(*last == 5);
  auto here_count = mine.blocking_ask(bump{});
  REQUIRE(here_count);
  CHECK(*here_count == 6);  // the same actor took them

  auto back = relay.blocking_ask(give_back{});  // a reply that holds the ref
  REQUIRE(back);
  CHECK(*back == mine);  // this node's own actor, not a stand-in for it
  CHECK(*back->blocking_ask(bump{}) == 7);

  REQUIRE(relay.blocking_ask(drop_kept{}));
  auto none = relay.blocking_ask(give_back{});  // an empty ref crosses as an empty ref
  REQUIRE(none);
  CHECK_FALSE(*none);
}

TEST_CASE("an actor whose ref crossed is let go once no other node holds a ref to it", "[cluster][refs]") {
  node_process server;
  local_node here;
  auto at = must(here.node.blocking_connect("127.0.0.1", server.port));
  auto relay = must(here.node.blocking_lookup<relay_message>(at, "relay"));
  postal::actor_monitor monitor = [&] {
    auto mine = postal::spawn_actor<local_counter>(here.rt, postal::actor_options{});
    auto watch = mine.monitor();
    REQUIRE(relay.blocking_ask(keep{std::move(mine)}));  // from now on only the other node holds it
    return watch;
  }();
  auto used = relay.blocking_ask(bump_kept{2, {}});
  REQUIRE(used);
  CHECK(*used == 2);  // alive while the other node holds it, though this node has no ref left
  REQUIRE(relay.blocking_ask(drop_kept{}));
  auto reason = exit_within(std::move(monitor), std::chrono::seconds(10));
  REQUIRE(reason);
  CHECK(reason->is_normal());  // every ref gone: it stopped as a local actor does
}

TEST_CASE("a ref to an actor on a third node is used directly: the receiving node connects to that node",
          "[cluster][refs]") {
  node_process b({"--name", "b"});
  node_process c({"--name", "c"});
  local_node here;
  auto at_b = must(here.node.blocking_connect("127.0.0.1", b.port));
  auto at_c = must(here.node.blocking_connect("127.0.0.1", c.port));
  auto counter_on_c = must(here.node.blocking_lookup<counter_message>(at_c, "counter"));
  auto relay_on_b = must(here.node.blocking_lookup<relay_message>(at_b, "relay"));

  REQUIRE(relay_on_b.blocking_ask(keep{counter_on_c}));  // b was never connected to c
  auto last = relay_on_b.blocking_ask(bump_kept{3, {}});
  REQUIRE(last);
  CHECK(*last == 3);
  auto count = counter_on_c.blocking_ask(bump{});
  REQUIRE(count);
  CHECK(*count == 4);  // b's asks reached c's counter

  c.process->kill(SIGKILL);  // b's ref to c's counter ends with c: b's ask fails instead of hanging
  auto after = relay_on_b.blocking_ask(bump_kept{1, {}});
  REQUIRE(after);
  CHECK(*after == 0);
}

// -- where options come from ----------------------------------------------------------------------------------

namespace {

// Sets environment variables for one test and removes them after it.
struct environment_guard {
  explicit environment_guard(std::initializer_list<std::pair<const char*, const char*>> values) {
    for (const auto& [name, value] : values) {
      ::setenv(name, value, 1);
      names.push_back(name);
    }
  }
  ~environment_guard() {
    for (auto& name : names) ::unsetenv(name.c_str());
  }
  std::vector<std::string> names;
};

}  // namespace

TEST_CASE("node options come from code, then the environment, then CAF's ini file, then its command line",
          "[cluster][options]") {
  test_support::scratch_dir dir("postal-cluster-options");
  const auto ini = dir.path / "node.ini";
  test_support::write_in_place(ini, "[postal.cluster]\nname=\"from-ini\"\ncredit-window=64\ncredit-bytes=4096\n");
  environment_guard environment({{"POSTAL_CLUSTER_NAME", "from-environment"},
                                 {"POSTAL_CLUSTER_PROXY_CAPACITY", "32"},
                                 {"POSTAL_CLUSTER_REQUEST_TIMEOUT", "1500"}});
  std::string program = "cluster_test", config = "--config-file=" + ini.string(),
              bytes = "--postal.cluster.credit-bytes=65536";
  std::vector<char*> argv{program.data(), config.data(), bytes.data()};
  postal::runtime rt(static_cast<int>(argv.size()), argv.data(), postal::cluster::enable({.workers = 1}));
  postal::cluster::node node(rt, {.name = "from-code", .cookie = cookie, .credit_window = 8});
  CHECK(node.name() == "from-ini");                          // the ini file over the environment and the code
  CHECK(node.options().credit_window == 64);                 // the ini file over the code
  CHECK(node.options().credit_bytes == 65536);               // the command line over the ini file
  CHECK(node.options().proxy_capacity == 32);                // the environment over the code's default
  CHECK(node.options().request_timeout == 1500ms);           // the environment, in ms
  CHECK(node.options().cookie == cookie);                    // the code, where nothing else says otherwise
  CHECK(node.options().bind_address == "127.0.0.1");
}

TEST_CASE("a malformed option is refused with the variable's name", "[cluster][options]") {
  postal::runtime rt(postal::cluster::enable({.workers = 1}));
  {
    environment_guard environment({{"POSTAL_CLUSTER_PORT", "seventy"}});
    CHECK_THROWS_WITH((postal::cluster::node(rt, {.cookie = cookie})),
                      Catch::Contains("POSTAL_CLUSTER_PORT") && Catch::Contains("seventy"));
  }
  {
    environment_guard environment({{"POSTAL_CLUSTER_PORT", "70000"}});
    CHECK_THROWS_WITH((postal::cluster::node(rt, {.cookie = cookie})), Catch::Contains("too large"));
  }
  {
    environment_guard environment({{"POSTAL_CLUSTER_COOKIE", ""}});  // an empty cookie is still refused
    CHECK_THROWS_AS((postal::cluster::node(rt, {.cookie = ""})), std::invalid_argument);
  }
}

// -- membership ---------------------------------------------------------------------------------------------



TEST_CASE("a node joins through any member, and every member sees every other", "[cluster][membership]") {
  node_process a({"--name", "a"});
  node_process b({"--name", "b", "--seeds", address_of(a)});
  local_node here;
  REQUIRE(here.node.blocking_join({"127.0.0.1:1", address_of(b)}));  // the first seed does not answer
  CHECK(view_reaches(here.node, [](const cluster_view& view) { return exactly_up(view, {"a", "b", "tester"}); }));
  // a heard of this node although it joined through b, and this node reaches a directly
  auto a_members = members_of(here, a);
  CHECK(remote_view_lists(a_members, "tester=up"));
  CHECK(remote_view_lists(a_members, "b=up"));
}

TEST_CASE("nodes joining at the same time through different seeds all meet", "[cluster][membership]") {
  node_process s1({"--name", "s1"});
  node_process s2({"--name", "s2", "--seeds", address_of(s1)});
  local_node here;
  // This node joins through s2 while x joins through s1: whichever way the two joins interleave, every
  // member ends up knowing every other.
  auto joining = here.rt.spawn(here.node.join({address_of(s2)}));
  node_process x({"--name", "x", "--seeds", address_of(s1)});
  REQUIRE(joining.blocking_join());
  CHECK(view_reaches(here.node, [](const cluster_view& view) { return exactly_up(view, {"s1", "s2", "x", "tester"}); }));
  auto x_members = members_of(here, x);
  CHECK(remote_view_lists(x_members, "tester=up"));
  CHECK(remote_view_lists(x_members, "s2=up"));
}

TEST_CASE("joining fails with the last seed's error when no seed answers", "[cluster][membership]") {
  local_node here;
  auto joined = here.node.blocking_join({"127.0.0.1:1", "127.0.0.1:2"});
  REQUIRE_FALSE(joined);
  CHECK(joined.error().kind == cluster_error::kind_type::unreachable);
  auto malformed = here.node.blocking_join({"no-port-here"});
  REQUIRE_FALSE(malformed);
  CHECK(malformed.error().message.find("host:port") != std::string::npos);
  CHECK(here.node.view().borrow()->up() == 1);  // alone, and up
  // The same seed list on every node names this node too: when no other seed answers, it starts the cluster.
  const std::string itself = "127.0.0.1:" + std::to_string(here.node.port());
  CHECK(here.node.blocking_join({itself, "127.0.0.1:1"}));
  CHECK(here.node.view().borrow()->up() == 1);
}

TEST_CASE("a killed member is down in every view, one that left is left, and a restarted one comes back",
          "[cluster][membership][failure]") {
  node_process a({"--name", "a"});
  node_process b({"--name", "b", "--seeds", address_of(a)});
  auto c = std::make_unique<node_process>(std::vector<std::string>{"--name", "c", "--seeds", address_of(a)});
  const std::uint16_t c_port = c->port;
  local_node here;
  REQUIRE(here.node.blocking_join({address_of(a)}));
  REQUIRE(view_reaches(here.node, [](const cluster_view& view) { return view.up() == 4; }));
  const member first_c = *here.node.view().borrow()->find("c");

  const auto killed_at = clock_type::now();
  c->process->kill(SIGKILL);
  CHECK(view_reaches(here.node, [](const cluster_view& view) { return has_status(view, "c", member::status_type::down); }));
  CHECK(clock_type::now() - killed_at < 500ms + 500ms);  // the nodes' failure timeout plus 0.5 s
  auto a_members = members_of(here, a);
  CHECK(remote_view_lists(a_members, "c=down"));

  b.process->signal(SIGTERM);  // b leaves on purpose
  CHECK(view_reaches(here.node, [](const cluster_view& view) { return has_status(view, "b", member::status_type::left); }));
  CHECK(remote_view_lists(a_members, "b=left"));

  node_process c_again({"--name", "c", "--port", std::to_string(c_port), "--seeds", address_of(a)});
  CHECK(view_reaches(here.node, [&first_c](const cluster_view& view) {
    const member* entry = view.find("c");
    return entry != nullptr && entry->status == member::status_type::up && entry->id != first_c.id &&
           entry->incarnation >= first_c.incarnation;
  }));
  CHECK(remote_view_lists(a_members, "c=up"));
  auto final_view = *here.node.view().borrow();
  CHECK(final_view.members.size() == 4);  // the restarted c replaced its old entry
}

TEST_CASE("a frozen member that resumes is up again in every view, and reachable again", "[cluster][membership][failure]") {
  node_process a({"--name", "a"});
  node_process b({"--name", "b", "--seeds", address_of(a)});
  local_node here;
  REQUIRE(here.node.blocking_join({address_of(a)}));
  REQUIRE(view_reaches(here.node, [](const cluster_view& view) { return exactly_up(view, {"a", "b", "tester"}); }));
  b.process->signal(SIGSTOP);
  REQUIRE(view_reaches(here.node, [](const cluster_view& view) { return has_status(view, "b", member::status_type::down); }));
  b.process->signal(SIGCONT);  // as after a long pause, or a partition that healed: nobody restarts anything
  CHECK(view_reaches(here.node, [](const cluster_view& view) { return exactly_up(view, {"a", "b", "tester"}); }));
  auto b_members = members_of(here, b);
  CHECK(remote_view_lists(b_members, "tester=up"));
  CHECK(remote_view_lists(b_members, "a=up"));
  auto at = must(here.node.blocking_connect("127.0.0.1", b.port));
  auto kv = must(here.node.blocking_lookup<kv_message>(at, "kv"));
  auto sum = kv.blocking_ask(add{1, 2});
  REQUIRE(sum);
  CHECK(*sum == 3);
}

// -- TLS ----------------------------------------------------------------------------------------------------

namespace {

// Runs the openssl command line; fails the test if it fails.
void openssl(const std::string& arguments) {
  const std::string command = "openssl " + arguments + " > /dev/null 2>&1";
  INFO(command);
  REQUIRE(std::system(command.c_str()) == 0);
}

// A certificate authority and certificates it signed, made with the openssl command line.
struct authority {
  authority(const std::filesystem::path& dir, const std::string& name) : dir(dir), name(name) {
    openssl("req -x509 -newkey rsa:2048 -nodes -days 1 -subj '/CN=" + name + "' -keyout '" + file("ca.key") +
            "' -out '" + file("ca.pem") + "'");
  }
  postal::cluster::tls_files issue(const std::string& who) const {
    openssl("req -newkey rsa:2048 -nodes -subj '/CN=" + who + "' -keyout '" + file(who + ".key") + "' -out '" +
            file(who + ".csr") + "'");
    openssl("x509 -req -days 1 -in '" + file(who + ".csr") + "' -CA '" + file("ca.pem") + "' -CAkey '" +
            file("ca.key") + "' -CAcreateserial -out '" + file(who + ".pem") + "'");
    return {file(who + ".pem"), file(who + ".key"), file("ca.pem")};
  }
  std::string file(const std::string& leaf) const { return (dir / (name + "-" + leaf)).string(); }
  std::filesystem::path dir;
  std::string name;
};

// This process as a node with `tls` (or plain), waiting at most 2 s for a peer.
struct tls_node {
  explicit tls_node(const postal::cluster::tls_files& tls)
      : rt(postal::cluster::enable({.workers = 1}, {100ms, 500ms}, tls)),
        node(rt, {.name = "tester", .cookie = cookie, .request_timeout = 2000ms}) {}
  postal::runtime rt;
  postal::cluster::node node;
};

}  // namespace

TEST_CASE("with TLS, a node whose certificate the cluster's authority signed connects; others are refused",
          "[cluster][tls]") {
  test_support::scratch_dir dir("postal-cluster-tls");
  const authority cluster_ca(dir.path, "cluster");
  const auto server_files = cluster_ca.issue("server");
  const auto client_files = cluster_ca.issue("client");
  const authority rogue_ca(dir.path, "rogue");
  const auto rogue_files = rogue_ca.issue("intruder");

  std::unique_ptr<node_process> server;
  {
    environment_guard environment({{"POSTAL_CLUSTER_TLS_CERTIFICATE", server_files.certificate.c_str()},
                                   {"POSTAL_CLUSTER_TLS_KEY", server_files.private_key.c_str()},
                                   {"POSTAL_CLUSTER_TLS_AUTHORITY", server_files.authority.c_str()}});
    server = std::make_unique<node_process>();  // the node process inherits the environment: TLS
  }

  {
    tls_node member(client_files);
    auto at = must(member.node.blocking_connect("127.0.0.1", server->port));
    auto kv = must(member.node.blocking_lookup<kv_message>(at, "kv"));
    auto sum = kv.blocking_ask(add{40, 2});
    REQUIRE(sum);
    CHECK(*sum == 42);
  }
  {
    tls_node intruder(rogue_files);  // a certificate of another authority
    CHECK_FALSE(intruder.node.blocking_connect("127.0.0.1", server->port));
  }
  {
    tls_node plain(postal::cluster::tls_files{});  // no TLS at all
    CHECK_FALSE(plain.node.blocking_connect("127.0.0.1", server->port));
  }
  CHECK_THROWS_AS(postal::cluster::enable({}, {}, postal::cluster::tls_files{.certificate = "only-this.pem"}),
                  std::invalid_argument);
}
