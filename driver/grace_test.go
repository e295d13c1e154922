package driver

import (
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"grapevine/gossip"
)

// graceClock is a settable clock for the left-peer grace (the peer worker
// reads it too).
type graceClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *graceClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *graceClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// TestLeftPeerGrace: a member that leaves gracefully keeps its endpoints'
// entries and its place in the VXLAN ingress filter for the grace, not one
// moment longer; a member that fails loses them at once. Repeated
// membership snapshots showing the departed member do not restart its
// grace, and a third host cannot withdraw its endpoints meanwhile.
func TestLeftPeerGrace(t *testing.T) {
	e, c := newClusterEnv(t, "h0", "198.18.0.1")
	clock := &graceClock{t: time.Unix(1_800_000_000, 0)}
	e.d.mu.Lock() // the peer worker reads the clock
	e.d.left.now = clock.now
	grace := e.d.left.grace
	e.d.mu.Unlock()
	nid := id("n")
	vx := vxlanName(nid)
	e.mustCreateNetwork(netReq{id: nid, subnet: sub20})
	left := []remote{
		{"198.19.20.10", "02:00:00:00:00:0a", "198.18.0.2"},
		{"198.19.20.11", "02:00:00:00:00:0b", "198.18.0.2"},
	}
	failed := remote{"198.19.20.12", "02:00:00:00:00:0c", "198.18.0.3"}
	third := remote{"198.19.20.13", "02:00:00:00:00:0d", "198.18.0.4"}
	c.SetMember("h1", "198.18.0.2", gossip.StateAlive, gossip.EventJoin)
	c.SetMember("h2", "198.18.0.3", gossip.StateAlive, gossip.EventJoin)
	c.SetMember("h3", "198.18.0.4", gossip.StateAlive, gossip.EventJoin)
	for _, r := range left {
		remoteEndpoint(t, c, "h1", sub20, r.ip, r.mac)
	}
	remoteEndpoint(t, c, "h2", sub20, failed.ip, failed.mac)
	remoteEndpoint(t, c, "h3", sub20, third.ip, third.mac)
	e.flush()
	checkRemotes(t, e.fake, vx, left[0], left[1], failed, third)

	ingress := func(want ...string) {
		t.Helper()
		var w []netip.Addr
		for _, a := range want {
			w = append(w, netip.MustParseAddr(a))
		}
		if got := e.fake.Firewall().VXLAN.Peers; !slices.Equal(got, w) {
			t.Fatalf("VXLAN ingress accepts %v, want %v", got, w)
		}
	}
	reconcile := func() {
		t.Helper()
		e.flush()
		if err := e.d.ReconcilePeers(); err != nil {
			t.Fatal(err)
		}
	}

	c.SetMember("h1", "198.18.0.2", gossip.StateLeft, gossip.EventLeave)
	c.SetMember("h2", "198.18.0.3", gossip.StateDead, gossip.EventDead)
	reconcile()
	checkRemotes(t, e.fake, vx, left[0], left[1], third)
	ingress("198.18.0.2", "198.18.0.4")

	// A third host withdrawing the departed host's endpoint is refused.
	c.RemoteDelete("h3", kindEndpoint, sub20+"/"+left[0].ip)
	clock.advance(grace - time.Second)
	reconcile()
	checkRemotes(t, e.fake, vx, left[0], left[1], third)
	ingress("198.18.0.2", "198.18.0.4")

	clock.advance(time.Second)
	reconcile()
	checkRemotes(t, e.fake, vx, third)
	ingress("198.18.0.4")
	// The departed member is still listed as left: its grace does not start
	// again.
	for range 3 {
		clock.advance(time.Second)
		reconcile()
	}
	checkRemotes(t, e.fake, vx, third)
	ingress("198.18.0.4")

	// Back: its endpoints and VTEP are back; a later leave has a new grace.
	c.SetMember("h1", "198.18.0.2", gossip.StateAlive, gossip.EventJoin)
	reconcile()
	checkRemotes(t, e.fake, vx, left[0], left[1], third)
	ingress("198.18.0.2", "198.18.0.4")
	c.SetMember("h1", "198.18.0.2", gossip.StateLeft, gossip.EventLeave)
	clock.advance(grace / 2)
	reconcile()
	checkRemotes(t, e.fake, vx, left[0], left[1], third)
}

// TestLeftPeerGraceNeedsLeave: only a reported leave, or a snapshot showing
// a member known alive as left, starts a grace. A member first seen as
// already left (this host restarted after it left), or one that was dead
// before it is listed as left, is not programmed.
func TestLeftPeerGraceNeedsLeave(t *testing.T) {
	e, c := newClusterEnv(t, "h0", "198.18.0.1")
	nid := id("n")
	vx := vxlanName(nid)
	e.mustCreateNetwork(netReq{id: nid, subnet: sub20})
	snapshotLeft := remote{"198.19.20.10", "02:00:00:00:00:0a", "198.18.0.2"}
	deadFirst := remote{"198.19.20.11", "02:00:00:00:00:0b", "198.18.0.3"}
	aliveFirst := remote{"198.19.20.12", "02:00:00:00:00:0c", "198.18.0.4"}

	// Listed as left without an event (no earlier state here).
	c.PutMember(gossip.Member{Name: "h1", State: gossip.StateLeft, Addr: netip.MustParseAddrPort("198.18.0.2:7946"),
		Meta: gossip.NodeMeta{Version: 1, VTEP: netip.MustParseAddr("198.18.0.2"), VXLANPort: 4789}})
	remoteEndpoint(t, c, "h1", sub20, snapshotLeft.ip, snapshotLeft.mac)
	c.SetMember("h2", "198.18.0.3", gossip.StateDead, gossip.EventDead)
	remoteEndpoint(t, c, "h2", sub20, deadFirst.ip, deadFirst.mac)
	c.SetMember("h3", "198.18.0.4", gossip.StateAlive, gossip.EventJoin)
	remoteEndpoint(t, c, "h3", sub20, aliveFirst.ip, aliveFirst.mac)
	e.flush()
	if err := e.d.ReconcilePeers(); err != nil {
		t.Fatal(err)
	}
	checkRemotes(t, e.fake, vx, aliveFirst)

	// h2, dead, later listed as left by a snapshot: still not programmed.
	// h3, alive, listed as left by a snapshot before its event arrives:
	// kept.
	for _, m := range c.Members() {
		if m.Name == "h2" || m.Name == "h3" {
			m.State = gossip.StateLeft
			c.PutMember(m)
		}
	}
	if err := e.d.ReconcilePeers(); err != nil {
		t.Fatal(err)
	}
	checkRemotes(t, e.fake, vx, aliveFirst)
}
