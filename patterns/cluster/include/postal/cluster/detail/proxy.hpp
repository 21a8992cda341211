// The typed ends of a remote ref. On the asking node a remote ref is an actor_ref<Message> to a local
// stand-in (remote_proxy): an actor whose bounded mailbox takes the tells and asks, and which writes them into
// its link's batch while the link has credit, keeping each request's responder until the reply comes back.
// On the serving node, an inbound (one per remote ref that sent something) reads each batch, attaches a
// responder of its own to each request, and puts the messages into the published actor's mailbox, waiting
// for room in order; each message in the mailbox returns one credit (acknowledged a quarter window at a
// time). The untyped rest (CAF, the links, the peers) is compiled in src/node.cpp. Internal to
// postal::cluster.
#pragma once

#include <postal/actor/base.hpp>
#include <postal/actor/detail/envelope.hpp>
#include <postal/actor/detail/mailbox_cell.hpp>
#include <postal/actor/detail/runner.hpp>
#include <postal/actor/ref.hpp>
#include <postal/actor/spawn.hpp>
#include <postal/cluster/serialize.hpp>
#include <postal/mpsc.hpp>
#include <postal/oneshot.hpp>
#include <postal/runtime.hpp>
#include <postal/task.hpp>
#include <postal/waker.hpp>

#include <cstddef>
#include <coroutine>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <stdexcept>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <variant>
#include <vector>

namespace postal::cluster::detail {

class node_core;
class link;
class target_base;

// Where a ref read from a message leads: the actor `target` of the node `node` (CAF's node id), which
// listens at host:port.
struct ref_address {
  std::string node;
  std::string host;
  std::uint16_t port = 0;
  std::uint64_t target = 0;
  std::string signature;  // the message types the actor takes
};

// How refs inside messages cross between this node and one peer (compiled in src/node.cpp). A ref is
// written as the address of its actor: a stand-in's remote actor, or an actor of this node, which is then
// made reachable (exported) and kept alive while the peer holds refs to it.
class ref_codec {
 public:
  virtual ~ref_codec() = default;
  // `revive` makes a target for the actor if it still runs (it holds only the actor's control block).
  virtual void write(writer& out, const postal::detail::control_ref& actor, const std::string& signature,
                     std::function<std::shared_ptr<target_base>()> revive) = 0;
  struct found {
    postal::detail::control_ref actor;  // an actor of this node, or a stand-in made before: used if it runs
    std::shared_ptr<link> way;          // that stand-in's link
    ref_address address;
    bool from_home = false;  // the ref came from the actor's own node, which counts it until it is released
  };
  // Reads an address; nothing if it is malformed or its actor takes other messages than `signature`.
  virtual std::optional<found> read(reader& in, const std::string& signature) = 0;
  // A link for a new stand-in of the actor at `address` (one that has ended if the actor is gone).
  virtual std::shared_ptr<link> open(const ref_address& address) = 0;
  virtual runtime& rt() noexcept = 0;
  virtual std::size_t proxy_capacity() const noexcept = 0;
};

// A ref made from a control block known to belong to an actor taking `Message`, if the actor still takes
// messages.
template <class Message>
std::optional<actor_ref<Message>> ref_from_control(const postal::detail::control_ref& control) {
  auto* cell = static_cast<postal::detail::mailbox_cell<Message>*>(control.get());
  auto mailbox = cell->upgrade();
  if (!mailbox) return std::nullopt;
  return postal::detail::ref_access::make<Message>(std::move(*mailbox), control);
}

// A message type's name, the same in every process built by g++ or clang from the same code (the
// Itanium ABI's mangled name).
template <class T>
std::string type_name() {
  return typeid(T).name();
}
// What a published actor takes, as nodes compare it: the names of its message types, in order.
template <class Message>
struct signature_of;
template <class... Ts>
struct signature_of<std::variant<Ts...>> {
  static std::string get() {
    std::string all;
    ((all += type_name<Ts>(), all += ';'), ...);
    return all;
  }
};
template <class Message>
std::string signature() {
  return signature_of<Message>::get();
}
// A signature made readable for an error message.
std::string describe_signature(const std::string& signature);

// Where a reply that comes back is delivered: the asker's responder, behind a type-erased sink.
class reply_sink {
 public:
  virtual ~reply_sink() = default;
  // Reads the reply and sends it to the asker; a reply that cannot be read is dropped (no_reply).
  virtual void deliver(reader& in) = 0;
};
template <class R>
class typed_reply_sink final : public reply_sink {
 public:
  explicit typed_reply_sink(oneshot::sender<R> reply) : reply_(std::move(reply)) {}
  void deliver(reader& in) override {
    R value{};
    in.read(value);
    if (!in.failed()) (void)reply_.send(std::move(value));
  }

