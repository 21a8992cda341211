// Tests of postal actors: tell / ask from tasks and plain threads, one message at a time (a handler that
// awaits holds the mailbox), backpressure that suspends the sending task and not its worker, stop
// policies, supervision (stop, restart with intensity, escalate), monitors, kill, and many actors.
// Ordering is made deterministic with oneshot gates and latches, never with sleeps.
#include <postal/actor.hpp>
#include <postal/runtime.hpp>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <catch2/catch.hpp>
#include <functional>
#include <map>
#include <mutex>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

namespace {

using postal::actor_options;
using postal::ask_error;
using postal::exit_reason;
using postal::runtime;
using postal::runtime_options;
using postal::supervision;
using postal::task;

// --- a key-value actor -------------------------------------------------------------------------------

struct put {
  std::string key;
  int value = 0;
};
struct get {
  std::string key;
  postal::responder<std::optional<int>> reply;
};
struct boom {};  // the handler throws
struct count {   // how many messages this instance has handled
  postal::responder<int> reply;
};
struct quit {
  postal::stop_mode mode = postal::stop_mode::drain;
};
using kv_message = std::variant<put, get, boom, count, quit>;

class kv_store : public postal::actor<kv_message> {
 public:
  explicit kv_store(std::shared_ptr<std::atomic<int>> starts = nullptr) : starts_(std::move(starts)) {}
  void on_start() override {
    if (starts_) starts_->fetch_add(1);
  }
  void handle(put& m) {
    data_[m.key] = m.value;
    ++handled_;
  }
  void handle(get& m) {
    ++handled_;
    auto found = data_.find(m.key);
    (void)m.reply.send(found == data_.end() ? std::nullopt : std::optional<int>(found->second));
  }
  void handle(boom&) { throw std::runtime_error("boom"); }
  void handle(count& m) { (void)m.reply.send(++handled_); }
  void handle(quit& m) { stop(m.mode); }

 private:
  std::shared_ptr<std::atomic<int>> starts_;
  std::map<std::string, int> data_;
  int handled_ = 0;
};

task<std::optional<int>> put_then_get(postal::actor_ref<kv_message> kv) {
  put first{"a", 1};
  co_await kv.tell(std::move(first));
  get request{"a", {}};  // a named local: g++ 12 miscompiles braced temporaries inside co_await
  auto answer = co_await kv.ask(std::move(request));
  co_return answer ? *answer : std::nullopt;
}

// Collects the items told between two on_idle calls as one batch; `hold` keeps it busy until opened, and
// `next_batch` is answered by the next on_idle that flushes a batch, with that batch.
namespace batching {
struct hold {
  postal::oneshot::receiver<bool> open;
};
struct item {
  int value = 0;
};
struct next_batch {
  postal::responder<std::vector<int>> reply;
};
using message = std::variant<hold, item, next_batch>;
class batcher : public postal::actor<message> {
 public:
  task<void> handle(hold& h) { (void)co_await h.open; }
  void handle(item& i) { pending_.push_back(i.value); }
  void handle(next_batch& n) { waiting_ = std::move(n.reply); }
  void on_idle() override {
    if (pending_.empty()) return;
    if (waiting_) (void)std::exchange(waiting_, std::nullopt)->send(pending_);
    pending_.clear();
  }

 private:
  std::vector<int> pending_;
  std::optional<postal::responder<std::vector<int>>> waiting_;
};
}  // namespace batching

TEST_CASE("on_idle runs when the mailbox is found empty, after the messages queued before it", "[actor]") {
  using namespace batching;
  runtime rt(runtime_options{.workers = 2});
  auto ref = postal::spawn_actor<batcher>(rt, actor_options{});
  auto [open, opened] = postal::oneshot::channel<bool>();
  REQUIRE(ref.blocking_tell(hold{std::move(opened)}));
  // Queued while the actor is held: five items, then the request for the next batch.
  for (int i = 0; i < 5; ++i) REQUIRE(ref.blocking_tell(item{i}));
  auto [batch_reply, batch] = postal::oneshot::channel<std::vector<int>>();
  REQUIRE(ref.blocking_tell(next_batch{std::move(batch_reply)}));
  (void)open.send(true);
  // All of it was queued before the actor looked for more, so no on_idle ran in between; the on_idle that
  // then finds the mailbox empty answers with the five items.
  auto first = batch.blocking_recv();
  REQUIRE(first);
  CHECK(*first == std::vector<int>{0, 1, 2, 3, 4});
  // One told later is a batch of its own.
  auto [reply, answer] = postal::oneshot::channel<std::vector<int>>();
  REQUIRE(ref.blocking_tell(next_batch{std::move(reply)}));
  REQUIRE(ref.blocking_tell(item{5}));
  auto second = answer.blocking_recv();
  REQUIRE(second);
  CHECK(*second == std::vector<int>{5});
}

// Without the turn for the queued tasks, the first batch would hold item 0 alone.
TEST_CASE("messages that the tasks queued on the actor's worker send at once join on_idle's batch",
          "[actor]") {
  using namespace batching;
  runtime rt(runtime_options{.workers = 1});  // one worker: the run order below is fixed
  auto ref = postal::spawn_actor<batcher>(rt, actor_options{});
  auto [reply, answer] = postal::oneshot::channel<std::vector<int>>();
  rt.block_on([](postal::actor_ref<message> ref, postal::responder<std::vector<int>> reply) -> task<void> {
    next_batch request{std::move(reply)};
    (void)co_await ref.tell(std::move(request));
    std::vector<postal::oneshot::sender<bool>> gates;
    std::vector<postal::join_handle<void>> senders;
    for (int i = 1; i <= 4; ++i) {
      auto [open, opened] = postal::oneshot::channel<bool>();
      gates.push_back(std::move(open));
      senders.push_back(postal::spawn(
          [](postal::oneshot::receiver<bool> opened, postal::actor_ref<message> ref, int i) -> task<void> {
            (void)co_await opened;
            item next{i};
            (void)co_await ref.tell(std::move(next));
          }(std::move(opened), ref, i)));
    }
    co_await postal::yield_now();  // the senders start and wait at their gates
    item first{0};
    (void)co_await ref.tell(std::move(first));  // the actor is woken onto this worker's run list,
    for (auto& gate : gates) (void)gate.send(true);  // and the senders behind it
    for (auto& sender : senders) co_await sender;
  }(ref, std::move(reply)));
  auto batch = answer.blocking_recv();
  REQUIRE(batch);
  CHECK(*batch == std::vector<int>{0, 1, 2, 3, 4});
}

}  // namespace

