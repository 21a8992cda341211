// The scaffolding shared by postal-bench's scenarios: a scenario registry, the result check that fails
// loudly, and the runtime every scenario runs on (2 workers, like the Tokio peer). Not a test framework.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace bench {

/// What one run of a scenario measured: `items` counted for the rate, over `seconds`.
struct outcome {
  std::uint64_t items = 0;
  double seconds = 0;
  std::string extra;  // printed after the rate, e.g. "lagged=12"
};

/// Registers a scenario under `name` (called from static initialisers in each scenario file).
struct scenario {
  scenario(std::string name, std::function<outcome()> run);
};

/// Prints `what` and exits non-zero: a scenario's result was wrong (a lost or duplicated value).
[[noreturn]] void fail(const std::string& what);

/// Fails loudly unless `ok`. Cheap when it holds: hot loops call it per message.
inline void check(bool ok, const char* what) {
  if (!ok) [[unlikely]]
    fail(what);
}
inline void check(bool ok, const std::string& what) {
  if (!ok) [[unlikely]]
    fail(what);
}

/// The clock the scenarios time with.
using clock = std::chrono::steady_clock;
inline double seconds_since(clock::time_point start) {
  return std::chrono::duration<double>(clock::now() - start).count();
}

/// A scenario file may make this program serve as another process (the cluster scenarios' other nodes): it
/// adds a hook, and main() calls each first; a hook returns the exit code, or -1 when the arguments are not
/// its own.
std::vector<std::function<int(int, char**)>>& serve_hooks();
/// This program's path, to start it again as that second process.
std::string program_path();

/// Worker count of the runtime every scenario uses (2, like the Tokio peer; POSTAL_BENCH_WORKERS overrides).
std::size_t workers();

}  // namespace bench