 private:
  oneshot::sender<R> reply_;
};

// One remote ref's way to its actor: compiled in src/node.cpp. Used by the stand-in's thread (batch, credit,
// flush) and by the node's network side (credit granted, replies, the end).
class link : public std::enable_shared_from_this<link> {
 public:
  struct state;
  explicit link(std::unique_ptr<state> s);
  ~link();
  link(const link&) = delete;
  link& operator=(const link&) = delete;

  // -- the stand-in's side --
  // Takes one credit if there is one.
  bool take_credit() noexcept;
  // Whether a message may go now: credit left, or the link ended (then the message is dropped).
  bool can_send() const noexcept;
  bool ended() const noexcept;
  // Keeps `w` to wake once can_send(); false (and `w` dropped) if it already can.
  bool park_for_credit(waker w);
  // `co_await way.credit()`: until can_send().
  struct credit_awaitable {
    link* way;
    bool await_ready() const noexcept { return way->can_send(); }
    template <class Promise>
    bool await_suspend(std::coroutine_handle<Promise> handle) {
      return way->park_for_credit(postal::detail::waker_for(handle));
    }
    void await_resume() const noexcept {}
  };
  credit_awaitable credit() noexcept { return {this}; }
  // Adds a message (alternative `alternative`, request `request`, 0 for none) to the batch; `write` writes it.
  template <class Write>
  void add(std::uint32_t alternative, std::uint64_t request, Write&& write) {
    std::vector<char>& out = begin_record(alternative, request);
    try {
      writer w(out, codec());
      std::forward<Write>(write)(w);
    } catch (...) {  // nothing half-written stays in the batch; the stand-in fails with the exception
      abort_record();
      throw;
    }
    end_record();
  }
  // Keeps a request's responder until its reply comes; the request's id, 0 if the link already ended (the
  // sink is dropped: the asker gets no_reply, or node_down).
  std::uint64_t expect_reply(std::unique_ptr<reply_sink> sink);
  // Sends the batch, if it holds anything. A batch is also sent when it grows past a limit.
  void flush();
  std::size_t batch_bytes() const noexcept;
  // The stand-in stopped: a kill is passed on to the remote actor, the link ends.
  void stopping(const exit_reason& why);
  // Gives the link the stand-in's control block, to end it when the remote actor ends or its node goes down;
  // detach() lets go of it (the stand-in is gone: its cell holds the link, the link must not hold the cell).
  void attach(postal::detail::control_ref control);
  void detach() noexcept;
  // A ref to the remote actor arrived inside a message and uses this link's stand-in: the far node keeps
  // the actor for this node until the stand-in ends.
  void imported() noexcept;
  // How refs inside the messages of this link are written and read.
  ref_codec* codec() noexcept;

  state& internals() noexcept { return *state_; }

 private:
  std::vector<char>& begin_record(std::uint32_t alternative, std::uint64_t request);
  void end_record();
  void abort_record() noexcept;
  std::unique_ptr<state> state_;
};

// The local stand-in of a remote actor.
template <class Message>
class remote_proxy final : public actor<Message>, public postal::detail::takes_envelopes {
  using item = postal::detail::envelope<Message>;

 public:
  explicit remote_proxy(std::shared_ptr<link> way) : link_(std::move(way)) {}
  ~remote_proxy() override { link_->detach(); }

  std::optional<task<void>> handle_envelope(item& next) {
    if (next.index() == 1) return std::nullopt;  // a nudge
    if (!link_->take_credit()) return after_credit(std::move(next));
    encode(next);
    return std::nullopt;
  }
  void on_idle() override { link_->flush(); }
  void on_stop(const exit_reason& why) override {
    link_->flush();
    link_->stopping(why);
  }

 private:
  // No credit: what is batched goes out (so the far side can acknowledge it), then the stand-in waits,
  // taking no other message: its mailbox fills and tells wait (backpressure).
  task<void> after_credit(item next) {
    link_->flush();
    while (!link_->take_credit()) {
      if (link_->ended()) co_return;  // the message is dropped: its asker gets node_down or no_reply
      co_await link_->credit();
    }
    encode(next);
  }

