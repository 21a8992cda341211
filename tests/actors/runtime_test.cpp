// Tests of postal::runtime and postal::task on CAF's scheduler: results and exceptions through join handles,
// nested tasks, thousands of tasks, where woken tasks run, yield_now, racing wake-ups, CAF's configuration,
// misuse errors, and the shutdown rule (wait for tasks; cancel those that can never be resumed).
// Ordering tests use one worker, where CAF's queue is FIFO, instead of sleeps.
#include <postal/oneshot.hpp>
#include <postal/runtime.hpp>
#include <postal/task.hpp>
#include <postal/time.hpp>
#include <postal/watch.hpp>

#include <atomic>
#include <catch2/catch.hpp>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using postal::join_handle;
using postal::runtime;
using postal::runtime_options;
using postal::task;

task<int> constant(int value) {
  co_return value;
}
task<void> nothing() {
  co_return;
}
task<int> failing() {
  throw std::runtime_error("boom");
  co_return 0;
}

task<int> add_nested(int a, int b) {
  int x = co_await constant(a);
  int y = co_await constant(b);
  co_return x + y;
}

task<std::string> catch_nested() {
  try {
    co_await failing();
  } catch (const std::runtime_error& e) {
    co_return std::string("caught ") + e.what();
  }
  co_return "not thrown";
}

}  // namespace

TEST_CASE("block_on returns the task's value, runs void tasks and rethrows the task's exception",
          "[runtime]") {
  runtime rt(runtime_options{.workers = 2});
  CHECK(rt.block_on(constant(42)) == 42);
  rt.block_on(nothing());
  CHECK_THROWS_WITH(rt.block_on(failing()), "boom");
  CHECK(rt.worker_count() == 2);
}

TEST_CASE("awaiting a task runs it inline and gives its value or its exception", "[runtime][task]") {
  runtime rt(runtime_options{.workers = 2});
  CHECK(rt.block_on(add_nested(40, 2)) == 42);
  CHECK(rt.block_on(catch_nested()) == "caught boom");
}

TEST_CASE("a task that is never spawned or awaited never runs, and destroying it frees its frame", "[task]") {
  auto ran = std::make_shared<bool>(false);
  {
    auto unused = [](std::shared_ptr<bool> flag) -> task<void> {
      *flag = true;
      co_return;
    }(ran);
    CHECK(ran.use_count() == 2);  // the frame holds the argument
  }
  CHECK_FALSE(*ran);
  CHECK(ran.use_count() == 1);
}

TEST_CASE("join handles: awaited in a task, blocked on from a plain thread, detached", "[runtime]") {
  runtime rt(runtime_options{.workers = 2});
  SECTION("spawned from a task and awaited there") {
    int sum = rt.block_on([]() -> task<int> {
      auto first = postal::spawn(constant(1));
      auto second = postal::spawn(constant(2));
      co_return co_await first + co_await second;
    }());
    CHECK(sum == 3);
  }
  SECTION("spawned from main and joined from main") {
    auto handle = rt.spawn(constant(5));
    CHECK(handle.blocking_join() == 5);
    CHECK(handle.is_finished());
  }
  SECTION("an exception reaches the joiner") {
    auto handle = rt.spawn(failing());
    CHECK_THROWS_WITH(handle.blocking_join(), "boom");
  }
  SECTION("spawn_detached runs a task that has no join handle at all") {
    auto [tx, rx] = postal::oneshot::channel<int>();
    rt.spawn_detached([](postal::oneshot::sender<int> reply) -> task<void> {
      co_await postal::yield_now();
      (void)reply.send(11);
    }(std::move(tx)));
    auto value = rx.blocking_recv();
    REQUIRE(value);
    CHECK(*value == 11);
  }
  SECTION("a detached task keeps running to the end") {
    auto [tx, rx] = postal::oneshot::channel<int>();
    {
      auto detached = rt.spawn([](postal::oneshot::sender<int> reply) -> task<void> {
        co_await postal::yield_now();
        (void)reply.send(9);
      }(std::move(tx)));
    }
    auto value = rx.blocking_recv();
    REQUIRE(value);
    CHECK(*value == 9);
  }
}

