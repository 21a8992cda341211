// samples/kv-server: a mini Redis server built from postal actors (see server.hpp), for redis-cli and
// redis-benchmark. It listens on 127.0.0.1 until SIGINT or SIGTERM.
//   sample-kv-server --port 6380 [--shards 4] [--max-connections 10000] [--max-bulk BYTES]
//                    [--scheduler.max-threads=N and CAF's other options]
#include "server.hpp"

#include <csignal>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <string_view>
#include <vector>

int main(int argc, char** argv) {
  kv::server_options options;
  std::vector<char*> caf_args{argv[0]};  // what is not ours goes to CAF (e.g. --scheduler.max-threads=2)
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    const char* value = i + 1 < argc ? argv[i + 1] : "";
    if (flag == "--port") options.port = static_cast<std::uint16_t>(std::strtoul(value, nullptr, 10));
    else if (flag == "--shards") options.shards = std::strtoul(value, nullptr, 10);
    else if (flag == "--max-connections") options.max_connections = std::strtoul(value, nullptr, 10);
    else if (flag == "--max-bulk") options.max_bulk = std::strtoull(value, nullptr, 10);
    else {
      caf_args.push_back(argv[i]);
      continue;
    }
    ++i;
  }
  // Block the stop signals in every thread (the runtime's threads inherit the mask), then wait for one here.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  postal::runtime rt(static_cast<int>(caf_args.size()), caf_args.data());
  if (rt.help_printed()) return 0;
  try {
    kv::server server(rt, options);
    std::cout << "kv-server: listening on " << options.host << ":" << server.port() << " with " << options.shards
              << " shards" << std::endl;
    int received = 0;
    sigwait(&stop_signals, &received);
    std::cout << "kv-server: stopping (" << server.connections() << " connections open)" << std::endl;
  } catch (const std::exception& error) {
    std::cerr << "kv-server: " << error.what() << std::endl;
    return 1;
  }
  return 0;
}
