// kv-server's shard actor: the commands on the keys it owns. See shard.hpp.
#include "shard.hpp"

#include <postal/resp.hpp>

#include <charconv>
#include <limits>
#include <system_error>

namespace kv {

void shard::handle(shard_request& request) {
  std::vector<shard_reply> replies;
  replies.reserve(request.ops.size());
  for (shard_op& one : request.ops) replies.push_back(execute(one));
  (void)request.reply.send(std::move(replies));
}

shard::entry* shard::find(const std::string& key) {
  auto found = data_.find(key);
  if (found == data_.end()) return nullptr;
  if (found->second.expires && clock::now() >= *found->second.expires) {
    data_.erase(found);
    return nullptr;
  }
  return &found->second;
}

shard_reply shard::execute(shard_op& request) {
  shard_reply reply;
  switch (request.what) {
    case op::get:
      if (entry* e = find(request.key))
        postal::resp::append_bulk(reply.encoded, e->value);
      else
        postal::resp::append_null(reply.encoded);
      break;
    case op::set: {
      std::optional<clock::time_point> expires;
      if (request.ttl_ms) expires = clock::now() + std::chrono::milliseconds(*request.ttl_ms);
      data_.insert_or_assign(std::move(request.key), entry{std::move(request.value), expires});
      reply.encoded = "+OK\r\n";
      break;
    }
    case op::del:
      reply.count = find(request.key) ? 1 : 0;
      data_.erase(request.key);
      break;
    case op::exists:
      reply.count = find(request.key) ? 1 : 0;
      break;
    case op::incr: {
      entry* e = find(request.key);
      std::int64_t number = 0;
      if (e) {
        const std::string& text = e->value;
        auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), number);
        if (error != std::errc() || end != text.data() + text.size() || text.empty()) {
          postal::resp::append_error(reply.encoded, "ERR value is not an integer or out of range");
          break;
        }
      }
      if (number == std::numeric_limits<std::int64_t>::max()) {
        postal::resp::append_error(reply.encoded, "ERR increment or decrement would overflow");
        break;
      }
      ++number;
      if (e) {
        e->value = std::to_string(number);
      } else {
        data_.emplace(request.key, entry{std::to_string(number), std::nullopt});
      }
      postal::resp::append_integer(reply.encoded, number);
      break;
    }
    default:
      postal::resp::append_error(reply.encoded, "ERR unknown operation");
  }
  return reply;
}

}  // namespace kv
