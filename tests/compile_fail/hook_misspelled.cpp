// Must not compile with POSTAL_EXPECT_COMPILE_ERROR defined: a hook written with `override` whose name is
// misspelled (on_stopp) is an error, not a hook the framework silently never calls. Without the macro, the
// same class with the right name compiles.
// expected diagnostic: marked .*override.* but does not override|only virtual member functions can be marked
#include <postal/actor.hpp>

#include <variant>

namespace {
struct ping {};
using message = std::variant<ping>;

class worker : public postal::actor<message> {
 public:
  void handle(ping&) {}
#ifdef POSTAL_EXPECT_COMPILE_ERROR
  void on_stopp(const postal::exit_reason&) override {}
#else
  void on_stop(const postal::exit_reason&) override {}
#endif
};
}  // namespace

int main() {
  postal::runtime rt(postal::runtime_options{.workers = 1});
  (void)postal::spawn_actor<worker>(rt, postal::actor_options{});
}
