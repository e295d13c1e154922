package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/ipam"

	"grapevine/gossip"
	"grapevine/gossip/gossiptest"
)

// poolWithGateway is `docker network create --subnet --ip-range --gateway`
// on one host: the pool, then the gateway request.
func (c *cnode) poolWithGateway(subnet, sub, gw string) string {
	c.t.Helper()
	res, err := c.d.RequestPool(&ipam.RequestPoolRequest{Pool: subnet, SubPool: sub})
	if err != nil {
		c.t.Fatalf("%s: RequestPool(%s %s): %v", c.name, subnet, sub, err)
	}
	if _, err := c.d.RequestAddress(&ipam.RequestAddressRequest{PoolID: res.PoolID, Address: gw,
		Options: map[string]string{requestAddressTypeKey: gatewayAddressType}}); err != nil {
		c.t.Fatalf("%s: gateway %s of %s: %v", c.name, gw, subnet, err)
	}
	return res.PoolID
}

// The macvlan e2e network: every host creates it with the aux addresses of
// all hosts, which lie outside the --ip-range in blocks of various owners.
// Every host reserves all of them, before and after the division is agreed;
// a container's --ip keeps the block check; the reservations go with the pool.
func TestClusterAuxAddressesReservedOnEveryHost(t *testing.T) {
	_, nodes := startCluster(t, fastCfg(), "h1", "h2", "h3")
	const subnet, rng, gw = "198.19.60.0/24", "198.19.60.128/25", "198.19.60.254"
	aux := []string{"198.19.60.101", "198.19.60.102", "198.19.60.103"}
	create := func() map[*cnode]string {
		ids := map[*cnode]string{}
		for _, c := range nodes {
			ids[c] = c.poolWithGateway(subnet, rng, gw)
			for _, a := range aux {
				if got, err := c.aux(ids[c], a); err != nil || got.String() != a {
					t.Fatalf("%s: --aux-address %s: %v, %v", c.name, a, got, err)
				}
			}
		}
		return ids
	}
	ids := create()
	// No address was requested by an endpoint yet: nothing had to be agreed.
	if _, ok := nodes[0].d.cl.decided(initInstance(netip.MustParsePrefix(subnet))); ok {
		t.Fatalf("reserving aux addresses ran the division of the subnet")
	}
	got := map[netip.Addr]string{}
	for _, c := range nodes {
		for range 5 {
			a := c.mustAddr(ids[c])
			if other, dup := got[a]; dup {
				t.Fatalf("%s and %s both got %s", other, c.name, a)
			}
			got[a] = c.name
			if !netip.MustParsePrefix(rng).Contains(a) {
				t.Fatalf("%s: dynamic address %s outside --ip-range %s", c.name, a, rng)
			}
		}
	}
	// The blocks below the range belong to somebody; the aux addresses are
	// held on every host all the same, so a container cannot take them.
	owner := ""
	for _, b := range nodes[0].status(ids[nodes[0]]).Blocks {
		if b.First == "198.19.60.0" {
			owner = b.Owner
		}
	}
	if owner == "" {
		t.Fatalf("no block starts at 198.19.60.0: %v", nodes[0].status(ids[nodes[0]]).Blocks)
	}
	for _, c := range nodes {
		held := c.allocations(ids[c])
		for _, a := range aux {
			if !slices.Contains(held, netip.MustParseAddr(a)) {
				t.Fatalf("%s does not hold aux address %s: %v", c.name, a, held)
			}
		}
		_, err := c.addr(ids[c], aux[0])
		if c.name == owner {
			wantErr(t, err, ErrConflict, "--ip "+aux[0]+" is already in use on this network (by an endpoint or an --aux-address)")
		} else {
			wantErr(t, err, ErrNotOwned, fmt.Sprintf("--ip %s lies in block 198.19.60.0-198.19.60.127 of %s, owned by host %s", aux[0], subnet, owner))
		}
		// A free address in that block: only its owner may give it to a container.
		_, err = c.addr(ids[c], "198.19.60.50")
		if c.name == owner {
			if err != nil {
				t.Fatalf("owner %s: --ip 198.19.60.50: %v", c.name, err)
			}
		} else if !errors.Is(err, ErrNotOwned) {
			t.Fatalf("%s: --ip 198.19.60.50 in %s's block: %v, want ErrNotOwned", c.name, owner, err)
		}
	}
	// Network removal: Docker releases the aux addresses, the gateway and the
	// pool; creating the network again reserves them again.
	for _, c := range nodes {
		for _, a := range aux {
			if err := c.d.ReleaseAddress(&ipam.ReleaseAddressRequest{PoolID: ids[c], Address: a}); err != nil {
				t.Fatalf("%s: release %s: %v", c.name, a, err)
			}
		}
		for _, a := range c.allocations(ids[c]) {
			if err := c.d.ReleaseAddress(&ipam.ReleaseAddressRequest{PoolID: ids[c], Address: a.String()}); err != nil {
				t.Fatalf("%s: release %s: %v", c.name, a, err)
			}
		}
		if err := c.d.ReleasePool(&ipam.ReleasePoolRequest{PoolID: ids[c]}); err != nil {
			t.Fatalf("%s: release pool: %v", c.name, err)
		}
	}
	create()
}

