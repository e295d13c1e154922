package gossip

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

func TestConvergencePutsAndDeletes(t *testing.T) {
	for _, size := range []int{3, 10} {
		t.Run(fmt.Sprintf("%d nodes", size), func(t *testing.T) {
			_, nodes := startCluster(t, size, nil)
			// Every node writes its own record, and n0 a shared one.
			var want []Record
			for i, n := range nodes {
				if err := n.c.Put("endpoint", fmt.Sprintf("198.18.0.%d", i+1), []byte(n.name)); err != nil {
					t.Fatal(err)
				}
				r, _ := n.c.Get("endpoint", fmt.Sprintf("198.18.0.%d", i+1))
				want = append(want, r)
			}
			waitFor(t, 20*time.Second, "puts to converge", func() bool {
				for _, r := range want {
					if !allHave(nodes, r) {
						return false
					}
				}
				return true
			})
			for _, n := range nodes {
				if got := len(n.c.List("endpoint")); got != size {
					t.Fatalf("%s lists %d endpoints, want %d", n.name, got, size)
				}
			}
			// Delete from nodes other than the writers: n(i+1) deletes n(i)'s record.
			for i := range want {
				if i%2 == 1 {
					continue
				}
				deleter := nodes[(i+1)%size]
				if err := deleter.c.Delete("endpoint", want[i].Key); err != nil {
					t.Fatal(err)
				}
				want[i].Deleted = true
			}
			waitFor(t, 20*time.Second, "deletes to converge", func() bool {
				for _, r := range want {
					if !allHave(nodes, r) {
						return false
					}
				}
				return true
			})
		})
	}
}

func TestConcurrentWritesConverge(t *testing.T) {
	_, nodes := startCluster(t, 10, nil)
	var wg sync.WaitGroup
	written := make([]Record, len(nodes))
	for round := 0; round < 3; round++ {
		for i, n := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := n.c.Put("network", "198.19.20.0/24", []byte(fmt.Sprintf("%s-%d", n.name, round))); err != nil {
					t.Error(err)
				}
				written[i], _ = n.c.Get("network", "198.19.20.0/24")
			}()
		}
		wg.Wait()
	}
	// The winner is the newest of all the versions the nodes hold or wrote:
	// take the newest each node has, then wait for everyone to agree on it.
	var winner Record
	waitFor(t, 20*time.Second, "one winner everywhere", func() bool {
		first, ok := nodes[0].c.Get("network", "198.19.20.0/24")
		if !ok {
			return false
		}
		for _, n := range nodes[1:] {
			r, ok := n.c.Get("network", "198.19.20.0/24")
			if !ok || !sameVersion(&r, &first) {
				return false
			}
		}
		winner = first
		return true
	})
	for _, w := range written {
		if newer(&w, &winner) {
			t.Fatalf("converged on %s v%d although %s v%d is newer", winner.Owner, winner.Version, w.Owner, w.Version)
		}
	}
}

func TestLateJoinerBoundedPushPull(t *testing.T) {
	const records, budget = 5000, 8 << 10
	tn := newTestNet()
	trA, trB, trC := tn.addTransport("a"), tn.addTransport("b"), tn.addTransport("c")
	mod := func(cfg *Config) {
		cfg.PushPullBudget = budget
		cfg.MaxQueuedBroadcasts = 16 // leave almost everything to push/pull
		cfg.PushPullInterval = 50 * time.Millisecond
	}
	cfgA := fastConfig("a", trA)
	mod(&cfgA)
	a := startNode(t, cfgA)
	value := bytes.Repeat([]byte("x"), 40)
	for i := range records {
		if err := a.c.Put("block", fmt.Sprintf("100.64.%d.%d/32", i/256, i%256), value); err != nil {
			t.Fatal(err)
		}
	}
	var late []*testNode
	for _, tr := range []*testTransport{trB, trC} {
		cfg := fastConfig(tr.name, tr)
		cfg.Peers = []string{trA.addr}
		mod(&cfg)
		late = append(late, startNode(t, cfg))
	}
	waitFor(t, 40*time.Second, "late joiners to hold all records", func() bool {
		for _, n := range late {
			if n.c.Stats().Records != records {
				return false
			}
		}
		return true
	})
	for _, n := range append(late, a) {
		if max := n.c.stats.maxLocalState.Load(); max > budget+16 {
			t.Errorf("%s sent a push/pull state of %d bytes, budget %d", n.name, max, budget)
		}
	}
	if got := late[0].c.stats.recvPushPull.Load(); got < records-16 {
		t.Errorf("b received %d records by push/pull, want at least %d", got, records-16)
	}
	for _, r := range a.c.List("block") {
		got, ok := late[1].c.Get("block", r.Key)
		if !ok || !sameVersion(&got, &r) {
			t.Fatalf("c holds %+v for %s, want %+v", got, r.Key, r)
		}
	}
}

