// postal::cluster::node: this process as a node of a cluster. A node listens on an address and a port
// (127.0.0.1 and a free port by default), connects to other nodes directly, publishes actors under names and
// looks up the actors other nodes published, as actor_ref<Message> values that work as local refs do, and
// joins a cluster through seeds, keeping a view of its members as a watch channel.
// Groups and configuration across nodes are in group.hpp and config.hpp; finding seeds (a static list, or a
// Redis registry) in discovery.hpp.
//
// CAF's network layer (the middleman and its BASP protocol) carries every message between nodes. On top of
// it postal adds: a cookie challenge before a peer reaches any actor, flow control per remote ref (a window
// of messages the far side has not yet put in the actor's bounded mailbox), batching of the messages sent
// through one remote ref into one CAF message, and failures that end every wait (a node declared down ends
// every ask pending on it with ask_error::node_down).
#pragma once

#include <postal/actor/ref.hpp>
#include <postal/cluster/detail/proxy.hpp>
#include <postal/expected.hpp>
#include <postal/runtime.hpp>
#include <postal/task.hpp>
#include <postal/watch.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace postal::cluster {

/// How nodes find out that a peer is gone: each sends a heartbeat every `interval`; a peer silent for
/// `timeout` is declared down (a killed peer, whose connection closes, is declared down at once). Every
/// node of a cluster must use the same settings (CAF drops a link whose peer's heartbeats come slower than
/// its own timeout).
struct failure_detection {
  std::chrono::milliseconds interval{100};
  std::chrono::milliseconds timeout{1000};
};

/// Certificates for TLS between nodes, through CAF's OpenSSL module: all three files (PEM), or none. With
/// them, a node talks to its peers over TLS only and accepts a peer only if the cluster's certificate
/// authority signed its certificate; every node of a cluster must use TLS or none (a plain node cannot reach
/// a TLS node). The cookie challenge runs inside TLS as well: TLS says the peer holds a certificate of this
/// cluster and encrypts the traffic, the cookie says it knows the cluster's secret.
struct tls_files {
  std::string certificate{};  // this node's certificate
  std::string private_key{};  // its private key (not encrypted)
  std::string authority{};    // the certificate of the authority that signed every node's certificate
  bool enabled() const noexcept { return !certificate.empty() || !private_key.empty() || !authority.empty(); }
};

/// The runtime options a node needs: CAF's network layer, loaded before CAF's actor system starts, with
/// heartbeats set from `detection` (then POSTAL_CLUSTER_HEARTBEAT_INTERVAL and POSTAL_CLUSTER_FAILURE_TIMEOUT
/// in ms from the environment; CAF's middleman.heartbeat-interval and middleman.connection-timeout in an ini
/// file or on the command line win over both), automatic connections through third nodes off, the
/// middleman's network thread delivering messages itself (middleman.workers = 0), and node_options' keys
/// declared for CAF's ini file and command line (postal.cluster.*), and CAF's OpenSSL module, with `tls`
/// (then POSTAL_CLUSTER_TLS_CERTIFICATE, POSTAL_CLUSTER_TLS_KEY and POSTAL_CLUSTER_TLS_AUTHORITY; CAF's
/// openssl.certificate, openssl.key and openssl.cafile in an ini file or on the command line win over both).
/// Throws std::invalid_argument when only some of the three files are given.
///   postal::runtime rt(postal::cluster::enable({.workers = 2}));
runtime_options enable(runtime_options options = {}, failure_detection detection = {}, tls_files tls = {});

/// Settings of a node. The values given in code are defaults: the environment (POSTAL_CLUSTER_NAME, ...)
/// replaces them, and CAF's configuration (`[postal.cluster]` in its ini file, `--postal.cluster.port=7100` on
/// the command line of a runtime built with argc and argv) replaces those; the README's "Cluster" section
/// has the table. A malformed value throws std::invalid_argument naming the variable or key.
struct node_options {
  /// Shown to peers and in reports.
  std::string name{};
  /// The address to listen on. 127.0.0.1 by default: listening on another interface is a deliberate choice.
  std::string bind_address = "127.0.0.1";
  /// 0: a free port, see node::port().
  std::uint16_t port = 0;
  /// The address other nodes are told to reach this one at, when a ref to one of its actors travels inside
  /// a message (a third node connects to it there). Empty: bind_address, or the host name when bound to
  /// 0.0.0.0 / ::.
  std::string advertise_address{};
  /// The cluster's shared secret. A peer must prove it knows the cookie (an HMAC-SHA256 of a challenge)
  /// before it can reach any actor. It is not encryption: see the README's "Cluster" section.
  std::string cookie{};
  /// Messages a remote ref may have in flight (sent, not yet in the far actor's mailbox) before a tell waits.
  std::size_t credit_window = 1024;
  /// Bytes a remote ref may have in flight (as written on the wire) before a tell waits; one message larger
  /// than this still goes, alone.
  std::size_t credit_bytes = 4 * 1024 * 1024;
  /// The mailbox capacity of a remote ref's local stand-in, where tells wait for credit.
  std::size_t proxy_capacity = 1024;
  /// How long connect and lookup wait for the other node.
  std::chrono::milliseconds request_timeout{5000};
};

/// Why a cluster operation failed.
struct cluster_error {
  enum class kind_type {
    unreachable,       // nothing answered at that address, or the connection broke
    refused,           // the peer refused us, or we refused it: wrong cookie, message types that differ
    no_such_actor,     // nothing is published under that name there
    type_mismatch,     // the actor there takes other messages than the ref asked for
    node_down,         // the node was declared down
    timeout,           // no answer within request_timeout
    not_connected,     // lookup on a peer this node is not connected to
  };
  kind_type kind;
  std::string message;
};
// Printing, as every postal error: "cluster: <kind>: <message>".
std::string to_string(const cluster_error& error);
inline std::ostream& operator<<(std::ostream& out, const cluster_error& error) { return out << to_string(error); }