TEST_CASE("an actor answers tell and ask from a task and from main", "[actor]") {
  runtime rt(runtime_options{.workers = 2});
  auto kv = postal::spawn_actor<kv_store>(rt, actor_options{});
  CHECK(rt.block_on(put_then_get(kv)) == std::optional<int>(1));

  REQUIRE(kv.blocking_tell(put{"b", 2}));
  auto answer = kv.blocking_ask(get{"b", {}});
  REQUIRE(answer);
  CHECK(*answer == std::optional<int>(2));
  auto missing = kv.blocking_ask(get{"zzz", {}});
  REQUIRE(missing);
  CHECK_FALSE(missing->has_value());

  auto monitor = kv.monitor();
  { auto last = std::move(kv); }  // every ref gone: it drains and stops normally
  CHECK(monitor.blocking_exit() == exit_reason{});
}

TEST_CASE("an actor asks another actor from its handler", "[actor]") {
  struct relay_get {
    std::string key;
    postal::responder<std::optional<int>> reply;
  };
  using relay_message = std::variant<relay_get>;
  class relay : public postal::actor<relay_message> {
   public:
    explicit relay(postal::actor_ref<kv_message> store) : store_(std::move(store)) {}
    task<void> handle(relay_get& m) {
      get request{m.key, {}};
      auto answer = co_await store_.ask(std::move(request));
      (void)m.reply.send(answer ? *answer : std::nullopt);
    }

   private:
    postal::actor_ref<kv_message> store_;
  };
  runtime rt(runtime_options{.workers = 2});
  auto kv = postal::spawn_actor<kv_store>(rt, actor_options{});
  REQUIRE(kv.blocking_tell(put{"x", 7}));
  auto front = postal::spawn_actor<relay>(rt, actor_options{}, kv);
  auto answer = front.blocking_ask(relay_get{"x", {}});
  REQUIRE(answer);
  CHECK(*answer == std::optional<int>(7));
}

TEST_CASE("while a handler awaits, the actor takes no other message", "[actor]") {
  struct hold {
    postal::oneshot::sender<int> entered;
    std::shared_ptr<postal::oneshot::receiver<int>> gate;
  };
  struct note {};
  struct seen {
    postal::responder<int> reply;
  };
  using message = std::variant<hold, note, seen>;
  class holder : public postal::actor<message> {
   public:
    task<void> handle(hold& m) {
      (void)m.entered.send(1);
      (void)co_await *m.gate;  // the mailbox waits with us
    }
    void handle(note&) { ++notes_; }
    void handle(seen& m) { (void)m.reply.send(notes_); }

   private:
    int notes_ = 0;
  };
  runtime rt(runtime_options{.workers = 2});
  auto actor = postal::spawn_actor<holder>(rt, actor_options{.mailbox_capacity = 8});
  auto [entered_tx, entered_rx] = postal::oneshot::channel<int>();
  auto [gate_tx, gate_rx] = postal::oneshot::channel<int>();
  REQUIRE(actor.blocking_tell(
      hold{std::move(entered_tx), std::make_shared<postal::oneshot::receiver<int>>(std::move(gate_rx))}));
  REQUIRE(entered_rx.blocking_recv());
  REQUIRE(actor.blocking_tell(note{}));
  REQUIRE(actor.blocking_tell(note{}));
  CHECK(actor.capacity() == 6);  // both notes still queued: nothing was taken while the handler waits
  (void)gate_tx.send(1);
  auto notes = actor.blocking_ask(seen{});
  REQUIRE(notes);
  CHECK(*notes == 2);
}