  void encode(item& next) {
    std::visit(
        [this](auto& content) {
          using content_type = std::remove_cvref_t<decltype(content)>;
          if constexpr (std::is_same_v<content_type, Message>) {
            std::visit([this](auto& message) { write_message(message); }, content);
          } else if constexpr (postal::detail::is_asked<content_type>::value) {
            write_message(content.message, &content.reply);
          }
        },
        next);
    if (link_->batch_bytes() >= flush_bytes) link_->flush();
  }

  // A message, and for a request the responder (the message's own member, or `asked_reply` beside it).
  template <class M, class Reply = std::nullptr_t>
  void write_message(M& message, Reply* asked_reply = nullptr) {
    constexpr auto alternative =
        static_cast<std::uint32_t>(postal::detail::alternative_index<M, Message>::value);
    std::uint64_t request = 0;
    if constexpr (postal::detail::has_responder<M>) {
      auto& reply = postal::detail::responder_member(message);
      if (!reply.is_closed()) request = expect(std::move(reply));
    } else if constexpr (!std::is_same_v<Reply, std::nullptr_t>) {
      if (asked_reply != nullptr && !asked_reply->is_closed()) request = expect(std::move(*asked_reply));
    }
    link_->add(alternative, request, [&message](writer& out) { out.write(message); });
  }
  template <class R>
  std::uint64_t expect(oneshot::sender<R> reply) {
    return link_->expect_reply(std::make_unique<typed_reply_sink<R>>(std::move(reply)));
  }

  static constexpr std::size_t flush_bytes = 64 * 1024;
  std::shared_ptr<link> link_;
};

template <class Message>
actor_ref<Message> spawn_proxy(runtime& rt, std::shared_ptr<link> way, std::size_t capacity) {
  link* raw = way.get();
  auto ref = spawn_actor<remote_proxy<Message>>(rt, actor_options{.mailbox_capacity = capacity, }, way);
  raw->attach(postal::detail::ref_access::control(ref));
  return ref;
}

// -- the serving side ------------------------------------------------------------------------------------

// What an inbound sends back to the asking node: compiled in src/node.cpp.
class origin {
 public:
  virtual ~origin() = default;
  virtual void credit(std::uint64_t messages, std::uint64_t bytes) = 0;
  virtual void reply(std::uint64_t request, std::vector<char> bytes) = 0;
  virtual void unanswered(std::uint64_t request) = 0;
  // How refs are read from the asking node's messages and written into the replies.
  virtual ref_codec* codec() noexcept = 0;
};

// The messages of one remote ref, put into the published actor's mailbox in order.
class inbound_base {
 public:
  virtual ~inbound_base() = default;
  struct outcome {
    std::size_t skipped = 0;  // records that could not be read (a request among them is answered unanswered)
    bool broken = false;      // the batch could not be framed: the link cannot be trusted any more
  };
  // Reads one batch.
  virtual outcome deliver(const char* data, std::size_t size) = 0;
};

// A published actor, as the node's network side sees it.
class target_base {
 public:
  virtual ~target_base() = default;
  virtual const std::string& signature() const noexcept = 0;
  // The inbound of one remote ref, which acknowledges every `ack_every` messages or `ack_bytes` bytes (a
  // quarter of the sender's windows: the sender never waits while the mailbox has room).
  virtual std::shared_ptr<inbound_base> open(runtime& rt, std::shared_ptr<origin> back, std::size_t ack_every,
                                             std::size_t ack_bytes) = 0;
  // Waits for the actor's end (holding no ref to it).
  virtual task<exit_reason> ended() = 0;
  virtual void kill() = 0;
  virtual postal::detail::control_ref control() const = 0;
};

// A coroutine with no executor: it starts at once, and each wait resumes on the thread that ends it (a
// waker for a coroutine outside postal's runtime resumes it inline). For a few instructions that must
// follow an event without a hop through the scheduler; it must never block. Exceptions end the process.
struct inline_job {
  struct promise_type {
    inline_job get_return_object() noexcept { return {}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { std::terminate(); }
  };
};

// How a batch is laid out: records of [alternative u32][request u64][length u32][payload].
inline constexpr std::size_t record_length_offset = 4 + 8;
inline constexpr std::size_t record_header_bytes = record_length_offset + 4;

template <class Message>
class inbound final : public inbound_base, public std::enable_shared_from_this<inbound<Message>> {
  using item = postal::detail::envelope<Message>;