// Aux addresses inside the allocation range, in blocks of both hosts: the
// owners never hand them out, and every host's endpoints stay distinct.
func TestClusterAuxAddressesNeverHandedOut(t *testing.T) {
	_, nodes := startCluster(t, fastCfg(), "a", "b")
	const subnet = "198.19.61.0/27"
	aux := []netip.Addr{netip.MustParseAddr("198.19.61.5"), netip.MustParseAddr("198.19.61.20")}
	ids := map[*cnode]string{}
	for _, c := range nodes {
		ids[c] = c.pool(subnet, "")
		for _, a := range aux {
			if _, err := c.aux(ids[c], a.String()); err != nil {
				t.Fatalf("%s: aux %s: %v", c.name, a, err)
			}
		}
	}
	// Two /28 blocks: 13 addresses left in the first (network, gateway and
	// one aux taken), 14 in the second (broadcast and one aux taken).
	seen := map[netip.Addr]string{}
	for _, c := range nodes {
		for range 13 {
			a := c.mustAddr(ids[c])
			if slices.Contains(aux, a) {
				t.Fatalf("%s handed out the aux address %s", c.name, a)
			}
			if other, dup := seen[a]; dup {
				t.Fatalf("%s and %s both got %s", other, c.name, a)
			}
			seen[a] = c.name
		}
	}
}

// A host configured with PEERS that has reached none of them can still
// create a network with aux addresses (nothing is claimed), but hands out
// no address.
func TestClusterAuxAddressesWithoutPeers(t *testing.T) {
	n := gossiptest.NewNet()
	a := startNode(t, n, "a", func(c *gossip.Config) { c.Peers = []string{"100.64.200.1:7947"} }, fastCfg())
	id := a.pool("198.19.62.0/24", "")
	if _, err := a.aux(id, "198.19.62.200"); err != nil {
		t.Fatalf("aux without peers: %v", err)
	}
	_, err := a.addr(id, "198.19.62.10")
	wantErr(t, err, ErrNotOwned, "this host has not yet reached any of its PEERS")
	if s := a.status(id); len(s.Owned) != 0 || s.Allocated != 1 {
		t.Fatalf("status = %+v", s)
	}
}

// servedAux waits until c sees host's definition of subnet as served with
// the aux list want.
func servedAux(t *testing.T, c *cnode, subnet, host string, want ...string) {
	t.Helper()
	gossiptest.Eventually(t, 10*time.Second, c.name+" sees "+host+"'s aux list", func() bool {
		r, ok := c.gc.Get(kindPool, subnet+"/"+host)
		var def poolDef
		return ok && decodeRec(r, &def) == nil && def.Served && slices.Equal(def.Aux, want)
	})
}