TEST_CASE("a handler returning std::optional<task<void>> is awaited only when it returns a task", "[actor]") {
  struct step {
    int id = 0;
    std::shared_ptr<postal::oneshot::receiver<int>> gate;  // wait for it, if given
    bool fail_later = false;                                // throw from the task, after the gate
  };
  struct log {
    postal::responder<std::vector<int>> reply;
  };
  using message = std::variant<step, log>;
  class stepper : public postal::actor<message> {
   public:
    std::optional<task<void>> handle(step& m) {
      seen_.push_back(m.id);
      if (!m.gate) return std::nullopt;  // done at once
      return finish(m);
    }
    void handle(log& m) { (void)m.reply.send(seen_); }

   private:
    task<void> finish(step& m) {
      (void)co_await *m.gate;
      if (m.fail_later) throw std::runtime_error("failed after waiting");
      seen_.push_back(-m.id);
    }
    std::vector<int> seen_;
  };
  runtime rt(runtime_options{.workers = 2});
  auto actor = postal::spawn_actor<stepper>(rt, actor_options{.mailbox_capacity = 8});
  auto [open, opened] = postal::oneshot::channel<int>();
  REQUIRE(actor.blocking_tell(step{1, nullptr}));
  REQUIRE(actor.blocking_tell(step{2, std::make_shared<postal::oneshot::receiver<int>>(std::move(opened))}));
  REQUIRE(actor.blocking_tell(step{3, nullptr}));
  (void)open.send(1);
  auto first = actor.blocking_ask(log{});
  REQUIRE(first);
  CHECK(*first == std::vector<int>{1, 2, -2, 3});  // 3 waited for 2's task

  // An exception from the returned task is the handler's failure: the default policy stops the actor.
  auto [fail_open, fail_opened] = postal::oneshot::channel<int>();
  auto monitor = actor.monitor();
  REQUIRE(actor.blocking_tell(step{4, std::make_shared<postal::oneshot::receiver<int>>(std::move(fail_opened)), true}));
  (void)fail_open.send(1);
  auto reason = monitor.blocking_exit();
  CHECK(reason.is_failed());
  CHECK(reason.message == "failed after waiting");
}

TEST_CASE("a full mailbox suspends the sending tasks, not their worker threads", "[actor][backpressure]") {
  struct hold {
    std::shared_ptr<postal::oneshot::receiver<int>> gate;
  };
  struct item {
    int value = 0;
  };
  struct total {
    postal::responder<long> reply;
  };
  using message = std::variant<hold, item, total>;
  class sink : public postal::actor<message> {
   public:
    task<void> handle(hold& m) { (void)co_await *m.gate; }
    void handle(item& m) { sum_ += m.value; }
    void handle(total& m) { (void)m.reply.send(sum_); }

   private:
    long sum_ = 0;
  };
  constexpr int senders = 100;
  runtime rt(runtime_options{.workers = 2});
  auto blocked = postal::spawn_actor<sink>(rt, actor_options{.mailbox_capacity = 1});
  auto [gate_tx, gate_rx] = postal::oneshot::channel<int>();
  REQUIRE(blocked.blocking_tell(hold{std::make_shared<postal::oneshot::receiver<int>>(std::move(gate_rx))}));
  std::vector<postal::join_handle<bool>> tellers;
  for (int i = 1; i <= senders; ++i) {
    tellers.push_back(rt.spawn([](postal::actor_ref<message> target, int value) -> task<bool> {
      item one{value};
      auto sent = co_await target.tell(std::move(one));
      co_return sent.has_value();
    }(blocked, i)));
  }
  // At most one teller got its item into the mailbox; the others wait. The workers are free: another
  // actor still answers.
  auto other = postal::spawn_actor<kv_store>(rt, actor_options{});
  for (int round = 0; round < 10; ++round) {
    REQUIRE(other.blocking_tell(put{"k", round}));
    auto answer = other.blocking_ask(get{"k", {}});
    REQUIRE(answer);
    CHECK(*answer == std::optional<int>(round));
  }
  int finished = 0;
  for (auto& t : tellers) finished += t.is_finished() ? 1 : 0;
  CHECK(finished <= 1);
  (void)gate_tx.send(1);
  for (auto& t : tellers) CHECK(t.blocking_join());
  auto sum = blocked.blocking_ask(total{});
  REQUIRE(sum);
  CHECK(*sum == senders * (senders + 1) / 2);
}

