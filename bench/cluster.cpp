// The cluster scenarios: a second process (this same program, started with --serve-node) serves on
// 127.0.0.1; this process connects to it and measures. Each has a plain CAF twin (_caf) that does the same
// with CAF remote actors and CAF's defaults:
//   remote_tell / remote_tell_caf  one producer tells 1 M 32-byte messages to a consuming actor on the other
//                                  node; the rate counts messages until the consumer's tally (sent last, in
//                                  order behind them) comes back; both processes' memory is reported
//   remote_ask / remote_ask_caf    20 k sequential round trips; the MEDIAN line carries p50_us= and p99_us=
//   remote_ask50                   50 tasks asking at once, 2 k round trips each
// Every scenario checks that each message arrived once and in order.
#include <postal/actor.hpp>
#include <postal/cluster.hpp>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <functional>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <future>
#include <string>
#include <variant>
#include <vector>

#include "bench.hpp"
#include "process.hpp"


namespace {

constexpr std::uint64_t tell_count = 1'000'000;
constexpr std::uint64_t ask_count = 20'000;
constexpr int concurrent_askers = 50;
constexpr std::uint64_t asks_per_asker = 2'000;
const std::string cookie = "postal-bench-cookie";

// -- the messages: postal's and CAF's are the same 32 bytes --------------------------------------------------
struct item {
  std::uint64_t sequence = 0, a = 0, b = 0, c = 0;
};
struct tally {  // (received, out of order)
  using reply_type = std::pair<std::uint64_t, std::uint64_t>;
};
struct ping {
  std::uint64_t value = 0;
  using reply_type = std::uint64_t;
};
using sink_message = std::variant<item, tally>;
using echo_message = std::variant<ping>;
template <class Inspector>
auto inspect(Inspector& f, item& x) {
  return f(x.sequence, x.a, x.b, x.c);
}
template <class Inspector>
auto inspect(Inspector& f, tally&) {
  return f();
}
template <class Inspector>
auto inspect(Inspector& f, ping& x) {
  return f(x.value);
}

class counting_sink : public postal::actor<sink_message> {
 public:
  void handle(item& m) {
    if (m.sequence != next_) ++out_of_order_;
    next_ = m.sequence + 1;
    ++received_;
  }
  std::pair<std::uint64_t, std::uint64_t> handle(tally&) {
    auto result = std::pair{received_, out_of_order_};
    received_ = out_of_order_ = next_ = 0;
    return result;
  }

 private:
  std::uint64_t next_ = 0, received_ = 0, out_of_order_ = 0;
};
class echo : public postal::actor<echo_message> {
 public:
  std::uint64_t handle(ping& p) { return p.value; }
};

}  // namespace

struct caf_item {
  std::uint64_t sequence = 0, a = 0, b = 0, c = 0;
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, caf_item& x) {
  return f(caf::meta::type_name("caf_item"), x.sequence, x.a, x.b, x.c);
}
using caf_tally_atom = caf::atom_constant<caf::atom("tally")>;

namespace {

// -- the serving process ----------------------------------------------------------------------------------------

struct caf_server_config : caf::actor_system_config {
  caf_server_config() {
    load<caf::io::middleman>();
    add_message_type<caf_item>("caf_item");
  }
};

caf::behavior caf_sink() {
  auto state = std::make_shared<std::array<std::uint64_t, 3>>();  // next, received, out of order
  return {
      [state](const caf_item& m) {
        auto& [next, received, disorder] = *state;
        if (m.sequence != next) ++disorder;
        next = m.sequence + 1;
        ++received;
      },
      [state](caf_tally_atom) {
        auto& [next, received, disorder] = *state;
        auto result = caf::make_message(received, disorder);
        next = received = disorder = 0;
        return result;
      },
      [](std::uint64_t value) { return value; },
  };
}

// Serves until its standard input closes (the measuring process ended) or it is killed.
int serve_node(const std::string& kind) {
  if (kind == "caf") {
    caf_server_config config;
    caf::actor_system system{config};
    auto sink = system.spawn(caf_sink);
    auto port = system.middleman().publish(sink, 0, "127.0.0.1");
    if (!port) return 1;
    bench::report_port_and_serve(*port);
    caf::anon_send_exit(sink, caf::exit_reason::user_shutdown);
    return 0;
  }
  postal::runtime rt(postal::cluster::enable({.workers = bench::workers()}));
  postal::cluster::node node(rt, {.name = "bench-server", .cookie = cookie});
  node.publish("sink", postal::spawn_actor<counting_sink>(rt, postal::actor_options{}));
  node.publish("echo", postal::spawn_actor<echo>(rt, postal::actor_options{}));
  bench::report_port_and_serve(node.port());
  return 0;
}

const bool serve_hook = [] {
  bench::serve_hooks().push_back([](int argc, char** argv) -> int {
    if (argc >= 3 && std::strcmp(argv[1], "--serve-node") == 0) return serve_node(argv[2]);
    return -1;
  });
  return true;
}();

double own_resident_mb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1024;
  return 0;
}