TEST_CASE("ten thousand tasks relay a value down a chain of oneshot channels", "[runtime][stress]") {
  constexpr int length = 10'000;
  runtime rt(runtime_options{.workers = 2});
  int end = rt.block_on([]() -> task<int> {
    auto [first_tx, rx] = postal::oneshot::channel<int>();
    std::vector<join_handle<void>> links;
    links.reserve(length);
    for (int i = 0; i < length; ++i) {
      auto [tx, next_rx] = postal::oneshot::channel<int>();
      links.push_back(postal::spawn(
          [](postal::oneshot::receiver<int> in, postal::oneshot::sender<int> out) -> task<void> {
            auto value = co_await in;
            if (value) (void)out.send(*value + 1);
          }(std::move(rx), std::move(tx))));
      rx = std::move(next_rx);
    }
    (void)first_tx.send(0);
    auto last = co_await rx;
    for (auto& link : links) co_await link;
    co_return last ? *last : -1;
  }());
  CHECK(end == length);
}

TEST_CASE("thousands of tasks spawned from main and from tasks all finish and are joined",
          "[runtime][stress]") {
  runtime rt(runtime_options{.workers = 2});
  std::vector<join_handle<int>> handles;
  for (int i = 0; i < 2000; ++i) handles.push_back(rt.spawn(constant(i)));
  long long total = 0;
  for (auto& h : handles) total += h.blocking_join();
  CHECK(total == 1999LL * 2000 / 2);

  long long from_tasks = rt.block_on([]() -> task<long long> {
    std::vector<join_handle<int>> inner;
    for (int i = 0; i < 5000; ++i) inner.push_back(postal::spawn(add_nested(i, 1)));
    long long sum = 0;
    for (auto& h : inner) sum += co_await h;
    co_return sum;
  }());
  CHECK(from_tasks == 4999LL * 5000 / 2 + 5000);
}

TEST_CASE("a task woken by another task on the same worker runs before tasks queued in CAF", "[runtime]") {
  runtime rt(runtime_options{.workers = 1});
  std::mutex order_lock;
  std::vector<std::string> order;
  auto record = [&](std::string what) {
    std::lock_guard lock(order_lock);
    order.push_back(std::move(what));
  };
  rt.block_on([](auto* record) -> task<void> {
    auto [tx, rx] = postal::oneshot::channel<int>();
    auto waiter = postal::spawn([](postal::oneshot::receiver<int> rx, auto* record) -> task<void> {
      (void)co_await rx;
      (*record)("woken");
    }(std::move(rx), record));
    auto waker_task = postal::spawn([](postal::oneshot::sender<int> tx, auto* record) -> task<void> {
      auto queued = postal::spawn([](auto* record) -> task<void> {
        (*record)("queued");
        co_return;
      }(record));
      (void)tx.send(1);  // the waiter is parked: it runs next on this worker, before `queued`
      co_await queued;
    }(std::move(tx), record));
    co_await waiter;
    co_await waker_task;
  }(&record));
  REQUIRE(order.size() == 2);
  CHECK(order[0] == "woken");
  CHECK(order[1] == "queued");
}

TEST_CASE("tasks woken past the inline budget still run in the order they were woken", "[runtime]") {
  runtime rt(runtime_options{.workers = 1, .inline_budget = 2});
  std::string order;
  rt.block_on([](std::string* order) -> task<void> {
    std::vector<postal::oneshot::sender<int>> wakes;
    std::vector<join_handle<void>> waiters;
    for (int i = 0; i < 6; ++i) {
      auto [tx, rx] = postal::oneshot::channel<int>();
      wakes.push_back(std::move(tx));
      waiters.push_back(postal::spawn([](postal::oneshot::receiver<int> rx, std::string* order) -> task<void> {
        auto index = co_await rx;
        *order += static_cast<char>('0' + *index);
      }(std::move(rx), order)));
    }
    co_await postal::yield_now();  // behind the six: each starts and parks on its channel
    for (int i = 0; i < 6; ++i) (void)wakes[i].send(int{i});  // woken in order onto this worker's run list
    for (auto& waiter : waiters) co_await waiter;  // two run inline; four go to CAF's queue
  }(&order));
  CHECK(order == "012345");
}

TEST_CASE("yield_now lets the other queued tasks run before continuing", "[runtime]") {
  runtime rt(runtime_options{.workers = 1});
  std::string trace;
  rt.block_on([](std::string* trace) -> task<void> {
    auto step = [](std::string* trace, char name) -> task<void> {
      for (int i = 0; i < 5; ++i) {
        *trace += name;
        co_await postal::yield_now();
      }
    };
    auto a = postal::spawn(step(trace, 'a'));
    auto b = postal::spawn(step(trace, 'b'));
    co_await a;
    co_await b;
  }(&trace));
  CHECK(trace == "ababababab");
}

