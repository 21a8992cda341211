// How a message crosses to another node: the same `inspect` overload CAF uses for its own messages. Write
// one per message struct, beside it (found by argument-dependent lookup):
//
//   struct set { std::string key; std::string value; };
//   template <class Inspector>
//   auto inspect(Inspector& f, set& x) { return f(x.key, x.value); }
//
// Members may be integers, floating point, bool, enums, std::string, std::vector, std::array, std::map,
// std::optional, std::variant, std::pair, structs with an inspect overload of their own, and actor refs
// (`postal::actor_ref<M>`: the receiving node gets a ref to the same actor, wherever it lives). A request's
// responder (`reply` / `resp`) is left out of inspect: it never crosses, the reply travels back to the
// asking node. CAF's annotations (`f(caf::meta::type_name("set"), x.key)`) are accepted and skipped.
// postal packs a batch of such messages into one CAF message; this header is the writer and the reader
// that inspect sees. Not for: framing, routing or connections (CAF's BASP does those).
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace caf::meta {
struct annotation;
}  // namespace caf::meta

namespace postal {
template <class Message>
class actor_ref;
}  // namespace postal

namespace postal::cluster {

class writer;
class reader;

namespace detail {
// How refs inside messages are written and read: given by the node for each peer (detail/proxy.hpp).
class ref_codec;
template <class Message>
void write_ref(writer& out, const actor_ref<Message>& ref);
template <class Message>
void read_ref(reader& in, actor_ref<Message>& ref);
template <class T>
struct is_actor_ref : std::false_type {};
template <class M>
struct is_actor_ref<actor_ref<M>> : std::true_type {};

template <class T>
concept annotation = std::is_class_v<std::remove_cvref_t<T>> &&
                     std::is_base_of_v<caf::meta::annotation, std::remove_cvref_t<T>>;
template <class T>
struct is_std_vector : std::false_type {};
template <class T, class A>
struct is_std_vector<std::vector<T, A>> : std::true_type {};
template <class T>
struct is_std_map : std::false_type {};
template <class K, class V, class C, class A>
struct is_std_map<std::map<K, V, C, A>> : std::true_type {};
template <class T>
struct is_std_array : std::false_type {};
template <class T, std::size_t N>
struct is_std_array<std::array<T, N>> : std::true_type {};
template <class T>
struct is_std_optional : std::false_type {};
template <class T>
struct is_std_optional<std::optional<T>> : std::true_type {};
template <class T>
struct is_std_variant : std::false_type {};
template <class... Ts>
struct is_std_variant<std::variant<Ts...>> : std::true_type {};
template <class T>
struct is_std_pair : std::false_type {};
template <class A, class B>
struct is_std_pair<std::pair<A, B>> : std::true_type {};
}  // namespace detail

/// Writes values into a byte buffer (little-endian integers, lengths as 32-bit counts). What inspect sees
/// when a message is sent.
class writer {
 public:
  using result_type = bool;
  explicit writer(std::vector<char>& out, detail::ref_codec* codec = nullptr) noexcept : out_(&out), codec_(codec) {}
  detail::ref_codec* codec() const noexcept { return codec_; }

  template <class... Ts>
  bool operator()(Ts&&... values) {
    (write(values), ...);
    return true;
  }