 public:
  inbound(runtime& rt, actor_ref<Message> target, std::shared_ptr<origin> back, std::size_t ack_every,
          std::size_t ack_bytes)
      : runtime_(rt), target_(std::move(target)), back_(std::move(back)), ack_every_(ack_every), ack_bytes_(ack_bytes) {}

  outcome deliver(const char* data, std::size_t size) override {
    reader batch(data, size, back_->codec());
    std::vector<std::pair<item, std::size_t>> decoded;  // with the bytes each took in the batch
    outcome result;
    std::size_t skipped_bytes = 0;
    while (!batch.at_end()) {
      std::uint32_t alternative = 0, length = 0;
      std::uint64_t request = 0;
      batch(alternative, request, length);
      if (batch.failed() || length > batch.remaining()) {  // the rest of the batch cannot be framed
        result.broken = true;
        break;
      }
      reader payload(data + (size - batch.remaining()), length, back_->codec());
      batch.skip(length);
      if (auto next = decode(alternative, request, payload)) {
        decoded.emplace_back(std::move(*next), record_header_bytes + length);
      } else {
        ++result.skipped;
        skipped_bytes += record_header_bytes + length;
        if (request != 0) back_->unanswered(request);
      }
    }
    bool start_push = false;
    credit_back acknowledge;
    {
      std::lock_guard lock(mutex_);
      accept(result.skipped, skipped_bytes);  // their credit returns: the sender counts them as delivered
      for (auto& [next, bytes] : decoded) {
        if (pushing_) {
          backlog_.emplace_back(std::move(next), bytes);
          continue;
        }
        auto sent = mailbox().try_send(std::move(next));
        if (sent || sent.error().is_closed()) {  // closed: the actor is gone; the message is dropped
          accept(1, bytes);
        } else {
          backlog_.emplace_back(std::move(sent.error().value), bytes);
          pushing_ = start_push = true;
        }
      }
      acknowledge = due();
    }
    // Outside the lock: the push task takes it, and may run before spawn returns.
    acknowledge.send(*back_);
    if (start_push) runtime_.spawn_detached(push(this->shared_from_this()));
    return result;
  }

 private:
  mpsc::sender<item>& mailbox() { return postal::detail::ref_access::mailbox(target_); }

  struct credit_back {
    std::size_t messages = 0, bytes = 0;
    void send(origin& to) const {
      if (messages != 0 || bytes != 0) to.credit(messages, bytes);
    }
  };
  void accept(std::size_t messages, std::size_t bytes) noexcept {
    accepted_ += messages;
    accepted_bytes_ += bytes;
  }
  // The credit to give back now (under the mutex): once a quarter of either window has been accepted.
  credit_back due() noexcept {
    if (accepted_ < ack_every_ && accepted_bytes_ < ack_bytes_) return {};
    return {std::exchange(accepted_, 0), std::exchange(accepted_bytes_, 0)};
  }

  // Puts the backlog into the mailbox, waiting for room, in order.
  static task<void> push(std::shared_ptr<inbound> self) {
    for (;;) {
      std::optional<std::pair<item, std::size_t>> next;
      {
        std::lock_guard lock(self->mutex_);
        if (self->backlog_.empty()) {
          self->pushing_ = false;
          co_return;
        }
        next.emplace(std::move(self->backlog_.front()));
        self->backlog_.pop_front();
      }
      (void)co_await self->mailbox().send(std::move(next->first));  // fails only if the actor is gone
      credit_back acknowledge;
      {
        std::lock_guard lock(self->mutex_);
        self->accept(1, next->second);
        acknowledge = self->due();
      }
      acknowledge.send(*self->back_);
    }
  }

