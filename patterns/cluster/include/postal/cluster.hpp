// postal's cluster, the one header to include: nodes (processes) whose actors talk to each other with the
// same actor_ref<Message> as local ones, over CAF's network layer. See <postal/cluster/node.hpp> for nodes,
// membership and remote refs, <postal/cluster/serialize.hpp> for how a message crosses (an inspect overload
// per message struct), <postal/cluster/group.hpp> for pub/sub topics across nodes,
// <postal/cluster/config.hpp> for a configuration followed by every node, <postal/cluster/discovery.hpp> for
// finding seeds (a static list or a Redis registry).
#pragma once

#include <postal/cluster/config.hpp>
#include <postal/cluster/discovery.hpp>
#include <postal/cluster/group.hpp>
#include <postal/cluster/node.hpp>
#include <postal/cluster/serialize.hpp>