  void raw(const void* data, std::size_t size) {
    const char* bytes = static_cast<const char*>(data);
    out_->insert(out_->end(), bytes, bytes + size);
  }
  // Writes `value` as write() does, over four bytes written before at `offset` (a length that is known only
  // once what it measures has been written).
  void overwrite(std::size_t offset, std::uint32_t value) noexcept {
    if constexpr (std::endian::native == std::endian::big) value = byteswap(value);
    std::memcpy(out_->data() + offset, &value, sizeof value);
  }
  template <class T>
  void write(const T& value) {
    using U = std::remove_cvref_t<T>;
    if constexpr (detail::annotation<U>) {
      // CAF's annotations (type names) carry nothing
    } else if constexpr (std::is_same_v<U, bool>) {
      write_integer(static_cast<std::uint8_t>(value ? 1 : 0));
    } else if constexpr (std::is_enum_v<U>) {
      write_integer(static_cast<std::underlying_type_t<U>>(value));
    } else if constexpr (std::is_integral_v<U>) {
      write_integer(value);
    } else if constexpr (std::is_same_v<U, float>) {
      write_integer(std::bit_cast<std::uint32_t>(value));
    } else if constexpr (std::is_same_v<U, double>) {
      write_integer(std::bit_cast<std::uint64_t>(value));
    } else if constexpr (std::is_same_v<U, std::string>) {
      write_size(value.size());
      raw(value.data(), value.size());
    } else if constexpr (detail::is_std_vector<U>::value || detail::is_std_map<U>::value) {
      write_size(value.size());
      for (const auto& element : value) write(element);
    } else if constexpr (detail::is_std_array<U>::value) {
      for (const auto& element : value) write(element);
    } else if constexpr (detail::is_std_pair<U>::value) {
      write(value.first);
      write(value.second);
    } else if constexpr (detail::is_std_optional<U>::value) {
      write(value.has_value());
      if (value) write(*value);
    } else if constexpr (detail::is_std_variant<U>::value) {
      write_integer(static_cast<std::uint32_t>(value.index()));
      std::visit([this](const auto& alternative) { write(alternative); }, value);
    } else if constexpr (detail::is_actor_ref<U>::value) {
      detail::write_ref(*this, value);
    } else {
      static_assert(requires(writer& w, U& x) { inspect(w, x); },
                    "postal::cluster: this message member type has no inspect overload");
      inspect(*this, const_cast<U&>(value));  // inspect takes T&; writing does not change it
    }
  }

 private:
  template <class I>
  void write_integer(I value) {
    using unsigned_type = std::make_unsigned_t<I>;
    auto bits = static_cast<unsigned_type>(value);
    if constexpr (std::endian::native == std::endian::big) bits = byteswap(bits);
    raw(&bits, sizeof bits);
  }
  void write_size(std::size_t size) { write_integer(static_cast<std::uint32_t>(size)); }
  template <class U>
  static U byteswap(U value) {
    U result = 0;
    for (std::size_t i = 0; i < sizeof(U); ++i) result = static_cast<U>((result << 8) | ((value >> (8 * i)) & 0xff));
    return result;
  }

  std::vector<char>* out_;
  detail::ref_codec* codec_;
};

/// Reads values written by writer, never past the end of its bytes: a truncated or malformed message sets
/// failed() (and gives default values) instead of reading beyond it, and a length larger than what is left
/// fails at once, so a peer cannot make the reader allocate more than it sent.
class reader {
 public:
  using result_type = bool;
  reader(const char* data, std::size_t size, detail::ref_codec* codec = nullptr) noexcept
      : at_(data), end_(data + size), codec_(codec) {}
  detail::ref_codec* codec() const noexcept { return codec_; }

  template <class... Ts>
  bool operator()(Ts&&... values) {
    (read(values), ...);
    return !failed_;
  }

  bool failed() const noexcept { return failed_; }
  std::size_t remaining() const noexcept { return static_cast<std::size_t>(end_ - at_); }
  bool at_end() const noexcept { return at_ == end_; }
  void fail() noexcept {
    failed_ = true;
    at_ = end_;
  }
  bool skip(std::size_t size) noexcept {
    if (remaining() < size) {
      fail();
      return false;
    }
    at_ += size;
    return true;
  }
  bool raw(void* data, std::size_t size) noexcept {
    if (remaining() < size) {
      fail();
      return false;
    }
    std::memcpy(data, at_, size);
    at_ += size;
    return true;
  }