TEST_CASE("ask ends with an error, never a hang, when the actor stops or fails", "[actor][lifecycle]") {
  runtime rt(runtime_options{.workers = 2});
  SECTION("a request queued behind a stop that drops the mailbox gets no_reply") {
    auto kv = postal::spawn_actor<kv_store>(rt, actor_options{});
    // Either the get is queued before the actor handles the stop (dropped: no_reply) or after (closed).
    REQUIRE(kv.blocking_tell(quit{postal::stop_mode::drop}));
    auto late = kv.blocking_ask(get{"a", {}});
    REQUIRE_FALSE(late);
    CHECK((late.error() == ask_error::no_reply || late.error() == ask_error::closed));
    CHECK(kv.monitor().blocking_exit() == exit_reason{});
    auto after = kv.blocking_ask(get{"a", {}});
    REQUIRE_FALSE(after);
    CHECK(after.error() == ask_error::closed);
  }
  SECTION("a request that stays unanswered when the actor stops gets no_reply") {
    struct keep {
      postal::responder<int> reply;
    };
    using message = std::variant<keep>;
    class keeper : public postal::actor<message> {
     public:
      void handle(keep& m) {
        kept_ = std::move(m.reply);  // never answered
        stop();
      }

     private:
      postal::responder<int> kept_;
    };
    auto actor = postal::spawn_actor<keeper>(rt, actor_options{});
    auto answer = actor.blocking_ask(keep{});
    REQUIRE_FALSE(answer);
    CHECK(answer.error() == ask_error::no_reply);
  }
  SECTION("the asker of a throwing handler gets no_reply and the monitor says why") {
    struct fail {
      postal::responder<int> reply;
    };
    using message = std::variant<fail>;
    class thrower : public postal::actor<message> {
     public:
      void handle(fail&) { throw std::runtime_error("handler exploded"); }
    };
    auto actor = postal::spawn_actor<thrower>(rt, actor_options{});
    auto monitor = actor.monitor();
    auto answer = actor.blocking_ask(fail{});
    REQUIRE_FALSE(answer);
    CHECK(answer.error() == ask_error::no_reply);
    auto reason = monitor.blocking_exit();
    CHECK(reason.is_failed());
    CHECK(reason.message == "handler exploded");
    CHECK_FALSE(actor.blocking_tell(fail{}));  // it takes no more messages
  }
}

TEST_CASE("supervision restarts an actor with fresh state and keeps its mailbox, within an intensity",
          "[actor][supervision]") {
  runtime rt(runtime_options{.workers = 2});
  auto starts = std::make_shared<std::atomic<int>>(0);
  auto kv = postal::spawn_actor<kv_store>(rt, actor_options{.on_failure = supervision::restart(2)}, starts);
  REQUIRE(kv.blocking_tell(put{"a", 1}));
  auto before = kv.blocking_ask(count{});
  REQUIRE(before);
  CHECK(*before == 2);
  // The failing message and the one queued behind it: the second is handled by the fresh instance.
  auto monitor = kv.monitor();
  REQUIRE(kv.blocking_tell(boom{}));
  auto after_restart = kv.blocking_ask(get{"a", {}});
  REQUIRE(after_restart);
  CHECK_FALSE(after_restart->has_value());  // fresh state: the old data is gone
  CHECK(starts->load() == 2);
  REQUIRE(kv.blocking_tell(boom{}));
  auto still_up = kv.blocking_ask(count{});
  REQUIRE(still_up);
  CHECK(*still_up == 1);
  CHECK(starts->load() == 3);
  REQUIRE(kv.blocking_tell(boom{}));  // the third failure within the period exceeds 2 restarts
  auto reason = monitor.blocking_exit();
  CHECK(reason.is_failed());
  CHECK(reason.message.find("boom") != std::string::npos);
  CHECK(starts->load() == 3);
}

TEST_CASE("escalate makes a child's failure its supervisor's failure", "[actor][supervision]") {
  struct start_child {
    postal::responder<int> reply;
  };
  struct poke_child {};
  using parent_message = std::variant<start_child, poke_child>;
  class parent : public postal::actor<parent_message> {
   public:
    void handle(start_child& m) {
      child_ = spawn_child<kv_store>(actor_options{.on_failure = supervision::escalate()});
      (void)m.reply.send(1);
    }
    task<void> handle(poke_child&) {
      boom b;
      (void)co_await child_->tell(std::move(b));
    }

   private:
    std::optional<postal::actor_ref<kv_message>> child_;
  };
  runtime rt(runtime_options{.workers = 2});
  auto boss = postal::spawn_actor<parent>(rt, actor_options{});
  auto monitor = boss.monitor();
  REQUIRE(boss.blocking_ask(start_child{}));
  REQUIRE(boss.blocking_tell(poke_child{}));
  auto reason = monitor.blocking_exit();
  CHECK(reason.is_failed());
  CHECK(reason.message == "a child actor failed: boom");
}

TEST_CASE("kill stops an actor from outside with exit reason killed; on_stop runs once",
          "[actor][lifecycle]") {
  struct ping {
    postal::responder<int> reply;
  };
  using message = std::variant<ping>;
  class pinger : public postal::actor<message> {
   public:
    explicit pinger(std::shared_ptr<std::atomic<int>> stops) : stops_(std::move(stops)) {}
    void handle(ping& m) { (void)m.reply.send(1); }
    void on_stop(const exit_reason& reason) override {
      if (reason.is_killed()) stops_->fetch_add(1);
    }

   private:
    std::shared_ptr<std::atomic<int>> stops_;
  };
  runtime rt(runtime_options{.workers = 2});
  auto stops = std::make_shared<std::atomic<int>>(0);
  auto actor = postal::spawn_actor<pinger>(rt, actor_options{}, stops);
  REQUIRE(actor.blocking_ask(ping{}));
  actor.kill();
  CHECK(actor.monitor().blocking_exit().is_killed());
  CHECK(stops->load() == 1);
  auto answer = actor.blocking_ask(ping{});
  REQUIRE_FALSE(answer);
  CHECK(answer.error() == ask_error::closed);
}

