// Uses an installed postal the way a user's project does: headers from <postal/...>, targets from
// find_package(postal). Exits non-zero if a value goes missing.
#include <postal/config_loader.hpp>
#include <postal/group.hpp>
#include <postal/mpsc.hpp>
#include <postal/oneshot.hpp>
#include <postal/runtime.hpp>
#include <postal/task.hpp>

#include <cstdio>

namespace {
postal::task<int> sum_through_a_channel() {
  auto [tx, rx] = postal::mpsc::channel<int>(4);
  postal::spawn([](postal::mpsc::sender<int> tx) -> postal::task<void> {
    for (int i = 1; i <= 100; ++i) (void)co_await tx.send(i);
  }(std::move(tx)));
  int sum = 0;
  while (auto value = co_await rx.recv()) sum += *value;
  co_return sum;
}
}  // namespace

struct settings {
  int port = 0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(settings, port)

int main() {
  postal::runtime runtime(postal::runtime_options{.workers = 2});
  int sum = runtime.block_on(sum_through_a_channel());
  std::printf("consumer: sum of 1..100 through postal::mpsc = %d\n", sum);
  // postal::patterns: a topic and the config loader.
  postal::groups groups;
  auto topic = groups.topic<int>("numbers");
  auto subscription = topic.subscribe();
  const bool heard = topic.publish(7) == 1 && subscription.try_recv().value() == 7;
  auto loaded = postal::parse_config<settings>(R"({"port": 8080})", "inline");
  std::printf("consumer: topic %s, config port %d\n", heard ? "heard" : "NOT heard", loaded ? loaded->port : -1);
  return sum == 5050 && heard && loaded && loaded->port == 8080 ? 0 : 1;
}
