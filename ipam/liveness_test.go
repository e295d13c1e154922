package ipam

import (
	"net/netip"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/ipam"
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