TEST_CASE("ask with a timeout reports timeout and discards the late answer", "[actor][timers]") {
  using namespace std::chrono_literals;
  struct slow {
    postal::responder<int> reply;
    std::shared_ptr<postal::oneshot::receiver<int>> gate;
  };
  using message = std::variant<slow>;
  class sluggard : public postal::actor<message> {
   public:
    task<void> handle(slow& m) {
      (void)co_await *m.gate;
      (void)m.reply.send(5);  // the asker has given up: the answer is discarded
    }
  };
  runtime rt(runtime_options{.workers = 2});
  auto actor = postal::spawn_actor<sluggard>(rt, actor_options{});
  auto [gate_tx, gate_rx] = postal::oneshot::channel<int>();
  auto gate = std::make_shared<postal::oneshot::receiver<int>>(std::move(gate_rx));
  auto answer = rt.block_on(
      [](postal::actor_ref<message> actor,
         std::shared_ptr<postal::oneshot::receiver<int>> gate) -> task<postal::expected<int, ask_error>> {
        slow request{{}, gate};
        co_return co_await actor.ask(std::move(request), 20ms);
      }(actor, gate));
  REQUIRE_FALSE(answer);
  CHECK(answer.error() == ask_error::timeout);
  auto blocking = actor.blocking_ask(slow{{}, gate}, 20ms);
  REQUIRE_FALSE(blocking);
  CHECK(blocking.error() == ask_error::timeout);
  (void)gate_tx.send(1);
}

TEST_CASE("a hundred thousand actors pass a token around a ring", "[actor][stress]") {
  struct token {
    int hops_left = 0;
    std::shared_ptr<postal::oneshot::sender<int>> done;
  };
  // A ring: each actor forwards the token to the next one until it has gone around.
  using ring_message = std::variant<token>;
  class station : public postal::actor<ring_message> {
   public:
    explicit station(std::shared_ptr<std::vector<postal::actor_ref<ring_message>>> ring, std::size_t index)
        : ring_(std::move(ring)), index_(index) {}
    task<void> handle(token& t) {
      if (t.hops_left == 0) {
        (void)t.done->send(static_cast<int>(index_));
        co_return;
      }
      --t.hops_left;
      auto& next = (*ring_)[(index_ + 1) % ring_->size()];
      (void)co_await next.tell(std::move(t));
    }

   private:
    std::shared_ptr<std::vector<postal::actor_ref<ring_message>>> ring_;
    std::size_t index_;
  };
#if defined(__SANITIZE_ADDRESS__)
  constexpr std::size_t actors = 20'000;
#else
  constexpr std::size_t actors = 100'000;
#endif
  runtime rt(runtime_options{.workers = 2});
  auto ring = std::make_shared<std::vector<postal::actor_ref<ring_message>>>();
  ring->reserve(actors);
  for (std::size_t i = 0; i < actors; ++i)
    ring->push_back(postal::spawn_actor<station>(rt, actor_options{.mailbox_capacity = 4}, ring, i));
  auto [done_tx, done_rx] = postal::oneshot::channel<int>();
  token first{static_cast<int>(actors) * 2,
              std::make_shared<postal::oneshot::sender<int>>(std::move(done_tx))};
  REQUIRE((*ring)[0].blocking_tell(std::move(first)));
  auto last = done_rx.blocking_recv();
  REQUIRE(last);
  CHECK(*last == 0);  // two full laps end where they began
  ring->clear();      // the stations hold the ring too: kill them to break the cycle
}

TEST_CASE("delayed and periodic tells arrive through CAF's clock and stop when cancelled",
          "[actor][timers]") {
  using namespace std::chrono_literals;
  struct tick {
    int tag = 0;
  };
  struct ticks {
    postal::responder<std::vector<int>> reply;
  };
  struct notify_at {
    int count = 0;
    std::shared_ptr<postal::oneshot::sender<bool>> done;
  };
  using message = std::variant<tick, ticks, notify_at>;
  class recorder : public postal::actor<message> {
   public:
    void handle(tick& m) {
      seen_.push_back(m.tag);
      if (waiter_ && static_cast<int>(seen_.size()) >= waiter_->count) {
        (void)waiter_->done->send(true);
        waiter_.reset();
      }
    }
    void handle(ticks& m) { (void)m.reply.send(seen_); }
    void handle(notify_at& m) {
      if (static_cast<int>(seen_.size()) >= m.count)
        (void)m.done->send(true);
      else
        waiter_ = m;
    }

   private:
    std::vector<int> seen_;
    std::optional<notify_at> waiter_;
  };
  runtime rt(runtime_options{.workers = 2});
  auto actor = postal::spawn_actor<recorder>(rt, actor_options{});
  auto wait_for_ticks = [&](int count) {
    auto [done_tx, done_rx] = postal::oneshot::channel<bool>();
    REQUIRE(actor.blocking_tell(
        notify_at{count, std::make_shared<postal::oneshot::sender<bool>>(std::move(done_tx))}));
    REQUIRE(done_rx.blocking_recv());
    auto seen = actor.blocking_ask(ticks{});
    REQUIRE(seen);
    return *seen;
  };

  SECTION("tell_after delivers once, after the delay; a cancelled one never arrives") {
    const auto start = std::chrono::steady_clock::now();
    auto cancelled = postal::tell_after(rt, actor, 20ms, tick{1});
    cancelled.cancel();
    auto kept = postal::tell_after(rt, actor, 30ms, tick{2});
    auto marker = postal::tell_after(rt, actor, 300ms, tick{3});  // long after the cancelled one was due
    auto seen = wait_for_ticks(2);
    CHECK(std::chrono::steady_clock::now() - start >= 300ms);
    CHECK(seen == std::vector<int>{2, 3});
  }
  SECTION("a dropped handle does not cancel") {
    { auto dropped = postal::tell_after(rt, actor, 5ms, tick{7}); }
    CHECK(wait_for_ticks(1) == std::vector<int>{7});
  }
  SECTION("tell_every repeats until cancelled") {
    auto every = postal::tell_every(rt, actor, 5ms, tick{9});
    auto seen = wait_for_ticks(3);
    every.cancel();
    const std::size_t at_cancel = seen.size();
    auto marker = postal::tell_after(rt, actor, 100ms, tick{0});  // 20 periods later
    auto after = wait_for_ticks(static_cast<int>(at_cancel) + 1);
    // At most one tick was already on its way when cancel() ran; none came after it.
    CHECK(after.back() == 0);
    CHECK(after.size() <= at_cancel + 2);
    CHECK_THROWS_AS(postal::tell_every(rt, actor, 0ms, tick{}), std::invalid_argument);
  }
}

