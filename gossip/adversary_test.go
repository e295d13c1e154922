package gossip_test

import (
	"bytes"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"grapevine/gossip"
	"grapevine/gossip/gossiptest"
)

const advCap = 40 // MaxRecordsPerWriter of the adversarial tests

// honestCluster starts three keyed members with DBs whose consumers
// declare "host" keyed by the writer's name and "net" keys ending in it,
// each member having written one record of each kind plus a "block".
func honestCluster(t *testing.T, key []byte) (*gossiptest.Net, []*node) {
	t.Helper()
	dir := t.TempDir()
	net, nodes := startCluster(t, 3, func(i int, cfg *gossip.Config) {
		cfg.Keys = [][]byte{key}
		cfg.DB = openDB(t, filepath.Join(dir, cfg.NodeName+".db"))
		cfg.MaxRecordsPerWriter = advCap
	})
	for _, n := range nodes {
		n.c.RegisterValidator("host", gossip.OwnerIsKey())
		n.c.RegisterValidator("net", gossip.OwnerSuffix("/"))
	}
	var last []gossip.Record
	for _, n := range nodes {
		for kind, key := range map[string]string{"host": n.name, "net": "198.18.0.0/15/" + n.name, "block": "b-" + n.name} {
			if err := n.c.Put(kind, key, []byte("honest "+n.name)); err != nil {
				t.Fatal(err)
			}
			r, _ := n.c.Get(kind, key)
			last = append(last, r)
		}
	}
	gossiptest.Eventually(t, 20*time.Second, "the honest records everywhere", func() bool {
		for _, r := range last {
			if !allHave(nodes, r) {
				return false
			}
		}
		return true
	})
	return net, nodes
}

// byOwner returns the live records each owner holds on n, as "kind/key=value@version".
func byOwner(n *node) map[string][]string {
	out := map[string][]string{}
	for _, r := range n.c.List("") {
		out[r.Owner] = append(out[r.Owner], fmt.Sprintf("%s/%s=%q@%d", r.Kind, r.Key, r.Value, r.Version))
	}
	return out
}

// refusedCauses lists "peer/cause" pairs n refused.
func refusedCauses(n *node) []string {
	var out []string
	for _, r := range n.c.RefusalStats() {
		out = append(out, fmt.Sprint(r.Peer, "/", r.Cause))
	}
	return out
}