func TestWrongKeyStaysOut(t *testing.T) {
	key := bytes.Repeat([]byte{1}, 32)
	tn := newTestNet()
	trs := []*testTransport{tn.addTransport("good0"), tn.addTransport("good1"), tn.addTransport("wrongkey"), tn.addTransport("nokey")}
	var good []*testNode
	for i, tr := range trs[:2] {
		cfg := fastConfig(tr.name, tr)
		cfg.Key = key
		if i > 0 {
			cfg.Peers = []string{trs[0].addr}
		}
		good = append(good, startNode(t, cfg))
	}
	waitMembers(t, good, 2)

	var intruders []*testNode
	for i, tr := range trs[2:] {
		cfg := fastConfig(tr.name, tr)
		if i == 0 {
			cfg.Key = bytes.Repeat([]byte{2}, 32)
		}
		cfg.Peers = []string{trs[0].addr, trs[1].addr}
		n := startNode(t, cfg)
		if err := n.c.Put("block", "intruder-"+tr.name, []byte("stolen")); err != nil {
			t.Fatal(err)
		}
		intruders = append(intruders, n)
	}
	// Let the intruders try repeatedly while the good cluster keeps working.
	waitFor(t, 20*time.Second, "intruders to retry joining", func() bool {
		for _, n := range intruders {
			if n.c.joinAttempts.Load() < 5 {
				return false
			}
		}
		return true
	})
	if err := good[0].c.Put("block", "legit", []byte("ok")); err != nil {
		t.Fatal(err)
	}
	r, _ := good[0].c.Get("block", "legit")
	waitFor(t, 20*time.Second, "good nodes to converge", func() bool { return allHave(good, r) })

	for _, n := range intruders {
		if n.c.Joined() {
			t.Errorf("%s reports Joined with a wrong key", n.name)
		}
		if _, ok := n.c.Get("block", "legit"); ok {
			t.Errorf("%s received a record of the keyed cluster", n.name)
		}
	}
	for _, g := range good {
		if got := len(g.c.Members()); got != 2 {
			t.Errorf("%s sees %d members, want 2: %+v", g.name, got, g.c.Members())
		}
		for _, n := range intruders {
			if _, ok := g.c.Get("block", "intruder-"+n.name); ok {
				t.Errorf("%s accepted a record from %s", g.name, n.name)
			}
		}
	}
}

