package ipam

import (
	"net/netip"
	"testing"

	"github.com/docker/go-plugins-helpers/ipam"
	"go.etcd.io/bbolt"
)

// A host address is taken from the range like a container's, answered
// again on repeats and after a restart, never handed to a container, not
// released by ReleaseAddress, and freed with the pool.
func TestHostAddressLifecycle(t *testing.T) {
	h := newHarness(t, Config{})
	const subnet, rng = "198.19.60.0/24", "198.19.60.8/30"
	id := h.pool("", subnet, rng)
	h.gateway(id, "")
	prefix := netip.MustParsePrefix(subnet)
	host, err := h.d.HostAddress("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	if !netip.MustParsePrefix(rng).Contains(host) {
		t.Fatalf("host address %s outside --ip-range %s", host, rng)
	}
	if again, err := h.d.HostAddress(LocalAddressSpace, prefix); err != nil || again != host {
		t.Fatalf("repeat: %v, %v; want %s", again, err, host)
	}
	if s := h.status(id); s.HostAddress != host.String() || s.Allocated != 1 {
		t.Fatalf("status host address %q allocated %d, want %s and 1", s.HostAddress, s.Allocated, host)
	}
	h.release(id, host.String()) // Docker never had it: ignored
	h.restart()
	if again, err := h.d.HostAddress("", prefix); err != nil || again != host {
		t.Fatalf("after a restart: %v, %v; want %s", again, err, host)
	}
	seen := map[netip.Addr]bool{}
	for range 3 { // the /30 has 4 addresses: the host's and 3 more
		a := bare(t, h.addr(id, ""))
		if a == host || seen[a] {
			t.Fatalf("a container got %s (host address %s, taken %v)", a, host, seen)
		}
		seen[a] = true
	}
	_, err = h.d.RequestAddress(&ipam.RequestAddressRequest{PoolID: id, Options: endpointOpts()})
	wantErr(t, err, ErrExhausted, "no free address left in --ip-range "+rng)
	_, err = h.d.RequestAddress(&ipam.RequestAddressRequest{PoolID: id, Address: host.String(), Options: endpointOpts()})
	wantErr(t, err, ErrConflict, "--ip "+host.String()+" is already in use")

	// Docker releases the pool after deleting the network: the address goes.
	if err := h.d.ReleasePool(&ipam.ReleasePoolRequest{PoolID: id}); err != nil {
		t.Fatal(err)
	}
	id = h.pool("", subnet, rng)
	if got := bare(t, h.addr(id, "")); got != host {
		t.Fatalf("first container of the recreated pool got %s, want the released host address %s", got, host)
	}
	if s := h.status(id); s.HostAddress != "" {
		t.Fatalf("recreated pool has host address %q", s.HostAddress)
	}
}

// Refusals name the pool and the fix.
func TestHostAddressRefusals(t *testing.T) {
	h := newHarness(t, Config{SwarmAllocates: true})
	_, err := h.d.HostAddress("", netip.MustParsePrefix("198.19.61.0/24"))
	wantErr(t, err, ErrUnknownPool, "no grapevine IPAM pool for 198.19.61.0/24 in address space grapevine-local")
	_, err = h.d.HostAddress("", netip.MustParsePrefix("198.19.61.1/24"))
	wantErr(t, err, ErrInvalid, "is not an IPv4 subnet")
	h.pool(GlobalAddressSpace, "198.19.62.0/24", "")
	_, err = h.d.HostAddress(GlobalAddressSpace, netip.MustParsePrefix("198.19.62.0/24"))
	wantErr(t, err, ErrUnsupported, "give it with --aux-address host-<hostname>=IP")
}

// A stored host address the pool does not hold is refused at start-up,
// naming the pool.
func TestHostAddressStoredDamaged(t *testing.T) {
	h := newHarness(t, Config{})
	id := h.pool("", "198.19.63.0/24", "")
	if _, err := h.d.HostAddress("", netip.MustParsePrefix("198.19.63.0/24")); err != nil {
		t.Fatal(err)
	}
	h.d.mu.Lock()
	h.d.pools[id].host = netip.MustParseAddr("198.19.63.77")
	h.d.mu.Unlock()
	if err := h.d.persist(id); err != nil {
		t.Fatal(err)
	}
	if err := h.db.Close(); err != nil {
		t.Fatal(err)
	}
	h.db = nil
	db, err := bbolt.Open(h.path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cfg := withTestPool(Config{})
	cfg.DB = db
	_, err = New(cfg)
	wantErr(t, err, ErrInvalid, "pool "+id+": stored host address \"198.19.63.77\" is not an address the pool holds")
}

// Each host's address comes from its own blocks: three hosts of a /29
// range (gateway outside) get three distinct addresses, which no
// container gets, and one host fills the rest.
func TestClusterHostAddressesDistinct(t *testing.T) {
	_, nodes := startCluster(t, liveCfg(), "h1", "h2", "h3")
	const subnet, rng = "198.19.64.0/24", "198.19.64.8/29"
	prefix := netip.MustParsePrefix(subnet)
	ids := map[*cnode]string{}
	hostAddrs := map[netip.Addr]string{}
	for _, c := range nodes {
		ids[c] = c.poolWithGateway(subnet, rng, "")
		a, err := c.d.HostAddress("", prefix)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if other, dup := hostAddrs[a]; dup || !netip.MustParsePrefix(rng).Contains(a) {
			t.Fatalf("%s got host address %s (also %q's), range %s", c.name, a, other, rng)
		}
		hostAddrs[a] = c.name
		if s := c.status(ids[c]); !ownsAddr(s.Blocks, c.name, a) {
			t.Fatalf("%s's host address %s lies outside its blocks %v", c.name, a, s.Blocks)
		}
	}
	got := allocRoundRobin(t, nodes[:1], ids, 5) // 8 - 3 host addresses
	for a := range got {
		if h, dup := hostAddrs[a]; dup {
			t.Fatalf("h1 gave a container %s, %s's host address", a, h)
		}
	}
	_, err := nodes[0].addr(ids[nodes[0]], "")
	wantErr(t, err, ErrExhausted, "the range is full")
	noDuplicates(t, ids)
}
