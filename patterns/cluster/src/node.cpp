// A node's network side, on CAF's middleman: the endpoint actor that peers talk to (the cookie challenge,
// lookups, ends, membership), the data port (batches, credit, replies, handled on CAF's network thread),
// the links of this node's remote refs, and the inbounds of the remote refs that other nodes hold to this
// node's actors. The only file of postal::cluster that includes CAF. Not for: the typed ends of a remote ref (include/postal/cluster/detail/proxy.hpp).
#include <postal/cluster/node.hpp>

#include <postal/waker.hpp>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/all.hpp>
#include <caf/io/middleman.hpp>
#include <caf/openssl/manager.hpp>
#include <caf/openssl/publish.hpp>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <limits>
#include <coroutine>
#include <optional>
#include <cstdio>
#include <cstring>
#include <functional>
#include <set>
#include <map>
#include <stdexcept>
#include <tuple>
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
using release_atom = caf::atom_constant<caf::atom("pc_release")>;
using broken_atom = caf::atom_constant<caf::atom("pc_broken")>;
using join_atom = caf::atom_constant<caf::atom("pc_join")>;
using member_atom = caf::atom_constant<caf::atom("pc_member")>;
using leave_atom = caf::atom_constant<caf::atom("pc_leave")>;
using heal_atom = caf::atom_constant<caf::atom("pc_heal")>;
// How often a node tries to join again through the members it sees down.
constexpr std::chrono::seconds heal_interval{1};

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

// An admitted peer, as the links and the data port need it.
struct peer_info {
  caf::actor endpoint;
  caf::actor data;    // its data port: where credit, replies and batches for it go
  std::string id;     // CAF's node id, as text
  std::string name;
  std::string host;   // where it listens (for refs to its actors that this node passes on)
  std::uint16_t port = 0;
};

struct published {
  std::uint64_t id;
  std::string name;  // empty for an actor exported because its ref crossed inside a message
  std::shared_ptr<target_base> target;  // holds the actor; an exported one no peer holds lets go (null)
  std::map<caf::node_id, std::uint64_t> holders;  // refs each peer received, less those it released
  postal::detail::control_ref control;  // the actor's control block, until the actor ends
  std::function<std::shared_ptr<target_base>()> revive;  // a target again, while the actor runs
  std::string signature;
};

// The stand-in this node made for a remote actor, found again when another ref to that actor arrives.
struct stand_in {
  postal::detail::control_ref control;
  std::weak_ptr<link> way;
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
  std::string id;       // this node's id, as text
  std::string host;     // the address peers are told to reach this node at
  bool tls = false;     // peers are reached and accepted over TLS only
  std::atomic<bool> ready{false};  // set once the constructor has filled in everything above
  // What opens connections: CAF's middleman, or its OpenSSL module for TLS.
  caf::io::middleman_actor connector() {
    return tls ? system().openssl_manager().actor_handle() : system().middleman().actor_handle();
  }
  std::optional<watch::sender<cluster_view>> view;  // the membership: changed on the endpoint's thread
  member self;                                      // this node's own entry in it

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
    auto control = target->control();
    by_actor_[control.get()] = id;
    auto signature = target->signature();
    targets_[id] = published{id, name, std::move(target), {}, std::move(control), {}, std::move(signature)};
    names_[name] = id;
    return id;
  }
  // The id under which `actor`'s ref goes to `peer` inside a message: its published one, or a new one
  // (`fresh` set: the caller watches it); 0 if the actor no longer runs. Each ref sent counts as held by
  // the peer until it releases it.
  std::uint64_t export_actor(const postal::detail::control_ref& actor,
                             std::function<std::shared_ptr<target_base>()> revive, const caf::node_id& peer,
                             std::shared_ptr<target_base>& fresh) {
    std::lock_guard lock(mutex_);
    std::uint64_t id = 0;
    if (auto known = by_actor_.find(actor.get()); known != by_actor_.end()) {
      id = known->second;
      auto& entry = targets_.at(id);
      if (!entry.target) entry.target = entry.revive();  // let go by every peer before
      if (!entry.target) return 0;
    } else {
      fresh = revive();
      if (!fresh) return 0;
      id = next_target_++;
      by_actor_[actor.get()] = id;
      targets_[id] = published{id, {}, fresh, {}, actor, std::move(revive), fresh->signature()};
    }
    ++targets_.at(id).holders[peer];
    return id;
  }
  // The control block of this node's actor `id` and its signature, until it ends.
  std::optional<std::pair<postal::detail::control_ref, std::string>> find_actor(std::uint64_t id) {
    std::lock_guard lock(mutex_);
    auto found = targets_.find(id);
    if (found == targets_.end()) return std::nullopt;
    return std::pair{found->second.control, found->second.signature};
  }
  // A target for `id` to deliver to: the one held, or, for an exported actor every peer let go of but that
  // still runs, a new one that the delivering inbound alone holds.
  std::shared_ptr<target_base> deliverable(std::uint64_t id) {
    std::lock_guard lock(mutex_);
    auto found = targets_.find(id);
    if (found == targets_.end()) return nullptr;
    if (found->second.target) return found->second.target;
    return found->second.revive ? found->second.revive() : nullptr;
  }
  // `peer` dropped `count` refs to the actor `id`. An exported actor that no peer holds any more is let
  // go (it runs on while this node has refs to it; exported again, it keeps its id).
  void release(const caf::node_id& peer, std::uint64_t id, std::uint64_t count) {
    std::shared_ptr<target_base> dropped;  // released outside the lock: it may be the actor's last ref
    std::lock_guard lock(mutex_);
    auto found = targets_.find(id);
    if (found == targets_.end()) return;
    auto held = found->second.holders.find(peer);
    if (held == found->second.holders.end()) return;
    held->second -= std::min(held->second, count);
    if (held->second == 0) found->second.holders.erase(held);
    if (found->second.name.empty() && found->second.holders.empty()) dropped = std::move(found->second.target);
  }
  // `peer` is gone: it holds nothing any more.
  void release_all(const caf::node_id& peer) {
    std::vector<std::shared_ptr<target_base>> dropped;
    std::lock_guard lock(mutex_);
    for (auto& [id, entry] : targets_) {
      if (entry.holders.erase(peer) != 0 && entry.name.empty() && entry.holders.empty() && entry.target)
        dropped.push_back(std::move(entry.target));
    }
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
  // The actor ended.
  void unpublish(std::uint64_t id) {
    std::shared_ptr<target_base> dropped;
    std::lock_guard lock(mutex_);
    auto found = targets_.find(id);
    if (found == targets_.end()) return;
    if (!found->second.name.empty()) {
      auto named = names_.find(found->second.name);
      if (named != names_.end() && named->second == id) names_.erase(named);
    }
    if (auto known = by_actor_.find(found->second.control.get()); known != by_actor_.end() && known->second == id)
      by_actor_.erase(known);
    dropped = std::move(found->second.target);
    targets_.erase(found);
  }

  // -- stand-ins of remote actors (any thread) --
  std::optional<stand_in> find_stand_in(const ref_address& home);
  void add_stand_in(const std::shared_ptr<link>& way, postal::detail::control_ref control);
  void remove_stand_in(link& way);
  void add_connecting(const std::shared_ptr<link>& way) {
    std::lock_guard lock(mutex_);
    std::erase_if(connecting_, [](const std::weak_ptr<link>& entry) { return entry.expired(); });
    connecting_.push_back(way);
  }
  // This node stops: links still waiting for a connection end (their stand-ins' waits with them).
  void end_connecting();
  // The link of a stand-in, if `actor` is one.
  std::shared_ptr<link> stand_in_link(const postal::detail::control_block* actor) {
    std::lock_guard lock(mutex_);
    auto found = stand_in_links_.find(actor);
    return found == stand_in_links_.end() ? nullptr : found->second.lock();
  }
  // A link to `target` on the admitted peer `node` (ended with node_down if it is not admitted any more).
  std::shared_ptr<link> make_link(const caf::node_id& node, std::uint64_t target, const std::string& signature);
  // A link for a ref that arrived inside a message: to a peer, to a node this one connects to first, or
  // (the actor is gone) one that has ended.
  std::shared_ptr<link> open_link(const ref_address& address);
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
  void admit(const caf::node_id& peer, peer_info info) {
    std::lock_guard lock(peers_mutex_);
    admitted_[peer].info = std::move(info);
  }
  std::optional<peer_info> admitted(const caf::node_id& peer) {
    std::lock_guard lock(peers_mutex_);
    auto found = admitted_.find(peer);
    if (found == admitted_.end()) return std::nullopt;
    return found->second.info;
  }
  std::optional<std::pair<caf::node_id, peer_info>> admitted(const std::string& id) {
    std::lock_guard lock(peers_mutex_);
    for (auto& [node, entry] : admitted_)
      if (entry.info.id == id) return std::pair{node, entry.info};
    return std::nullopt;
  }
  void forget(const caf::node_id& peer) {
    {
      std::map<std::uint64_t, std::shared_ptr<inbound_base>> dropped;  // released outside the lock
      std::lock_guard lock(peers_mutex_);
      if (auto found = admitted_.find(peer); found != admitted_.end()) {
        dropped.swap(found->second.inbounds);
        admitted_.erase(found);
      }
    }
    release_all(peer);
  }
  void forget_all() {
    std::map<caf::node_id, admitted_peer> dropped;
    std::lock_guard lock(peers_mutex_);
    dropped.swap(admitted_);
  }
  // The peer's link `link_id` ended: its inbound (and the ref it holds) goes.
  void close_inbound(const caf::node_id& peer, std::uint64_t link_id) {
    std::shared_ptr<inbound_base> closed;
    std::lock_guard lock(peers_mutex_);
    if (auto found = admitted_.find(peer); found != admitted_.end()) {
      auto inbound = found->second.inbounds.find(link_id);
      if (inbound == found->second.inbounds.end()) return;
      closed = std::move(inbound->second);
      found->second.inbounds.erase(inbound);
    }
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
  std::unordered_map<const postal::detail::control_block*, std::uint64_t> by_actor_;  // published actors
  std::map<std::tuple<std::string, std::uint64_t, std::string>, stand_in> stand_ins_;  // (node, target, signature)
  std::unordered_map<const postal::detail::control_block*, std::weak_ptr<link>> stand_in_links_;
  std::vector<std::weak_ptr<link>> connecting_;  // links waiting for a connection to their node

  struct admitted_peer {
    peer_info info;
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
    auto core = core_.lock();
    if (!core) return;
    try {
      core->on_data(*what);
    } catch (const std::exception& failure) {  // nothing may escape into CAF's network thread
      core->batches_malformed.fetch_add(1, std::memory_order_relaxed);
      std::fprintf(stderr, "postal cluster: a message from a peer could not be handled: %s\n", failure.what());
    }
  }
  const char* name() const override { return "postal.cluster.data"; }

 private:
  std::weak_ptr<node_core> core_;
};

// -- a link: one remote ref's way ---------------------------------------------------------------------------

struct link::state {
  std::weak_ptr<node_core> node;
  // Where the remote actor lives. Fixed when the link is made, except for a link to a node this one had to
  // connect to first: then its peer fields are set, under `mutex`, before its first credit.
  ref_address home;
  caf::actor peer_endpoint;
  caf::actor peer_data;
  caf::node_id peer_node;
  std::string peer_name;
  std::shared_ptr<ref_codec> codec;
  std::uint64_t id = 0;
  std::uint64_t target_id = 0;
  std::size_t window = 0;        // messages in flight
  std::size_t window_bytes = 0;  // bytes in flight (one message may pass it)
  std::atomic<std::uint64_t> imports{0};  // refs to the remote actor that arrived in messages and use this link

  // The stand-in's thread only.
  std::vector<char> batch;
  std::size_t record_start = 0;
  std::uint64_t sent = 0;        // messages that took credit
  std::uint64_t sent_bytes = 0;  // and their bytes

  // Shared with the network side.
  std::atomic<std::uint64_t> granted{0};        // window + messages acknowledged
  std::atomic<std::uint64_t> granted_bytes{0};  // window_bytes + bytes acknowledged
  std::atomic<bool> ended{false};
  std::mutex mutex;
  std::optional<waker> waiting;  // the stand-in, waiting for credit (guarded by mutex)
  std::unordered_map<std::uint64_t, std::unique_ptr<reply_sink>> pending;
  std::uint64_t next_request = 1;
  postal::detail::control_ref control;
  std::optional<exit_reason> ended_why;  // once ended, for a stand-in attached after that
  const postal::detail::control_block* stand_in = nullptr;  // the stand-in's identity (guarded by the node's mutex)
  bool ended_node_down = false;

  bool has_credit() const noexcept {
    return sent < granted.load(std::memory_order_acquire) && sent_bytes < granted_bytes.load(std::memory_order_acquire);
  }
  bool can_send() const noexcept { return ended.load(std::memory_order_acquire) || has_credit(); }
  void wake_waiting() {
    std::optional<waker> woken;
    {
      std::lock_guard lock(mutex);
      woken.swap(waiting);
    }
    if (woken) woken->wake();
  }
  void grant(std::uint64_t messages, std::uint64_t bytes) {
    granted_bytes.fetch_add(bytes, std::memory_order_acq_rel);
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
      ended_why = why;
      ended_node_down = node_down;
    }
    if (stand_in && node_down) stand_in->mark_node_down();  // before the askers learn of the end
    dropped.clear();
    wake_waiting();
    if (stand_in) stop_stand_in(stand_in, std::move(why));
  }
  static void stop_stand_in(const postal::detail::control_ref& stand_in, exit_reason why) {
    stand_in->post({postal::detail::control_request::kind_type::stop, stop_mode::drop, std::move(why)});
  }
};