// Aux lists that differ between hosts: a host lacking another host's aux
// address hands out nothing (it could hand that address to a container), a
// host adding an aux address a finished host lacks is refused at creation,
// both naming the host and the address; the first host keeps working,
// across a restart, and the lacking host works once its list matches.
func TestClusterAuxListsDiffer(t *testing.T) {
	_, nodes := startCluster(t, fastCfg(), "h1", "h2", "h3")
	h1, h2, h3 := nodes[0], nodes[1], nodes[2]
	const subnet, rng, gw = "198.19.63.0/24", "198.19.63.128/25", "198.19.63.254"
	create := func(c *cnode, aux ...string) (string, error) {
		id := c.poolWithGateway(subnet, rng, gw)
		for _, a := range aux {
			if _, err := c.aux(id, a); err != nil {
				return id, err
			}
		}
		return id, nil
	}
	id1, err := create(h1, "198.19.63.101", "198.19.63.102")
	if err != nil {
		t.Fatal(err)
	}
	h1.mustAddr(id1)
	servedAux(t, h2, subnet, "h1", "198.19.63.101", "198.19.63.102")
	servedAux(t, h3, subnet, "h1", "198.19.63.101", "198.19.63.102")

	id2, err := create(h2, "198.19.63.101") // lacks .102
	if err != nil {
		t.Fatalf("h2 creating with a sub-list: %v", err)
	}
	_, err = h2.addr(id2, "")
	wantErr(t, err, ErrConflict, "host h1 created network "+subnet+" with --aux-address 198.19.63.102, which this host's network lacks")

	_, err = create(h3, "198.19.63.101", "198.19.63.102", "198.19.63.103") // adds .103
	wantErr(t, err, ErrConflict, "--aux-address 198.19.63.103: host h1 created network "+subnet+" without it")

	// h1 is not stopped by the others' mistakes, nor by a restart (its
	// list is stored, not rebuilt empty).
	h1.mustAddr(id1)
	h1.stop()
	h1.start()
	waitAlive(t, nodes, 3)
	h1.mustAddr(id1)

	// h2 completes its list (as recreating the network would): it works.
	if _, err := h2.aux(id2, "198.19.63.102"); err != nil {
		t.Fatal(err)
	}
	a := h2.mustAddr(id2)
	if a == netip.MustParseAddr("198.19.63.102") || a == netip.MustParseAddr("198.19.63.101") {
		t.Fatalf("h2 handed out an aux address: %s", a)
	}
}

// Hostile definitions: a member publishing garbage, a list of non-addresses
// or addresses outside the subnet in its own pool definition changes no
// honest host's answers.
func TestClusterAuxListsHostile(t *testing.T) {
	n, nodes := startCluster(t, fastCfg(), "a", "b")
	rogue := rogueMember(t, n, nodes, "rogue")
	const subnet = "198.19.64.0/24"
	ids := map[*cnode]string{}
	for _, c := range nodes {
		ids[c] = c.pool(subnet, "")
		if _, err := c.aux(ids[c], "198.19.64.9"); err != nil {
			t.Fatalf("%s: aux: %v", c.name, err)
		}
	}
	for _, v := range [][]byte{
		[]byte("{not json"),
		[]byte(`{"version":1,"aux":["x","198.19.65.7","::1",""],"served":true}`),
		[]byte(`{"version":1,"aux":7,"served":true}`),
	} {
		if err := rogue.Put(kindPool, subnet+"/rogue", v); err != nil {
			t.Fatal(err)
		}
		gossiptest.Eventually(t, 10*time.Second, "the rogue definition arrives", func() bool {
			r, ok := nodes[1].gc.Get(kindPool, subnet+"/rogue")
			return ok && string(r.Value) == string(v)
		})
		for _, c := range nodes {
			if _, err := c.addr(ids[c], ""); err != nil {
				t.Fatalf("%s beside the rogue definition %s: %v", c.name, v, err)
			}
		}
	}
}
