// A node's network side, on CAF's middleman: the endpoint actor that peers talk to (the cookie challenge,
// lookups, ends), the data port (batches, credit, replies, handled on CAF's network thread), the links of this node's remote refs, and the inbounds of the
// remote refs that other nodes hold to this node's actors. The only file of postal::cluster that includes
// CAF. Not for: the typed ends of a remote ref (include/postal/cluster/detail/proxy.hpp).
#include <postal/cluster/node.hpp>

#include <postal/waker.hpp>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/all.hpp>
#include <caf/io/middleman.hpp>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <atomic>
#include <coroutine>
#include <optional>
#include <cstdio>
#include <cstring>
#include <functional>
#include <set>
#include <map>
#include <stdexcept>
#include <unordered_map>

namespace postal::cluster::detail {
class endpoint_state;
// Code run inside the endpoint actor (which owns the peers): how this node's own threads reach it.
struct endpoint_command {
  std::function<void(caf::stateful_actor<endpoint_state>*)> run;
};
}  // namespace postal::cluster::detail

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(postal::cluster::detail::endpoint_command)

namespace postal::cluster {
namespace {

using hello_atom = caf::atom_constant<caf::atom("pc_hello")>;
using prove_atom = caf::atom_constant<caf::atom("pc_prove")>;
using lookup_atom = caf::atom_constant<caf::atom("pc_lookup")>;
using batch_atom = caf::atom_constant<caf::atom("pc_batch")>;
using credit_atom = caf::atom_constant<caf::atom("pc_credit")>;
using reply_atom = caf::atom_constant<caf::atom("pc_reply")>;
using unanswered_atom = caf::atom_constant<caf::atom("pc_noreply")>;
using exited_atom = caf::atom_constant<caf::atom("pc_exited")>;
using kill_atom = caf::atom_constant<caf::atom("pc_kill")>;

// -- the cookie challenge ----------------------------------------------------------------------------------

std::string random_nonce() {
  std::string nonce(16, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(nonce.data()), static_cast<int>(nonce.size())) != 1)
    throw std::runtime_error("postal::cluster: no random bytes for the cookie challenge");
  return nonce;
}

// HMAC-SHA256 of `role`, then both nonces, keyed with the cookie. The role keeps a node's proof from being
// replayed as the other side's.
std::string proof(const std::string& cookie, const char* role, const std::string& first, const std::string& second) {
  const std::string data = std::string(role) + first + second;
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  HMAC(EVP_sha256(), cookie.data(), static_cast<int>(cookie.size()), reinterpret_cast<const unsigned char*>(data.data()),
       data.size(), out, &length);
  return std::string(reinterpret_cast<const char*>(out), length);
}

bool same_proof(const std::string& a, const std::string& b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

using registry = std::map<std::string, std::string>;  // published name -> message signature

// What differs between two nodes' registries, for names both publish; empty when they agree.
std::string registry_difference(const registry& mine, const registry& theirs) {
  for (const auto& [name, signature] : mine) {
    auto found = theirs.find(name);
    if (found != theirs.end() && found->second != signature)
      return "'" + name + "' takes [" + detail::describe_signature(signature) + "] here but [" +
             detail::describe_signature(found->second) + "] there";
  }
  return {};
}

cluster_error error(cluster_error::kind_type kind, std::string message) { return {kind, std::move(message)}; }

cluster_error from_caf(const caf::error& failure, const std::string& what) {
  if (failure == caf::sec::request_timeout) return error(cluster_error::kind_type::timeout, what + ": no answer in time");
  return error(cluster_error::kind_type::unreachable, what + ": " + caf::to_string(failure));
}

}  // namespace

namespace detail {

std::string describe_signature(const std::string& signature) {
  std::string out;
  std::size_t start = 0;
  while (start < signature.size()) {
    const std::size_t end = signature.find(';', start);
    std::string name = signature.substr(start, end - start);
    if (!out.empty()) out += ", ";
    out += name;
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return out;
}

// -- the node's shared state ---------------------------------------------------------------------------------

struct published {
  std::uint64_t id;
  std::string name;
  std::shared_ptr<target_base> target;
};

class node_core : public std::enable_shared_from_this<node_core> {
 public:
  node_core(runtime& rt, node_options options) : runtime_(rt), options_(std::move(options)) {}

  runtime& rt() noexcept { return runtime_; }
  caf::actor_system& system() noexcept { return runtime_.system(); }
  const node_options& options() const noexcept { return options_; }

  caf::actor endpoint;  // set once, before any peer can reach it
  caf::actor data;      // the data port (see data_port below), set once with the endpoint
  std::uint16_t port = 0;

  // Sends `content` to a peer's endpoint as this node's endpoint (the peer checks who sends), from any
  // thread: straight into CAF's network layer, without a hop through the endpoint actor.
  template <class... Ts>
  void send(const caf::actor& to, Ts&&... content) {
    caf::send_as(endpoint, to, std::forward<Ts>(content)...);
  }
  // Runs `work` inside the endpoint actor.
  void post(std::function<void(caf::stateful_actor<endpoint_state>*)> work) {
    caf::anon_send(endpoint, endpoint_command{std::move(work)});
  }

  // -- published actors (any thread) --
  std::uint64_t publish(const std::string& name, std::shared_ptr<target_base> target) {
    std::lock_guard lock(mutex_);
    const std::uint64_t id = next_target_++;
    targets_[id] = published{id, name, std::move(target)};
    names_[name] = id;
    return id;
  }
  std::optional<published> find_target(const std::string& name) {
    std::lock_guard lock(mutex_);
    auto found = names_.find(name);
    if (found == names_.end()) return std::nullopt;
    return targets_.at(found->second);
  }
  std::shared_ptr<target_base> find_target(std::uint64_t id) {
    std::lock_guard lock(mutex_);
    auto found = targets_.find(id);
    return found == targets_.end() ? nullptr : found->second.target;
  }
  void unpublish(std::uint64_t id) {
    std::lock_guard lock(mutex_);
    auto found = targets_.find(id);
    if (found == targets_.end()) return;
    auto named = names_.find(found->second.name);
    if (named != names_.end() && named->second == id) names_.erase(named);
    targets_.erase(found);
  }
  registry names() {
    std::lock_guard lock(mutex_);
    registry all;
    for (const auto& [name, id] : names_) all[name] = targets_.at(id).target->signature();
    return all;
  }

  // -- this node's links (any thread) --
  void add_link(std::uint64_t id, const std::shared_ptr<link>& way) {
    std::lock_guard lock(mutex_);
    links_[id] = way;
  }
  void remove_link(std::uint64_t id) {
    std::lock_guard lock(mutex_);
    links_.erase(id);
  }
  std::shared_ptr<link> find_link(std::uint64_t id) {
    std::lock_guard lock(mutex_);
    auto found = links_.find(id);
    return found == links_.end() ? nullptr : found->second.lock();
  }
  std::vector<std::shared_ptr<link>> links_to(const caf::node_id& peer);
  std::uint64_t next_link_id() noexcept { return next_link_.fetch_add(1, std::memory_order_relaxed); }

  // -- admitted peers, as the data port sees them (any thread) --
  void admit(const caf::node_id& peer, caf::actor their_data) {
    std::lock_guard lock(peers_mutex_);
    auto& entry = admitted_[peer];
    entry.data = std::move(their_data);
  }
  void forget(const caf::node_id& peer) {
    std::map<std::uint64_t, std::shared_ptr<inbound_base>> dropped;  // released outside the lock
    std::lock_guard lock(peers_mutex_);
    if (auto found = admitted_.find(peer); found != admitted_.end()) {
      dropped.swap(found->second.inbounds);
      admitted_.erase(found);
    }
  }
  void forget_all() {
    std::map<caf::node_id, admitted_peer> dropped;
    std::lock_guard lock(peers_mutex_);
    dropped.swap(admitted_);
  }
  // A message to the data port: a batch, credit, a reply or an unanswered request.
  void on_data(caf::mailbox_element& what);

  // -- counters --
  std::atomic<std::uint64_t> peers_refused{0};
  std::atomic<std::uint64_t> messages_dropped{0};
  std::atomic<std::uint64_t> batches_malformed{0};

 private:
  runtime& runtime_;
  const node_options options_;
  std::mutex mutex_;
  std::uint64_t next_target_ = 1;
  std::unordered_map<std::uint64_t, published> targets_;
  std::map<std::string, std::uint64_t> names_;
  std::unordered_map<std::uint64_t, std::weak_ptr<link>> links_;
  std::atomic<std::uint64_t> next_link_{1};

  struct admitted_peer {
    caf::actor data;  // its data port: where credit and replies for its links go
    std::map<std::uint64_t, std::shared_ptr<inbound_base>> inbounds;  // by the peer's link id
  };
  std::mutex peers_mutex_;
  std::map<caf::node_id, admitted_peer> admitted_;
};

// The data port: where batches, credit and replies arrive. A CAF actor with no mailbox of its own: BASP
// calls its enqueue on the network thread as it reads each message, and the message is handled there at
// once (its work is to put messages into postal mailboxes and answer oneshots, which never block), so a
// message from another node costs no hop through CAF's scheduler before it reaches a postal actor. The
// cookie challenge, lookups and ends go through the endpoint actor, which may wait.
class data_port final : public caf::monitorable_actor {
 public:
  data_port(caf::actor_config& config, std::weak_ptr<node_core> core)
      : caf::monitorable_actor(config), core_(std::move(core)) {}
  void enqueue(caf::mailbox_element_ptr what, caf::execution_unit*) override {
    if (!what || getf(is_terminated_flag)) return;
    if (auto core = core_.lock()) core->on_data(*what);
  }
  const char* name() const override { return "postal.cluster.data"; }

 private:
  std::weak_ptr<node_core> core_;
};

// -- a link: one remote ref's way ---------------------------------------------------------------------------

struct link::state {
  std::weak_ptr<node_core> node;
  caf::actor peer_endpoint;
  caf::actor peer_data;
  caf::node_id peer_node;
  std::string peer_name;
  std::uint64_t id = 0;
  std::uint64_t target_id = 0;
  std::size_t window = 0;

  // The stand-in's thread only.
  std::vector<char> batch;
  std::size_t record_start = 0;
  std::uint64_t sent = 0;  // messages that took credit

  // Shared with the network side.
  std::atomic<std::uint64_t> granted{0};  // window + messages acknowledged
  std::atomic<bool> ended{false};
  std::mutex mutex;
  std::optional<waker> waiting;  // the stand-in, waiting for credit (guarded by mutex)
  std::unordered_map<std::uint64_t, std::unique_ptr<reply_sink>> pending;
  std::uint64_t next_request = 1;
  postal::detail::control_ref control;

  bool can_send() const noexcept {
    return ended.load(std::memory_order_acquire) || sent < granted.load(std::memory_order_acquire);
  }
  void wake_waiting() {
    std::optional<waker> woken;
    {
      std::lock_guard lock(mutex);
      woken.swap(waiting);
    }
    if (woken) woken->wake();
  }
  void grant(std::uint64_t messages) {
    granted.fetch_add(messages, std::memory_order_acq_rel);
    wake_waiting();
  }

  std::unique_ptr<reply_sink> take(std::uint64_t request) {
    std::lock_guard lock(mutex);
    auto found = pending.find(request);
    if (found == pending.end()) return nullptr;
    auto sink = std::move(found->second);
    pending.erase(found);
    return sink;
  }
  // The link ends: its pending requests are dropped (their askers learn why from the control block), a
  // credit wait ends, and the stand-in is stopped with `why`.
  void end(exit_reason why, bool node_down) {
    if (ended.exchange(true, std::memory_order_acq_rel)) return;
    postal::detail::control_ref stand_in;
    std::unordered_map<std::uint64_t, std::unique_ptr<reply_sink>> dropped;
    {
      std::lock_guard lock(mutex);
      stand_in = std::move(control);  // the link lets go of the stand-in: the stand-in holds the link
      dropped.swap(pending);
    }
    if (stand_in && node_down) stand_in->mark_node_down();
    dropped.clear();
    wake_waiting();
    if (stand_in)
      stand_in->post({postal::detail::control_request::kind_type::stop, stop_mode::drop, std::move(why)});
  }
};

link::link(std::unique_ptr<state> s) : state_(std::move(s)) {}
link::~link() = default;

bool link::take_credit() noexcept {
  state& s = *state_;
  if (s.ended.load(std::memory_order_acquire) || s.sent >= s.granted.load(std::memory_order_acquire)) return false;
  ++s.sent;
  return true;
}

bool link::can_send() const noexcept { return state_->can_send(); }
bool link::ended() const noexcept { return state_->ended.load(std::memory_order_acquire); }
bool link::park_for_credit(waker w) {
  std::lock_guard lock(state_->mutex);
  if (state_->can_send()) return false;
  state_->waiting.emplace(std::move(w));
  return true;
}

std::vector<char>& link::begin_record(std::uint32_t alternative, std::uint64_t request) {
  state& s = *state_;
  s.record_start = s.batch.size();
  writer header(s.batch);
  header(alternative, request, std::uint32_t{0});
  return s.batch;
}

void link::end_record() {
  state& s = *state_;
  const auto length = static_cast<std::uint32_t>(s.batch.size() - s.record_start - record_header_bytes);
  writer(s.batch).overwrite(s.record_start + record_length_offset, length);
}

std::uint64_t link::expect_reply(std::unique_ptr<reply_sink> sink) {
  state& s = *state_;
  std::lock_guard lock(s.mutex);
  if (s.ended.load(std::memory_order_acquire)) return 0;
  const std::uint64_t request = s.next_request++;
  s.pending.emplace(request, std::move(sink));
  return request;
}

std::size_t link::batch_bytes() const noexcept { return state_->batch.size(); }

void link::flush() {
  state& s = *state_;
  if (s.batch.empty()) return;
  std::vector<char> out;
  out.reserve(s.batch.capacity());
  out.swap(s.batch);
  if (s.ended.load(std::memory_order_acquire)) return;
  if (auto node = s.node.lock()) node->send(s.peer_data, batch_atom::value, s.id, s.target_id, std::uint64_t{s.window}, std::move(out));
}

void link::stopping(const exit_reason& why) {
  state& s = *state_;
  if (auto node = s.node.lock()) node->remove_link(s.id);
  if (!s.ended.load(std::memory_order_acquire) && why.is_killed())
    if (auto node = s.node.lock()) node->send(s.peer_endpoint, kill_atom::value, s.target_id);
  s.end(why, false);
}

void link::attach(postal::detail::control_ref control) {
  std::lock_guard lock(state_->mutex);
  state_->control = std::move(control);
}

void link::detach() noexcept {
  postal::detail::control_ref gone;
  std::lock_guard lock(state_->mutex);
  gone = std::move(state_->control);
}

std::vector<std::shared_ptr<link>> node_core::links_to(const caf::node_id& peer) {
  std::lock_guard lock(mutex_);
  std::vector<std::shared_ptr<link>> found;
  for (auto& [id, weak] : links_)
    if (auto way = weak.lock(); way && way->internals().peer_node == peer) found.push_back(std::move(way));
  return found;
}

// -- what an inbound sends back -----------------------------------------------------------------------------

class origin_impl final : public origin {
 public:
  origin_impl(std::shared_ptr<node_core> node, caf::actor peer, std::uint64_t link_id)
      : node_(std::move(node)), peer_(std::move(peer)), link_(link_id) {}
  void credit(std::uint64_t messages) override { node_->send(peer_, credit_atom::value, link_, messages); }
  void reply(std::uint64_t request, std::vector<char> bytes) override {
    node_->send(peer_, reply_atom::value, link_, request, std::move(bytes));
  }
  void unanswered(std::uint64_t request) override { node_->send(peer_, unanswered_atom::value, link_, request); }

 private:
  std::shared_ptr<node_core> node_;
  caf::actor peer_;
  std::uint64_t link_;
};

// -- the data port's messages ---------------------------------------------------------------------------------

void node_core::on_data(caf::mailbox_element& what) {
  const auto& content = what.content();
  caf::actor peer_data;
  if (what.sender) {
    std::lock_guard lock(peers_mutex_);
    if (auto found = admitted_.find(what.sender->node()); found != admitted_.end()) peer_data = found->second.data;
  }
  if (!peer_data || content.size() == 0 || !content.match_element<caf::atom_value>(0)) {
    messages_dropped.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  const caf::atom_value kind = content.get_as<caf::atom_value>(0);
  if (kind == batch_atom::value &&
      content.match_elements<caf::atom_value, std::uint64_t, std::uint64_t, std::uint64_t, std::vector<char>>()) {
    // A batch for one of our actors, from one of the peer's remote refs.
    const auto link_id = content.get_as<std::uint64_t>(1);
    const auto target_id = content.get_as<std::uint64_t>(2);
    const auto window = content.get_as<std::uint64_t>(3);
    const auto& bytes = content.get_as<std::vector<char>>(4);
    std::shared_ptr<inbound_base> inbound;
    {
      std::lock_guard lock(peers_mutex_);
      auto found = admitted_.find(what.sender->node());
      if (found == admitted_.end()) return;
      inbound = found->second.inbounds[link_id];
      if (!inbound) {
        auto target = find_target(target_id);
        if (!target) {  // it ended: its asks get no reply; the link hears of its end (exited)
          found->second.inbounds.erase(link_id);
          return;
        }
        inbound = target->open(runtime_, std::make_shared<origin_impl>(shared_from_this(), peer_data, link_id),
                               std::max<std::uint64_t>(1, window / 4));
        found->second.inbounds[link_id] = inbound;
      }
    }
    if (inbound->deliver(bytes.data(), bytes.size()) != 0) batches_malformed.fetch_add(1, std::memory_order_relaxed);
  } else if (kind == credit_atom::value && content.match_elements<caf::atom_value, std::uint64_t, std::uint64_t>()) {
    if (auto way = find_link(content.get_as<std::uint64_t>(1))) way->internals().grant(content.get_as<std::uint64_t>(2));
  } else if (kind == reply_atom::value &&
             content.match_elements<caf::atom_value, std::uint64_t, std::uint64_t, std::vector<char>>()) {
    auto way = find_link(content.get_as<std::uint64_t>(1));
    if (!way) return;
    if (auto sink = way->internals().take(content.get_as<std::uint64_t>(2))) {
      const auto& bytes = content.get_as<std::vector<char>>(3);
      reader in(bytes.data(), bytes.size());
      sink->deliver(in);
    }
  } else if (kind == unanswered_atom::value &&
             content.match_elements<caf::atom_value, std::uint64_t, std::uint64_t>()) {
    if (auto way = find_link(content.get_as<std::uint64_t>(1)))
      way->internals().take(content.get_as<std::uint64_t>(2));  // dropped: the asker gets no_reply
  } else {
    messages_dropped.fetch_add(1, std::memory_order_relaxed);
  }
}

// Stops the data port: it takes nothing more, and CAF's registry lets go of it.
void stop_data(node_core& core) {
  core.forget_all();
  if (auto* port = caf::actor_cast<caf::abstract_actor*>(core.data))
    static_cast<caf::monitorable_actor*>(port)->cleanup(caf::exit_reason::user_shutdown, nullptr);
}

// -- the endpoint actor -------------------------------------------------------------------------------------

struct peer_state {
  caf::actor endpoint;
  std::string name;
  std::string their_nonce;  // while the challenge runs
  std::string our_nonce;
  bool admitted = false;
  caf::actor data;                  // its data port
  std::set<std::uint64_t> watched;  // our targets this peer looked up: it hears of their end
};

class endpoint_state {
 public:
  std::shared_ptr<node_core> core;
  std::map<caf::node_id, peer_state> peers;
  std::map<caf::node_id, std::vector<oneshot::sender<expected<peer, cluster_error>>>> connecting;

  peer_state* admitted(const caf::strong_actor_ptr& sender) {
    if (!sender) return nullptr;
    auto found = peers.find(sender->node());
    if (found == peers.end() || !found->second.admitted) {
      core->messages_dropped.fetch_add(1, std::memory_order_relaxed);
      return nullptr;
    }
    return &found->second;
  }
};

using endpoint_actor = caf::stateful_actor<endpoint_state>;

void report(const char* what, const std::string& detail) {
  std::fprintf(stderr, "postal cluster: %s%s\n", what, detail.c_str());
}

// A peer is gone (its connection broke, it stopped answering heartbeats, or it left): every link to it
// ends with node_down, every inbound from it is dropped.
void peer_down(endpoint_actor* self, const caf::node_id& node, const std::string& why) {
  auto found = self->state.peers.find(node);
  if (found == self->state.peers.end()) return;
  const std::string name = found->second.name;
  self->state.peers.erase(found);
  self->state.core->forget(node);
  for (auto& way : self->state.core->links_to(node))
    way->internals().end(exit_reason{exit_reason::kind_type::node_down, "node '" + name + "' is down: " + why},
                         true);
}

void finish_connect(endpoint_actor* self, const caf::node_id& node, expected<peer, cluster_error> outcome) {
  auto waiting = self->state.connecting.find(node);
  if (waiting == self->state.connecting.end()) return;
  auto responders = std::move(waiting->second);
  self->state.connecting.erase(waiting);
  for (auto& responder : responders) (void)responder.send(outcome);
}

caf::behavior endpoint(endpoint_actor* self, std::shared_ptr<node_core> core) {
  self->state.core = std::move(core);
  self->set_down_handler([self](caf::down_msg& down) {
    peer_down(self, down.source.node(), caf::to_string(down.reason));
  });
  return {
      [self](endpoint_command& command) { command.run(self); },
      // -- the cookie challenge, serving side: (name, our nonce, our proof, our registry) or a refusal --
      [self](hello_atom, const std::string& their_name, const std::string& their_nonce, const registry& their_names,
             const caf::actor& their_data)
          -> std::tuple<std::uint8_t, std::string, std::string, std::string, std::string, caf::actor> {
        auto& state = self->state;
        auto sender = self->current_sender();
        if (!sender || !their_data) return {1, "no sender", {}, {}, {}, {}};
        const registry mine = state.core->names();
        if (auto difference = registry_difference(mine, their_names); !difference.empty()) {
          state.core->peers_refused.fetch_add(1, std::memory_order_relaxed);
          report("refused node '", their_name + "': message types differ: " + difference);
          return {1, "message types differ: " + difference, {}, {}, {}, {}};
        }
        peer_state& entry = state.peers[sender->node()];
        if (entry.admitted) return {0, {}, state.core->options().name, {}, {}, state.core->data};  // already connected
        entry.endpoint = caf::actor_cast<caf::actor>(sender);
        entry.data = their_data;
        entry.name = their_name;
        entry.their_nonce = their_nonce;
        entry.our_nonce = random_nonce();
        return {0, {}, state.core->options().name, entry.our_nonce,
                proof(state.core->options().cookie, "server", their_nonce, entry.our_nonce), state.core->data};
      },
      [self](prove_atom, const std::string& their_proof) -> std::tuple<std::uint8_t, std::string> {
        auto& state = self->state;
        auto sender = self->current_sender();
        if (!sender) return {1, "no sender"};
        auto found = state.peers.find(sender->node());
        if (found == state.peers.end()) return {1, "no challenge was given"};
        peer_state& entry = found->second;
        if (entry.admitted) return {0, {}};
        if (!same_proof(their_proof, proof(state.core->options().cookie, "client", entry.our_nonce, entry.their_nonce))) {
          state.core->peers_refused.fetch_add(1, std::memory_order_relaxed);
          report("refused node '", entry.name + "': it does not know the cluster's cookie");
          state.peers.erase(found);
          return {1, "wrong cookie"};
        }
        entry.admitted = true;
        state.core->admit(found->first, entry.data);
        self->monitor(entry.endpoint);
        return {0, {}};
      },
      // -- lookups: (0, id, signature) or (kind, 0, why) --
      [self](lookup_atom, const std::string& name,
             const std::string& signature) -> std::tuple<std::uint8_t, std::uint64_t, std::string> {
        auto* from = self->state.admitted(self->current_sender());
        if (from == nullptr) return {static_cast<std::uint8_t>(cluster_error::kind_type::refused), 0, "not admitted"};
        auto found = self->state.core->find_target(name);
        if (!found)
          return {static_cast<std::uint8_t>(cluster_error::kind_type::no_such_actor), 0,
                  "nothing is published as '" + name + "' on node '" + self->state.core->options().name + "'"};
        if (found->target->signature() != signature)
          return {static_cast<std::uint8_t>(cluster_error::kind_type::type_mismatch), 0,
                  "'" + name + "' takes [" + describe_signature(found->target->signature()) + "], not [" +
                      describe_signature(signature) + "]"};
        from->watched.insert(found->id);
        return {0, found->id, {}};
      },
      [self](kill_atom, std::uint64_t target_id) {
        if (self->state.admitted(self->current_sender()) == nullptr) return;
        if (auto target = self->state.core->find_target(target_id)) target->kill();
      },
      // -- from the far end of one of our links --
      [self](exited_atom, std::uint64_t target_id, std::uint8_t kind, const std::string& message) {
        auto sender = self->current_sender();
        if (self->state.admitted(sender) == nullptr) return;
        for (auto& way : self->state.core->links_to(sender->node()))
          if (way->internals().target_id == target_id)
            way->internals().end(exit_reason{static_cast<exit_reason::kind_type>(kind), message}, false);
      },
  };
}

// Watches a published actor: at its end it is unpublished, and the peers that looked it up hear of it.
task<void> watch_target(std::shared_ptr<node_core> core, std::uint64_t id, std::shared_ptr<target_base> target) {
  exit_reason why = co_await target->ended();
  core->unpublish(id);
  core->post([id, why](endpoint_actor* self) {
    for (auto& [node, entry] : self->state.peers)
      if (entry.admitted && entry.watched.erase(id) != 0)
        self->send(entry.endpoint, exited_atom::value, id, static_cast<std::uint8_t>(why.kind), why.message);
  });
}

}  // namespace detail

// -- the public side ----------------------------------------------------------------------------------------

runtime_options enable(runtime_options options, failure_detection detection) {
  options.configure.push_back([detection](caf::actor_system_config& config) {
    config.load<caf::io::middleman>();
    config.set("middleman.heartbeat-interval", caf::timespan{detection.interval});
    config.set("middleman.connection-timeout", caf::timespan{detection.timeout});
    config.set("middleman.workers", std::int64_t{0});
    config.set("middleman.enable-automatic-connections", false);
  });
  return options;
}

node::node(runtime& rt, node_options options) : runtime_(rt), options_(std::move(options)) {
  if (options_.cookie.empty())
    throw std::invalid_argument("postal::cluster::node: the cookie is empty (every node of a cluster needs the same one)");
  if (!rt.system().has_middleman())
    throw std::invalid_argument("postal::cluster::node: the runtime has no network layer: build it with "
                                "postal::cluster::enable(options)");
  if (options_.credit_window == 0) throw std::invalid_argument("postal::cluster::node: credit_window must be at least 1");
  core_ = std::make_shared<detail::node_core>(rt, options_);
  caf::actor_config port_config;
  core_->data = caf::make_actor<detail::data_port, caf::actor>(rt.system().next_actor_id(), rt.system().node(),
                                                                &rt.system(), port_config,
                                                                std::weak_ptr<detail::node_core>(core_));
  core_->endpoint = rt.system().spawn(detail::endpoint, core_);
  auto opened = rt.system().middleman().publish(core_->endpoint, options_.port, options_.bind_address.c_str(), true);
  if (!opened) {
    caf::anon_send_exit(core_->endpoint, caf::exit_reason::user_shutdown);
    detail::stop_data(*core_);
    throw std::runtime_error("postal::cluster::node: cannot listen on " + options_.bind_address + ":" +
                             std::to_string(options_.port) + ": " + caf::to_string(opened.error()));
  }
  core_->port = *opened;
}

node::~node() {
  (void)runtime_.system().middleman().unpublish(core_->endpoint, core_->port);
  detail::stop_data(*core_);
  core_->post([](detail::endpoint_actor* self) {
    for (auto& [node, entry] : self->state.peers)
      for (auto& way : self->state.core->links_to(node))
        way->internals().end(exit_reason{exit_reason::kind_type::node_down, "this node stopped"}, false);
    self->state.peers.clear();
    self->quit();
  });
}

std::uint16_t node::port() const noexcept { return core_->port; }
const std::string& node::name() const noexcept { return options_.name; }
std::string node::id() const { return caf::to_string(runtime_.system().node()); }
node_stats node::stats() const {
  return {core_->peers_refused.load(), core_->messages_dropped.load(), core_->batches_malformed.load()};
}

void node::publish_target(const std::string& name, std::shared_ptr<detail::target_base> target) {
  const std::uint64_t id = core_->publish(name, target);
  runtime_.spawn_detached(detail::watch_target(core_, id, std::move(target)));
}

task<expected<peer, cluster_error>> node::connect(std::string host, std::uint16_t port) {
  auto [responder, answer] = oneshot::channel<expected<peer, cluster_error>>();
  auto core = core_;
  core_->post([core, host, port, responder = std::make_shared<decltype(responder)>(std::move(responder))](
                  detail::endpoint_actor* self) mutable {
    const auto timeout = caf::duration{core->options().request_timeout};
    self->request(self->system().middleman().actor_handle(), timeout, caf::connect_atom::value, host, port)
        .then(
            [self, core, responder, host, port](const caf::node_id& node, caf::strong_actor_ptr& published,
                                                 const std::set<std::string>&) {
              if (!published) {
                (void)responder->send(unexpected{error(cluster_error::kind_type::unreachable,
                                                       "no node listens at " + host + ":" + std::to_string(port))});
                return;
              }
              auto& state = self->state;
              if (auto known = state.peers.find(node); known != state.peers.end() && known->second.admitted) {
                (void)responder->send(peer{known->second.name, caf::to_string(node)});
                return;
              }
              auto& waiting = state.connecting[node];
              waiting.push_back(std::move(*responder));
              if (waiting.size() > 1) return;  // a handshake with that node is under way
              auto them = caf::actor_cast<caf::actor>(published);
              const std::string our_nonce = random_nonce();
              const auto timeout = caf::duration{core->options().request_timeout};
              self->request(them, timeout, hello_atom::value, core->options().name, our_nonce, core->names(), core->data)
                  .then(
                      [self, core, them, node, our_nonce](std::uint8_t status, const std::string& why,
                                                           const std::string& their_name,
                                                           const std::string& their_nonce,
                                                           const std::string& their_proof, const caf::actor& their_data) {
                        if (status != 0) {
                          detail::finish_connect(self, node, unexpected{error(cluster_error::kind_type::refused, why)});
                          return;
                        }
                        auto& state = self->state;
                        if (their_nonce.empty()) {  // it had admitted us already
                          auto& entry = state.peers[node];
                          if (!entry.admitted) {
                            entry.endpoint = them;
                            entry.data = their_data;
                            entry.name = their_name;
                            entry.admitted = true;
                            core->admit(node, their_data);
                            self->monitor(them);
                          }
                          detail::finish_connect(self, node, peer{their_name, caf::to_string(node)});
                          return;
                        }
                        // Our proof goes out even when theirs is wrong: the other node then refuses us too,
                        // and logs why, which is where an operator looks.
                        const bool they_know = same_proof(their_proof, proof(core->options().cookie, "server", our_nonce, their_nonce));
                        if (!they_know) {
                          core->peers_refused.fetch_add(1, std::memory_order_relaxed);
                          detail::report("refused node '", their_name + "': it does not know the cluster's cookie");
                        }
                        const auto timeout = caf::duration{core->options().request_timeout};
                        self->request(them, timeout, prove_atom::value,
                                      proof(core->options().cookie, "client", their_nonce, our_nonce))
                            .then(
                                [self, core, them, their_data, node, their_name, they_know](std::uint8_t status,
                                                                                           const std::string& why) {
                                  if (!they_know) {
                                    detail::finish_connect(
                                        self, node,
                                        unexpected{error(cluster_error::kind_type::refused,
                                                         "node '" + their_name + "' does not know the cookie")});
                                    return;
                                  }
                                  if (status != 0) {
                                    detail::finish_connect(
                                        self, node, unexpected{error(cluster_error::kind_type::refused, why)});
                                    return;
                                  }
                                  auto& entry = self->state.peers[node];
                                  entry.endpoint = them;
                                  entry.data = their_data;
                                  entry.name = their_name;
                                  entry.admitted = true;
                                  core->admit(node, their_data);
                                  self->monitor(them);
                                  detail::finish_connect(self, node, peer{their_name, caf::to_string(node)});
                                },
                                [self, node](caf::error& failure) {
                                  detail::finish_connect(self, node, unexpected{from_caf(failure, "connect")});
                                });
                      },
                      [self, node](caf::error& failure) {
                        detail::finish_connect(self, node, unexpected{from_caf(failure, "connect")});
                      });
            },
            [responder, host, port](caf::error& failure) {
              (void)responder->send(unexpected{from_caf(failure, "connect to " + host + ":" + std::to_string(port))});
            });
  });
  auto outcome = co_await answer;
  if (!outcome) co_return unexpected{error(cluster_error::kind_type::unreachable, "the node stopped")};
  co_return std::move(*outcome);
}

expected<peer, cluster_error> node::blocking_connect(std::string host, std::uint16_t port) {
  return runtime_.block_on(connect(std::move(host), port));
}

task<expected<std::shared_ptr<detail::link>, cluster_error>> node::lookup_target(peer at, std::string name,
                                                                                 std::string signature) {
  using result = expected<std::shared_ptr<detail::link>, cluster_error>;
  auto [responder, answer] = oneshot::channel<result>();
  auto core = core_;
  core_->post([core, at, name, signature, responder = std::make_shared<oneshot::sender<result>>(std::move(responder))](
                  detail::endpoint_actor* self) {
    detail::peer_state* entry = nullptr;
    caf::node_id node;
    for (auto& [id, candidate] : self->state.peers)
      if (candidate.admitted && caf::to_string(id) == at.id) {
        entry = &candidate;
        node = id;
      }
    if (entry == nullptr) {
      (void)responder->send(unexpected{error(cluster_error::kind_type::not_connected,
                                             "not connected to node '" + at.name + "'")});
      return;
    }
    const auto timeout = caf::duration{core->options().request_timeout};
    auto them = entry->endpoint;
    auto their_data = entry->data;
    const std::string peer_name = entry->name;
    self->request(them, timeout, lookup_atom::value, name, signature)
        .then(
            [self, core, responder, them, their_data, node, peer_name](std::uint8_t kind, std::uint64_t target_id,
                                                            const std::string& why) {
              if (kind != 0) {
                (void)responder->send(unexpected{error(static_cast<cluster_error::kind_type>(kind), why)});
                return;
              }
              auto s = std::make_unique<detail::link::state>();
              s->node = core;
              s->peer_endpoint = them;
              s->peer_data = their_data;
              s->peer_node = node;
              s->peer_name = peer_name;
              s->id = core->next_link_id();
              s->target_id = target_id;
              s->window = core->options().credit_window;
              s->granted.store(s->window, std::memory_order_relaxed);
              auto way = std::make_shared<detail::link>(std::move(s));
              core->add_link(way->internals().id, way);
              if (self->state.peers.count(node) == 0)  // it went down while we asked
                way->internals().end(exit_reason{exit_reason::kind_type::node_down, "node '" + peer_name + "' is down"},
                                     true);
              (void)responder->send(std::move(way));
            },
            [responder, name](caf::error& failure) {
              (void)responder->send(unexpected{from_caf(failure, "lookup of '" + name + "'")});
            });
  });
  auto outcome = co_await answer;
  if (!outcome) co_return unexpected{error(cluster_error::kind_type::unreachable, "the node stopped")};
  co_return std::move(*outcome);
}

}  // namespace postal::cluster