std::string percentiles(std::vector<double>& micros) {
  std::sort(micros.begin(), micros.end());
  char text[96];
  std::snprintf(text, sizeof text, "p50_us=%.1f p99_us=%.1f", micros[micros.size() / 2],
                micros[micros.size() * 99 / 100]);
  return text;
}

// A postal node connected to a fresh serving process.
struct postal_client {
  bench::node_process server{{"--serve-node", "postal"}};
  postal::runtime rt{postal::cluster::enable({.workers = bench::workers()})};
  postal::cluster::node node{rt, {.name = "bench-client", .cookie = cookie}};
  postal::cluster::peer peer = [this] {
    auto connected = node.blocking_connect("127.0.0.1", server.port());
    if (!connected) bench::fail("connect: " + connected.error().message);
    return *connected;
  }();
  template <class Message>
  postal::actor_ref<Message> lookup(const char* name) {
    auto found = node.blocking_lookup<Message>(peer, name);
    if (!found) bench::fail(std::string("lookup: ") + found.error().message);
    return *found;
  }
};

const bench::scenario remote_tell("remote_tell", [] {
  postal_client client;
  auto sink = client.lookup<sink_message>("sink");
  const double before_mb = own_resident_mb();
  auto start = bench::clock::now();
  auto counted = client.rt.block_on([](postal::actor_ref<sink_message> sink) -> postal::task<tally::reply_type> {
    for (std::uint64_t i = 0; i < tell_count; ++i) {
      item next{i, i, i, i};
      bench::check(static_cast<bool>(co_await sink.tell(std::move(next))), "remote_tell: a tell failed");
    }
    tally request;
    auto result = co_await sink.ask(std::move(request));
    bench::check(result.has_value(), "remote_tell: no tally");
    co_return *result;
  }(sink));
  const double seconds = bench::seconds_since(start);
  bench::check(counted.first == tell_count, "remote_tell: messages lost or duplicated");
  bench::check(counted.second == 0, "remote_tell: messages out of order");
  char extra[128];
  std::snprintf(extra, sizeof extra, "client_rss_growth_mb=%.0f server_peak_mb=%.0f",
                std::max(0.0, own_resident_mb() - before_mb), client.server.peak_mb());
  return bench::outcome{tell_count, seconds, extra};
});

struct caf_client_config : caf::actor_system_config {
  caf_client_config() {
    load<caf::io::middleman>();
    add_message_type<caf_item>("caf_item");
  }
};

const bench::scenario remote_tell_caf("remote_tell_caf", [] {
  bench::node_process server({"--serve-node", "caf"});
  caf_client_config config;
  caf::actor_system system{config};
  auto sink = system.middleman().remote_actor("127.0.0.1", server.port());
  if (!sink) bench::fail("remote_actor: " + caf::to_string(sink.error()));
  const double before_mb = own_resident_mb();
  caf::scoped_actor self{system};
  auto start = bench::clock::now();
  for (std::uint64_t i = 0; i < tell_count; ++i) self->send(*sink, caf_item{i, i, i, i});
  std::uint64_t received = 0, disorder = 0;
  self->request(*sink, caf::infinite, caf_tally_atom::value)
      .receive([&](std::uint64_t r, std::uint64_t d) { received = r, disorder = d; },
               [&](caf::error& e) { bench::fail("remote_tell_caf: " + caf::to_string(e)); });
  const double seconds = bench::seconds_since(start);
  bench::check(received == tell_count, "remote_tell_caf: messages lost or duplicated");
  bench::check(disorder == 0, "remote_tell_caf: messages out of order");
  char extra[128];
  std::snprintf(extra, sizeof extra, "client_rss_growth_mb=%.0f server_peak_mb=%.0f",
                std::max(0.0, own_resident_mb() - before_mb), server.peak_mb());
  return bench::outcome{tell_count, seconds, extra};
});