// A member holding the key forges every kind of record gossip can refuse
// by itself. The honest members refuse each one (and say why, per writer),
// store none of it beyond the writer's cap, keep their clocks, keep
// writing and keep converging.
func TestRoguePeerForgeriesChangeNothing(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	net, nodes := honestCluster(t, key)
	before := make([]map[string][]string, len(nodes))
	var clock uint64
	for i, n := range nodes {
		before[i] = byOwner(n)
		clock = max(clock, n.c.Stats().Clock)
	}

	evil := net.Rogue(t, "evil", [][]byte{key})
	evil.Wait(t, 4)
	forged := []gossip.Record{
		// Clock poisoning: 2^64-1 would wrap the next write; beyond the
		// bound would move every clock arbitrarily far.
		{Kind: "host", Key: "evil", Value: []byte("x"), Owner: "evil", Version: math.MaxUint64},
		{Kind: "block", Key: "b-n0", Value: []byte("mine now"), Owner: "evil", Version: math.MaxUint64},
		{Kind: "block", Key: "b-n1", Value: []byte("mine now"), Owner: "evil", Version: clock + gossip.MaxClockAhead + 10},
		// Keys in another host's name, live and deleted.
		{Kind: "net", Key: "198.18.0.0/15/n0", Value: []byte("forged"), Owner: "evil", Version: clock + 1},
		{Kind: "net", Key: "198.18.0.0/15/n1", Owner: "evil", Version: clock + 2, Deleted: true},
		{Kind: "host", Key: "n2", Value: []byte("forged"), Owner: "evil", Version: clock + 3},
		// Bad names and sizes.
		{Kind: "host", Key: "evil", Value: []byte("x"), Owner: "evil\nlevel=panic", Version: clock + 4},
		{Kind: "block", Key: "big", Value: make([]byte, 2*gossip.MaxRecordBytes), Owner: "evil", Version: clock + 5},
	}
	var flood []gossip.Record
	for i := range 3 * advCap {
		flood = append(flood, gossip.Record{Kind: "flood", Key: fmt.Sprint("f", i), Value: []byte("x"), Owner: "evil", Version: clock + 10 + uint64(i)})
	}
	for _, r := range forged {
		if evil.Send(gossiptest.RecordMessage(r)) != 3 {
			t.Fatal("the rogue could not reach every member")
		}
	}
	for _, raw := range [][]byte{{1, 1, 0xff, 0xff, 0xff}, {1, 9}, {2, 1}, gossiptest.RecordMessage(gossip.Record{Kind: "k", Key: "k", Version: 1})} {
		evil.Send(raw)
	}
	evil.SetState(gossiptest.StateMessage(append(slices.Clone(forged), flood...)...))
	for _, n := range nodes {
		if err := evil.PushPull(net.Addr(n.name)); err != nil {
			t.Fatal(err)
		}
	}

	want := []string{"(invalid)/bad-record", "(unknown)/malformed", "evil/bad-record", "evil/not-owner", "evil/version", "evil/writer-cap"}
	for _, n := range nodes {
		deadline := time.Now().Add(20 * time.Second)
		for fmt.Sprint(refusedCauses(n)) != fmt.Sprint(want) {
			if time.Now().After(deadline) {
				t.Fatalf("%s refused %v, want %v", n.name, refusedCauses(n), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	// The honest members keep writing and converging.
	for _, n := range nodes {
		if err := n.c.Put("block", "after-"+n.name, []byte("still working")); err != nil {
			t.Fatal(err)
		}
	}
	gossiptest.Eventually(t, 20*time.Second, "writes after the attack to converge", func() bool {
		for _, n := range nodes {
			r, ok := n.c.Get("block", "after-"+n.name)
			if !ok || !allHave(nodes, r) {
				return false
			}
		}
		return true
	})
	for i, n := range nodes {
		now := byOwner(n)
		for _, h := range nodes {
			got := slices.DeleteFunc(slices.Clone(now[h.name]), func(s string) bool { return bytes.Contains([]byte(s), []byte("after-")) })
			if fmt.Sprint(got) != fmt.Sprint(before[i][h.name]) {
				t.Errorf("%s: records of %s changed from %v to %v", n.name, h.name, before[i][h.name], got)
			}
		}
		ev := now["evil"]
		if len(ev) > advCap || slices.ContainsFunc(ev, func(s string) bool { return !bytes.HasPrefix([]byte(s), []byte("flood/")) }) {
			t.Errorf("%s holds %d records of the rogue, want at most %d floods: %v", n.name, len(ev), advCap, ev)
		}
		if c := n.c.Stats().Clock; c > clock+10+3*advCap+10 {
			t.Errorf("%s: clock %d, pushed ahead from %d", n.name, c, clock)
		}
	}
}

// A member holding the key writes records in other members' names. The
// others cannot tell, but each member named refuses the forgery and
// overrides it everywhere with its own truth: its live record written
// again, or a tombstone for a key it never wrote.
func TestImpersonatedMemberOverridesForgeries(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	net, nodes := honestCluster(t, key)
	var clock uint64
	for _, n := range nodes {
		clock = max(clock, n.c.Stats().Clock)
	}
	evil := net.Rogue(t, "evil", [][]byte{key})
	evil.Wait(t, 4)
	forged := []gossip.Record{
		{Kind: "net", Key: "198.18.0.0/15/n0", Value: []byte("forged"), Owner: "n0", Version: clock + 20},
		{Kind: "block", Key: "b-fake", Value: []byte("forged"), Owner: "n1", Version: clock + 21},
		{Kind: "block", Key: "b-n2", Owner: "n2", Version: clock + 22, Deleted: true},
	}
	for _, r := range forged {
		evil.Send(gossiptest.RecordMessage(r))
	}
	restored := func() bool {
		for _, n := range nodes {
			r0, ok0 := n.c.Get("net", "198.18.0.0/15/n0")
			_, ok1 := n.c.Get("block", "b-fake")
			r2, ok2 := n.c.Get("block", "b-n2")
			if !ok0 || string(r0.Value) != "honest n0" || r0.Owner != "n0" || r0.Version <= clock+20 ||
				ok1 || !ok2 || string(r2.Value) != "honest n2" || r2.Version <= clock+22 {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(20 * time.Second)
	for !restored() {
		if time.Now().After(deadline) {
			for _, n := range nodes {
				t.Logf("%s: %v refused %v", n.name, byOwner(n), refusedCauses(n))
			}
			t.Fatal("the forgeries were not overridden everywhere")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i, n := range nodes {
		want := fmt.Sprintf("n%d/impersonation", i)
		if !slices.Contains(refusedCauses(n), want) {
			t.Errorf("%s refused %v, want %s among them", n.name, refusedCauses(n), want)
		}
	}
}
