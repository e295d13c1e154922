package driver

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"testing"
	"time"

	"grapevine/gossip"
	"grapevine/gossip/gossiptest"
)

// rogueNode starts a gossip member with the key that runs no driver: it
// writes whatever records it likes. vtep "" means its own gossip address.
func rogueNode(t *testing.T, gn *gossiptest.Net, name, vtep string) *gossip.Cluster {
	t.Helper()
	gn.Config(name)
	if vtep == "" {
		vtep = netip.MustParseAddrPort(gn.Addr(name)).Addr().String()
	}
	return gn.Node(t, name, func(cfg *gossip.Config) {
		cfg.Meta = gossip.NodeMeta{VTEP: netip.MustParseAddr(vtep), VXLANPort: 4789}
	})
}

func endpointValue(t *testing.T, mac, node string) []byte {
	t.Helper()
	v, err := json.Marshal(endpointDef{Version: 1, MAC: mac, Node: node})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestTrustForgedEndpointRecords: members holding the key forge endpoint
// records of every refused kind. The honest hosts program none of them,
// keep what they programmed, count each refusal by cause, and still program
// a well-formed endpoint of the same rogue.
func TestTrustForgedEndpointRecords(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node gossip test")
	}
	gn := gossiptest.NewNet()
	h1, h2 := startHost(t, gn, "h1"), startHost(t, gn, "h2")
	rogue := rogueNode(t, gn, "rogue", "")
	liar := rogueNode(t, gn, "liar", h2.vtep) // claims h2's address as its VTEP
	hosts := []*host{h1, h2}
	gossiptest.Eventually(t, 10*time.Second, "four members", func() bool {
		for _, c := range []*gossip.Cluster{h1.c, h2.c, rogue, liar} {
			if len(c.Members()) != 4 {
				return false
			}
		}
		return true
	})
	nids := map[string]string{"h1": id("net-h1"), "h2": id("net-h2")}
	for _, h := range hosts {
		h.env.mustCreateNetwork(netReq{id: nids[h.name], subnet: sub20, opts: map[string]string{"vni": "9000000"}})
	}
	honest := map[string]map[string]string{} // host → ip → mac@vtep
	for i, h := range hosts {
		honest[h.name] = map[string]string{}
		for j := range 2 {
			ip := fmt.Sprintf("198.19.20.%d", 10*(i+1)+j)
			resp := h.env.mustCreateEndpoint(nids[h.name], id(h.name+ip), ip+"/24", "")
			honest[h.name][ip] = resp.Interface.MacAddress + "@" + h.vtep
		}
	}
	for _, h := range hosts {
		other := honest[map[string]string{"h1": "h2", "h2": "h1"}[h.name]]
		gossiptest.Eventually(t, 10*time.Second, h.name+" programs the other host", func() bool {
			return maps.Equal(h.remotes(vxlanName(nids[h.name])), other)
		})
	}

	key := func(ip string) string { return sub20 + "/" + ip }
	// The rogue forges over h2's records once it has them: a deletion
	// older than the record it deletes is ignored, not refused.
	gossiptest.Eventually(t, 10*time.Second, "the rogue has h2's endpoint records", func() bool {
		for ip := range honest["h2"] {
			if _, ok := rogue.Get(kindEndpoint, key(ip)); !ok {
				return false
			}
		}
		return true
	})
	forged := []struct {
		c          *gossip.Cluster
		key, cause string
		value      []byte
		delete     bool
	}{
		{rogue, key("198.19.20.50"), causeMAC, endpointValue(t, "00:00:00:00:00:00", "rogue"), false},
		{rogue, key("198.19.20.51"), causeMAC, endpointValue(t, "ff:ff:ff:ff:ff:ff", "rogue"), false},
		{rogue, key("198.19.20.52"), causeMAC, endpointValue(t, "01:00:5e:00:00:01", "rogue"), false},
		{rogue, key("198.19.20.1"), causeAddress, endpointValue(t, "02:00:00:00:0e:01", "rogue"), false},   // gateway
		{rogue, key("198.19.20.255"), causeAddress, endpointValue(t, "02:00:00:00:0e:02", "rogue"), false}, // broadcast
		{rogue, key("198.19.20.0"), causeAddress, endpointValue(t, "02:00:00:00:0e:03", "rogue"), false},   // network
		{rogue, key("198.19.20.53"), causeNode, endpointValue(t, "02:00:00:00:0e:04", "h2"), false},        // h2's endpoint, says the value
		{rogue, key("198.19.20.20"), causeHeld, endpointValue(t, "02:00:00:00:0e:05", "rogue"), false},     // h2's address
		{rogue, key("198.19.20.21"), causeDelete, nil, true},                                               // h2's endpoint deleted
		{rogue, key("198.19.20.54"), causeUndecoded, []byte(`{"mac":"zz"}`), false},
		{rogue, sub20 + "/198.19.99.1", causeKey, endpointValue(t, "02:00:00:00:0e:06", "rogue"), false},
		{liar, key("198.19.20.55"), causeVTEP, endpointValue(t, "02:00:00:00:0e:07", "liar"), false},
	}
	for _, f := range forged {
		var err error
		if f.delete {
			err = f.c.Delete(kindEndpoint, f.key)
		} else {
			err = f.c.Put(kindEndpoint, f.key, f.value)
		}
		if err != nil {
			t.Fatalf("forging %s: %v", f.key, err)
		}
	}
	// A well-formed endpoint of the rogue is programmed: the checks above
	// refuse causes, not writers.
	if err := rogue.Put(kindEndpoint, key("198.19.20.60"), endpointValue(t, "02:00:00:00:0e:60", "")); err != nil {
		t.Fatal(err)
	}
	rogueVTEP := netip.MustParseAddrPort(gn.Addr("rogue")).Addr().String()
	wantCounts := map[string]uint64{}
	for _, f := range forged {
		wantCounts[f.cause]++
	}
	for _, h := range hosts {
		want := maps.Clone(honest[map[string]string{"h1": "h2", "h2": "h1"}[h.name]])
		want["198.19.20.60"] = "02:00:00:00:0e:60@" + rogueVTEP
		vx := vxlanName(nids[h.name])
		w := maps.Clone(wantCounts)
		if h == h2 {
			// The forged record over h2's own addresses program nothing
			// there (its own endpoints are not remote): no refusal.
			delete(w, causeHeld)
			delete(w, causeDelete)
		}
		gossiptest.Eventually(t, 10*time.Second, h.name+" programs the rogue's well-formed endpoint", func() bool {
			return maps.Equal(h.remotes(vx), want)
		})
		gossiptest.Eventually(t, 10*time.Second, h.name+" refuses every forged record", func() bool {
			return maps.Equal(h.d.Refused(), w)
		})
		if err := h.d.ReconcilePeers(); err != nil {
			t.Fatal(err)
		}
		if got := h.remotes(vx); !maps.Equal(got, want) {
			t.Fatalf("%s after repair: %v, want %v", h.name, got, want)
		}
		if fdb := h.fake.FDB(vx); len(fdb) != len(want) {
			t.Fatalf("%s fdb %v, want only the entries of %v", h.name, fdb, want)
		}
	}
}

