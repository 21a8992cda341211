// Must not compile with POSTAL_EXPECT_COMPILE_ERROR defined: telling an actor a message type that its
// mailbox does not take is a compile-time error. Without the macro, the same file with a message type the
// actor does take compiles, which shows the error comes from the type alone.
// expected diagnostic: tellable
#include <postal/actor.hpp>

#include <variant>

namespace {
struct greeting {};
struct unrelated {};
using message = std::variant<greeting>;

postal::task<void> send(postal::actor_ref<message> ref) {
#ifdef POSTAL_EXPECT_COMPILE_ERROR
  unrelated wrong;
  (void)co_await ref.tell(wrong);
#else
  greeting right;
  (void)co_await ref.tell(right);
#endif
}
}  // namespace

int main() {
  auto* entry = &send;  // instantiates the coroutine; it is never run
  (void)entry;
}
