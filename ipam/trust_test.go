package ipam

import (
	"encoding/json"
	"errors"
	"math"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"

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

// trustCfg is fastCfg with room for slow machines: with a rogue member that
// never answers, every honest host must answer each round.
func trustCfg() Config {
	cfg := fastCfg()
	cfg.AgreeTimeout, cfg.DonateTimeout = 10*time.Second, 10*time.Second
	return cfg
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
	n, nodes := startCluster(t, trustCfg(), "a", "b", "c")
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

// startWrapped starts an IPAM host whose gossip is wrapped by wrap (given
// the host's bbolt file).
func startWrapped(t *testing.T, n *gossiptest.Net, name string, cfg Config, wrap func(gossip.Replicated, *bbolt.DB) gossip.Replicated) *Driver {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(t.TempDir(), name+".db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.NoSync = true
	t.Cleanup(func() { _ = db.Close() })
	gc := n.Node(t, name, func(g *gossip.Config) { g.DB = db })
	cfg.DB, cfg.Cluster, cfg.Log = db, wrap(gc, db), gossiptest.Log(name)
	d, err := New(withTestPool(cfg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

// failingAcc is a host's gossip whose writes of acceptor records fail, as if
// the host crashed right after persisting its answer.
type failingAcc struct {
	gossip.Replicated
}

func (f failingAcc) Put(kind, key string, value []byte) error {
	if kind == kindAcc {
		return errors.New("crash point: acceptor record not written")
	}
	return f.Replicated.Put(kind, key, value)
}

// TestTrustPromisePersistedFirst: an acceptor's answer is in its own store
// before it is written to gossip: with the gossip write failing (the crash
// point), the promise is still there.
func TestTrustPromisePersistedFirst(t *testing.T) {
	n := gossiptest.NewNet()
	cfg := fastCfg()
	cfg.AgreeTimeout = 500 * time.Millisecond
	a := startNode(t, n, "a", nil, cfg)
	b := startWrapped(t, n, "b", cfg, func(r gossip.Replicated, _ *bbolt.DB) gossip.Replicated { return failingAcc{r} })
	gossiptest.Eventually(t, 10*time.Second, "a sees b", func() bool { return aliveCount(a.d) == 2 })
	const subnet = "198.19.31.0/24"
	id := a.pool(subnet, "")
	if _, err := a.addr(id, ""); err == nil {
		t.Fatal("a decided without b's answer")
	}
	b.cl.accMu.Lock()
	got, ok, err := b.cl.loadAcc("init/" + subnet)
	b.cl.accMu.Unlock()
	if err != nil || !ok || got.Promised.N == 0 || got.Promised.P != "a" {
		t.Fatalf("b's stored acceptor state %+v (%v), want a's promise", got, ok)
	}
}

// TestTrustOwnAcceptorRecordOverwritten: another member writing a host's
// acceptor record is refused by every host, and the host does not forget
// what it promised and learned (its own state comes from its store).
func TestTrustOwnAcceptorRecordOverwritten(t *testing.T) {
	n, nodes := startCluster(t, trustCfg(), "a", "b", "c")
	rogue := rogueMember(t, n, nodes, "rogue")
	const subnet = "198.19.32.0/24"
	inst := "init/" + subnet
	for _, c := range nodes {
		c.mustAddr(c.pool(subnet, ""))
	}
	a := nodes[0]
	if err := rogue.Put(kindAcc, inst+"/a", mustJSON(t, accState{Version: recordVersion})); err != nil {
		t.Fatal(err)
	}
	// Gossip refuses a record in another host's name at the boundary
	// (the kind's validator): every honest host counts it and keeps a's.
	gossiptest.Eventually(t, 30*time.Second, "every host refuses the rogue's acceptor record", func() bool {
		for _, c := range nodes {
			refused := false
			for _, r := range c.gc.RefusalStats() {
				refused = refused || (r.Peer == "rogue" && r.Cause == gossip.CauseNotOwner)
			}
			if rec, ok := c.gc.Get(kindAcc, inst+"/a"); !refused || !ok || rec.Owner != "a" {
				return false
			}
		}
		return true
	})
	a.d.cl.accMu.Lock()
	own, err := a.d.cl.ownAcc(inst)
	a.d.cl.accMu.Unlock()
	if err != nil || !own.Decided || own.Accepted.zero() {
		t.Fatalf("a's acceptor state after its record was overwritten: %+v", own)
	}
}

// donorWatch checks, at every block record a host writes that gives space
// to another host, that the host's own store no longer lists that space as
// its own.
type donorWatch struct {
	gossip.Replicated
	db *bbolt.DB

	mu         sync.Mutex
	gives      int
	violations []string
}

func (w *donorWatch) Put(kind, key string, value []byte) error {
	var b blockRec
	if kind == kindBlock && json.Unmarshal(value, &b) == nil && b.Owner != w.LocalName() {
		subnetS, first, _ := splitKey(key)
		subnet := netip.MustParsePrefix(subnetS)
		lo := addrToOrd(subnet, netip.MustParseAddr(first))
		w.mu.Lock()
		w.gives++
		_ = w.db.View(func(tx *bbolt.Tx) error {
			return tx.Bucket(rootBucket).Bucket(poolsBucket).ForEachBucket(func(k []byte) error {
				var r poolRecord
				if json.Unmarshal(tx.Bucket(rootBucket).Bucket(poolsBucket).Bucket(k).Get(metaKey), &r) != nil || r.Pool != subnetS {
					return nil
				}
				if o, err := parseOwnership(subnet, r.Owned); err == nil && o.contains(lo) {
					w.violations = append(w.violations, key+" given to "+b.Owner+" while stored as owned")
				}
				return nil
			})
		})
		w.mu.Unlock()
	}
	return w.Replicated.Put(kind, key, value)
}

// TestTrustDonationPersistedFirst: a donor's store drops the block it gives
// before the record giving it is written, so a crash in between never
// brings the donor back owning a block another host may use.
func TestTrustDonationPersistedFirst(t *testing.T) {
	n := gossiptest.NewNet()
	a := startNode(t, n, "a", nil, trustCfg())
	var watch *donorWatch
	b := &cnode{t: t, name: "b"}
	b.d = startWrapped(t, n, "b", trustCfg(), func(r gossip.Replicated, db *bbolt.DB) gossip.Replicated {
		watch = &donorWatch{Replicated: r, db: db}
		return watch
	})
	gossiptest.Eventually(t, 10*time.Second, "a sees b", func() bool { return aliveCount(a.d) == 2 })
	const subnet = "198.19.41.0/26"
	ida, idb := a.pool(subnet, ""), b.pool(subnet, "")
	b.mustAddr(idb)
	for i := range 40 { // a owns 32 addresses: b must donate
		if _, err := a.addr(ida, ""); err != nil {
			t.Fatalf("address %d on a: %v", i, err)
		}
	}
	watch.mu.Lock()
	defer watch.mu.Unlock()
	if watch.gives == 0 {
		t.Fatal("b never donated")
	}
	if len(watch.violations) > 0 {
		t.Fatalf("donations written before they were persisted: %v", watch.violations)
	}
}

// TestTrustForgedBlockRecords: a member writes block records for space it
// was never given: over another host's block (replacing that host's record
// under the same key everywhere), inside another host's block, a forged
// donation between two other hosts and a forged reclaim. No honest host's
// view of the blocks changes, each refuses every one, allocation goes on,
// and a restarted host still refuses them.
func TestTrustForgedBlockRecords(t *testing.T) {
	n, nodes := startCluster(t, trustCfg(), "a", "b", "c")
	rogue := rogueMember(t, n, nodes, "rogue")
	const subnet = "198.19.33.0/24"
	ids := map[*cnode]string{}
	for _, c := range nodes {
		ids[c] = c.pool(subnet, "")
		c.mustAddr(ids[c])
	}
	before := blockOwners(nodes[0].status(ids[nodes[0]]))
	for _, c := range nodes[1:] {
		gossiptest.Eventually(t, 10*time.Second, c.name+" sees the same blocks", func() bool {
			return slices.Equal(blockOwners(c.status(ids[c])), before)
		})
	}
	// Block firsts and lasts of a and b, from the shared view.
	var aBlock, bBlock []string
	for _, b := range nodes[0].status(ids[nodes[0]]).Blocks {
		switch {
		case b.Owner == "a" && aBlock == nil:
			aBlock = []string{b.First, b.Last}
		case b.Owner == "b" && bBlock == nil:
			bBlock = []string{b.First, b.Last}
		}
	}
	if aBlock == nil || bBlock == nil {
		t.Fatalf("blocks %v: want one of a and one of b", before)
	}
	inside := netip.MustParseAddr(bBlock[0]).Next().Next().Next().Next() // b's block, at another key
	forged := []struct{ key, last, owner string }{
		{aBlock[0], aBlock[1], "rogue"},       // a's block, a's key
		{inside.String(), bBlock[1], "rogue"}, // overlaps b's block
		{bBlock[0], bBlock[1], "c"},           // a donation b never made
	}
	for _, f := range forged {
		v := mustJSON(t, blockRec{Version: recordVersion, Last: f.last, Owner: f.owner})
		if err := rogue.Put(kindBlock, subnet+"/"+f.key, v); err != nil {
			t.Fatal(err)
		}
	}
	reclaimed := mustJSON(t, blockRec{Version: recordVersion, Last: aBlock[1], Owner: "rogue", Reclaimed: true})
	if err := rogue.Put(kindBlock, subnet+"/"+aBlock[0], reclaimed); err != nil { // a reclaim nobody decided
		t.Fatal(err)
	}
	waitRecord(t, nodes, kindBlock, subnet+"/"+aBlock[0], "rogue")
	waitRecord(t, nodes, kindBlock, subnet+"/"+bBlock[0], "rogue")
	waitRecord(t, nodes, kindBlock, subnet+"/"+inside.String(), "rogue")

	check := func(what string) {
		t.Helper()
		for _, c := range nodes {
			if got := blockOwners(c.status(ids[c])); !slices.Equal(got, before) {
				t.Fatalf("%s: %s's blocks %v, want %v", what, c.name, got, before)
			}
			if got := c.d.Refused()[causeBlockNotOwner]; got == 0 {
				t.Fatalf("%s: %s counted no refused block record", what, c.name)
			}
			if _, err := c.addr(ids[c], ""); err != nil {
				t.Fatalf("%s: %s cannot allocate: %v", what, c.name, err)
			}
		}
		noDuplicates(t, ids)
	}
	check("after the forgeries")
	a := nodes[0]
	a.stop()
	a.start()
	check("after a restarts")
}
