package ipam

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/ipam"
	"go.etcd.io/bbolt"

	"grapevine/gossip"
	"grapevine/gossip/gossiptest"
)

// liveCfg allows for a busy machine: these tests pass through many
// donations, each bounded by DonateTimeout.
func liveCfg() Config {
	return Config{AgreeTimeout: 15 * time.Second, DonateTimeout: 15 * time.Second}
}

// allocRoundRobin asks nodes in turn for n addresses of their pools and
// returns them, failing on an error or a duplicate.
func allocRoundRobin(t *testing.T, nodes []*cnode, ids map[*cnode]string, n int) map[netip.Addr]string {
	t.Helper()
	got := map[netip.Addr]string{}
	for i := range n {
		c := nodes[i%len(nodes)]
		start := time.Now()
		a, err := c.addr(ids[c], "")
		if err != nil {
			t.Fatalf("address %d on %s: %v", i+1, c.name, err)
		}
		t.Logf("address %d on %s: %s in %v", i+1, c.name, a, time.Since(start).Round(time.Millisecond))
		if other, dup := got[a]; dup {
			t.Fatalf("%s and %s both got %s", other, c.name, a)
		}
		got[a] = c.name
	}
	return got
}

// A /28 --ip-range (gateway inside it) over 4 hosts: 15 addresses, taken
// round-robin, all distinct and in range, although each host's first
// share is 4 addresses or fewer; the 16th is refused saying the range is
// full.
func TestClusterSlash28Over4Hosts(t *testing.T) {
	_, nodes := startCluster(t, liveCfg(), "h1", "h2", "h3", "h4")
	const subnet, rng, gw = "198.19.70.0/24", "198.19.70.16/28", "198.19.70.16"
	ids := map[*cnode]string{}
	for _, c := range nodes {
		ids[c] = c.poolWithGateway(subnet, rng, gw)
	}
	got := allocRoundRobin(t, nodes, ids, 15)
	for a, host := range got {
		if !netip.MustParsePrefix(rng).Contains(a) || a.String() == gw {
			t.Fatalf("%s got %s, outside %s or the gateway", host, a, rng)
		}
	}
	_, err := nodes[15%4].addr(ids[nodes[15%4]], "")
	wantErr(t, err, ErrExhausted, "no free address left in --ip-range "+rng+" of "+subnet+": the range is full (every address is in use on h1, h2, h3, h4, all reachable)")
}

// A /29 on 3 hosts is fully usable from one host: with one address taken
// on h1, h3 gets the other 4 (8 less network, broadcast and gateway),
// though the first division gives each host 2 or 4 addresses.
func TestClusterSlash29FromOneHost(t *testing.T) {
	_, nodes := startCluster(t, liveCfg(), "h1", "h2", "h3")
	const subnet = "198.19.71.0/29"
	ids := map[*cnode]string{}
	for _, c := range nodes {
		ids[c] = c.poolWithGateway(subnet, "", "")
	}
	first := nodes[0].mustAddr(ids[nodes[0]])
	got := allocRoundRobin(t, nodes[2:], ids, 4)
	if _, dup := got[first]; dup {
		t.Fatalf("h3 got h1's %s", first)
	}
	_, err := nodes[2].addr(ids[nodes[2]], "")
	wantErr(t, err, ErrExhausted, "the range is full")
}

// Hosts that never create the network do not hoard its space: the one
// host using it gets every address.
func TestClusterNonUsersDoNotHoard(t *testing.T) {
	_, nodes := startCluster(t, liveCfg(), "h1", "h2", "h3")
	const subnet = "198.19.72.0/29"
	ids := map[*cnode]string{nodes[2]: nodes[2].poolWithGateway(subnet, "", "")}
	allocRoundRobin(t, nodes[2:], ids, 5)
	_, err := nodes[2].addr(ids[nodes[2]], "")
	wantErr(t, err, ErrExhausted, "the range is full")
}

