// samples/actors: a key-value actor used with tell and ask from main() and from another actor, and a
// supervised actor that fails and is restarted with fresh state while its mailbox is kept.
#include <postal/actor.hpp>
#include <postal/runtime.hpp>

#include <iostream>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <variant>

namespace {

// -- the key-value store: one message type per command; a request carries its responder ------------------
struct set {
  std::string key;
  std::string value;
};
struct get {
  std::string key;
  postal::responder<std::optional<std::string>> reply;
};
using store_message = std::variant<set, get>;

class store : public postal::actor<store_message> {
 public:
  void handle(set& m) { data_[m.key] = m.value; }
  void handle(get& m) {
    auto found = data_.find(m.key);
    (void)m.reply.send(found == data_.end() ? std::nullopt : std::optional(found->second));
  }

 private:
  std::map<std::string, std::string> data_;
};

// -- a client actor that asks the store from its own handler ----------------------------------------------
struct greet {
  std::string who;
  postal::responder<std::string> reply;
};
using greeter_message = std::variant<greet>;

class greeter : public postal::actor<greeter_message> {
 public:
  explicit greeter(postal::actor_ref<store_message> store) : store_(std::move(store)) {}
  postal::task<void> handle(greet& m) {
    // While this handler waits for the store, the greeter takes no other message.
    get request{"greeting", {}};  // (g++ 12: never a braced temporary inside co_await, see README)
    auto greeting = co_await store_.ask(std::move(request));
    std::string word = greeting && *greeting ? **greeting : "hello";
    (void)m.reply.send(word + ", " + m.who);
  }

 private:
  postal::actor_ref<store_message> store_;
};

// -- a fragile counter, supervised: it throws on "crash" and is restarted with fresh state ----------------
struct add {
  int amount = 0;
};
struct crash {};
struct total {
  postal::responder<int> reply;
};
using counter_message = std::variant<add, crash, total>;

class counter : public postal::actor<counter_message> {
 public:
  void on_start() override { std::cout << "counter: started with total 0\n"; }
  void handle(add& m) { sum_ += m.amount; }
  void handle(crash&) { throw std::runtime_error("asked to crash"); }
  void handle(total& m) { (void)m.reply.send(sum_); }

 private:
  int sum_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  postal::runtime runtime(argc, argv);  // CAF's options, e.g. --scheduler.max-threads=2
  if (runtime.help_printed()) return 0;

  auto kv = postal::spawn_actor<store>(runtime, postal::actor_options{.mailbox_capacity = 64});
  (void)kv.blocking_tell(set{"greeting", "hello"});   // tell from main: waits if the mailbox is full
  auto value = kv.blocking_ask(get{"greeting", {}});  // ask from main: blocks for the reply
  std::cout << "main asked the store: " << (value && *value ? **value : "(none)") << '\n';

  auto front = postal::spawn_actor<greeter>(runtime, postal::actor_options{}, kv);
  auto greeting = front.blocking_ask(greet{"actors", {}});
  std::cout << "the greeter asked the store: " << (greeting ? *greeting : "(no reply)") << '\n';

  auto fragile = postal::spawn_actor<counter>(
      runtime,
      postal::actor_options{.on_failure = postal::supervision::restart(3, std::chrono::seconds(10))});
  (void)fragile.blocking_tell(add{5});
  (void)fragile.blocking_tell(crash{});  // the handler throws: the counter restarts with fresh state
  (void)fragile.blocking_tell(add{2});   // still queued in the same mailbox: handled by the new counter
  auto sum = fragile.blocking_ask(total{});
  std::cout << "counter after a restart: " << (sum ? std::to_string(*sum) : "(no reply)")
            << " (5 was lost with the old state)\n";

  fragile.kill();
  std::cout << "counter stopped: " << (fragile.monitor().blocking_exit().is_killed() ? "killed" : "?")
            << '\n';
}
