package driver

import (
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/network"

	"grapevine/gossip"
	"grapevine/gossip/gossiptest"
)

// TestMultiNodeGracefulLeave runs three hosts over real gossip: a host whose
// plugin shuts down (a graceful leave, as on `docker plugin disable`) keeps
// its endpoints programmed on the others, a host that dies loses them at
// once, and the host that left returns with one endpoint fewer (removed
// while it was away): the others drop that one and keep the other.
func TestMultiNodeGracefulLeave(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node gossip test")
	}
	gn := gossiptest.NewNet()
	hosts := []*host{startHost(t, gn, "h1"), startHost(t, gn, "h2"), startHost(t, gn, "h3")}
	h1, h2, h3 := hosts[0], hosts[1], hosts[2]
	gossiptest.Eventually(t, 10*time.Second, "three members", func() bool {
		for _, h := range hosts {
			if states(h)["alive"] != 3 {
				return false
			}
		}
		return true
	})
	nids := map[string]string{}
	want := map[string]map[string]string{} // host → ip → mac@vtep
	epIDs := map[string]string{}           // ip → endpoint id
	for i, h := range hosts {
		nids[h.name] = id("net-" + h.name)
		h.env.mustCreateNetwork(netReq{id: nids[h.name], subnet: sub20, opts: map[string]string{"vni": "9000001"}})
		want[h.name] = map[string]string{}
		for j := range 2 {
			ip := fmt.Sprintf("198.19.20.%d", 10*(i+1)+j)
			epIDs[ip] = id(h.name + ip)
			resp := h.env.mustCreateEndpoint(nids[h.name], epIDs[ip], ip+"/24", "")
			want[h.name][ip] = resp.Interface.MacAddress + "@" + h.vtep
		}
	}
	expect := func(names ...string) map[string]string {
		out := map[string]string{}
		for _, n := range names {
			maps.Copy(out, want[n])
		}
		return out
	}
	waitRemotes := func(what string, h *host, w map[string]string) {
		t.Helper()
		vx := vxlanName(nids[h.name])
		gossiptest.Eventually(t, 15*time.Second, fmt.Sprintf("%s: %s holds %v (has %v)", what, h.name, w, h.remotes(vx)), func() bool {
			return maps.Equal(h.remotes(vx), w)
		})
	}
	waitRemotes("all endpoints", h1, expect("h2", "h3"))
	waitRemotes("all endpoints", h3, expect("h1", "h2"))

	// h2's plugin stops: it leaves gracefully. Once the others know, their
	// repair pass keeps its entries.
	h2.d.Close()
	if err := h2.c.Shutdown(); err != nil {
		t.Fatal(err)
	}
	for _, h := range []*host{h1, h3} {
		gossiptest.Eventually(t, 10*time.Second, h.name+" sees h2 leave", func() bool {
			return stateOf(h, "h2") == gossip.StateLeft
		})
		if err := h.d.ReconcilePeers(); err != nil {
			t.Fatal(err)
		}
	}
	vx1 := vxlanName(nids["h1"])
	if got := h1.remotes(vx1); !maps.Equal(got, expect("h2", "h3")) {
		t.Fatalf("h1 after h2 left: %v, want h2's and h3's %v", got, expect("h2", "h3"))
	}

	// h3 dies: h1 drops its endpoints, keeps h2's.
	gn.Kill("h3")
	waitRemotes("h3 dead, h2 left", h1, expect("h2"))

	// h2 comes back without one of its endpoints (removed while away).
	gone := "198.19.20.21"
	if err := (store{db: h2.db}).deleteEndpoint(epIDs[gone]); err != nil {
		t.Fatal(err)
	}
	delete(want["h2"], gone)
	h2.start()
	if err := h2.d.Reconcile(); err != nil {
		t.Fatal(err)
	}
	waitRemotes("h2 back with one endpoint", h1, expect("h2"))
	if err := h1.d.ReconcilePeers(); err != nil {
		t.Fatal(err)
	}
	if got := h1.remotes(vx1); !maps.Equal(got, expect("h2")) {
		t.Fatalf("h1 after a repair pass: %v, want %v", got, expect("h2"))
	}
}

// states counts h's view of the members by state.
func states(h *host) map[string]int {
	out := map[string]int{}
	for _, m := range h.c.Members() {
		out[m.State.String()]++
	}
	return out
}

// stateOf is h's view of member name's state (StateDead when unknown).
func stateOf(h *host, name string) gossip.MemberState {
	for _, m := range h.c.Members() {
		if m.Name == name {
			return m.State
		}
	}
	return gossip.StateDead
}

// TestMultiNodeRestartBeforeContact: a host whose plugin restarts keeps the
// other hosts' entries in its kernel until it is in contact with the cluster
// again (its containers keep talking meanwhile), then converges: an endpoint
// removed elsewhere while it was away goes.
func TestMultiNodeRestartBeforeContact(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node gossip test")
	}
	gn := gossiptest.NewNet()
	h1, h2 := startHost(t, gn, "h1"), startHost(t, gn, "h2")
	nid1, nid2 := id("net-h1"), id("net-h2")
	vx2 := vxlanName(nid2)
	h1.env.mustCreateNetwork(netReq{id: nid1, subnet: sub20, opts: map[string]string{"vni": "9000002"}})
	h2.env.mustCreateNetwork(netReq{id: nid2, subnet: sub20, opts: map[string]string{"vni": "9000002"}})
	want := map[string]string{}
	for _, ip := range []string{"198.19.20.10", "198.19.20.11"} {
		resp := h1.env.mustCreateEndpoint(nid1, id("h1"+ip), ip+"/24", "")
		want[ip] = resp.Interface.MacAddress + "@" + h1.vtep
	}
	gossiptest.Eventually(t, 15*time.Second, "h2 programs h1's endpoints", func() bool {
		return maps.Equal(h2.remotes(vx2), want)
	})

	h2.d.Close()
	if err := h2.c.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := h1.d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: nid1, EndpointID: id("h1198.19.20.11")}); err != nil {
		t.Fatal(err)
	}
	gn.Partition([]string{"h2"}, []string{"h1"})
	h2.start()
	if err := h2.d.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if h2.c.Joined() {
		t.Fatal("h2 joined across the partition")
	}
	if got := h2.remotes(vx2); !maps.Equal(got, want) {
		t.Fatalf("h2 restarted, not yet in contact: %v, want the entries it had %v", got, want)
	}

	gn.Heal()
	delete(want, "198.19.20.11")
	gossiptest.Eventually(t, 15*time.Second, "h2 back in contact", h2.c.Joined)
	gossiptest.Eventually(t, 15*time.Second, "h2 converges", func() bool {
		_ = h2.d.ReconcilePeers()
		return maps.Equal(h2.remotes(vx2), want)
	})
}
