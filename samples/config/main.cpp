// samples/config: a service whose behaviour follows its JSON file while it runs. A config actor loads
// greeter.json into a typed struct, validates it and publishes it through a watch channel; the greeter task
// reads the latest value before every greeting. A broken file is reported and the greeter keeps running on
// the last good value.
//
//   sample-config                        a demo: the program edits its own file (good, broken, invalid, fixed)
//   sample-config --file F [--seconds N] follow F for N seconds (default 60): edit it in another terminal
//   ... --set /greeting=Hi               override a value (GREETER_GREETING=Hi in the environment, too)
#include <postal/config.hpp>
#include <postal/runtime.hpp>
#include <postal/time.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

namespace fs = std::filesystem;

struct greeter_config {
  std::string greeting = "hello";
  std::string name = "world";
  int interval_ms = 100;
  bool shout = false;
  friend bool operator==(const greeter_config&, const greeter_config&) = default;
};
// Keys missing from the file keep the defaults above.
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(greeter_config, greeting, name, interval_ms, shout)

std::optional<postal::config_invalid> validate(const greeter_config& config) {
  if (config.interval_ms < 10 || config.interval_ms > 10'000)
    return postal::config_invalid{"/interval_ms", "must be between 10 and 10000"};
  if (config.greeting.empty()) return postal::config_invalid{"/greeting", "must not be empty"};
  return std::nullopt;
}

std::string render(const greeter_config& config) {
  std::string line = config.greeting + ", " + config.name + "!";
  if (config.shout)
    for (char& c : line) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return line;
}

// The service: greets with whatever the configuration says now; tells main how many greetings it gave.
postal::task<void> greeter(postal::watch::receiver<greeter_config> config, postal::mpsc::sender<int> progress) {
  for (int count = 1;; ++count) {
    const greeter_config current = *config.borrow_and_update();  // copy out: never hold a ref across co_await
    std::cout << "  greeter: " << render(current) << std::endl;
    if (!co_await progress.send(count)) co_return;  // main is done
    co_await postal::sleep_for(std::chrono::milliseconds(current.interval_ms));
  }
}

// As editors save: a new file renamed over the old one.
void save(const fs::path& file, std::string_view text) {
  fs::path temporary = file;
  temporary += ".swp";
  std::ofstream(temporary, std::ios::trunc) << text;
  fs::rename(temporary, file);
}

void wait_for_greetings(postal::mpsc::receiver<int>& progress, int how_many) {
  for (int i = 0; i < how_many; ++i) (void)progress.blocking_recv();
}

void print_status(const postal::config_status& status) {
  if (status.ok())
    std::cout << "config: loaded (" << status.loads << " good loads)" << std::endl;
  else
    std::cout << "config: " << status.error->describe() << " -- still running on the last good value"
              << std::endl;
}

}  // namespace

int main(int argc, char** argv) {
  std::optional<fs::path> file;
  int seconds = 60;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string_view(argv[i]) == "--file") file = argv[i + 1];
    if (std::string_view(argv[i]) == "--seconds") seconds = std::atoi(argv[i + 1]);
  }
  const bool demo = !file;
  const fs::path demo_dir = fs::temp_directory_path() / ("postal-sample-config-" + std::to_string(::getpid()));
  if (demo) {
    fs::create_directories(demo_dir);
    file = demo_dir / "greeter.json";
    save(*file, R"({"greeting": "hello", "name": "postal", "interval_ms": 50})");
  }

  postal::runtime rt;
  postal::config_options<greeter_config> options;
  options.file = *file;
  options.validate = validate;
  options.overrides = postal::config_overrides_from_env("GREETER_");  // the environment first,
  for (auto& o : postal::config_overrides_from_args(argc, argv)) options.overrides.push_back(o);  // then --set
  auto config = postal::spawn_config(rt, options);
  if (!config) {
    std::cerr << "sample-config: " << config.error().describe() << std::endl;
    return 1;
  }
  std::cout << "config: following " << config->file() << std::endl;

  auto [progress_tx, progress] = postal::mpsc::channel<int>(1);
  rt.spawn_detached(greeter(config->subscribe(), std::move(progress_tx)));
  auto status = config->status();

  if (!demo) {
    std::thread([status]() mutable {
      while (status.blocking_changed()) print_status(*status.borrow_and_update());
    }).detach();
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (std::chrono::steady_clock::now() < until) (void)progress.blocking_recv();
    return 0;
  }

  wait_for_greetings(progress, 3);
  std::cout << "edit: a new greeting, shouting" << std::endl;
  save(*file, R"({"greeting": "bonjour", "name": "postal", "interval_ms": 50, "shout": true})");
  (void)status.blocking_changed();
  print_status(*status.borrow_and_update());
  wait_for_greetings(progress, 3);

  std::cout << "edit: broken JSON (a missing value on line 3)" << std::endl;
  save(*file, "{\n  \"greeting\": \"oops\",\n  \"name\": \n}\n");
  (void)status.blocking_changed();
  print_status(*status.borrow_and_update());
  wait_for_greetings(progress, 3);

  std::cout << "edit: an interval the validator rejects" << std::endl;
  save(*file, "{\n  \"greeting\": \"hi\",\n  \"interval_ms\": 0\n}\n");
  (void)status.blocking_changed();
  print_status(*status.borrow_and_update());
  wait_for_greetings(progress, 3);

  std::cout << "edit: fixed" << std::endl;
  save(*file, R"({"greeting": "hallo", "name": "postal", "interval_ms": 50})");
  (void)status.blocking_changed();
  print_status(*status.borrow_and_update());
  wait_for_greetings(progress, 3);

  fs::remove_all(demo_dir);
  return 0;
}
