// Must not compile with POSTAL_EXPECT_COMPILE_ERROR defined: a hook the actor class keeps private is an
// error that says so, not a hook the framework silently never calls. Without the macro, the same hook in
// the class's public part compiles.
// expected diagnostic: hooks .on_start, on_stop, on_idle and their _async forms. must be public
#include <postal/actor.hpp>

#include <variant>

namespace {
struct ping {};
using message = std::variant<ping>;

class worker : public postal::actor<message> {
 public:
  void handle(ping&) {}
#ifdef POSTAL_EXPECT_COMPILE_ERROR
 private:
#endif
  void on_idle() override {}
};
}  // namespace

int main() {
  postal::runtime rt(postal::runtime_options{.workers = 1});
  (void)postal::spawn_actor<worker>(rt, postal::actor_options{});
}