TEST_CASE("yield_here lets the tasks queued on this worker run first, and goes on at once when there are none",
          "[runtime]") {
  runtime rt(runtime_options{.workers = 1});
  std::string trace;
  rt.block_on([](std::string* trace) -> task<void> {
    auto note = [trace](bool behind_others) { *trace += behind_others ? 'Y' : 'n'; };
    note(co_await postal::yield_here());  // nothing else to run: no suspension
    auto [tx, rx] = postal::oneshot::channel<int>();
    auto waiter = postal::spawn([](postal::oneshot::receiver<int> rx, std::string* trace) -> task<void> {
      *trace += 's';
      (void)co_await rx;
      *trace += 'w';
    }(std::move(rx), trace));
    co_await postal::yield_now();         // behind the new task in the injection queue: it starts and parks
    (void)tx.send(1);                     // it is woken onto this worker's run list
    note(co_await postal::yield_here());  // and runs before this task goes on
    note(co_await postal::yield_here());  // nothing left
    co_await waiter;
  }(&trace));
  CHECK(trace == "nswYn");
  CHECK_FALSE(rt.block_on([]() -> task<bool> { co_return co_await postal::yield_here(); }()));
}

TEST_CASE("racing wake-ups from many threads never run a task on two threads at once", "[runtime][stress]") {
  constexpr int readers = 50;
  constexpr int writers = 4;
  constexpr int updates_per_writer = 2000;
  runtime rt(runtime_options{.workers = 2});
  auto [tx, rx] = postal::watch::channel<int>(0);
  std::atomic<int> overlaps{0};
  std::vector<join_handle<int>> handles;
  for (int r = 0; r < readers; ++r) {
    handles.push_back(rt.spawn([](postal::watch::receiver<int> rx, std::atomic<int>* overlaps) -> task<int> {
      std::atomic<bool> inside{false};
      int seen = 0;
      for (;;) {
        if (inside.exchange(true)) overlaps->fetch_add(1);
        auto changed = co_await rx.changed();
        inside.store(false);
        if (!changed) co_return seen;
        ++seen;
        if (inside.exchange(true)) overlaps->fetch_add(1);
        inside.store(false);
      }
    }(rx, &overlaps)));
  }
  std::vector<std::thread> threads;
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back([tx = tx]() mutable {
      for (int i = 0; i < updates_per_writer; ++i) tx.send_modify([](int& v) { ++v; });
    });
  }
  for (auto& t : threads) t.join();
  { auto last = std::move(tx); }
  for (auto& h : handles) {
    int seen = h.blocking_join();
    CHECK(seen >= 1);
    CHECK(seen <= writers * updates_per_writer);
  }
  CHECK(overlaps.load() == 0);
}

TEST_CASE("misuse is reported: blocking on a worker, spawning outside a task or after shutdown",
          "[runtime]") {
  runtime rt(runtime_options{.workers = 2});
  SECTION("a blocking channel call inside a task throws std::logic_error") {
    bool threw = rt.block_on([]() -> task<bool> {
      auto [tx, rx] = postal::oneshot::channel<int>();
      try {
        (void)rx.blocking_recv();
      } catch (const std::logic_error&) {
        co_return true;
      }
      co_return false;
    }());
    CHECK(threw);
  }
  SECTION("block_on inside a task throws std::logic_error") {
    bool threw = rt.block_on([](runtime* rt) -> task<bool> {
      try {
        rt->block_on(constant(1));
      } catch (const std::logic_error&) {
        co_return true;
      }
      co_return false;
    }(&rt));
    CHECK(threw);
  }
  SECTION("postal::spawn outside a task throws std::logic_error") {
    CHECK_THROWS_AS(postal::spawn(constant(1)), std::logic_error);
  }
  SECTION("spawning after shutdown throws std::logic_error") {
    rt.shutdown();
    CHECK_THROWS_AS(rt.spawn(constant(1)), std::logic_error);
  }
}

TEST_CASE("CAF's command line configures the runtime; a bad option is a clear error", "[runtime]") {
  SECTION("worker count") {
    std::string program = "test", option = "--scheduler.max-threads=3";
    char* argv[] = {program.data(), option.data(), nullptr};
    runtime rt(2, argv);
    CHECK(rt.worker_count() == 3);
    CHECK(rt.block_on(constant(3)) == 3);
  }
  SECTION("a malformed value") {
    std::string program = "test", option = "--scheduler.max-threads=many";
    char* argv[] = {program.data(), option.data(), nullptr};
    CHECK_THROWS_AS(runtime(2, argv), std::invalid_argument);
  }
}

TEST_CASE("destroying the runtime waits for running tasks to finish", "[runtime][shutdown]") {
  std::atomic<int> finished{0};
  {
    runtime rt(runtime_options{.workers = 2});
    for (int i = 0; i < 100; ++i) {
      (void)rt.spawn([](std::atomic<int>* finished) -> task<void> {
        for (int y = 0; y < 20; ++y) co_await postal::yield_now();
        finished->fetch_add(1);
      }(&finished));
    }
  }
  CHECK(finished.load() == 100);
}