// Addresses freed on one host are used by another: with the range full,
// a release on h1 lets h2 allocate.
func TestClusterFreedAddressUsedElsewhere(t *testing.T) {
	_, nodes := startCluster(t, liveCfg(), "h1", "h2")
	h1, h2 := nodes[0], nodes[1]
	const subnet = "198.19.73.0/29"
	ids := map[*cnode]string{h1: h1.poolWithGateway(subnet, "", ""), h2: h2.poolWithGateway(subnet, "", "")}
	got := allocRoundRobin(t, nodes[:1], ids, 5)
	_, err := h2.addr(ids[h2], "")
	wantErr(t, err, ErrExhausted, "the range is full")
	var freed netip.Addr
	for a := range got {
		freed = a
		break
	}
	if err := h1.d.ReleaseAddress(&ipam.ReleaseAddressRequest{PoolID: ids[h1], Address: freed.String()}); err != nil {
		t.Fatal(err)
	}
	a, err := h2.addr(ids[h2], "")
	if err != nil || a != freed {
		t.Fatalf("h2 after h1 freed %s: %v, %v", freed, a, err)
	}
}

// cutAtGive is a donor's gossip that cuts the network between the
// recipient and everyone else just before the donor writes the block
// record giving space away, so the recipient never hears of it until the
// heal, and checks then that the donor's allocator no longer hands out
// that block.
type cutAtGive struct {
	gossip.Replicated
	net       *gossiptest.Net
	recipient []string
	rest      []string
	donor     *Driver

	mu        sync.Mutex
	given     []string // "first-last" of the block given while cut
	stillUsed bool     // the donor's allocator still had it
}

func (w *cutAtGive) Put(kind, key string, value []byte) error {
	var b blockRec
	if kind == kindBlock && json.Unmarshal(value, &b) == nil && b.Owner != w.LocalName() {
		w.mu.Lock()
		if w.given == nil {
			w.net.Partition(w.recipient, w.rest)
			subnetS, first, _ := splitKey(key)
			w.given = []string{first, b.Last}
			w.donor.mu.Lock()
			p := w.donor.localPool(netip.MustParsePrefix(subnetS))
			w.stillUsed = p != nil && p.alloc.inSpans(addrToOrd(p.prefix, netip.MustParseAddr(first)))
			w.donor.mu.Unlock()
		}
		w.mu.Unlock()
	}
	return w.Replicated.Put(kind, key, value)
}

func (w *cutAtGive) block() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.given
}

// A partition in the middle of a donation (the donor has dropped the
// block and writes the record giving it while the recipient is cut off)
// leaves no address on two hosts: during the partition neither side
// allocates from the block, everyone fills what it has; after the heal
// the recipient learns of the block and uses it, and every host sees the
// same blocks.
func TestClusterPartitionDuringDonation(t *testing.T) {
	n := gossiptest.NewNet()
	cfg := fastCfg()
	cfg.AgreeTimeout = 10 * time.Second
	cut := &cutAtGive{net: n, recipient: []string{"c"}, rest: []string{"a", "b"}}
	a := &cnode{t: t, name: "a"}
	a.d = startWrapped(t, n, "a", cfg, func(r gossip.Replicated, _ *bbolt.DB) gossip.Replicated {
		cut.Replicated = r
		return cut
	})
	cut.mu.Lock()
	cut.donor = a.d
	cut.mu.Unlock()
	b := startNode(t, n, "b", nil, cfg)
	c := startNode(t, n, "c", nil, cfg)
	nodes := []*cnode{a, b, c}
	gossiptest.Eventually(t, 10*time.Second, "three hosts alive", func() bool {
		return aliveCount(a.d) == 3 && aliveCount(b.d) == 3 && aliveCount(c.d) == 3
	})
	// A /26 in four /28 blocks: a owns two (the most spare, so it is the
	// donor), b and c one each.
	const subnet = "198.19.74.0/26"
	ids := map[*cnode]string{}
	for _, h := range nodes {
		ids[h] = h.poolWithGateway(subnet, "", "")
		h.mustAddr(ids[h])
	}
	// c uses its block up; its request for space (or its request ahead
	// of need) makes a donate, and the network is cut at the give.
	for i := 0; cut.block() == nil; i++ {
		if i > 32 {
			t.Fatal("c took 32 addresses and a never donated")
		}
		if _, err := c.addr(ids[c], ""); err != nil {
			t.Logf("c's address %d: %v", i+2, err)
		}
	}
	given := cut.block()
	t.Logf("a gave %s-%s while c was cut off", given[0], given[1])
	cut.mu.Lock()
	if cut.stillUsed {
		t.Errorf("a's allocator still hands out %v while it writes the record giving it to c", given)
	}
	cut.mu.Unlock()
	waitAlive(t, nodes[2:], 1)
	inGiven := func(x netip.Addr) bool {
		return !x.Less(netip.MustParseAddr(given[0])) && !netip.MustParseAddr(given[1]).Less(x)
	}
	// Everyone fills all it can reach during the partition.
	for _, h := range nodes {
		for {
			if _, err := h.addr(ids[h], ""); err != nil {
				wantErr(t, err, ErrExhausted, "no free address left")
				break
			}
		}
	}
	for _, h := range nodes {
		for _, x := range h.allocations(ids[h]) {
			if inGiven(x) {
				t.Fatalf("%s holds %s of the block in flight during the partition", h.name, x)
			}
		}
	}
	noDuplicates(t, ids)

	n.Heal()
	waitAlive(t, nodes, 3)
	var got netip.Addr
	gossiptest.Eventually(t, 20*time.Second, "c allocates from the block after the heal", func() bool {
		x, err := c.addr(ids[c], "")
		if err == nil {
			got = x
		}
		return err == nil
	})
	if !inGiven(got) {
		t.Fatalf("c's first address after the heal %s is outside the block %v it was given", got, given)
	}
	noDuplicates(t, ids)
	healedAgreement(t, nodes, ids)
}

