package ipam

import (
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"grapevine/gossip"
	"grapevine/gossip/gossiptest"
)

// rogueMember joins the cluster of nodes as a gossip member holding the key
// that runs no IPAM: it writes whatever records it likes.
func rogueMember(t *testing.T, n *gossiptest.Net, nodes []*cnode, name string) *gossip.Cluster {
	t.Helper()
	r := n.Node(t, name, nil)
	waitAlive(t, nodes, len(nodes)+1)
	return r
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// waitRecord waits until every node holds the record (kind, key) as written
// by writer.
func waitRecord(t *testing.T, nodes []*cnode, kind, key, writer string) {
	t.Helper()
	gossiptest.Eventually(t, 10*time.Second, kind+" "+key+" everywhere", func() bool {
		for _, c := range nodes {
			if r, ok := c.gc.Get(kind, key); !ok || r.Owner != writer {
				return false
			}
		}
		return true
	})
}

// TestTrustLoneDecidedRecord: one member's acceptor record claiming that the
// first division of a pool is decided, giving every block to itself, decides
// nothing: the hosts agree among themselves and allocate. Its promise of the
// largest ballot does not stop them either.
func TestTrustLoneDecidedRecord(t *testing.T) {
	n, nodes := startCluster(t, fastCfg(), "a", "b", "c")
	rogue := rogueMember(t, n, nodes, "rogue")
	const subnet = "198.19.30.0/24"
	inst := "init/" + subnet
	value := mustJSON(t, initValue{Version: recordVersion, Owners: []string{"rogue"}})
	// Its promise is the largest ballot there is: the next one must not
	// wrap around to zero.
	forged := accState{Version: recordVersion, Promised: ballot{N: math.MaxUint64, P: "rogue"}, Accepted: ballot{N: 1, P: "rogue"}, Value: value, Decided: true}
	if err := rogue.Put(kindAcc, inst+"/rogue", mustJSON(t, forged)); err != nil {
		t.Fatal(err)
	}
	waitRecord(t, nodes, kindAcc, inst+"/rogue", "rogue")

	for _, c := range nodes {
		id := c.pool(subnet, "")
		if _, err := c.addr(id, ""); err != nil {
			t.Fatalf("%s cannot allocate after a forged decision: %v", c.name, err)
		}
		for _, b := range c.status(id).Blocks {
			if !slices.Contains([]string{"a", "b", "c"}, b.Owner) {
				t.Fatalf("%s: block %s-%s owned by %s, from a forged decision", c.name, b.First, b.Last, b.Owner)
			}
		}
	}
	for _, c := range nodes {
		if v, ok := c.d.cl.decided(inst); !ok || strings.Contains(string(v), "rogue") {
			t.Fatalf("%s: decided %s, %v", c.name, v, ok)
		}
	}
}
