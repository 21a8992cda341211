// samples/kv: the seed's example as it stands. main spawns the connection manager (an actor owning one
// connection to the Redis server at 127.0.0.1:6379); two tasks send Get and Set and await the oneshot
// responses.
//   sample-kv [--port 6379]      (start one with: redis-server --port 6379 --save '' --appendonly no)
#include <postal/redis.hpp>
#include <postal/runtime.hpp>

#include <cstdlib>
#include <iostream>
#include <string_view>

int main(int argc, char** argv) {
  postal::redis::connection_options options;  // 127.0.0.1:6379
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string_view(argv[i]) == "--port") options.port = static_cast<std::uint16_t>(std::atoi(argv[i + 1]));

  postal::runtime rt;
  auto manager = postal::redis::spawn_connection_manager(rt, options);

  // Task 1: Set "foo" to "bar", and wait for the response.
  auto t1 = rt.spawn([](postal::redis::connection manager) -> postal::task<bool> {
    postal::redis::set command{"foo", "bar", {}};  // the responder is filled in by ask / query
    auto response = co_await postal::redis::query(manager, std::move(command));
    if (!response) {
      std::cout << "t1: SET failed: " << response.error().message << std::endl;
      co_return false;
    }
    std::cout << "t1: SET foo bar -> OK" << std::endl;
    co_return true;
  }(manager));

  // Task 2: Get "foo", once t1 has stored it (the seed runs them concurrently; here t2 awaits t1 so the
  // output is the same every run).
  auto t2 = rt.spawn([](postal::redis::connection manager, postal::join_handle<bool> t1) -> postal::task<bool> {
    if (!co_await t1) co_return false;
    postal::redis::get command{"foo", {}};
    auto response = co_await postal::redis::query(manager, std::move(command));
    if (!response) {
      std::cout << "t2: GET failed: " << response.error().message << std::endl;
      co_return false;
    }
    std::cout << "t2: GET foo -> " << response->value_or("(nil)") << std::endl;
    co_return true;
  }(manager, std::move(t1)));

  const bool ok = t2.blocking_join();
  if (!ok)
    std::cerr << "sample-kv: is a Redis server listening on 127.0.0.1:" << options.port
              << "? (redis-server --port " << options.port << " --save '' --appendonly no)" << std::endl;
  return ok ? 0 : 1;
}