func TestRestartKeepsOwnRecordsAndClock(t *testing.T) {
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "state.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })

	tn, nodes := startCluster(t, 3, func(i int, cfg *Config) {
		if i == 2 {
			cfg.DB = db
		}
	})
	_ = tn
	a := nodes[2]
	if err := a.c.Put("host", "n2", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	v1, _ := a.c.Get("host", "n2")
	waitFor(t, 20*time.Second, "v1 everywhere", func() bool { return allHave(nodes, v1) })

	// Partition n2, let it write v2 that nobody else sees, then stop it.
	a.tr.isolated.Store(true)
	if err := a.c.Put("host", "n2", []byte("v2")); err != nil {
		t.Fatal(err)
	}
	v2, _ := a.c.Get("host", "n2")
	clockBefore := a.c.Stats().Clock
	a.stop(t)
	a.tr.isolated.Store(false)
	if r, _ := nodes[0].c.Get("host", "n2"); !bytes.Equal(r.Value, []byte("v1")) {
		t.Fatalf("n0 holds %q before the restart, want the older v1", r.Value)
	}

	// Restart from the same DB.
	cfg := a.cfg
	cfg.Peers = []string{nodes[0].tr.addr}
	cfg.Transport.(*testTransport).setDown(false)
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Stats().Clock; got < clockBefore {
		t.Fatalf("restored clock %d, want at least %d", got, clockBefore)
	}
	if got, ok := c.Get("host", "n2"); !ok || !sameVersion(&got, &v2) {
		t.Fatalf("restored %+v, want %+v", got, v2)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	restarted := &testNode{name: a.name, tr: a.tr, cfg: cfg, c: c}
	t.Cleanup(func() { restarted.stop(t) })
	nodes[2] = restarted
	waitFor(t, 20*time.Second, "the restarted node's v2 to win everywhere", func() bool { return allHave(nodes, v2) })

	// A new write after the restart gets a version above everything seen.
	if err := c.Put("host", "n2", []byte("v3")); err != nil {
		t.Fatal(err)
	}
	v3, _ := c.Get("host", "n2")
	if v3.Version <= v2.Version {
		t.Fatalf("version after restart %d, want above %d", v3.Version, v2.Version)
	}
	waitFor(t, 20*time.Second, "v3 everywhere", func() bool { return allHave(nodes, v3) })
}

func TestTombstoneReapingBlocksResurrection(t *testing.T) {
	clk := &fakeClock{}
	const ttl = time.Hour
	_, nodes := startCluster(t, 4, func(i int, cfg *Config) {
		cfg.Now = clk.now
		cfg.TombstoneTTL = ttl
		cfg.FloorTTL = 10 * ttl
	})
	stalePeer := nodes[3]
	if err := nodes[0].c.Put("endpoint", "198.18.1.1", []byte("mac")); err != nil {
		t.Fatal(err)
	}
	live, _ := nodes[0].c.Get("endpoint", "198.18.1.1")
	waitFor(t, 20*time.Second, "record everywhere", func() bool { return allHave(nodes, live) })

	// Watch the healthy nodes: once a node has seen the deletion, a live
	// copy of the record must never reappear.
	var mu sync.Mutex
	sawDelete := map[string]bool{}
	resurrected := map[string]int{}
	for _, n := range nodes[:3] {
		n.c.Subscribe("endpoint", func(old, new *Record) {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case new.Deleted:
				sawDelete[n.name] = true
			case sawDelete[n.name]:
				resurrected[n.name]++
			}
		})
	}

	// The stale peer sleeps through the deletion and the reaping.
	stalePeer.tr.isolated.Store(true)
	if err := nodes[1].c.Delete("endpoint", "198.18.1.1"); err != nil {
		t.Fatal(err)
	}
	tomb := live
	tomb.Deleted = true
	waitFor(t, 20*time.Second, "tombstone on healthy nodes", func() bool { return allHave(nodes[:3], tomb) })
	for _, n := range nodes[:3] {
		if st := n.c.Stats(); st.Tombstones != 1 {
			t.Fatalf("%s: %+v, want one tombstone", n.name, st)
		}
	}
	clk.advance(ttl + time.Minute)
	waitFor(t, 20*time.Second, "tombstones reaped into floors", func() bool {
		for _, n := range nodes[:3] {
			if st := n.c.Stats(); st.Tombstones != 0 || st.Floors != 1 {
				return false
			}
		}
		return true
	})
	// Nothing may still carry the tombstone: only floors can answer now.
	waitFor(t, 20*time.Second, "broadcast queues to drain", func() bool {
		for _, n := range nodes[:3] {
			if n.c.Stats().QueuedBroadcasts != 0 {
				return false
			}
		}
		return true
	})
	if r, ok := stalePeer.c.Get("endpoint", "198.18.1.1"); !ok || !sameVersion(&r, &live) {
		t.Fatalf("stale peer should still hold the live record, has %+v %v", r, ok)
	}

	// The stale peer comes back: its live copy must be refused everywhere
	// and it must learn the deletion from a floor's re-announcement.
	stalePeer.tr.isolated.Store(false)
	waitFor(t, 30*time.Second, "stale peer to drop the deleted record", func() bool {
		_, ok := stalePeer.c.Get("endpoint", "198.18.1.1")
		return !ok
	})
	var hits uint64
	for _, n := range nodes[:3] {
		hits += n.c.stats.floorHits.Load()
		if _, ok := n.c.Get("endpoint", "198.18.1.1"); ok {
			t.Errorf("%s resurrected the deleted record", n.name)
		}
	}
	if hits == 0 {
		t.Error("no floor rejected the stale copy")
	}
	mu.Lock()
	if len(sawDelete) != 3 {
		t.Errorf("deletion callbacks seen on %v, want all three healthy nodes", sawDelete)
	}
	if len(resurrected) > 0 {
		t.Errorf("deleted record came back on %v", resurrected)
	}
	mu.Unlock()

	// Floors are forgotten after FloorTTL.
	clk.advance(10*ttl + time.Minute)
	waitFor(t, 20*time.Second, "floors forgotten", func() bool {
		for _, n := range nodes[:3] {
			if st := n.c.Stats(); st.Floors != 0 {
				return false
			}
		}
		return true
	})
}

func TestJoinRetriesUntilPeerAppears(t *testing.T) {
	tn := newTestNet()
	trA, trB := tn.addTransport("a"), tn.addTransport("b")
	trA.setDown(true) // a is not running yet
	cfgB := fastConfig("b", trB)
	cfgB.Peers = []string{trA.addr}
	start := time.Now()
	b := startNode(t, cfgB)
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("Start blocked for %v with an unreachable peer", elapsed)
	}
	waitFor(t, 10*time.Second, "several join attempts", func() bool { return b.c.joinAttempts.Load() >= 3 })
	if b.c.Joined() {
		t.Fatal("Joined before any peer was reachable")
	}
	a := startNode(t, fastConfig("a", trA))
	if !a.c.Joined() {
		t.Error("a node without PEERS must report Joined")
	}
	waitFor(t, 10*time.Second, "b to join a", b.c.Joined)
	waitMembers(t, []*testNode{a, b}, 2)
}