link::link(std::unique_ptr<state> s) : state_(std::move(s)) {}
link::~link() = default;

bool link::take_credit() noexcept {
  state& s = *state_;
  if (s.ended.load(std::memory_order_acquire) || !s.has_credit()) return false;
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
  s.sent_bytes += record_header_bytes + length;
}

void link::abort_record() noexcept {
  state& s = *state_;
  s.batch.resize(s.record_start);
  --s.sent;  // its credit was taken in vain
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
  if (auto node = s.node.lock()) node->send(s.peer_data, batch_atom::value, s.id, s.target_id, std::uint64_t{s.window},
                                     std::uint64_t{s.window_bytes}, std::move(out));
}

void link::stopping(const exit_reason& why) {
  state& s = *state_;
  auto node = s.node.lock();
  if (node) {
    node->remove_link(s.id);
    node->remove_stand_in(*this);
  }
  caf::actor peer;
  {
    std::lock_guard lock(s.mutex);
    peer = s.peer_endpoint;
  }
  if (node && peer && !s.ended.load(std::memory_order_acquire)) {
    if (why.is_killed()) node->send(peer, kill_atom::value, s.target_id);
    // The far end closes its side of the link (which holds a ref to the actor), and the refs to the actor
    // that came in messages are all gone with the stand-in: its node may let the actor go.
    node->send(peer, release_atom::value, s.target_id, s.id, s.imports.load(std::memory_order_acquire));
  }
  s.end(why, false);
}

void link::attach(postal::detail::control_ref control) {
  state& s = *state_;
  auto node = s.node.lock();
  if (node) node->add_stand_in(shared_from_this(), control);
  std::optional<exit_reason> why;
  bool node_down = false;
  {
    std::lock_guard lock(s.mutex);
    if (s.ended_why) {  // it ended before the stand-in existed: the stand-in stops at once
      why = s.ended_why;
      node_down = s.ended_node_down;
    } else {
      s.control = control;
    }
  }
  if (why) {
    if (node_down) control->mark_node_down();
    state::stop_stand_in(control, std::move(*why));
  }
}

void link::imported() noexcept { state_->imports.fetch_add(1, std::memory_order_acq_rel); }
ref_codec* link::codec() noexcept { return state_->codec.get(); }

void link::detach() noexcept {
  postal::detail::control_ref gone;
  std::lock_guard lock(state_->mutex);
  gone = std::move(state_->control);
}

// A link that has ended: its stand-in stops as soon as it exists (a ref to an actor that is gone).
std::shared_ptr<link> ended_link(const ref_address& address, exit_reason why, bool node_down) {
  auto s = std::make_unique<link::state>();
  s->home = address;
  s->target_id = address.target;
  auto way = std::make_shared<link>(std::move(s));
  way->internals().end(std::move(why), node_down);
  return way;
}

