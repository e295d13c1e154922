package gossip_test

import (
	"fmt"
	"testing"
	"time"

	"grapevine/gossip"
	"grapevine/gossip/gossiptest"
)

// Helpers of the cluster tests, which run real Clusters on gossiptest's
// in-memory network (the same one ipam's and driver's tests use).

// node is one cluster member of a test.
type node struct {
	name string
	cfg  gossip.Config
	c    *gossip.Cluster
}

// startNode starts a member from cfg (made by net.Config); it is shut down
// at the end of the test.
func startNode(t testing.TB, net *gossiptest.Net, cfg gossip.Config) *node {
	t.Helper()
	return &node{name: cfg.NodeName, cfg: cfg, c: net.Start(t, cfg)}
}

// stop shuts the member down gracefully and takes it off the network.
func (n *node) stop(t testing.TB, net *gossiptest.Net) {
	t.Helper()
	if err := n.c.Shutdown(); err != nil {
		t.Errorf("Shutdown(%s): %v", n.name, err)
	}
	net.Kill(n.name)
}

// startCluster starts size members n0..n(size-1), each joining the ones
// started before it, and waits until every member sees every other alive.
func startCluster(t testing.TB, size int, mod func(i int, cfg *gossip.Config)) (*gossiptest.Net, []*node) {
	t.Helper()
	net := gossiptest.NewNet()
	nodes := make([]*node, size)
	for i := range nodes {
		cfg := net.Config(fmt.Sprintf("n%d", i))
		if mod != nil {
			mod(i, &cfg)
		}
		nodes[i] = startNode(t, net, cfg)
	}
	waitMembers(t, nodes, size)
	return net, nodes
}

// waitMembers waits until every node counts want alive members.
func waitMembers(t testing.TB, nodes []*node, want int) {
	t.Helper()
	gossiptest.Eventually(t, 90*time.Second, fmt.Sprintf("%d nodes to see %d alive members", len(nodes), want), func() bool {
		for _, n := range nodes {
			if n.c.Stats().Members != want {
				return false
			}
		}
		return true
	})
}

// allHave reports whether every node holds exactly want's version of its
// key (or, for a tombstone, no live record).
func allHave(nodes []*node, want gossip.Record) bool {
	for _, n := range nodes {
		got, ok := n.c.Get(want.Kind, want.Key)
		if want.Deleted {
			if ok {
				return false
			}
			continue
		}
		if !ok || !gossip.SameVersion(&got, &want) {
			return false
		}
	}
	return true
}