const bench::scenario remote_ask("remote_ask", [] {
  postal_client client;
  auto target = client.lookup<echo_message>("echo");
  std::vector<double> micros;
  micros.reserve(ask_count);
  auto start = bench::clock::now();
  client.rt.block_on([](postal::actor_ref<echo_message> target, std::vector<double>& micros) -> postal::task<void> {
    for (std::uint64_t i = 0; i < ask_count; ++i) {
      auto sent = bench::clock::now();
      ping request{i};
      auto answer = co_await target.ask(std::move(request));
      micros.push_back(std::chrono::duration<double, std::micro>(bench::clock::now() - sent).count());
      bench::check(answer.has_value() && *answer == i, "remote_ask: a wrong or missing answer");
    }
  }(target, micros));
  const double seconds = bench::seconds_since(start);
  return bench::outcome{ask_count, seconds, percentiles(micros)};
});

const bench::scenario remote_ask_caf("remote_ask_caf", [] {
  bench::node_process server({"--serve-node", "caf"});
  caf_client_config config;
  caf::actor_system system{config};
  auto target = system.middleman().remote_actor("127.0.0.1", server.port());
  if (!target) bench::fail("remote_actor: " + caf::to_string(target.error()));
  std::vector<double> micros;
  micros.reserve(ask_count);
  std::promise<void> done;
  auto asker = system.spawn(
      [](caf::event_based_actor* self, caf::actor target, std::vector<double>* micros,
         std::promise<void>* done) -> caf::behavior {
        auto next = std::make_shared<std::function<void(std::uint64_t)>>();
        *next = [=](std::uint64_t i) {
          auto sent = bench::clock::now();
          self->request(target, caf::infinite, i).then([=](std::uint64_t answer) {
            micros->push_back(std::chrono::duration<double, std::micro>(bench::clock::now() - sent).count());
            bench::check(answer == i, "remote_ask_caf: a wrong answer");
            if (i + 1 == ask_count)
              done->set_value();
            else
              (*next)(i + 1);
          });
        };
        return {[=](caf::ok_atom) { (*next)(0); }};
      },
      *target, &micros, &done);
  auto start = bench::clock::now();
  caf::anon_send(asker, caf::ok_atom::value);
  done.get_future().get();
  const double seconds = bench::seconds_since(start);
  caf::anon_send_exit(asker, caf::exit_reason::user_shutdown);
  return bench::outcome{ask_count, seconds, percentiles(micros)};
});

const bench::scenario remote_ask50("remote_ask50", [] {
  postal_client client;
  auto target = client.lookup<echo_message>("echo");
  std::vector<postal::join_handle<void>> askers;
  auto start = bench::clock::now();
  for (int a = 0; a < concurrent_askers; ++a)
    askers.push_back(client.rt.spawn([](postal::actor_ref<echo_message> target, int a) -> postal::task<void> {
      for (std::uint64_t i = 0; i < asks_per_asker; ++i) {
        ping request{i * 100 + static_cast<std::uint64_t>(a)};
        auto answer = co_await target.ask(std::move(request));
        bench::check(answer.has_value() && *answer == i * 100 + static_cast<std::uint64_t>(a),
                     "remote_ask50: a wrong or missing answer");
      }
    }(target, a)));
  for (auto& asker : askers) asker.blocking_join();
  const double seconds = bench::seconds_since(start);
  return bench::outcome{concurrent_askers * asks_per_asker, seconds, {}};
});

}  // namespace