std::vector<std::shared_ptr<link>> node_core::links_to(const caf::node_id& peer) {
  std::lock_guard lock(mutex_);
  std::vector<std::shared_ptr<link>> found;
  for (auto& [id, weak] : links_)
    if (auto way = weak.lock(); way && way->internals().peer_node == peer) found.push_back(std::move(way));
  return found;
}

// -- refs inside messages -----------------------------------------------------------------------------------

task<void> watch_target(std::shared_ptr<node_core> core, std::uint64_t id, task<exit_reason> ended);
void watch_for(node_core& core, const caf::node_id& peer, std::uint64_t id);

// How refs cross between this node and one peer: written as the address of their actor, read back as a
// ref to this node's own actor, to the stand-in this node already has for that actor, or to a new one.
class peer_codec final : public ref_codec {
 public:
  peer_codec(const std::shared_ptr<node_core>& core, caf::node_id peer)
      : core_(core), peer_(std::move(peer)), runtime_(core->rt()), capacity_(core->options().proxy_capacity) {}

  void write(writer& out, const postal::detail::control_ref& actor, const std::string& signature,
             std::function<std::shared_ptr<target_base>()> revive) override {
    auto core = core_.lock();
    if (!core) throw std::runtime_error("postal::cluster: a ref cannot cross: this node stopped");
    ref_address address;
    if (auto way = core->stand_in_link(actor.get())) {  // a stand-in: the actor lives on its home node
      link::state& s = way->internals();
      std::lock_guard lock(s.mutex);
      address = s.home;
    } else {
      std::shared_ptr<target_base> fresh;
      address = {core->id, core->host, core->port, core->export_actor(actor, std::move(revive), peer_, fresh), {}};
      if (fresh) core->rt().spawn_detached(watch_target(core, address.target, fresh->ended()));
      if (address.target != 0) watch_for(*core, peer_, address.target);
    }
    out(address.node, address.host, address.port, address.target, signature);
  }

  std::optional<found> read(reader& in, const std::string& signature) override {
    found result;
    std::string written_signature;
    in(result.address.node, result.address.host, result.address.port, result.address.target, written_signature);
    auto core = core_.lock();
    if (in.failed() || written_signature != signature || !core) return std::nullopt;
    result.address.signature = signature;
    result.from_home = result.address.node == caf::to_string(peer_);
    if (result.address.node == core->id) {
      if (auto actor = core->find_actor(result.address.target)) {
        if (actor->second != signature) return std::nullopt;
        result.actor = std::move(actor->first);
      }
    } else if (auto known = core->find_stand_in(result.address)) {
      result.way = known->way.lock();
      if (result.way) result.actor = std::move(known->control);
    }
    return result;
  }

  std::shared_ptr<link> open(const ref_address& address) override {
    if (auto core = core_.lock()) return core->open_link(address);
    return ended_link(address, exit_reason{exit_reason::kind_type::node_down, "this node stopped"}, true);
  }
  runtime& rt() noexcept override { return runtime_; }
  std::size_t proxy_capacity() const noexcept override { return capacity_; }

 private:
  std::weak_ptr<node_core> core_;
  caf::node_id peer_;
  runtime& runtime_;
  const std::size_t capacity_;
};

// Points `s` at the admitted peer `node` (its endpoint, data port, name, and how refs cross to it).
void set_peer(link::state& s, const std::shared_ptr<node_core>& core, const caf::node_id& node, const peer_info& info) {
  s.peer_endpoint = info.endpoint;
  s.peer_data = info.data;
  s.peer_node = node;
  s.peer_name = info.name;
  s.codec = std::make_shared<peer_codec>(core, node);
}

// -- what an inbound sends back -----------------------------------------------------------------------------

class origin_impl final : public origin {
 public:
  origin_impl(std::shared_ptr<node_core> node, caf::actor peer, caf::node_id peer_node, std::uint64_t link_id)
      : node_(std::move(node)), peer_(std::move(peer)), link_(link_id), codec_(node_, std::move(peer_node)) {}
  ref_codec* codec() noexcept override { return &codec_; }
  void credit(std::uint64_t messages, std::uint64_t bytes) override {
    node_->send(peer_, credit_atom::value, link_, messages, bytes);
  }
  void reply(std::uint64_t request, std::vector<char> bytes) override {
    node_->send(peer_, reply_atom::value, link_, request, std::move(bytes));
  }
  void unanswered(std::uint64_t request) override { node_->send(peer_, unanswered_atom::value, link_, request); }

 private:
  std::shared_ptr<node_core> node_;
  caf::actor peer_;
  std::uint64_t link_;
  peer_codec codec_;
};

// -- the data port's messages ---------------------------------------------------------------------------------

