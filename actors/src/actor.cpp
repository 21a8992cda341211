// The non-template parts of postal's actors: how a failure is described and reported.
#include <postal/actor.hpp>

#include <cstdio>
#include <exception>
#include <string>

namespace postal::detail {

std::string describe(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an exception not derived from std::exception";
  }
}

void report_actor_failure(const std::string& name, const std::string& what, bool restarting) noexcept {
  if (name.empty())
    std::fprintf(stderr, "postal: an actor failed: %s%s\n", what.c_str(),
                 restarting ? " (restarting it with fresh state)" : " (it stops)");
  else
    std::fprintf(stderr, "postal: actor '%s' failed: %s%s\n", name.c_str(), what.c_str(),
                 restarting ? " (restarting it with fresh state)" : " (it stops)");
}

}  // namespace postal::detail
