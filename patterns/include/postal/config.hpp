// postal config: configuration through watch channels. A config actor loads a JSON file into a typed struct
// (with nlohmann/json's from_json and your validator; see config_loader.hpp), publishes it through a watch
// channel, and loads it again when the file changes (file_watch.hpp: inotify, or polling) or when asked.
// Services hold watch receivers and await changes:
//
//   auto config = postal::spawn_config<app_config>(rt, {.file = "app.json", .validate = check_app_config});
//   if (!config) { std::cerr << config.error().describe() << "\n"; return 1; }
//   auto settings = config->subscribe();                    // a watch::receiver<app_config>
//   while (co_await settings.changed()) use(*settings.borrow_and_update());
//
// A load that fails (a missing or unreadable file, invalid JSON, a wrong type, a failed validation, a bad
// override) publishes nothing: the last good value stays, the error goes to the status channel
// (config_status, which the application can watch) and to a log line naming the file, the line and the
// reason. A value is published only whole, converted and validated.
//
// Precedence, lowest first: the defaults of T's from_json < the file < environment overrides < command-line
// overrides (pass config_overrides_from_env(...) then config_overrides_from_args(...) in `overrides`; the
// later wins). Overrides are applied again on every reload.
// Not for: writing configuration back, or merging several files.
#pragma once

#include <postal/actor.hpp>
#include <postal/config_loader.hpp>
#include <postal/expected.hpp>
#include <postal/file_watch.hpp>
#include <postal/runtime.hpp>
#include <postal/task.hpp>
#include <postal/watch.hpp>

#include <concepts>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <utility>
#include <variant>
#include <vector>

namespace postal {

/// What the config actor says about its file, published through its status channel after every load.
struct config_status {
  std::filesystem::path file;
  std::optional<config_error> error;  // why the last load failed; empty when it succeeded
  std::uint64_t loads = 0;            // loads that succeeded so far (the first one included)
  std::uint64_t failures = 0;         // loads that failed so far
  bool ok() const noexcept { return !error.has_value(); }
};

/// How spawn_config loads and watches a configuration file.
template <class T>
struct config_options {
  std::filesystem::path file;
  /// Runs on every converted value; a value it rejects is never published. May be empty.
  config_validator<T> validate = {};
  /// Applied in order on every load (the later wins): environment ones first, then command-line ones.
  std::vector<config_override> overrides = {};
  /// Published when the first load fails (the status shows the error). Without it, spawn_config fails.
  std::optional<T> fallback = std::nullopt;
  /// Reload when the file changes. Without it, only reload() loads it again.
  bool watch_file = true;
  file_watch_options watch = {};
  /// A file larger than this is an error (no unbounded allocation).
  std::size_t max_bytes = 16 * 1024 * 1024;
  /// Called with every load error (on a worker thread). Empty: a line on stderr,
  /// "postal config: <file>:<line>:<column>: <reason> (keeping the last good value)".
  std::function<void(const config_error&)> on_error = {};
};

namespace detail {
// One load of the configured file, with its overrides, size limit and validator.
template <class T>
expected<T, config_error> load_configured(const config_options<T>& options) {
  return load_config<T>(options.file, config_load_options{options.overrides, options.max_bytes}, options.validate);
}

struct config_reload {
  using reply_type = expected<void, config_error>;
};
struct config_file_changed {};
using config_message = std::variant<config_reload, config_file_changed>;

// The channels and settings of one configuration; outlives restarts of its actor.
template <class T>
class config_publisher {
 public:
  config_publisher(config_options<T> options, watch::sender<T> value, watch::sender<config_status> status)
      : options_(std::move(options)), value_(std::move(value)), status_(std::move(status)) {}

  // Loads the file; publishes a good value (only if it differs, when T can be compared) and the status.
  expected<void, config_error> load() {
    auto loaded = load_configured(options_);
    if (!loaded) {
      report(loaded.error());
      status_.send_modify([&](config_status& status) {
        status.error = loaded.error();
        ++status.failures;
      });
      return unexpected{loaded.error()};
    }
    publish(std::move(*loaded));
    status_.send_modify([](config_status& status) {
      status.error.reset();
      ++status.loads;
    });
    return {};
  }

  void publish(T value) {
    if constexpr (std::equality_comparable<T>) {
      value_.send_if_modified([&](T& current) {
        if (current == value) return false;
        current = std::move(value);
        return true;
      });
    } else {
      (void)value_.send_replace(std::move(value));
    }
  }

  void report(const config_error& error) const {
    if (options_.on_error) {
      options_.on_error(error);
    } else {
      std::fprintf(stderr, "postal config: %s (keeping the last good value)\n", error.describe().c_str());
    }
  }

 private:
  config_options<T> options_;
  watch::sender<T> value_;
  watch::sender<config_status> status_;
};

template <class T>
class config_actor : public actor<config_message> {
 public:
  explicit config_actor(std::shared_ptr<config_publisher<T>> publisher) : publisher_(std::move(publisher)) {}
  expected<void, config_error> handle(config_reload&) { return publisher_->load(); }
  void handle(config_file_changed&) { (void)publisher_->load(); }