  template <class T>
  void read(T& value) {
    using U = std::remove_cvref_t<T>;
    if constexpr (detail::annotation<U>) {
    } else if constexpr (std::is_same_v<U, bool>) {
      value = read_integer<std::uint8_t>() != 0;
    } else if constexpr (std::is_enum_v<U>) {
      value = static_cast<U>(read_integer<std::underlying_type_t<U>>());
    } else if constexpr (std::is_integral_v<U>) {
      value = read_integer<U>();
    } else if constexpr (std::is_same_v<U, float>) {
      value = std::bit_cast<float>(read_integer<std::uint32_t>());
    } else if constexpr (std::is_same_v<U, double>) {
      value = std::bit_cast<double>(read_integer<std::uint64_t>());
    } else if constexpr (std::is_same_v<U, std::string>) {
      const std::size_t size = read_size(1);
      value.assign(at_, size);
      at_ += size;
    } else if constexpr (detail::is_std_vector<U>::value) {
      const std::size_t size = read_size(1);
      value.clear();
      value.reserve(size);
      for (std::size_t i = 0; i < size && !failed_; ++i) {
        typename U::value_type element{};
        read(element);
        value.push_back(std::move(element));
      }
    } else if constexpr (detail::is_std_map<U>::value) {
      const std::size_t size = read_size(1);
      value.clear();
      for (std::size_t i = 0; i < size && !failed_; ++i) {
        typename U::key_type key{};
        typename U::mapped_type mapped{};
        read(key);
        read(mapped);
        value.emplace(std::move(key), std::move(mapped));
      }
    } else if constexpr (detail::is_std_array<U>::value) {
      for (auto& element : value) read(element);
    } else if constexpr (detail::is_std_pair<U>::value) {
      read(value.first);
      read(value.second);
    } else if constexpr (detail::is_std_optional<U>::value) {
      if (read_integer<std::uint8_t>() != 0) {
        typename U::value_type inner{};
        read(inner);
        value = std::move(inner);
      } else {
        value.reset();
      }
    } else if constexpr (detail::is_std_variant<U>::value) {
      read_variant(value, read_integer<std::uint32_t>());
    } else if constexpr (detail::is_actor_ref<U>::value) {
      detail::read_ref(*this, value);
    } else {
      static_assert(requires(reader& r, U& x) { inspect(r, x); },
                    "postal::cluster: this message member type has no inspect overload");
      inspect(*this, value);
    }
  }

  // Reads the alternative `index` of a variant (each alternative default-constructible).
  template <class... Ts>
  void read_variant(std::variant<Ts...>& value, std::uint32_t index) {
    if (index >= sizeof...(Ts)) {
      fail();
      return;
    }
    read_alternative<0>(value, index);
  }

 private:
  template <std::size_t I, class... Ts>
  void read_alternative(std::variant<Ts...>& value, std::uint32_t index) {
    if constexpr (I < sizeof...(Ts)) {
      if (index == I) {
        read(value.template emplace<I>());
        return;
      }
      read_alternative<I + 1>(value, index);
    }
  }
  template <class I>
  I read_integer() {
    using unsigned_type = std::make_unsigned_t<I>;
    unsigned_type bits = 0;
    if (!raw(&bits, sizeof bits)) return I{};
    if constexpr (std::endian::native == std::endian::big) {
      unsigned_type swapped = 0;
      for (std::size_t i = 0; i < sizeof bits; ++i)
        swapped = static_cast<unsigned_type>((swapped << 8) | ((bits >> (8 * i)) & 0xff));
      bits = swapped;
    }
    return static_cast<I>(bits);
  }
  // A length, refused when its elements (at least `element_size` bytes each) cannot fit in what is left.
  std::size_t read_size(std::size_t element_size) {
    const std::size_t size = read_integer<std::uint32_t>();
    if (size > remaining() / element_size) {
      fail();
      return 0;
    }
    return size;
  }

  const char* at_;
  const char* end_;
  detail::ref_codec* codec_;
  bool failed_ = false;
};

}  // namespace postal::cluster