/// A node this one is connected to.
struct peer {
  std::string name;
  std::string id;  // CAF's node id: a new one for each run of a process
  friend bool operator==(const peer&, const peer&) = default;
};

/// Counters of a node, for reports and tests.
struct node_stats {
  std::uint64_t peers_refused = 0;      // handshakes refused (cookie, message types)
  std::uint64_t messages_dropped = 0;   // from nodes that have not passed the cookie challenge
  std::uint64_t batches_malformed = 0;  // batches that could not be read; dropped whole
};

/// A member of the cluster, as one node sees it.
struct member {
  enum class status_type {
    up,    // joined, and answering
    down,  // its connection broke or it stopped answering heartbeats (killed, frozen, unreachable)
    left,  // it left on purpose (its node object was destroyed)
  };
  std::string name;
  std::string id;    // CAF's node id: a new one for each run of a process
  std::string host;  // where it listens
  std::uint16_t port = 0;
  std::uint64_t incarnation = 0;  // when this run of the process started (ms since 1970): larger after a restart
  status_type status = status_type::up;
  friend bool operator==(const member&, const member&) = default;
};

/// The members a node knows, itself included, in the order they joined its view. A member that comes back
/// (the same address, a new incarnation) replaces its old entry.
struct cluster_view {
  std::vector<member> members;
  /// The entry of the member named `name`, if any.
  const member* find(std::string_view name) const noexcept {
    for (const auto& entry : members)
      if (entry.name == name) return &entry;
    return nullptr;
  }
  /// How many members are up.
  std::size_t up() const noexcept {
    std::size_t count = 0;
    for (const auto& entry : members) count += entry.status == member::status_type::up ? 1 : 0;
    return count;
  }
  friend bool operator==(const cluster_view&, const cluster_view&) = default;
};

/// This process as a node. Built on a runtime made with cluster::enable(...). Destroying the node leaves
/// the cluster (members see it as left), closes its port and its links.
class node {
 public:
  /// Starts listening. Throws std::runtime_error when the port cannot be opened (in use, bad address) and
  /// std::invalid_argument for an empty cookie or a runtime built without cluster::enable.
  node(runtime& rt, node_options options);
  node(const node&) = delete;
  node& operator=(const node&) = delete;
  ~node();

  /// The port this node listens on.
  std::uint16_t port() const noexcept;
  /// Where other nodes reach this one, "host:port" (the advertised address, see node_options).
  std::string address() const;
  const std::string& name() const noexcept;
  /// The options this node runs with: the code's, with what the environment and CAF's configuration set.
  const node_options& options() const noexcept { return options_; }
  /// CAF's id of this node.
  std::string id() const;
  node_stats stats() const;

  /// Connects to the node listening at host:port (directly, never through a third node), answers its
  /// cookie challenge and checks that the actors both publish take the same message types. Connecting to a
  /// node already connected gives the same peer.
  task<expected<peer, cluster_error>> connect(std::string host, std::uint16_t port);
  expected<peer, cluster_error> blocking_connect(std::string host, std::uint16_t port);

  /// Joins the cluster through the first of `seeds` ("host:port") that answers: that member tells this node
  /// the others, this node connects to each of them directly, and every member adds it to its view (and
  /// tells the members it knows, so joins at the same time through different seeds meet). Any member can be
  /// a seed. A seed that is this node's own address is skipped, so every node can be given the same list.
  /// No seeds, or none answering while the list named this node: this node starts the cluster (the others
  /// join it later). Otherwise fails with the last seed's error when none answers.
  task<expected<void, cluster_error>> join(std::vector<std::string> seeds);
  expected<void, cluster_error> blocking_join(std::vector<std::string> seeds);
  /// This node's view of the cluster, as a watch channel: `co_await view.changed()` returns when a member
  /// joins, leaves or goes down (after the failure timeout, see failure_detection).
  watch::receiver<cluster_view> view() const;

  /// Makes `ref`'s actor reachable from other nodes as `name` (replacing what was published under it).
  /// It stays published while it runs; its end reaches the remote refs to it (their monitors fire with its
  /// exit reason, their pending asks end with no_reply).
  template <class Message>
  void publish(const std::string& name, actor_ref<Message> ref) {
    publish_target(name, std::make_shared<detail::target<Message>>(std::move(ref)));
  }

  /// A ref to the actor `name` that `at` published, taking `Message`. It has what a local ref has: tell
  /// waits while the remote ref has no credit and its local stand-in's mailbox is full, try_tell reports
  /// full then, ask ends with the reply or an error (node_down once the node is declared down), monitor
  /// fires when the remote actor ends or its node goes down, kill stops the remote actor.
  template <class Message>
  task<expected<actor_ref<Message>, cluster_error>> lookup(peer at, std::string name) {
    auto found = co_await lookup_target(at, name, detail::signature<Message>());
    if (!found) co_return unexpected{std::move(found.error())};
    co_return detail::spawn_proxy<Message>(runtime_, std::move(*found), options_.proxy_capacity);
  }
  template <class Message>
  expected<actor_ref<Message>, cluster_error> blocking_lookup(peer at, std::string name) {
    return runtime_.block_on(lookup<Message>(std::move(at), std::move(name)));
  }

 private:
  void publish_target(const std::string& name, std::shared_ptr<detail::target_base> target);
  task<expected<std::shared_ptr<detail::link>, cluster_error>> lookup_target(peer at, std::string name,
                                                                             std::string signature);

  runtime& runtime_;
  node_options options_;
  std::shared_ptr<detail::node_core> core_;
};

}  // namespace postal::cluster
