// samples/channels: the four channels of postal, each in a few lines, run on postal's runtime (CAF's
// scheduler). Read mpsc_sample.cpp, oneshot_sample.cpp, broadcast_sample.cpp and watch_sample.cpp; this file
// only runs them in turn.
#include <postal/runtime.hpp>

#include <iostream>

#include "samples.hpp"

int main(int argc, char** argv) {
  postal::runtime runtime(argc, argv);  // worker count etc. from CAF's options: --scheduler.max-threads=2
  std::cout << "-- mpsc: two producers, one bounded channel\n";
  runtime.block_on(samples::two_producers_one_mpsc());
  std::cout << "-- oneshot: a reply from another task\n";
  runtime.block_on(samples::oneshot_reply());
  std::cout << "-- broadcast: every receiver sees every value\n";
  runtime.block_on(samples::broadcast_two_receivers());
  std::cout << "-- watch: receivers see the latest value\n";
  runtime.block_on(samples::watch_changes());
}
