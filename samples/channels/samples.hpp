// The four channel snippets of the sample, one per file, each a task run on postal's runtime by main.cpp.
#pragma once

#include <postal/task.hpp>

namespace samples {
postal::task<void> two_producers_one_mpsc();
postal::task<void> oneshot_reply();
postal::task<void> broadcast_two_receivers();
postal::task<void> watch_changes();
}  // namespace samples
