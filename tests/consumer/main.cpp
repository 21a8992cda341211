// Uses an installed postal the way a user's project does: headers from <postal/...>, targets from
// find_package(postal). Exits non-zero if a value goes missing.
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

int main() {
  postal::runtime runtime(postal::runtime_options{.workers = 2});
  int sum = runtime.block_on(sum_through_a_channel());
  std::printf("consumer: sum of 1..100 through postal::mpsc = %d\n", sum);
  return sum == 5050 ? 0 : 1;
}