  // The message of one record, with a responder of this node's own for a request.
  std::optional<item> decode(std::uint32_t alternative, std::uint64_t request, reader& payload) {
    std::optional<item> result;
    Message message;
    payload.read_variant(message, alternative);
    if (payload.failed() || !payload.at_end()) return result;
    std::visit(
        [&](auto& typed) {
          using M = std::remove_cvref_t<decltype(typed)>;
          if (request == 0) {
            result.emplace(std::in_place_index<0>, std::move(message));
          } else if constexpr (postal::detail::has_responder<M> || postal::detail::declares_reply<M>) {
            using R = postal::detail::reply_of<M>;
            auto [reply, answer] = oneshot::channel<R>();
            forward_reply<R>(std::move(answer), request, back_);
            result.emplace(postal::detail::request_envelope<Message>(std::move(typed), std::move(reply)));
          }
        },
        message);
    return result;
  }

  // Sends the actor's answer to a remote request back to the asking node, on the thread that answers (or
  // drops the request), with no task of its own.
  template <class R>
  static inline_job forward_reply(oneshot::receiver<R> answer, std::uint64_t request, std::shared_ptr<origin> back) {
    auto value = co_await answer;
    if (!value) {
      back->unanswered(request);
      co_return;
    }
    std::vector<char> bytes;
    writer out(bytes, back->codec());
    out.write(*value);
    back->reply(request, std::move(bytes));
  }

  runtime& runtime_;
  actor_ref<Message> target_;
  std::shared_ptr<origin> back_;
  const std::size_t ack_every_;
  const std::size_t ack_bytes_;
  std::mutex mutex_;
  // Decoded, waiting for room in the mailbox (with their bytes); at most the sender's credit.
  std::deque<std::pair<item, std::size_t>> backlog_;
  bool pushing_ = false;            // a push task owns the backlog: new messages queue behind it
  std::size_t accepted_ = 0;        // messages in the mailbox (or dropped) whose credit has not gone back yet
  std::size_t accepted_bytes_ = 0;  // and their bytes
};

template <class Message>
class target final : public target_base {
 public:
  explicit target(actor_ref<Message> ref) : ref_(std::move(ref)), signature_(detail::signature<Message>()) {}
  const std::string& signature() const noexcept override { return signature_; }
  std::shared_ptr<inbound_base> open(runtime& rt, std::shared_ptr<origin> back, std::size_t ack_every,
                                     std::size_t ack_bytes) override {
    return std::make_shared<inbound<Message>>(rt, ref_, std::move(back), ack_every, ack_bytes);
  }
  task<exit_reason> ended() override { return ended_of(ref_.monitor()); }
  void kill() override { ref_.kill(); }
  postal::detail::control_ref control() const override { return postal::detail::ref_access::control(ref_); }

 private:
  static task<exit_reason> ended_of(actor_monitor monitor) { co_return co_await monitor.exit(); }
  actor_ref<Message> ref_;
  std::string signature_;
};

// -- refs inside messages ----------------------------------------------------------------------------------

// A ref is written as a presence byte (0: an empty ref), then its actor's address and message signature.
template <class Message>
void write_ref(writer& out, const actor_ref<Message>& ref) {
  ref_codec* codec = out.codec();
  if (codec == nullptr)
    throw std::logic_error("postal::cluster: an actor_ref is written only inside a message to another node");
  if (!ref) {
    out.write(std::uint8_t{0});
    return;
  }
  out.write(std::uint8_t{1});
  auto control = postal::detail::ref_access::control(ref);
  codec->write(out, control, signature<Message>(), [control]() -> std::shared_ptr<target_base> {
    if (auto running = ref_from_control<Message>(control)) return std::make_shared<target<Message>>(std::move(*running));
    return nullptr;
  });
}

// Gives the same actor's ref: this node's own actor, the stand-in this node already has for it, or a new
// stand-in.
template <class Message>
void read_ref(reader& in, actor_ref<Message>& ref) {
  ref_codec* codec = in.codec();
  std::uint8_t present = 0;
  in.read(present);
  if (codec == nullptr || in.failed()) {
    in.fail();
    return;
  }
  if (present == 0) {
    ref = actor_ref<Message>();
    return;
  }
  auto found = codec->read(in, signature<Message>());
  if (!found) {
    in.fail();
    return;
  }
  if (found->actor) {
    if (auto existing = ref_from_control<Message>(found->actor)) {
      if (found->way && found->from_home) found->way->imported();
      ref = std::move(*existing);
      return;
    }
  }
  auto way = codec->open(found->address);
  ref = spawn_proxy<Message>(codec->rt(), way, codec->proxy_capacity());
  if (found->from_home) way->imported();
}

}  // namespace postal::cluster::detail