func TestNodeEvents(t *testing.T) {
	_, nodes := startCluster(t, 3, func(i int, cfg *Config) {
		cfg.Meta = NodeMeta{VXLANPort: 4789, Release: "test"}
		cfg.AdvertiseAddr = netip.MustParseAddr(fmt.Sprintf("198.18.0.%d", i+1))
	})
	type ev struct {
		name string
		typ  EventType
	}
	evs := make(chan ev, 100)
	nodes[0].c.OnNodeEvent(func(m Member, e EventType) { evs <- ev{m.Name, e} })

	members := nodes[0].c.Members()
	if len(members) != 3 {
		t.Fatalf("members %+v", members)
	}
	for i, m := range members {
		if m.State != StateAlive || m.Self != (i == 0) || m.Meta.VXLANPort != 4789 || m.Meta.Release != "test" {
			t.Errorf("member %d: %+v", i, m)
		}
		if want := netip.MustParseAddr(fmt.Sprintf("198.18.0.%d", i+1)); m.Meta.VTEP != want {
			t.Errorf("member %s VTEP %v, want %v", m.Name, m.Meta.VTEP, want)
		}
	}

	nodes[2].stop(t) // graceful leave
	nodes[1].tr.isolated.Store(true)
	want := map[ev]bool{{"n2", EventLeave}: false, {"n1", EventDead}: false}
	deadline := time.After(20 * time.Second)
	for seen := 0; seen < len(want); {
		select {
		case e := <-evs:
			t.Logf("event %v %v", e.name, e.typ)
			if done, ok := want[e]; ok && !done {
				want[e] = true
				seen++
			}
		case <-deadline:
			t.Fatalf("events seen: %v", want)
		}
	}
	states := map[string]MemberState{}
	for _, m := range nodes[0].c.Members() {
		states[m.Name] = m.State
	}
	if states["n1"] != StateDead || states["n2"] != StateLeft || states["n0"] != StateAlive {
		t.Errorf("member states %v", states)
	}

	nodes[1].tr.isolated.Store(false)
	deadline = time.After(20 * time.Second)
	for {
		select {
		case e := <-evs:
			if e == (ev{"n1", EventJoin}) {
				return
			}
		case <-deadline:
			t.Fatal("no join event after n1's partition healed")
		}
	}
}

// TestRealNetworkLoopback runs two nodes over real UDP/TCP on 127.0.0.1.
func TestRealNetworkLoopback(t *testing.T) {
	key, err := ParseKey("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
	if err != nil {
		t.Fatal(err)
	}
	var nodes []*Cluster
	var first string
	for i := range 2 {
		port := freePort(t)
		cfg := Config{
			NodeName:         fmt.Sprintf("lo%d", i),
			BindAddr:         "127.0.0.1",
			AdvertiseAddr:    netip.MustParseAddr("127.0.0.1"),
			Port:             port,
			Key:              key,
			Log:              testLog(fmt.Sprintf("lo%d", i)),
			GossipInterval:   20 * time.Millisecond,
			PushPullInterval: 200 * time.Millisecond,
			JoinBackoffMin:   20 * time.Millisecond,
			JoinBackoffMax:   200 * time.Millisecond,
			LeaveTimeout:     time.Second,
		}
		if i == 0 {
			first = fmt.Sprintf("127.0.0.1:%d", port)
		} else {
			cfg.Peers = []string{first}
		}
		c, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Shutdown() })
		nodes = append(nodes, c)
	}
	waitFor(t, 20*time.Second, "loopback nodes to join", func() bool { return nodes[1].Joined() && nodes[0].numNodes() == 2 })
	if err := nodes[0].Put("host", "lo0", []byte("vtep")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "record over UDP", func() bool {
		r, ok := nodes[1].Get("host", "lo0")
		return ok && string(r.Value) == "vtep"
	})
	if got := nodes[1].LocalAddr(); got.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("LocalAddr %v", got)
	}
}

// freePort finds a port free for both TCP and UDP on 127.0.0.1.
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no free port on 127.0.0.1")
	return 0
}
