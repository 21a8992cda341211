// postal-bench <scenario|all> [runs]: runs each scenario `runs` times (default 3), prints one line per run
// and "<scenario> MEDIAN rate=<n>/s", the format bench/README.md describes.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>
#include <unistd.h>
#include <utility>
#include <vector>

#include "bench.hpp"

namespace bench {
namespace {
std::map<std::string, std::function<outcome()>>& registry() {
  static std::map<std::string, std::function<outcome()>> scenarios;
  return scenarios;
}
}  // namespace

scenario::scenario(std::string name, std::function<outcome()> run) {
  registry().emplace(std::move(name), std::move(run));
}

void fail(const std::string& what) {
  std::fprintf(stderr, "postal-bench: CHECK FAILED: %s\n", what.c_str());
  std::fflush(stderr);
  std::_Exit(1);
}

std::vector<std::function<int(int, char**)>>& serve_hooks() {
  static std::vector<std::function<int(int, char**)>> hooks;
  return hooks;
}

std::string program_path() {
  char path[4096];
  const ssize_t length = ::readlink("/proc/self/exe", path, sizeof path - 1);
  if (length <= 0) fail("cannot find this program's path");
  return std::string(path, static_cast<std::size_t>(length));
}

std::size_t workers() {
  if (const char* value = std::getenv("POSTAL_BENCH_WORKERS")) return std::strtoul(value, nullptr, 10);
  return 2;
}
}  // namespace bench

namespace {
void run(const std::string& name, const std::function<bench::outcome()>& scenario, int runs) {
  std::vector<std::pair<double, std::string>> rates;  // with each run's extra, for the MEDIAN line
  for (int r = 0; r < runs; ++r) {
    bench::outcome result = scenario();
    double rate = static_cast<double>(result.items) / result.seconds;
    std::printf("%s run%d: %.3fs items=%llu %srate=%.0f/s\n", name.c_str(), r, result.seconds,
                static_cast<unsigned long long>(result.items),
                result.extra.empty() ? "" : (result.extra + " ").c_str(), rate);
    std::fflush(stdout);
    rates.emplace_back(rate, result.extra);
  }
  std::sort(rates.begin(), rates.end());
  const auto& median = rates[rates.size() / 2];
  std::printf("%s MEDIAN rate=%.0f/s%s%s\n", name.c_str(), median.first, median.second.empty() ? "" : " ",
              median.second.c_str());
  std::fflush(stdout);
}
}  // namespace

int main(int argc, char** argv) {
  for (auto& serve : bench::serve_hooks())
    if (const int code = serve(argc, argv); code >= 0) return code;
  std::string which = argc > 1 ? argv[1] : "all";
  int runs = argc > 2 ? std::atoi(argv[2]) : 3;
  auto& scenarios = bench::registry();
  if (runs < 1 || (which != "all" && !scenarios.contains(which))) {
    std::fprintf(stderr, "usage: postal-bench <scenario|all> [runs>=1]\nscenarios:");
    for (auto& [name, fn] : scenarios) std::fprintf(stderr, " %s", name.c_str());
    std::fprintf(stderr, "\n");
    return 2;
  }
  if (which == "all") {
    for (auto& [name, fn] : scenarios) run(name, fn, runs);
  } else {
    run(which, scenarios.at(which), runs);
  }
}
