// postal-bench <scenario|all> [runs]: runs each scenario `runs` times (default 3), prints one line per run
// and "<scenario> MEDIAN rate=<n>/s", the format ../shared/peers/compare.sh pairs with the Tokio peer.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>

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

std::size_t workers() {
  if (const char* value = std::getenv("POSTAL_BENCH_WORKERS")) return std::strtoul(value, nullptr, 10);
  return 2;
}
}  // namespace bench

namespace {
void run(const std::string& name, const std::function<bench::outcome()>& scenario, int runs) {
  std::vector<double> rates;
  for (int r = 0; r < runs; ++r) {
    bench::outcome result = scenario();
    double rate = static_cast<double>(result.items) / result.seconds;
    std::printf("%s run%d: %.3fs items=%llu %srate=%.0f/s\n", name.c_str(), r, result.seconds,
                static_cast<unsigned long long>(result.items),
                result.extra.empty() ? "" : (result.extra + " ").c_str(), rate);
    std::fflush(stdout);
    rates.push_back(rate);
  }
  std::sort(rates.begin(), rates.end());
  std::printf("%s MEDIAN rate=%.0f/s\n", name.c_str(), rates[rates.size() / 2]);
  std::fflush(stdout);
}
}  // namespace

int main(int argc, char** argv) {
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