TEST_CASE("destroying the runtime while actors are busy waits for them", "[actor][lifecycle]") {
  struct spin {
    int rounds = 0;
  };
  using message = std::variant<spin>;
  class worker : public postal::actor<message> {
   public:
    explicit worker(std::shared_ptr<std::atomic<int>> done) : done_(std::move(done)) {}
    task<void> handle(spin& m) {
      for (int i = 0; i < m.rounds; ++i) co_await postal::yield_now();
      done_->fetch_add(1);
    }

   private:
    std::shared_ptr<std::atomic<int>> done_;
  };
  auto done = std::make_shared<std::atomic<int>>(0);
  std::vector<postal::actor_monitor> monitors;
  {
    runtime rt(runtime_options{.workers = 2});
    for (int i = 0; i < 50; ++i) {
      auto busy = postal::spawn_actor<worker>(rt, actor_options{}, done);
      REQUIRE(busy.blocking_tell(spin{200}));
      monitors.push_back(busy.monitor());
    }  // the refs are gone: each actor finishes its message, then stops normally
  }
  CHECK(done->load() == 50);
  for (auto& monitor : monitors) CHECK(monitor.try_exit() == std::optional<exit_reason>(exit_reason{}));

  // Refs still held when the runtime goes: each actor finishes its message, then, waiting for messages
  // nobody inside the runtime can send, is cancelled with exit reason killed.
  std::vector<postal::actor_ref<message>> kept;
  monitors.clear();
  done->store(0);
  {
    runtime rt(runtime_options{.workers = 2});
    for (int i = 0; i < 20; ++i) {
      kept.push_back(postal::spawn_actor<worker>(rt, actor_options{}, done));
      REQUIRE(kept.back().blocking_tell(spin{100}));
      monitors.push_back(kept.back().monitor());
    }
  }
  CHECK(done->load() == 20);
  for (auto& monitor : monitors) {
    auto reason = monitor.try_exit();
    REQUIRE(reason);
    CHECK(reason->is_killed());
  }
  for (auto& ref : kept) CHECK_FALSE(ref.blocking_tell(spin{1}));  // closed: the actor is gone
}

TEST_CASE("runtime shutdown cancels an actor whose handler waits for what never comes", "[actor][lifecycle]") {
  struct wait_for {
    postal::oneshot::receiver<int> value;
  };
  using message = std::variant<wait_for>;
  class waiter : public postal::actor<message> {
   public:
    task<void> handle(wait_for& m) { (void)co_await m.value; }
  };
  auto [never, value] = postal::oneshot::channel<int>();
  std::optional<postal::actor_monitor> monitor;
  {
    runtime rt(runtime_options{.workers = 2});
    auto ref = postal::spawn_actor<waiter>(rt, actor_options{});
    monitor = ref.monitor();
    REQUIRE(rt.block_on([](postal::actor_ref<message> ref, postal::oneshot::receiver<int> value) -> task<bool> {
      wait_for request{std::move(value)};
      co_return static_cast<bool>(co_await ref.tell(std::move(request)));
    }(ref, std::move(value))));
    // The actor is either still to take the message or already waits inside its handler; both end when
    // the runtime goes, and nothing is left behind (the sanitizer builds check for leaks).
  }
  auto reason = monitor->try_exit();
  REQUIRE(reason);
  CHECK(reason->is_killed());
  CHECK(never.is_closed());  // the handler's frame, which held the receiver, is gone
}

TEST_CASE("spawning on a runtime that was shut down throws and leaves nothing behind", "[actor][lifecycle]") {
  struct ping {};
  using message = std::variant<ping>;
  class quiet : public postal::actor<message> {
   public:
    void handle(ping&) {}
  };
  runtime rt(runtime_options{.workers = 1});
  rt.shutdown();
  CHECK_THROWS_AS(postal::spawn_actor<quiet>(rt, actor_options{}), std::logic_error);
  CHECK_THROWS_AS(postal::spawn_actor<quiet>(rt, actor_options{.mailbox_capacity = 0}), std::invalid_argument);
  CHECK(rt.live_tasks() == 0);
}