// TestTrustAddressMovesOnlyUncontested: another host's record for an
// address a live host's endpoint holds is refused while the holder announces
// it again (as its Reconcile does), and accepted once it stayed uncontested
// for the holdoff (the holder's withdrawal was lost, as after a partition).
func TestTrustAddressMovesOnlyUncontested(t *testing.T) {
	e, c := newClusterEnv(t, "h0", "198.18.0.1")
	nid := id("n")
	vx := vxlanName(nid)
	e.mustCreateNetwork(netReq{id: nid, subnet: sub20})
	c.SetMember("h1", "198.18.0.2", gossip.StateAlive, gossip.EventJoin)
	c.SetMember("h2", "198.18.0.3", gossip.StateAlive, gossip.EventJoin)
	held := remote{"198.19.20.10", "02:00:00:00:00:0a", "198.18.0.2"}
	moved := remote{held.ip, "02:00:00:00:00:0b", "198.18.0.3"}
	remoteEndpoint(t, c, "h1", sub20, held.ip, held.mac)
	e.flush()
	checkRemotes(t, e.fake, vx, held)
	const holdoff = 100 * time.Millisecond
	e.d.mu.Lock()
	e.d.holdoff = holdoff
	e.d.mu.Unlock()
	repair := func() {
		t.Helper()
		if err := e.d.ReconcilePeers(); err != nil {
			t.Fatal(err)
		}
		e.flush()
	}

	remoteEndpoint(t, c, "h2", sub20, moved.ip, moved.mac)
	e.flush()
	checkRemotes(t, e.fake, vx, held)
	remoteEndpoint(t, c, "h1", sub20, held.ip, held.mac) // h1 still has it
	time.Sleep(2 * holdoff)
	repair()
	checkRemotes(t, e.fake, vx, held)

	remoteEndpoint(t, c, "h2", sub20, moved.ip, moved.mac) // and now h1 stays silent
	e.flush()
	repair()
	checkRemotes(t, e.fake, vx, held)
	time.Sleep(2 * holdoff)
	repair()
	checkRemotes(t, e.fake, vx, moved)
	if got := e.d.Refused()[causeHeld]; got != 2 {
		t.Fatalf("refused takeovers %d, want 2", got)
	}
}