// lateBlocks is a host's gossip on which other hosts' block records show
// only a while after they first appear, as when a donor's definition
// record (written after the block records) arrives before them; their
// delivery (onVisible) is replayed when they show.
type lateBlocks struct {
	gossip.Replicated
	delay time.Duration

	mu        sync.Mutex
	seen      map[string]time.Time // kind/key/version → first seen
	onVisible func(gossip.Record)
}

func (l *lateBlocks) visible(r gossip.Record) bool {
	if r.Kind != kindBlock || r.Owner == l.LocalName() {
		return true
	}
	k := fmt.Sprintf("%s/%d", r.Key, r.Version)
	l.mu.Lock()
	defer l.mu.Unlock()
	at, ok := l.seen[k]
	if !ok {
		at = time.Now()
		l.seen[k] = at
		if deliver := l.onVisible; deliver != nil {
			time.AfterFunc(l.delay+time.Millisecond, func() { deliver(r) })
		}
	}
	return time.Since(at) >= l.delay
}

func (l *lateBlocks) List(kind string) []gossip.Record {
	var out []gossip.Record
	for _, r := range l.Replicated.List(kind) {
		if l.visible(r) {
			out = append(out, r)
		}
	}
	return out
}

func (l *lateBlocks) Get(kind, key string) (gossip.Record, bool) {
	r, ok := l.Replicated.Get(kind, key)
	if ok && !l.visible(r) {
		return gossip.Record{}, false
	}
	return r, ok
}

// A donation whose block records reach the recipient after the donor's
// new definition (which says it has nothing left) is still used: the
// recipient does not call the range full while the records are in flight.
func TestClusterDonationRecordsLate(t *testing.T) {
	n := gossiptest.NewNet()
	late := &lateBlocks{delay: 150 * time.Millisecond, seen: map[string]time.Time{}}
	h1 := &cnode{t: t, name: "h1"}
	h1.d = startWrapped(t, n, "h1", liveCfg(), func(r gossip.Replicated, _ *bbolt.DB) gossip.Replicated {
		late.Replicated = r
		return late
	})
	late.mu.Lock()
	late.onVisible = func(r gossip.Record) { h1.d.onBlock(nil, &r) }
	late.mu.Unlock()
	h2 := startNode(t, n, "h2", nil, liveCfg())
	waitAlive(t, []*cnode{h1, h2}, 2)
	const subnet = "198.19.75.0/29"
	ids := map[*cnode]string{h1: h1.poolWithGateway(subnet, "", ""), h2: h2.poolWithGateway(subnet, "", "")}
	allocRoundRobin(t, []*cnode{h1}, ids, 5) // h2 gives up all its space, block by block
}