TEST_CASE("an over-aligned actor class is built aligned, and again after a restart", "[actor][supervision]") {
  struct where {
    postal::responder<bool> reply;
  };
  struct fail {};
  using message = std::variant<where, fail>;
  class aligned : public postal::actor<message> {
   public:
    void handle(where& w) { (void)w.reply.send(reinterpret_cast<std::uintptr_t>(&line_) % 128 == 0); }
    void handle(fail&) { throw std::runtime_error("asked to fail"); }

   private:
    alignas(128) unsigned char line_[128] = {};
  };
  runtime rt(runtime_options{.workers = 2});
  auto ref = postal::spawn_actor<aligned>(rt, actor_options{.on_failure = supervision::restart()});
  auto first = ref.blocking_ask(where{});
  REQUIRE(first);
  CHECK(*first);
  REQUIRE(ref.blocking_tell(fail{}));
  auto again = ref.blocking_ask(where{});
  REQUIRE(again);
  CHECK(*again);
}

// Threads race every way of touching actors: tells, asks (some answered by a coroutine handler that
// yields), kills, failures under both policies, monitors, and dropping refs. Every ask must end with an
// answer or an error (a hang fails the test by its timeout), every actor must end, and the sanitizer
// builds check that no cell is freed early or leaked.
TEST_CASE("actors raced by threads with tells, asks, kills, failures and dropped refs all end cleanly",
          "[actor][stress]") {
  struct poke {};
  struct slow_echo {
    int value = 0;
    using reply_type = int;
  };
  struct crash {};
  using message = std::variant<poke, slow_echo, crash>;
  class target : public postal::actor<message> {
   public:
    void handle(poke&) { ++pokes_; }
    task<int> handle(slow_echo& m) {
      for (int i = 0; i < m.value % 3; ++i) co_await postal::yield_now();
      co_return m.value;
    }
    void handle(crash&) { throw std::runtime_error("raced crash"); }

   private:
    int pokes_ = 0;
  };

  constexpr int actors = 64;
  constexpr int threads = 4;
  constexpr int rounds = 4000;
  std::atomic<int> answered{0}, failed{0}, wrong{0};
  std::vector<postal::actor_monitor> monitors;
  {
    runtime rt(runtime_options{.workers = 2});
    std::vector<postal::actor_ref<message>> refs;
    for (int i = 0; i < actors; ++i) {
      const auto policy = i % 2 == 0 ? supervision::restart(2, std::chrono::hours(1)) : supervision::stop();
      refs.push_back(postal::spawn_actor<target>(rt, actor_options{.mailbox_capacity = 4, .on_failure = policy}));
      monitors.push_back(refs.back().monitor());
    }
    std::vector<std::thread> racers;
    for (int t = 0; t < threads; ++t) {
      racers.emplace_back([&, t, mine = refs]() mutable {
        std::uint32_t state = 2654435761u * static_cast<std::uint32_t>(t + 1);
        auto next = [&state] {
          state ^= state << 13;
          state ^= state >> 17;
          state ^= state << 5;
          return state;
        };
        for (int round = 0; round < rounds; ++round) {
          auto& ref = mine[next() % actors];
          const std::uint32_t what = next() % 1000;
          if (what < 400) {
            (void)ref.try_tell(poke{});
          } else if (what < 880) {
            const int value = static_cast<int>(next() % 1000);
            auto answer = ref.blocking_ask(slow_echo{value});
            if (answer)
              (*answer == value ? answered : wrong).fetch_add(1);
            else
              failed.fetch_add(1);
          } else if (what < 885) {
            (void)ref.try_tell(crash{});
          } else if (what < 887) {
            ref.kill();
          } else if (what < 950) {
            (void)ref.monitor().try_exit();
          } else {
            ref = refs[next() % actors];  // drop this copy, take a fresh one
          }
        }
      });
    }
    for (auto& racer : racers) racer.join();
  }  // the last refs go, then the runtime: every actor ends
  INFO("answered " << answered.load() << ", failed " << failed.load());
  CHECK(wrong.load() == 0);
  CHECK(answered.load() > 0);
  for (auto& monitor : monitors) CHECK(monitor.try_exit().has_value());
}

// Sends what this process writes to stderr to a file while it lives, and gives it back as a string.
class stderr_capture {
 public:
  stderr_capture() : file_(std::tmpfile()), saved_(::dup(STDERR_FILENO)) {
    std::fflush(stderr);
    ::dup2(::fileno(file_), STDERR_FILENO);
  }
  ~stderr_capture() {
    restore();
    std::fclose(file_);
  }
  std::string text() {
    restore();
    std::string all;
    std::rewind(file_);
    for (int c; (c = std::fgetc(file_)) != EOF;) all.push_back(static_cast<char>(c));
    return all;
  }

 private:
  void restore() {
    if (saved_ < 0) return;
    std::fflush(stderr);
    ::dup2(saved_, STDERR_FILENO);
    ::close(std::exchange(saved_, -1));
  }
  std::FILE* file_;
  int saved_;
};