void node_core::on_data(caf::mailbox_element& what) {
  const auto& content = what.content();
  caf::actor peer_data, peer_endpoint;
  if (what.sender) {
    std::lock_guard lock(peers_mutex_);
    if (auto found = admitted_.find(what.sender->node()); found != admitted_.end()) {
      peer_data = found->second.info.data;
      peer_endpoint = found->second.info.endpoint;
    }
  }
  if (!peer_data || content.size() == 0 || !content.match_element<caf::atom_value>(0)) {
    messages_dropped.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  const caf::atom_value kind = content.get_as<caf::atom_value>(0);
  if (kind == batch_atom::value && content.match_elements<caf::atom_value, std::uint64_t, std::uint64_t, std::uint64_t,
                                                          std::uint64_t, std::vector<char>>()) {
    // A batch for one of our actors, from one of the peer's remote refs.
    const auto link_id = content.get_as<std::uint64_t>(1);
    const auto target_id = content.get_as<std::uint64_t>(2);
    const auto window = content.get_as<std::uint64_t>(3);
    const auto window_bytes = content.get_as<std::uint64_t>(4);
    const auto& bytes = content.get_as<std::vector<char>>(5);
    std::shared_ptr<inbound_base> inbound;
    {
      std::lock_guard lock(peers_mutex_);
      auto found = admitted_.find(what.sender->node());
      if (found == admitted_.end()) return;
      inbound = found->second.inbounds[link_id];
      if (!inbound) {
        auto target = deliverable(target_id);
        if (!target) {  // it ended: the link ends, its asks with no_reply
          found->second.inbounds.erase(link_id);
          send(peer_endpoint, exited_atom::value, target_id, static_cast<std::uint8_t>(exit_reason::kind_type::normal),
               std::string("the actor is gone"));
          return;
        }
        inbound = target->open(
            runtime_, std::make_shared<origin_impl>(shared_from_this(), peer_data, what.sender->node(), link_id),
            std::max<std::uint64_t>(1, window / 4), std::max<std::uint64_t>(1, window_bytes / 4));
        found->second.inbounds[link_id] = inbound;
      }
    }
    const auto outcome = inbound->deliver(bytes.data(), bytes.size());
    if (outcome.skipped != 0 || outcome.broken) batches_malformed.fetch_add(1, std::memory_order_relaxed);
    if (outcome.broken) {  // what follows on this link cannot be trusted: it ends, every wait on it with it
      close_inbound(what.sender->node(), link_id);
      send(peer_endpoint, broken_atom::value, link_id, std::string("a batch could not be read"));
    }
  } else if (kind == credit_atom::value &&
             content.match_elements<caf::atom_value, std::uint64_t, std::uint64_t, std::uint64_t>()) {
    if (auto way = find_link(content.get_as<std::uint64_t>(1)))
      way->internals().grant(content.get_as<std::uint64_t>(2), content.get_as<std::uint64_t>(3));
  } else if (kind == reply_atom::value &&
             content.match_elements<caf::atom_value, std::uint64_t, std::uint64_t, std::vector<char>>()) {
    auto way = find_link(content.get_as<std::uint64_t>(1));
    if (!way) return;
    if (auto sink = way->internals().take(content.get_as<std::uint64_t>(2))) {
      const auto& bytes = content.get_as<std::vector<char>>(3);
      reader in(bytes.data(), bytes.size(), way->codec());
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
  peer_info info;           // what the links and the data port use once it is admitted
  std::string their_nonce;  // while the challenge runs
  std::string our_nonce;
  bool admitted = false;
  std::set<std::uint64_t> watched;  // our targets this peer looked up or got refs to: it hears of their end
};

using connect_done = std::function<void(expected<peer, cluster_error>)>;

class endpoint_state {
 public:
  // Joins under way, by host:port, with whoever waits for their outcome.
  std::map<std::string, std::vector<std::function<void(expected<void, cluster_error>)>>> introducing;
  std::shared_ptr<node_core> core;
  std::map<caf::node_id, peer_state> peers;
  std::map<caf::node_id, std::vector<connect_done>> connecting;  // handshakes under way, by node

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

// Membership, defined below with its messages.
std::vector<char> encode_members(const std::vector<member>& list);
std::optional<std::vector<member>> decode_members(const std::vector<char>& bytes);
void member_up(node_core& core, const member& joined);
void member_gone(node_core& core, const std::string& id, member::status_type status);
std::vector<member> members_up(node_core& core);
bool known_up(node_core& core, const member& candidate);
bool should_connect(node_core& core, const member& candidate);
void tell_members(endpoint_actor* self, const caf::node_id& except);
using join_done = std::function<void(expected<void, cluster_error>)>;
void join_through(endpoint_actor* self, std::shared_ptr<node_core> core, std::string host, std::uint16_t port,
                  join_done done);
void heal(endpoint_actor* self);

// A peer is gone (its connection broke, it stopped answering heartbeats, or it left): every link to it
// ends with node_down, every inbound from it is dropped.
void peer_down(endpoint_actor* self, const caf::node_id& node, const std::string& why) {
  auto found = self->state.peers.find(node);
  if (found == self->state.peers.end()) return;
  const std::string name = found->second.info.name;
  self->state.peers.erase(found);
  self->state.core->forget(node);
  member_gone(*self->state.core, caf::to_string(node), member::status_type::down);
  for (auto& way : self->state.core->links_to(node))
    way->internals().end(exit_reason{exit_reason::kind_type::node_down, "node '" + name + "' is down: " + why},
                         true);
}

void finish_connect(endpoint_actor* self, const caf::node_id& node, expected<peer, cluster_error> outcome) {
  auto waiting = self->state.connecting.find(node);
  if (waiting == self->state.connecting.end()) return;
  auto responders = std::move(waiting->second);
  self->state.connecting.erase(waiting);
  for (auto& responder : responders) responder(outcome);
}

// The peer `node` passed the challenge: links and the data port may use it.
void admit(endpoint_actor* self, const caf::node_id& node, peer_state& entry) {
  entry.admitted = true;
  self->state.core->admit(node, entry.info);
  self->monitor(entry.info.endpoint);
}

caf::behavior endpoint(endpoint_actor* self, std::shared_ptr<node_core> core) {
  self->state.core = std::move(core);
  self->set_down_handler([self](caf::down_msg& down) {
    peer_down(self, down.source.node(), caf::to_string(down.reason));
  });
  self->delayed_send(self, heal_interval, heal_atom::value);
  return {
      [self](heal_atom) {
        heal(self);
        self->delayed_send(self, heal_interval, heal_atom::value);
      },
      [self](endpoint_command& command) { command.run(self); },
      // -- the cookie challenge, serving side: (0, "", name, our nonce, our proof, data port, host, port) or a
      // refusal (1, why) --
      [self](hello_atom, const std::string& their_name, const std::string& their_nonce, const registry& their_names,
             const caf::actor& their_data, const std::string& their_host, std::uint16_t their_port)
          -> std::tuple<std::uint8_t, std::string, std::string, std::string, std::string, caf::actor, std::string,
                        std::uint16_t> {
        auto& state = self->state;
        auto sender = self->current_sender();
        if (!sender || !their_data) return {1, "no sender", {}, {}, {}, {}, {}, 0};
        if (!state.core->ready.load(std::memory_order_acquire)) return {1, "the node is starting", {}, {}, {}, {}, {}, 0};
        if (sender->node() == self->system().node()) return {1, "a node does not connect to itself", {}, {}, {}, {}, {}, 0};
        const registry mine = state.core->names();
        if (auto difference = registry_difference(mine, their_names); !difference.empty()) {
          state.core->peers_refused.fetch_add(1, std::memory_order_relaxed);
          report("refused node '", their_name + "': message types differ: " + difference);
          return {1, "message types differ: " + difference, {}, {}, {}, {}, {}, 0};
        }
        peer_state& entry = state.peers[sender->node()];
        if (entry.admitted)  // already connected
          return {0, {}, state.core->options().name, {}, {}, state.core->data, state.core->host, state.core->port};
        entry.info = peer_info{caf::actor_cast<caf::actor>(sender), their_data, caf::to_string(sender->node()),
                               their_name, their_host, their_port};
        entry.their_nonce = their_nonce;
        entry.our_nonce = random_nonce();
        return {0, {}, state.core->options().name, entry.our_nonce,
                proof(state.core->options().cookie, "server", their_nonce, entry.our_nonce), state.core->data,
                state.core->host, state.core->port};
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
          report("refused node '", entry.info.name + "': it does not know the cluster's cookie");
          state.peers.erase(found);
          return {1, "wrong cookie"};
        }
        admit(self, found->first, entry);
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
      [self](release_atom, std::uint64_t target_id, std::uint64_t link_id, std::uint64_t count) {
        auto sender = self->current_sender();
        if (self->state.admitted(sender) == nullptr) return;
        self->state.core->close_inbound(sender->node(), link_id);
        if (count != 0) self->state.core->release(sender->node(), target_id, count);
      },
      // -- membership: a node joins through this one (it gets the members this one knows, and they hear of
      // it), a member tells of another, a member leaves --
      [self](join_atom, const std::vector<char>& bytes) -> std::vector<char> {
        auto sender = self->current_sender();
        if (self->state.admitted(sender) == nullptr) return {};
        auto& core = *self->state.core;
        auto joined = decode_members(bytes);
        if (!joined || joined->size() != 1 || joined->front().id != caf::to_string(sender->node())) return {};
        member_up(core, joined->front());
        tell_members(self, sender->node());
        return encode_members(members_up(core));
      },
      [self](member_atom, const std::vector<char>& bytes) {
        if (self->state.admitted(self->current_sender()) == nullptr) return;
        auto& core = self->state.core;
        auto members = decode_members(bytes);
        if (!members) return;
        for (const auto& entry : *members)
          if (should_connect(*core, entry)) join_through(self, core, entry.host, entry.port, nullptr);
      },
      [self](leave_atom) {
        auto sender = self->current_sender();
        if (self->state.admitted(sender) == nullptr) return;
        member_gone(*self->state.core, caf::to_string(sender->node()), member::status_type::left);
      },
      // -- from the far end of one of our links --
      [self](broken_atom, std::uint64_t link_id, const std::string& why) {
        auto sender = self->current_sender();
        auto* from = self->state.admitted(sender);
        if (from == nullptr) return;
        report("a link to node '", from->info.name + "' broke: " + why);
        if (auto way = self->state.core->find_link(link_id); way && way->internals().peer_node == sender->node())
          way->internals().end(exit_reason{exit_reason::kind_type::failed, "node '" + from->info.name + "': " + why}, false);
      },
      [self](exited_atom, std::uint64_t target_id, std::uint8_t kind, const std::string& message) {
        auto sender = self->current_sender();
        if (self->state.admitted(sender) == nullptr) return;
        for (auto& way : self->state.core->links_to(sender->node()))
          if (way->internals().target_id == target_id)
            way->internals().end(exit_reason{static_cast<exit_reason::kind_type>(kind), message}, false);
      },
  };
}

// Connects to the node at host:port (CAF's connect, then the cookie challenge both ways and the registry
// comparison); `done` gets the peer or why not. A handshake already under way with that node is joined.
void start_connect(endpoint_actor* self, std::shared_ptr<node_core> core, std::string host, std::uint16_t port,
                   connect_done done) {
  // A peer already admitted at that address (it may have dialled this node): the same peer. CAF would open
  // a second connection to it, which the other side drops, and the connect would end in a timeout.
  for (auto& [node, entry] : self->state.peers)
    if (entry.admitted && entry.info.host == host && entry.info.port == port) {
      done(peer{entry.info.name, caf::to_string(node)});
      return;
    }
  const auto timeout = caf::duration{core->options().request_timeout};
  auto answer = std::make_shared<connect_done>(std::move(done));
  self->request(core->connector(), timeout, caf::connect_atom::value, host, port)
      .then(
          [self, core, answer, host, port](const caf::node_id& node, caf::strong_actor_ptr& published,
                                           const std::set<std::string>&) {
            if (!published) {
              (*answer)(unexpected{error(cluster_error::kind_type::unreachable,
                                         "no node listens at " + host + ":" + std::to_string(port))});
              return;
            }
            if (node == self->system().node()) {
              (*answer)(unexpected{error(cluster_error::kind_type::refused,
                                         host + ":" + std::to_string(port) + " is this node itself")});
              return;
            }
            auto& state = self->state;
            if (auto known = state.peers.find(node); known != state.peers.end() && known->second.admitted) {
              (*answer)(peer{known->second.info.name, caf::to_string(node)});
              return;
            }
            auto& waiting = state.connecting[node];
            waiting.push_back(std::move(*answer));
            if (waiting.size() > 1) return;  // a handshake with that node is under way
            auto them = caf::actor_cast<caf::actor>(published);
            const std::string our_nonce = random_nonce();
            const auto timeout = caf::duration{core->options().request_timeout};
            self->request(them, timeout, hello_atom::value, core->options().name, our_nonce, core->names(), core->data,
                          core->host, core->port)
                .then(
                    [self, core, them, node, our_nonce](std::uint8_t status, const std::string& why,
                                                         const std::string& their_name, const std::string& their_nonce,
                                                         const std::string& their_proof, const caf::actor& their_data,
                                                         const std::string& their_host, std::uint16_t their_port) {
                      if (status != 0) {
                        finish_connect(self, node, unexpected{error(cluster_error::kind_type::refused, why)});
                        return;
                      }
                      auto admit_them = [self, them, node, their_name, their_data, their_host, their_port] {
                        auto& entry = self->state.peers[node];
                        if (entry.admitted) return;
                        entry.info = peer_info{them, their_data, caf::to_string(node), their_name, their_host, their_port};
                        admit(self, node, entry);
                      };
                      if (their_nonce.empty()) {  // it had admitted us already
                        admit_them();
                        finish_connect(self, node, peer{their_name, caf::to_string(node)});
                        return;
                      }
                      // Our proof goes out even when theirs is wrong: the other node then refuses us too, and
                      // logs why, which is where an operator looks.
                      const bool they_know =
                          same_proof(their_proof, proof(core->options().cookie, "server", our_nonce, their_nonce));
                      if (!they_know) {
                        core->peers_refused.fetch_add(1, std::memory_order_relaxed);
                        report("refused node '", their_name + "': it does not know the cluster's cookie");
                      }
                      const auto timeout = caf::duration{core->options().request_timeout};
                      self->request(them, timeout, prove_atom::value,
                                    proof(core->options().cookie, "client", their_nonce, our_nonce))
                          .then(
                              [self, node, their_name, they_know, admit_them](std::uint8_t status,
                                                                              const std::string& why) {
                                if (!they_know) {
                                  finish_connect(self, node,
                                                 unexpected{error(cluster_error::kind_type::refused,
                                                                  "node '" + their_name + "' does not know the cookie")});
                                  return;
                                }
                                if (status != 0) {
                                  finish_connect(self, node, unexpected{error(cluster_error::kind_type::refused, why)});
                                  return;
                                }
                                admit_them();
                                finish_connect(self, node, peer{their_name, caf::to_string(node)});
                              },
                              [self, node](caf::error& failure) {
                                finish_connect(self, node, unexpected{from_caf(failure, "connect")});
                              });
                    },
                    [self, node](caf::error& failure) {
                      finish_connect(self, node, unexpected{from_caf(failure, "connect")});
                    });
          },
          [answer, host, port](caf::error& failure) {
            (*answer)(unexpected{from_caf(failure, "connect to " + host + ":" + std::to_string(port))});
          });
}

// -- links and stand-ins --------------------------------------------------------------------------------------

void node_core::end_connecting() {
  std::vector<std::weak_ptr<link>> waiting;
  {
    std::lock_guard lock(mutex_);
    waiting.swap(connecting_);
  }
  for (auto& entry : waiting) {
    auto way = entry.lock();
    if (!way || way->internals().granted.load(std::memory_order_acquire) != 0) continue;  // connected meanwhile
    way->internals().end(exit_reason{exit_reason::kind_type::node_down, "this node stopped"}, true);
  }
}

std::optional<stand_in> node_core::find_stand_in(const ref_address& home) {
  std::lock_guard lock(mutex_);
  auto found = stand_ins_.find({home.node, home.target, home.signature});
  if (found == stand_ins_.end()) return std::nullopt;
  auto way = found->second.way.lock();
  if (!way || way->ended()) return std::nullopt;
  return found->second;
}

void node_core::add_stand_in(const std::shared_ptr<link>& way, postal::detail::control_ref control) {
  link::state& s = way->internals();
  std::lock_guard lock(mutex_);
  s.stand_in = control.get();
  stand_in_links_[control.get()] = way;
  if (s.home.node.empty()) return;
  auto& entry = stand_ins_[{s.home.node, s.home.target, s.home.signature}];
  auto current = entry.way.lock();
  if (!current || current->ended()) entry = stand_in{std::move(control), way};  // the first one stays
}

void node_core::remove_stand_in(link& way) {
  link::state& s = way.internals();
  std::lock_guard lock(mutex_);
  stand_in_links_.erase(s.stand_in);
  auto found = stand_ins_.find({s.home.node, s.home.target, s.home.signature});
  if (found != stand_ins_.end() && found->second.control.get() == s.stand_in) stand_ins_.erase(found);
}

std::shared_ptr<link> node_core::make_link(const caf::node_id& node, std::uint64_t target,
                                           const std::string& signature) {
  auto info = admitted(node);
  if (!info)
    return ended_link(ref_address{caf::to_string(node), {}, 0, target, signature},
                      exit_reason{exit_reason::kind_type::node_down, "the node is down"}, true);
  auto s = std::make_unique<link::state>();
  s->node = weak_from_this();
  s->home = ref_address{info->id, info->host, info->port, target, signature};
  set_peer(*s, shared_from_this(), node, *info);
  s->id = next_link_id();
  s->target_id = target;
  s->window = options_.credit_window;
  s->window_bytes = options_.credit_bytes;
  s->granted.store(s->window, std::memory_order_relaxed);
  s->granted_bytes.store(s->window_bytes, std::memory_order_relaxed);
  auto way = std::make_shared<link>(std::move(s));
  add_link(way->internals().id, way);
  if (!admitted(node))  // it went down meanwhile, before this link was there to be ended
    way->internals().end(exit_reason{exit_reason::kind_type::node_down, "node '" + info->name + "' is down"}, true);
  return way;
}

std::shared_ptr<link> node_core::open_link(const ref_address& address) {
  if (address.node == id)
    return ended_link(address, exit_reason{exit_reason::kind_type::normal, "the actor had ended when its ref arrived"},
                      false);
  if (auto known = admitted(address.node)) return make_link(known->first, address.target, address.signature);
  // A node this one is not connected to: the stand-in takes messages (its mailbox holds them) while this node
  // connects; the link gets its credit once connected.
  auto s = std::make_unique<link::state>();
  s->node = weak_from_this();
  s->home = address;
  s->id = next_link_id();
  s->target_id = address.target;
  s->window = options_.credit_window;
  s->window_bytes = options_.credit_bytes;
  auto way = std::make_shared<link>(std::move(s));
  add_connecting(way);
  post([core = shared_from_this(), way](endpoint_actor* self) {
    const ref_address& home = way->internals().home;
    start_connect(self, core, home.host, home.port, [core, way](expected<peer, cluster_error> outcome) {
      link::state& s = way->internals();
      const std::string where = s.home.host + ":" + std::to_string(s.home.port);
      if (!outcome) {
        s.end(exit_reason{exit_reason::kind_type::node_down, "cannot reach the actor's node at " + where + ": " +
                                                                 outcome.error().message},
              true);
        return;
      }
      auto known = core->admitted(s.home.node);
      if (!known) {  // another node answers there: the actor's node is gone
        s.end(exit_reason{exit_reason::kind_type::node_down, "the actor's node at " + where + " is down"}, true);
        return;
      }
      {
        std::lock_guard lock(s.mutex);
        set_peer(s, core, known->first, known->second);
      }
      core->add_link(s.id, way);
      if (!core->admitted(known->first)) {
        s.end(exit_reason{exit_reason::kind_type::node_down, "node '" + known->second.name + "' is down"}, true);
        return;
      }
      s.grant(s.window, s.window_bytes);
    });
  });
  return way;
}

// -- membership ---------------------------------------------------------------------------------------------

// Members travel as bytes written with the cluster's writer: [count u32] then each member's fields.
std::vector<char> encode_members(const std::vector<member>& list) {
  std::vector<char> bytes;
  writer out(bytes);
  out.write(static_cast<std::uint32_t>(list.size()));
  for (const auto& entry : list) out(entry.name, entry.id, entry.host, entry.port, entry.incarnation);
  return bytes;
}
std::optional<std::vector<member>> decode_members(const std::vector<char>& bytes) {
  reader in(bytes.data(), bytes.size());
  std::uint32_t count = 0;
  in.read(count);
  if (count > bytes.size()) return std::nullopt;  // each member takes more than one byte
  std::vector<member> list;
  for (std::uint32_t i = 0; i < count && !in.failed(); ++i) {
    member entry;
    in(entry.name, entry.id, entry.host, entry.port, entry.incarnation);
    list.push_back(std::move(entry));
  }
  if (in.failed() || !in.at_end()) return std::nullopt;
  return list;
}

// `joined` is up: a member already known by id is up again; one at the same address with an older
// incarnation (a restarted process) is replaced; anything else is added.
void member_up(node_core& core, const member& joined) {
  core.view->send_if_modified([&joined](cluster_view& view) {
    for (auto& entry : view.members) {
      if (entry.id == joined.id) {
        if (entry.status == member::status_type::up) return false;
        entry.status = member::status_type::up;
        return true;
      }
    }
    for (auto& entry : view.members) {
      if (entry.host == joined.host && entry.port == joined.port && entry.incarnation <= joined.incarnation) {
        entry = joined;
        entry.status = member::status_type::up;
        return true;
      }
    }
    view.members.push_back(joined);
    view.members.back().status = member::status_type::up;
    return true;
  });
}

// The member with CAF node id `id` left or went down (a left member stays left).
void member_gone(node_core& core, const std::string& id, member::status_type status) {
  core.view->send_if_modified([&id, status](cluster_view& view) {
    for (auto& entry : view.members)
      if (entry.id == id && entry.status == member::status_type::up) {
        entry.status = status;
        return true;
      }
    return false;
  });
}

std::vector<member> members_up(node_core& core) {
  std::vector<member> list;
  auto view = core.view->borrow();
  for (const auto& entry : view->members)
    if (entry.status == member::status_type::up) list.push_back(entry);
  return list;
}

bool known_up(node_core& core, const member& candidate) {
  auto view = core.view->borrow();
  for (const auto& entry : view->members)
    if (entry.id == candidate.id) return entry.status == member::status_type::up;
  return false;
}

// Whether this node connects to a member it learned of from another member. Of two members, the one with
// the smaller id connects, so that no pair connects both ways at once; a joiner connects to its seed
// whatever the ids, and the seed tells the others, who connect to the joiner or wait for it.
bool should_connect(node_core& core, const member& candidate) {
  return candidate.id != core.id && core.id < candidate.id && !known_up(core, candidate);
}

// Tells every member this node is connected to (but `except`) the members it knows are up: a member that
// joined at the same time through another seed learns of them, and connects or is connected to.
void tell_members(endpoint_actor* self, const caf::node_id& except) {
  auto& core = *self->state.core;
  const auto bytes = encode_members(members_up(core));
  for (auto& [node, entry] : self->state.peers) {
    if (!entry.admitted || node == except) continue;
    member known;
    known.id = caf::to_string(node);
    if (known_up(core, known)) self->send(entry.info.endpoint, member_atom::value, bytes);
  }
}

// Connects to the node at host:port and joins through it: it adds this node to its view and answers with
// the members it knows; this node adds it, and joins through each member it did not know. `done` (if any)
// gets the outcome of this one join.
void join_through(endpoint_actor* self, std::shared_ptr<node_core> core, std::string host, std::uint16_t port,
                  join_done done) {
  const std::string address = host + ":" + std::to_string(port);
  auto [waiting, fresh] = self->state.introducing.try_emplace(address);
  if (done) waiting->second.push_back(std::move(done));
  if (!fresh) return;  // a join through it is under way: its outcome is this one's too
  // Ends the join through `address`: everyone waiting for it gets `outcome`.
  auto finish = [self, address](expected<void, cluster_error> outcome) {
    auto found = self->state.introducing.find(address);
    if (found == self->state.introducing.end()) return;
    auto waiters = std::move(found->second);
    self->state.introducing.erase(found);
    for (auto& waiter : waiters) waiter(outcome);
  };
  start_connect(self, core, host, port, [self, core, address, finish](expected<peer, cluster_error> connected) {
    if (!connected) {
      finish(unexpected{std::move(connected.error())});
      return;
    }
    caf::actor them;
    for (auto& [node, entry] : self->state.peers)
      if (entry.admitted && entry.info.id == connected->id) them = entry.info.endpoint;
    if (!them) {
      finish(unexpected{error(cluster_error::kind_type::node_down, "the node at " + address + " went down")});
      return;
    }
    const auto timeout = caf::duration{core->options().request_timeout};
    self->request(them, timeout, join_atom::value, encode_members({core->self}))
        .then(
            [self, core, finish, id = connected->id](const std::vector<char>& bytes) {
              auto members = decode_members(bytes);
              if (!members) {
                finish(unexpected{error(cluster_error::kind_type::refused, "a malformed member list")});
                return;
              }
              for (const auto& entry : *members)
                if (entry.id == id) member_up(*core, entry);
              tell_members(self, caf::node_id{});
              for (const auto& entry : *members)
                if (entry.id != id && should_connect(*core, entry)) join_through(self, core, entry.host, entry.port, nullptr);
              finish({});
            },
            [address, finish](caf::error& failure) { finish(unexpected{from_caf(failure, "join through " + address)}); });
  });
}

// Joins again through each member that is down (not one that left), in case it is back (a partition that
// healed, a frozen process that resumed, a process restarted at the same address). Of two members, the one
// with the smaller id dials, as for members learned of; an address already being joined through is skipped.
void heal(endpoint_actor* self) {
  auto& core = self->state.core;
  std::vector<member> down;
  {
    auto view = core->view->borrow();
    for (const auto& entry : view->members)
      if (entry.status == member::status_type::down && core->id < entry.id) down.push_back(entry);
  }
  for (const auto& entry : down)
    if (!self->state.introducing.contains(entry.host + ":" + std::to_string(entry.port)))
      join_through(self, core, entry.host, entry.port, nullptr);
}

// Tries the seeds in order until one lets this node join.
void join_seeds(endpoint_actor* self, std::shared_ptr<node_core> core,
                std::vector<std::pair<std::string, std::uint16_t>> seeds, std::size_t next, cluster_error last,
                join_done done) {
  if (next == seeds.size()) {
    done(unexpected{std::move(last)});
    return;
  }
  auto [host, port] = seeds[next];
  join_through(self, core, host, port, [self, core, seeds, next, done](expected<void, cluster_error> outcome) mutable {
    if (outcome) {
      done({});
      return;
    }
    join_seeds(self, core, std::move(seeds), next + 1, std::move(outcome.error()), std::move(done));
  });
}

// Watches a published actor: at its end it is unpublished, and the peers that looked it up hear of it.
task<void> watch_target(std::shared_ptr<node_core> core, std::uint64_t id, task<exit_reason> ended) {
  exit_reason why = co_await std::move(ended);
  core->unpublish(id);
  core->post([id, why](endpoint_actor* self) {
    for (auto& [node, entry] : self->state.peers)
      if (entry.admitted && entry.watched.erase(id) != 0)
        self->send(entry.info.endpoint, exited_atom::value, id, static_cast<std::uint8_t>(why.kind), why.message);
  });
}

void watch_for(node_core& core, const caf::node_id& peer, std::uint64_t id) {
  core.post([peer, id](endpoint_actor* self) {
    auto found = self->state.peers.find(peer);
    if (found != self->state.peers.end() && found->second.admitted) found->second.watched.insert(id);
  });
}

}  // namespace detail

// -- the public side ----------------------------------------------------------------------------------------

namespace {

// The options a user may set outside the code, each with its environment variable and its CAF key
// (postal.cluster.<key>: `[postal.cluster]` in an ini file, `--postal.cluster.<key>=` on the command line).
enum class option_type { text, count, millis };
struct option_spec {
  const char* key;
  const char* variable;
  option_type type;
  const char* description;
};
constexpr option_spec option_table[] = {
    {"name", "POSTAL_CLUSTER_NAME", option_type::text, "this node's name, shown to peers"},
    {"bind-address", "POSTAL_CLUSTER_BIND_ADDRESS", option_type::text, "the address to listen on"},
    {"port", "POSTAL_CLUSTER_PORT", option_type::count, "the port to listen on (0: a free one)"},
    {"cookie", "POSTAL_CLUSTER_COOKIE", option_type::text, "the cluster's shared secret"},
    {"advertise-address", "POSTAL_CLUSTER_ADVERTISE_ADDRESS", option_type::text,
     "the address other nodes are told to reach this one at"},
    {"credit-window", "POSTAL_CLUSTER_CREDIT_WINDOW", option_type::count, "messages in flight per remote ref"},
    {"credit-bytes", "POSTAL_CLUSTER_CREDIT_BYTES", option_type::count, "bytes in flight per remote ref"},
    {"proxy-capacity", "POSTAL_CLUSTER_PROXY_CAPACITY", option_type::count, "mailbox of a remote ref's stand-in"},
    {"request-timeout", "POSTAL_CLUSTER_REQUEST_TIMEOUT", option_type::millis,
     "how long connect and lookup wait (ms in the environment, a duration such as 5s in CAF's options)"},
};
// The failure detection is CAF's middleman.heartbeat-interval and middleman.connection-timeout in CAF's
// options; in the environment, these (ms).
constexpr const char* heartbeat_variable = "POSTAL_CLUSTER_HEARTBEAT_INTERVAL";
constexpr const char* failure_timeout_variable = "POSTAL_CLUSTER_FAILURE_TIMEOUT";

// CAF 0.17 keeps a config's declared options protected; a derived class may name them.
struct config_access : caf::actor_system_config {
  static caf::config_option_set& options_of(caf::actor_system_config& config) {
    return config.*(&config_access::custom_options_);
  }
};

std::uint64_t parse_count(const std::string& text, const std::string& where) {
  std::size_t used = 0;
  unsigned long long value = 0;
  try {
    value = std::stoull(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || text.front() == '-')
    throw std::invalid_argument("postal::cluster: " + where + ": not a number: '" + text + "'");
  return value;
}

std::optional<std::string> environment(const char* variable) {
  const char* value = std::getenv(variable);
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

// One option, from the environment, then from CAF's configuration (its ini file and command line), each
// replacing the value before it.
void resolve(const option_spec& spec, const caf::actor_system_config& config, std::string* text,
             std::uint64_t* count, std::chrono::milliseconds* millis) {
  const std::string key = std::string("postal.cluster.") + spec.key;
  if (auto value = environment(spec.variable)) {
    if (text) *text = *value;
    if (count) *count = parse_count(*value, spec.variable);
    if (millis) *millis = std::chrono::milliseconds(parse_count(*value, spec.variable));
  }
  if (text)
    if (auto value = caf::get_if<std::string>(&config, key)) *text = *value;
  if (count)
    if (auto value = caf::get_if<std::int64_t>(&config, key)) {
      if (*value < 0) throw std::invalid_argument("postal::cluster: " + key + " must not be negative");
      *count = static_cast<std::uint64_t>(*value);
    }
  if (millis)
    if (auto value = caf::get_if<caf::timespan>(&config, key))
      *millis = std::chrono::duration_cast<std::chrono::milliseconds>(*value);
}

const option_spec& spec_of(const char* key) {
  for (const auto& spec : option_table)
    if (std::strcmp(spec.key, key) == 0) return spec;
  throw std::logic_error("postal::cluster: no option " + std::string(key));
}

void resolve_text(const char* key, const caf::actor_system_config& config, std::string& value) {
  resolve(spec_of(key), config, &value, nullptr, nullptr);
}
template <class Integer>
void resolve_count(const char* key, const caf::actor_system_config& config, Integer& value) {
  std::uint64_t wide = value;
  resolve(spec_of(key), config, nullptr, &wide, nullptr);
  if (wide > std::numeric_limits<Integer>::max())
    throw std::invalid_argument("postal::cluster: " + std::string(key) + " is too large: " + std::to_string(wide));
  value = static_cast<Integer>(wide);
}

}  // namespace

runtime_options enable(runtime_options options, failure_detection detection, tls_files tls) {
  if (auto value = environment("POSTAL_CLUSTER_TLS_CERTIFICATE")) tls.certificate = *value;
  if (auto value = environment("POSTAL_CLUSTER_TLS_KEY")) tls.private_key = *value;
  if (auto value = environment("POSTAL_CLUSTER_TLS_AUTHORITY")) tls.authority = *value;
  if (tls.enabled() && (tls.certificate.empty() || tls.private_key.empty() || tls.authority.empty()))
    throw std::invalid_argument("postal::cluster::enable: TLS needs a certificate, its private key and the "
                                "authority's certificate; some are missing");
  options.configure.push_back([detection, tls](caf::actor_system_config& config) {
    config.load<caf::io::middleman>();
    config.load<caf::openssl::manager>();
    if (tls.enabled()) {
      config.openssl_certificate = tls.certificate;
      config.openssl_key = tls.private_key;
      config.openssl_cafile = tls.authority;
    }
    caf::actor_system_config::opt_group group{config_access::options_of(config), "postal.cluster"};
    for (const auto& spec : option_table) {
      switch (spec.type) {
        case option_type::text:
          group.add<std::string>(spec.key, spec.description);
          break;
        case option_type::count:
          group.add<std::int64_t>(spec.key, spec.description);
          break;
        case option_type::millis:
          group.add<caf::timespan>(spec.key, spec.description);
          break;
      }
    }
    // The failure detection: code, then the environment; CAF's own keys, and ours, on the command line or in
    // the ini file are read after this and win.
    failure_detection chosen = detection;
    if (auto value = environment(heartbeat_variable))
      chosen.interval = std::chrono::milliseconds(parse_count(*value, heartbeat_variable));
    if (auto value = environment(failure_timeout_variable))
      chosen.timeout = std::chrono::milliseconds(parse_count(*value, failure_timeout_variable));
    config.set("middleman.heartbeat-interval", caf::timespan{chosen.interval});
    config.set("middleman.connection-timeout", caf::timespan{chosen.timeout});
    config.set("middleman.workers", std::int64_t{0});
    config.set("middleman.enable-automatic-connections", false);
  });
  return options;
}

// The options the node runs with: `options` from the code, then the environment, then CAF's configuration.
static node_options resolve_options(const runtime& rt, node_options options) {
  const auto& config = const_cast<runtime&>(rt).system().config();
  resolve_text("name", config, options.name);
  resolve_text("bind-address", config, options.bind_address);
  resolve_count("port", config, options.port);
  resolve_text("cookie", config, options.cookie);
  resolve_text("advertise-address", config, options.advertise_address);
  resolve_count("credit-window", config, options.credit_window);
  resolve_count("credit-bytes", config, options.credit_bytes);
  resolve_count("proxy-capacity", config, options.proxy_capacity);
  resolve(spec_of("request-timeout"), config, nullptr, nullptr, &options.request_timeout);
  return options;
}

node::node(runtime& rt, node_options options) : runtime_(rt), options_(resolve_options(rt, std::move(options))) {
  if (options_.cookie.empty())
    throw std::invalid_argument("postal::cluster::node: the cookie is empty (every node of a cluster needs the same one)");
  if (!rt.system().has_middleman())
    throw std::invalid_argument("postal::cluster::node: the runtime has no network layer: build it with "
                                "postal::cluster::enable(options)");
  if (options_.credit_window == 0) throw std::invalid_argument("postal::cluster::node: credit_window must be at least 1");
  if (options_.credit_bytes == 0) throw std::invalid_argument("postal::cluster::node: credit_bytes must be at least 1");
  if (options_.proxy_capacity == 0 || options_.proxy_capacity > mpsc::max_channel_capacity)
    throw std::invalid_argument("postal::cluster::node: proxy_capacity must be between 1 and " +
                                std::to_string(mpsc::max_channel_capacity));
  const auto& config = rt.system().config();
  const bool tls = !config.openssl_certificate.empty() || !config.openssl_key.empty() || !config.openssl_cafile.empty();
  if (tls && (config.openssl_certificate.empty() || config.openssl_key.empty() || config.openssl_cafile.empty()))
    throw std::invalid_argument("postal::cluster::node: TLS needs openssl.certificate, openssl.key and "
                                "openssl.cafile; some are missing");
  if (tls && !rt.system().has_openssl_manager())
    throw std::invalid_argument("postal::cluster::node: TLS is configured but the runtime has no OpenSSL "
                                "module: build it with postal::cluster::enable(options)");
  core_ = std::make_shared<detail::node_core>(rt, options_);
  core_->tls = tls;
  caf::actor_config port_config;
  core_->data = caf::make_actor<detail::data_port, caf::actor>(rt.system().next_actor_id(), rt.system().node(),
                                                                &rt.system(), port_config,
                                                                std::weak_ptr<detail::node_core>(core_));
  core_->endpoint = rt.system().spawn(detail::endpoint, core_);
  auto opened = core_->tls ? caf::openssl::publish(core_->endpoint, options_.port, options_.bind_address.c_str(), true)
                           : rt.system().middleman().publish(core_->endpoint, options_.port,
                                                             options_.bind_address.c_str(), true);
  if (!opened) {
    caf::anon_send_exit(core_->endpoint, caf::exit_reason::user_shutdown);
    detail::stop_data(*core_);
    throw std::runtime_error("postal::cluster::node: cannot listen on " + options_.bind_address + ":" +
                             std::to_string(options_.port) + ": " + caf::to_string(opened.error()));
  }
  core_->port = *opened;
  core_->id = caf::to_string(rt.system().node());
  core_->host = options_.advertise_address;
  if (core_->host.empty()) core_->host = options_.bind_address;
  if (core_->host.empty() || core_->host == "0.0.0.0" || core_->host == "::") {
    char name[256] = {};
    core_->host = ::gethostname(name, sizeof name - 1) == 0 ? std::string(name) : std::string("127.0.0.1");
  }
  core_->self = member{options_.name, core_->id, core_->host, core_->port,
                       static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                      std::chrono::system_clock::now().time_since_epoch())
                                                      .count()),
                       member::status_type::up};
  auto [view, watching] = watch::channel<cluster_view>(cluster_view{{core_->self}});
  core_->view.emplace(std::move(view));
  core_->ready.store(true, std::memory_order_release);
}

node::~node() {
  // Also for a TLS port: CAF's OpenSSL module hands its ports to the same BASP broker.
  (void)runtime_.system().middleman().unpublish(core_->endpoint, core_->port);
  detail::stop_data(*core_);
  core_->end_connecting();
  core_->post([](detail::endpoint_actor* self) {
    for (auto& [node, entry] : self->state.peers)
      if (entry.admitted) self->send(entry.info.endpoint, leave_atom::value);  // members see it leave, not fail
    for (auto& [node, entry] : self->state.peers)
      for (auto& way : self->state.core->links_to(node))
        way->internals().end(exit_reason{exit_reason::kind_type::node_down, "this node stopped"}, false);
    self->state.peers.clear();
    auto connecting = std::move(self->state.connecting);
    for (auto& [node, waiting] : connecting)
      for (auto& done : waiting) done(unexpected{error(cluster_error::kind_type::unreachable, "this node stopped")});
    self->quit();
  });
}

std::string to_string(const cluster_error& error) {
  const char* kind = "not connected";
  switch (error.kind) {
    case cluster_error::kind_type::unreachable: kind = "unreachable"; break;
    case cluster_error::kind_type::refused: kind = "refused"; break;
    case cluster_error::kind_type::no_such_actor: kind = "no such actor"; break;
    case cluster_error::kind_type::type_mismatch: kind = "type mismatch"; break;
    case cluster_error::kind_type::node_down: kind = "node down"; break;
    case cluster_error::kind_type::timeout: kind = "timeout"; break;
    case cluster_error::kind_type::not_connected: kind = "not connected"; break;
  }
  return std::string("cluster: ") + kind + (error.message.empty() ? "" : ": " + error.message);
}

std::string node::address() const { return core_->host + ":" + std::to_string(core_->port); }
std::uint16_t node::port() const noexcept { return core_->port; }
const std::string& node::name() const noexcept { return options_.name; }
std::string node::id() const { return caf::to_string(runtime_.system().node()); }
node_stats node::stats() const {
  return {core_->peers_refused.load(), core_->messages_dropped.load(), core_->batches_malformed.load()};
}

void node::publish_target(const std::string& name, std::shared_ptr<detail::target_base> target) {
  const std::uint64_t id = core_->publish(name, target);
  runtime_.spawn_detached(detail::watch_target(core_, id, target->ended()));
}

task<expected<peer, cluster_error>> node::connect(std::string host, std::uint16_t port) {
  auto [responder, answer] = oneshot::channel<expected<peer, cluster_error>>();
  auto core = core_;
  core_->post([core, host, port, responder = std::make_shared<decltype(responder)>(std::move(responder))](
                  detail::endpoint_actor* self) mutable {
    detail::start_connect(self, core, host, port,
                          [responder](expected<peer, cluster_error> outcome) { (void)responder->send(std::move(outcome)); });
  });
  auto outcome = co_await answer;
  if (!outcome) co_return unexpected{error(cluster_error::kind_type::unreachable, "the node stopped")};
  co_return std::move(*outcome);
}

task<expected<void, cluster_error>> node::join(std::vector<std::string> seeds) {
  std::vector<std::pair<std::string, std::uint16_t>> addresses;
  bool listed_itself = false;
  for (const auto& seed : seeds) {
    const auto colon = seed.rfind(':');
    std::uint64_t port = 0;
    try {
      if (colon == std::string::npos || colon == 0) throw std::invalid_argument("no port");
      port = parse_count(seed.substr(colon + 1), "seed '" + seed + "'");
    } catch (const std::invalid_argument&) {
      port = 0;
    }
    if (port == 0 || port > 65535)
      co_return unexpected{error(cluster_error::kind_type::unreachable, "a seed is host:port, not '" + seed + "'")};
    const std::string host = seed.substr(0, colon);
    const bool here = port == core_->port && (host == core_->host || host == options_.bind_address ||
                                              host == "127.0.0.1" || host == "localhost");
    if (here) {
      listed_itself = true;  // the same seed list on every node: this one is skipped
      continue;
    }
    addresses.emplace_back(host, static_cast<std::uint16_t>(port));
  }
  if (addresses.empty()) co_return expected<void, cluster_error>{};
  auto [responder, answer] = oneshot::channel<expected<void, cluster_error>>();
  auto core = core_;
  core_->post([core, addresses, responder = std::make_shared<decltype(responder)>(std::move(responder))](
                  detail::endpoint_actor* self) mutable {
    detail::join_seeds(self, core, addresses, 0, error(cluster_error::kind_type::unreachable, "no seed answered"),
                       [responder](expected<void, cluster_error> outcome) { (void)responder->send(std::move(outcome)); });
  });
  auto outcome = co_await answer;
  if (!outcome) co_return unexpected{error(cluster_error::kind_type::unreachable, "the node stopped")};
  if (!*outcome && listed_itself) co_return expected<void, cluster_error>{};  // the first member: it starts the cluster
  co_return std::move(*outcome);
}

expected<void, cluster_error> node::blocking_join(std::vector<std::string> seeds) {
  return runtime_.block_on(join(std::move(seeds)));
}

watch::receiver<cluster_view> node::view() const { return core_->view->subscribe(); }

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
    auto them = entry->info.endpoint;
    self->request(them, timeout, lookup_atom::value, name, signature)
        .then(
            [core, responder, node, signature](std::uint8_t kind, std::uint64_t target_id,
                                                            const std::string& why) {
              if (kind != 0) {
                (void)responder->send(unexpected{error(static_cast<cluster_error::kind_type>(kind), why)});
                return;
              }
              (void)responder->send(core->make_link(node, target_id, signature));
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