TEST_CASE("bursts from main: tasks spawned or woken by the thousand all run, and shutdown waits for them",
          "[runtime][shutdown][stress]") {
  constexpr int count = 20000;
  SECTION("spawned, then the runtime destroyed at once: none is lost while queued") {
    std::atomic<int> ran{0};
    {
      runtime rt(runtime_options{.workers = 2});
      for (int i = 0; i < count; ++i)
        rt.spawn_detached([](std::atomic<int>* ran) -> task<void> {
          ran->fetch_add(1);
          co_return;
        }(&ran));
    }
    CHECK(ran.load() == count);
  }
  SECTION("parked on channels, then woken together by main") {
    runtime rt(runtime_options{.workers = 2});
    std::vector<postal::oneshot::sender<int>> senders;
    std::vector<join_handle<int>> handles;
    for (int i = 0; i < count; ++i) {
      auto [tx, rx] = postal::oneshot::channel<int>();
      senders.push_back(std::move(tx));
      handles.push_back(rt.spawn([](postal::oneshot::receiver<int> rx) -> task<int> {
        auto value = co_await rx;
        co_return value ? *value : -1;
      }(std::move(rx))));
    }
    for (int i = 0; i < count; ++i) REQUIRE(senders[i].send(int{i}).has_value());
    long long total = 0;
    for (auto& h : handles) total += h.blocking_join();
    CHECK(total == static_cast<long long>(count - 1) * count / 2);
  }
}

TEST_CASE("shutdown cancels tasks that can never be resumed, oldest first, and wakes what they held",
          "[runtime][shutdown]") {
  join_handle<std::string> first;
  join_handle<std::string> second;
  join_handle<void> lonely;
  std::shared_ptr<int> held_by_lonely = std::make_shared<int>(1);
  {
    runtime rt(runtime_options{.workers = 2});
    auto [to_second, second_rx] = postal::oneshot::channel<int>();
    auto [to_first, first_rx] = postal::oneshot::channel<int>();
    // A deadlock: each waits for the other. Cancelling `first` (the oldest) drops its sender, so `second`
    // wakes with the closed error and finishes normally.
    first =
        rt.spawn([](postal::oneshot::receiver<int> rx, postal::oneshot::sender<int> tx) -> task<std::string> {
          auto got = co_await rx;
          (void)tx.send(1);
          co_return got ? "first got a value" : "first saw closed";
        }(std::move(first_rx), std::move(to_second)));
    second =
        rt.spawn([](postal::oneshot::receiver<int> rx, postal::oneshot::sender<int> tx) -> task<std::string> {
          auto got = co_await rx;
          (void)tx.send(2);
          co_return got ? "second got a value" : "second saw closed";
        }(std::move(second_rx), std::move(to_first)));
    // Waits on a channel whose sender main keeps until after the runtime is gone.
    auto [keep, lonely_rx] = postal::oneshot::channel<int>();
    lonely = rt.spawn([](postal::oneshot::receiver<int> rx, std::shared_ptr<int> held) -> task<void> {
      (void)co_await rx;
      (void)held;
    }(std::move(lonely_rx), held_by_lonely));
    rt.shutdown();
    CHECK(rt.live_tasks() == 0);
    CHECK(held_by_lonely.use_count() == 1);  // the cancelled frame released what it held
  }
  CHECK_THROWS_AS(first.blocking_join(), postal::task_cancelled);
  CHECK(second.blocking_join() == "second saw closed");
  CHECK_THROWS_AS(lonely.blocking_join(), postal::task_cancelled);
}

TEST_CASE("sleep_for suspends a task for at least the duration; earlier deadlines fire first",
          "[runtime][timers]") {
  using namespace std::chrono_literals;
  runtime rt(runtime_options{.workers = 1});
  std::string order;
  auto elapsed = rt.block_on([](std::string* order) -> task<std::chrono::steady_clock::duration> {
    auto start = std::chrono::steady_clock::now();
    auto late = postal::spawn([](std::string* order) -> task<void> {
      co_await postal::sleep_for(40ms);
      *order += "late ";
    }(order));
    auto early = postal::spawn([](std::string* order) -> task<void> {
      co_await postal::sleep_for(10ms);
      *order += "early ";
    }(order));
    co_await late;
    co_await early;
    co_await postal::sleep_until(start - 1s);  // a deadline in the past does not suspend
    co_return std::chrono::steady_clock::now() - start;
  }(&order));
  CHECK(order == "early late ");
  CHECK(elapsed >= 40ms);
}