TEST_CASE("refs are values: equal for one actor, hashable, and keys of maps and sets", "[actor][ref]") {
  runtime rt(runtime_options{.workers = 2});
  auto a = postal::spawn_actor<kv_store>(rt, actor_options{});
  auto b = postal::spawn_actor<kv_store>(rt, actor_options{});
  auto a_again = a;
  CHECK(a == a_again);
  CHECK(a != b);
  CHECK(a.id() == a_again.id());
  CHECK(a.id() != b.id());
  CHECK(std::hash<postal::actor_ref<kv_message>>{}(a) == std::hash<postal::actor_ref<kv_message>>{}(a_again));

  std::unordered_set<postal::actor_ref<kv_message>> refs{a, a_again, b};
  CHECK(refs.size() == 2);
  std::map<postal::actor_id, std::string> names{{a.id(), "a"}, {b.id(), "b"}};
  CHECK(names.at(a_again.id()) == "a");
  std::unordered_map<postal::actor_id, int> counts;
  ++counts[a.id()];
  ++counts[a_again.id()];
  CHECK(counts.at(a.id()) == 2);
}

TEST_CASE("a name given at spawn is the ref's name and shows in the actor's failure report", "[actor][ref]") {
  runtime rt(runtime_options{.workers = 2});
  auto unnamed = postal::spawn_actor<kv_store>(rt, actor_options{});
  CHECK(unnamed.name().empty());
  auto named = postal::spawn_actor<kv_store>(rt, actor_options{.name = "ledger"});
  CHECK(named.name() == "ledger");

  stderr_capture captured;
  auto monitor = named.monitor();
  REQUIRE(named.blocking_tell(boom{}));
  CHECK(monitor.blocking_exit().is_failed());
  const std::string report = captured.text();
  CHECK(report.find("actor 'ledger' failed: boom") != std::string::npos);
  CHECK(named.name() == "ledger");  // still there after the end, while a ref is held
}

// Records the hooks in the order they ran; on_start_async waits for a gate, so messages told meanwhile
// must wait too.
namespace hooks {
struct note {
  std::string text;
};
struct journal {
  postal::responder<std::vector<std::string>> reply;
};
using message = std::variant<note, journal>;
struct shared {
  std::mutex mutex;
  std::vector<std::string> events;
  void add(std::string event) {
    std::lock_guard lock(mutex);
    events.push_back(std::move(event));
  }
};
class recorder : public postal::actor<message> {
 public:
  recorder(std::shared_ptr<shared> log, std::shared_ptr<postal::oneshot::receiver<bool>> gate)
      : log_(std::move(log)), gate_(std::move(gate)) {}
  void handle(note& n) { log_->add(n.text); }
  void handle(journal& j) {
    std::lock_guard lock(log_->mutex);
    (void)j.reply.send(log_->events);
  }
  void on_start() override { log_->add("on_start"); }
  task<void> on_start_async() override {
    (void)co_await *gate_;
    log_->add("on_start_async");
  }
  void on_idle() override { log_->add("on_idle"); }
  task<void> on_idle_async() override {
    log_->add("on_idle_async");
    co_return;
  }
  void on_stop(const exit_reason& why) override { log_->add(why.is_normal() ? "on_stop normal" : "on_stop ?"); }
  task<void> on_stop_async(const exit_reason& why) override {
    co_await postal::yield_now();
    log_->add(why.is_normal() ? "on_stop_async normal" : "on_stop_async ?");
  }

 private:
  std::shared_ptr<shared> log_;
  std::shared_ptr<postal::oneshot::receiver<bool>> gate_;
};
}  // namespace hooks

TEST_CASE("hooks run plain form first, then the _async form's task, which holds the mailbox", "[actor][hooks]") {
  runtime rt(runtime_options{.workers = 2});
  auto log = std::make_shared<hooks::shared>();
  auto [open, gate] = postal::oneshot::channel<bool>();
  auto actor = postal::spawn_actor<hooks::recorder>(
      rt, actor_options{}, log, std::make_shared<postal::oneshot::receiver<bool>>(std::move(gate)));
  auto monitor = actor.monitor();
  REQUIRE(actor.blocking_tell(hooks::note{"first message"}));  // queued while on_start_async waits
  REQUIRE(open.send(true));
  auto seen = actor.blocking_ask(hooks::journal{});
  REQUIRE(seen);
  REQUIRE(seen->size() >= 3);
  CHECK((*seen)[0] == "on_start");
  CHECK((*seen)[1] == "on_start_async");
  CHECK((*seen)[2] == "first message");
  { auto gone = std::move(actor); }  // the last ref: the actor drains and stops normally
  CHECK(monitor.blocking_exit().is_normal());
  std::lock_guard lock(log->mutex);
  const auto& all = log->events;
  REQUIRE(all.size() >= 2);
  CHECK(all[all.size() - 2] == "on_stop normal");
  CHECK(all.back() == "on_stop_async normal");
  // Each on_idle (plain, then async) ran between messages, never inside on_start or on_stop.
  for (std::size_t i = 0; i < all.size(); ++i)
    if (all[i] == "on_idle") {
      REQUIRE(i + 1 < all.size());
      CHECK(all[i + 1] == "on_idle_async");
    }
  CHECK(std::count(all.begin(), all.end(), "on_idle") >= 1);
}
