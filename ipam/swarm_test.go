package ipam

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/docker/go-plugins-helpers/ipam"
)

func swarmCfg() Config {
	cfg := fastCfg()
	cfg.SwarmAllocates = true
	return cfg
}

// SCOPE=global on two hosts, as docs/swarm.md says Docker does it: the
// manager (a) allocates in the global space; each worker (a and b) then asks
// its local space for the same pool, gateway and the manager's task
// addresses, in whatever block they would have been. a repeats everything.
func TestClusterSwarmAllocatesAcceptsManagerAddresses(t *testing.T) {
	_, nodes := startCluster(t, swarmCfg(), "a", "b")
	a, b := nodes[0], nodes[1]
	const subnet = "198.19.70.0/24"
	serial := map[string]string{"com.docker.network.ipam.serial": "true"}
	gwOpts := map[string]string{requestAddressTypeKey: gatewayAddressType}

	// Manager: global pool, gateway, a VIP and four task addresses.
	gres, err := a.d.RequestPool(&ipam.RequestPoolRequest{AddressSpace: GlobalAddressSpace, Pool: subnet})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.d.RequestAddress(&ipam.RequestAddressRequest{PoolID: gres.PoolID,
		Options: map[string]string{requestAddressTypeKey: gatewayAddressType, "com.docker.network.ipam.serial": "true"}}); err != nil {
		t.Fatal(err)
	}
	var tasks []string
	for range 5 {
		res, err := a.d.RequestAddress(&ipam.RequestAddressRequest{PoolID: gres.PoolID, Options: serial})
		if err != nil {
			t.Fatal(err)
		}
		tasks = append(tasks, bare(t, res.Address).String())
	}
	tasks = append(tasks, "198.19.70.200") // a task address chosen elsewhere (another manager)

	// Workers: local pool, gateway, then the manager's addresses for the
	// tasks they run (here: all of them on both hosts, twice).
	ids := map[*cnode]string{}
	for _, c := range nodes {
		res, err := c.d.RequestPool(&ipam.RequestPoolRequest{Pool: subnet})
		if err != nil {
			t.Fatalf("%s: local pool: %v", c.name, err)
		}
		ids[c] = res.PoolID
		if _, err := c.d.RequestAddress(&ipam.RequestAddressRequest{PoolID: res.PoolID, Options: gwOpts}); err != nil {
			t.Fatalf("%s: gateway: %v", c.name, err)
		}
		for range 2 {
			for _, want := range tasks {
				if got, err := c.addr(ids[c], want); err != nil || got.String() != want {
					t.Fatalf("%s: manager-chosen %s: %v, %v", c.name, want, got, err)
				}
			}
		}
		if s := c.status(ids[c]); s.Allocated != len(tasks) || s.Gateway != "198.19.70.1" || len(s.Blocks) != 0 ||
			!slices.Equal(s.Owned, []string{"198.19.70.0-198.19.70.255"}) {
			t.Fatalf("%s: local pool status %+v", c.name, s)
		}
		// Only the manager chooses: a local request without an address is refused.
		_, err = c.addr(ids[c], "")
		wantErr(t, err, ErrUnsupported, "with SCOPE=global a Swarm manager chooses every address")
	}
	// The pool was never divided or published.
	if _, ok := a.d.cl.decided(initInstance(netip.MustParsePrefix(subnet))); ok {
		t.Fatal("a Swarm-allocated pool was divided among the hosts")
	}
	for _, c := range nodes {
		for _, r := range c.gc.List(kindPool) {
			t.Fatalf("%s: pool definition published: %s", c.name, r.Key)
		}
	}

	// Removal on a worker: task addresses, gateway, pool.
	for _, want := range tasks {
		if err := b.d.ReleaseAddress(&ipam.ReleaseAddressRequest{PoolID: ids[b], Address: want}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.d.ReleaseAddress(&ipam.ReleaseAddressRequest{PoolID: ids[b], Address: "198.19.70.1"}); err != nil {
		t.Fatal(err)
	}
	if err := b.d.ReleasePool(&ipam.ReleasePoolRequest{PoolID: ids[b]}); err != nil {
		t.Fatal(err)
	}
	if len(b.d.Status()) != 0 {
		t.Fatalf("b keeps pools after release: %+v", b.d.Status())
	}
}

// With SwarmAllocates an identical local pool request shares the pool, and
// restarts keep the pool whole and the repeats idempotent.
func TestSwarmAllocatesLocalPoolRepeatsAndRestart(t *testing.T) {
	h := newHarness(t, Config{SwarmAllocates: true})
	id := h.pool(LocalAddressSpace, "198.19.71.0/24", "198.19.71.128/25")
	if again := h.pool(LocalAddressSpace, "198.19.71.0/24", "198.19.71.128/25"); again != id {
		t.Fatalf("repeat pool id %s, want %s", again, id)
	}
	h.gateway(id, "198.19.71.1")
	h.addr(id, "198.19.71.9") // outside the --ip-range: the manager's business
	h.restart()
	if s := h.status(id); s.Refs != 2 || s.Allocated != 1 {
		t.Fatalf("status after restart = %+v", s)
	}
	if got := h.addr(id, "198.19.71.9"); got != "198.19.71.9/24" {
		t.Fatalf("repeat after restart = %s", got)
	}
	if got := h.gateway(id, "198.19.71.1"); got != "198.19.71.1/24" {
		t.Fatalf("gateway repeat = %s", got)
	}
	for range 2 {
		if err := h.d.ReleasePool(&ipam.ReleasePoolRequest{PoolID: id}); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(h.d.Status()); n != 0 {
		t.Fatalf("%d pools left after two releases", n)
	}
}
