// libFuzzer target for postal::resp: the parser must never crash, never exceed its limits, and give the
// same values (or the same error) whichever way the input is split into reads. The first input byte picks
// the split; the request parser is run over the same bytes.
#include <postal/resp.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace {

postal::resp::limits fuzz_limits() {
  postal::resp::limits limits;
  limits.max_bulk = 4096;
  limits.max_elements = 64;
  limits.max_depth = 8;
  limits.max_line = 256;
  limits.max_value = 64 * 1024;
  return limits;
}

struct run {
  std::vector<postal::resp::value> values;
  std::string error;
  bool operator==(const run&) const = default;
};

run parse(std::string_view input, std::size_t chunk) {
  postal::resp::parser parser(fuzz_limits());
  run result;
  for (std::size_t at = 0; at < input.size(); at += chunk) {
    parser.feed(input.substr(at, chunk));
    for (;;) {
      auto next = parser.next();
      if (!next) {
        result.error = next.error().reason;
        return result;
      }
      if (!*next) break;
      result.values.push_back(std::move(**next));
    }
    // Bytes not yet part of a value are bounded by what the limits allow one value to hold.
    if (parser.buffered() > fuzz_limits().max_value + fuzz_limits().max_line + 2 + chunk) std::abort();
  }
  return result;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t chunk = 1 + data[0] % 16;
  const std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
  const run whole = parse(input, input.size() + 1);
  const run split = parse(input, chunk);
  if (!(whole == split)) std::abort();  // the result must not depend on how the bytes arrive

  // Whatever parsed must encode and parse back to itself.
  if (whole.error.empty()) {
    std::string wire;
    for (const auto& value : whole.values) postal::resp::append_value(wire, value);
    postal::resp::limits roomy;
    postal::resp::parser again(roomy);
    again.feed(wire);
    for (const auto& value : whole.values) {
      auto next = again.next();
      if (!next || !*next) std::abort();
      // Simple strings and errors lose CR/LF in encoding, so compare only what survives it.
      if (value.kind == postal::resp::value::kind_type::bulk_string && !(**next == value)) std::abort();
    }
  }

  // Requests, whole and split: the same requests (or the same error), never an empty one.
  auto requests_of = [&](std::size_t piece) {
    postal::resp::request_parser requests(fuzz_limits());
    std::vector<std::vector<std::string>> got;
    std::string error;
    for (std::size_t at = 0; at < input.size() && error.empty(); at += piece) {
      requests.feed(input.substr(at, piece));
      for (;;) {
        auto next = requests.next();
        if (!next) {
          error = next.error().reason;
          break;
        }
        if (!*next) break;
        if ((*next)->empty()) std::abort();
        got.push_back(std::move(**next));
      }
    }
    return std::make_pair(got, error);
  };
  if (requests_of(input.size() + 1) != requests_of(chunk)) std::abort();
  return 0;
}