 private:
  std::shared_ptr<config_publisher<T>> publisher_;
};
}  // namespace detail

template <class T>
class config_handle;

namespace detail {
// Makes a handle fed by something other than spawn_config (a cluster follower, postal/cluster/config.hpp).
struct config_handle_access {
  template <class T>
  static config_handle<T> make(std::filesystem::path file, actor_ref<config_message> ref, watch::receiver<T> value,
                               watch::receiver<config_status> status, std::shared_ptr<void> keep);
};
}  // namespace detail

/// A running configuration: its value and status channels, and reload(). Cheap to copy. The actor and the
/// file watch run while a copy of the handle exists; when the last one goes, they stop and the receivers'
/// changed() reports closed (they can still read the last value).
template <class T>
class config_handle {
 public:
  /// A receiver of the value: borrow() reads it, changed() awaits the next good load that changed it.
  watch::receiver<T> subscribe() const { return state_->value; }
  /// A receiver of the status: changes after every load, good or bad. A good load's value is published
  /// before the status that reports it.
  watch::receiver<config_status> status() const { return state_->status; }
  /// A copy of the current value.
  T get() const { return *state_->value.borrow(); }

  /// Loads the file again now: the new value, or the error (the last good value stays published).
  task<expected<void, config_error>> reload() const {
    auto ref = state_->ref;
    detail::config_reload request;  // a named local: g++ 12 miscompiles braced temporaries in co_await
    auto done = co_await ref.ask(request);
    if (!done) co_return unexpected{stopped_error()};
    co_return std::move(*done);
  }
  /// reload() for plain threads.
  expected<void, config_error> blocking_reload() const {
    auto done = state_->ref.blocking_ask(detail::config_reload{});
    if (!done) return unexpected{stopped_error()};
    return std::move(*done);
  }
  const std::filesystem::path& file() const noexcept { return state_->file; }
  /// How the file is watched (inotify or poll), or nothing if it is not.
  std::optional<watch_mode> watching() const noexcept {
    if (!state_->watch) return std::nullopt;
    return state_->watch->mode();
  }

 private:
  template <class U>
  friend expected<config_handle<U>, config_error> spawn_config(runtime&, config_options<U>);
  friend struct detail::config_handle_access;

  struct state {
    std::filesystem::path file;
    actor_ref<detail::config_message> ref;
    watch::receiver<T> value;
    watch::receiver<config_status> status;
    std::unique_ptr<file_watch> watch;  // declared last: stopped first, before the ref goes
    std::shared_ptr<void> keep{};       // what else the handle keeps alive (a follower's state)
  };
  explicit config_handle(std::shared_ptr<state> state) : state_(std::move(state)) {}

  config_error stopped_error() const {
    return config_error{config_error::kind_type::unreadable, state_->file.string(), 0, 0, {},
                        "the config actor has stopped (runtime shut down?)"};
  }

  std::shared_ptr<state> state_;
};

template <class T>
config_handle<T> detail::config_handle_access::make(std::filesystem::path file, actor_ref<config_message> ref,
                                                    watch::receiver<T> value, watch::receiver<config_status> status,
                                                    std::shared_ptr<void> keep) {
  using state = typename config_handle<T>::state;
  return config_handle<T>(std::make_shared<state>(
      state{std::move(file), std::move(ref), std::move(value), std::move(status), nullptr, std::move(keep)}));
}

/// Loads `options.file` now and spawns the config actor that publishes it and follows the file. Fails with
/// the load error if the first load fails and no fallback is given. Throws std::system_error if the file
/// cannot be watched with the requested watch mode.
template <class T>
expected<config_handle<T>, config_error> spawn_config(runtime& rt, config_options<T> options) {
  auto first = detail::load_configured(options);
  config_status status{options.file, std::nullopt, 0, 0};
  std::optional<T> initial;
  if (first) {
    initial.emplace(std::move(*first));
    status.loads = 1;
  } else {
    if (!options.fallback) return unexpected{first.error()};
    initial.emplace(*options.fallback);
    status.error = first.error();
    status.failures = 1;
  }
  auto [value_tx, value_rx] = watch::channel<T>(std::move(*initial));
  auto [status_tx, status_rx] = watch::channel<config_status>(std::move(status));
  const bool watch_file = options.watch_file;
  const file_watch_options watch_options = options.watch;
  auto publisher = std::make_shared<detail::config_publisher<T>>(std::move(options), std::move(value_tx),
                                                                 std::move(status_tx));
  if (!first) publisher->report(first.error());

  using state = typename config_handle<T>::state;
  auto shared = std::make_shared<state>(state{
      status_rx.borrow()->file,
      spawn_actor<detail::config_actor<T>>(rt, actor_options{.mailbox_capacity = 16}, std::move(publisher)),
      std::move(value_rx), std::move(status_rx), nullptr, nullptr});
  if (watch_file) {
    shared->watch = std::make_unique<file_watch>(
        shared->file,
        [ref = shared->ref]() mutable {
          // A full mailbox already holds a load that will read the file as it is now.
          (void)ref.try_tell(detail::config_file_changed{});
        },
        watch_options);
  }
  return config_handle<T>(std::move(shared));
}

}  // namespace postal
