// kv-server's shards: the actors that own the keys, the messages a connection sends them, and the table
// that says which shard owns a key. Each message has an inspect overload, so a shard can also be a remote
// actor on another node (samples/cluster): the connection asks it the same way.
#pragma once

#include <postal/actor.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

namespace kv {

enum class op : std::uint8_t { get, set, del, exists, incr };

struct shard_reply {
  std::string encoded;     // the RESP reply for a single-key command
  std::int64_t count = 0;  // for DEL and EXISTS: how many keys (0 or 1), summed over shards by the connection
};
struct shard_op {
  op what = op::get;
  std::string key;
  std::string value;
  std::optional<std::int64_t> ttl_ms;  // SET's EX / PX
};
// The operations of one connection's batch that fall on one shard, answered together, in order.
struct shard_request {
  std::vector<shard_op> ops;
  postal::responder<std::vector<shard_reply>> reply;
};
using shard_message = std::variant<shard_request>;

template <class Inspector>
auto inspect(Inspector& f, shard_reply& x) {
  return f(x.encoded, x.count);
}
template <class Inspector>
auto inspect(Inspector& f, shard_op& x) {
  return f(x.what, x.key, x.value, x.ttl_ms);
}
template <class Inspector>
auto inspect(Inspector& f, shard_request& x) {
  return f(x.ops);  // the responder stays on the asking node; the reply travels back
}

// Owns the keys whose hash falls on it. Expired keys are removed when they are next touched.
class shard : public postal::actor<shard_message> {
 public:
  void handle(shard_request& request);

 private:
  using clock = std::chrono::steady_clock;
  struct entry {
    std::string value;
    std::optional<clock::time_point> expires;
  };
  entry* find(const std::string& key);
  shard_reply execute(shard_op& request);

  std::unordered_map<std::string, entry> data_;
};

/// Which shard owns a key: the key's hash modulo the number of entries. An entry without a ref has an owner
/// that cannot be reached now (its node is down): its keys answer an error naming the owner. Thread-safe;
/// readers take a snapshot, which stays valid while entries change.
class shard_table {
 public:
  struct entry {
    // Empty: unreachable. Mutable: a snapshot is const, and telling through a ref (thread-safe) changes
    // nothing a reader sees; it saves copying the ref for every tell.
    mutable postal::actor_ref<shard_message> ref;
    std::string owner;                     // who owns it, for errors ("node3")
  };
  using entries = std::vector<entry>;

  explicit shard_table(entries all) : current_(std::make_shared<const entries>(std::move(all))) {}
  std::shared_ptr<const entries> snapshot() const {
    std::lock_guard guard(lock_);
    return current_;
  }
  /// Replaces one entry (the readers' snapshots keep the old one).
  void set(std::size_t index, entry replacement) {
    std::lock_guard guard(lock_);
    auto next = std::make_shared<entries>(*current_);
    (*next)[index] = std::move(replacement);
    current_ = std::move(next);
  }
  static std::size_t index_of(std::string_view key, std::size_t size) noexcept {
    return std::hash<std::string_view>{}(key) % size;
  }

 private:
  mutable std::mutex lock_;
  std::shared_ptr<const entries> current_;
};

}  // namespace kv
