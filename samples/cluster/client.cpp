// samples/cluster's client: writes keys through one node of the sample cluster and reads them back through
// another, with postal's Redis connection manager (postal/redis.hpp), ten tasks at a time; it prints what
// it saw and exits 0 only when every key read back equals what was written.
//   sample-cluster-client --write-port 6401 --read-port 6402 [--keys 1000] [--prefix tour]
#include <postal/redis.hpp>
#include <postal/runtime.hpp>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>
#include <vector>

namespace {

constexpr std::size_t writers = 10;

postal::task<void> write_part(postal::redis::connection to, std::string prefix, std::size_t first, std::size_t keys,
                              std::atomic<std::size_t>& failed) {
  for (std::size_t i = first; i < keys; i += writers) {
    postal::redis::set store{prefix + ":" + std::to_string(i), "value-" + std::to_string(i), {}};
    auto stored = co_await postal::redis::query(to, std::move(store));
    if (!stored) {
      if (failed.fetch_add(1) == 0) std::cerr << "  SET failed: " << stored.error().message << "\n";
    }
  }
}

postal::task<void> read_part(postal::redis::connection from, std::string prefix, std::size_t first, std::size_t keys,
                             std::atomic<std::size_t>& wrong) {
  for (std::size_t i = first; i < keys; i += writers) {
    postal::redis::get fetch{prefix + ":" + std::to_string(i), {}};
    auto value = co_await postal::redis::query(from, std::move(fetch));
    if (!value || !*value || **value != "value-" + std::to_string(i)) {
      if (wrong.fetch_add(1) == 0)
        std::cerr << "  GET " << prefix << ":" << i << " gave "
                  << (!value ? value.error().message : !*value ? "nil" : **value) << "\n";
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> args;
  for (int i = 1; i + 1 < argc; i += 2) args[argv[i]] = argv[i + 1];
  if (!args.count("--write-port") || !args.count("--read-port")) {
    std::cerr << "usage: sample-cluster-client --write-port P --read-port P [--keys N] [--prefix TEXT]\n";
    return 2;
  }
  const auto write_port = static_cast<std::uint16_t>(std::stoul(args["--write-port"]));
  const auto read_port = static_cast<std::uint16_t>(std::stoul(args["--read-port"]));
  const std::size_t keys = args.count("--keys") ? std::stoul(args["--keys"]) : 1000;
  const std::string prefix = args.count("--prefix") ? args["--prefix"] : "tour";

  postal::runtime rt({.workers = 2});
  auto writer = postal::redis::spawn_connection_manager(rt, {.host = "127.0.0.1", .port = write_port});
  auto reader = postal::redis::spawn_connection_manager(rt, {.host = "127.0.0.1", .port = read_port});
  std::atomic<std::size_t> failed{0}, wrong{0};
  std::vector<postal::join_handle<void>> work;
  for (std::size_t w = 0; w < writers; ++w) work.push_back(rt.spawn(write_part(writer, prefix, w, keys, failed)));
  for (auto& one : work) one.blocking_join();
  work.clear();
  for (std::size_t w = 0; w < writers; ++w) work.push_back(rt.spawn(read_part(reader, prefix, w, keys, wrong)));
  for (auto& one : work) one.blocking_join();
  std::cout << "connection manager: " << keys - failed << " of " << keys << " keys written through :" << write_port
            << ", " << keys - wrong << " read back equal through :" << read_port << "\n";
  return failed == 0 && wrong == 0 ? 0 : 1;
}
