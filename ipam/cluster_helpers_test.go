package ipam

import (
	"net/netip"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/ipam"
	"go.etcd.io/bbolt"

	"grapevine/gossip"
	"grapevine/gossip/gossiptest"
)

// cnode is one host of a test cluster: a real gossip.Cluster on an in-memory
// network and a Driver on its own bbolt file (shared by both, like the plugin).
type cnode struct {
	t    *testing.T
	net  *gossiptest.Net
	name string
	path string
	mod  func(*gossip.Config)
	cfg  Config
	db   *bbolt.DB
	gc   *gossip.Cluster
	d    *Driver
}

func fastCfg() Config {
	return Config{AgreeTimeout: 3 * time.Second, DonateTimeout: 3 * time.Second}
}

func startNode(t *testing.T, n *gossiptest.Net, name string, mod func(*gossip.Config), cfg Config) *cnode {
	t.Helper()
	c := &cnode{t: t, net: n, name: name, path: filepath.Join(t.TempDir(), name+".db"), mod: mod, cfg: cfg}
	c.start()
	return c
}

func (c *cnode) start() {
	c.t.Helper()
	db, err := bbolt.Open(c.path, 0o600, nil)
	if err != nil {
		c.t.Fatalf("open bbolt: %v", err)
	}
	db.NoSync = true
	c.db = db
	c.gc = c.net.Node(c.t, c.name, func(g *gossip.Config) {
		g.DB = db
		if c.mod != nil {
			c.mod(g)
		}
	})
	cfg := withTestPool(c.cfg)
	cfg.DB, cfg.Cluster, cfg.Log = db, c.gc, gossiptest.Log(c.name)
	d, err := New(cfg)
	if err != nil {
		c.t.Fatalf("New(%s): %v", c.name, err)
	}
	c.d = d
	c.t.Cleanup(c.stop)
}

// stop shuts the host down (idempotent).
func (c *cnode) stop() {
	if c.d == nil {
		return
	}
	c.d.Close()
	_ = c.gc.Shutdown()
	_ = c.db.Close()
	c.d = nil
}

func (c *cnode) pool(subnet, sub string) string {
	c.t.Helper()
	res, err := c.d.RequestPool(&ipam.RequestPoolRequest{Pool: subnet, SubPool: sub})
	if err != nil {
		c.t.Fatalf("%s: RequestPool(%s %s): %v", c.name, subnet, sub, err)
	}
	if _, err := c.d.RequestAddress(&ipam.RequestAddressRequest{PoolID: res.PoolID,
		Options: map[string]string{requestAddressTypeKey: gatewayAddressType}}); err != nil {
		c.t.Fatalf("%s: gateway of %s: %v", c.name, subnet, err)
	}
	return res.PoolID
}

// addr requests an endpoint's address (want: its --ip, or "" for any).
func (c *cnode) addr(id, want string) (netip.Addr, error) {
	return c.request(id, want, endpointOpts())
}

// aux reserves an --aux-address as Docker does: nil options.
func (c *cnode) aux(id, want string) (netip.Addr, error) {
	return c.request(id, want, nil)
}

func (c *cnode) request(id, want string, opts map[string]string) (netip.Addr, error) {
	res, err := c.d.RequestAddress(&ipam.RequestAddressRequest{PoolID: id, Address: want, Options: opts})
	if err != nil {
		return netip.Addr{}, err
	}
	p, err := netip.ParsePrefix(res.Address)
	if err != nil {
		c.t.Fatalf("answer %q: %v", res.Address, err)
	}
	return p.Addr(), nil
}

func (c *cnode) mustAddr(id string) netip.Addr {
	c.t.Helper()
	a, err := c.addr(id, "")
	if err != nil {
		c.t.Fatalf("%s: RequestAddress(%s): %v", c.name, id, err)
	}
	return a
}

func (c *cnode) status(id string) PoolStatus {
	c.t.Helper()
	for _, s := range c.d.Status() {
		if s.PoolID == id {
			return s
		}
	}
	c.t.Fatalf("%s: pool %s not in Status", c.name, id)
	return PoolStatus{}
}

// allocations lists every address the host holds in pool id (from its store).
func (c *cnode) allocations(id string) []netip.Addr {
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	p := c.d.pools[id]
	if p == nil {
		return nil
	}
	var out []netip.Addr
	for _, o := range p.allocatedOrds() {
		out = append(out, ordToAddr(p.prefix.Addr(), o))
	}
	return out
}

// aliveCount is the number of hosts the Driver sees alive (itself included).
// It uses the Driver's event-fed view: gossip's Members() races with
// memberlist's updates.
func aliveCount(d *Driver) int { return len(d.cl.alive()) }

// startCluster starts hosts named names, each configured with PEERS of the
// ones before it, and waits until all see each other.
func startCluster(t *testing.T, cfg Config, names ...string) (*gossiptest.Net, []*cnode) {
	t.Helper()
	return startClusterMod(t, cfg, nil, names...)
}

// startClusterMod is startCluster with gossip settings changed by mod.
func startClusterMod(t *testing.T, cfg Config, mod func(*gossip.Config), names ...string) (*gossiptest.Net, []*cnode) {
	t.Helper()
	n := gossiptest.NewNet()
	var out []*cnode
	for _, name := range names {
		out = append(out, startNode(t, n, name, mod, cfg))
	}
	waitAlive(t, out, len(out))
	return n, out
}

func waitAlive(t *testing.T, nodes []*cnode, want int) {
	t.Helper()
	gossiptest.Eventually(t, 20*time.Second, "every host to see the others alive", func() bool {
		for _, c := range nodes {
			if aliveCount(c.d) != want {
				return false
			}
		}
		return true
	})
}

// noDuplicates fails when two hosts hold one address of pool subnet.
func noDuplicates(t *testing.T, ids map[*cnode]string) int {
	t.Helper()
	seen := map[netip.Addr]string{}
	total := 0
	for c, id := range ids {
		for _, a := range c.allocations(id) {
			if other, dup := seen[a]; dup {
				t.Fatalf("address %s held by both %s and %s", a, other, c.name)
			}
			seen[a] = c.name
			total++
		}
	}
	return total
}

// blockOwners renders a host's view of the blocks, for convergence checks.
func blockOwners(s PoolStatus) []string {
	var out []string
	for _, b := range s.Blocks {
		out = append(out, b.First+"-"+b.Last+"="+b.Owner)
	}
	sort.Strings(out)
	return out
}

// release gives back an address of pool id as Docker does.
func (c *cnode) release(id string, a netip.Addr) {
	c.t.Helper()
	if err := c.d.ReleaseAddress(&ipam.ReleaseAddressRequest{PoolID: id, Address: a.String()}); err != nil {
		c.t.Fatalf("%s: ReleaseAddress(%s): %v", c.name, a, err)
	}
}

// inBlocks reports whether a lies in a block owned by owner whose reclaimed
// mark is reclaimed.
func inBlocks(bs []BlockStatus, owner string, reclaimed bool, a netip.Addr) bool {
	for _, b := range bs {
		if b.Owner == owner && b.Reclaimed == reclaimed && !a.Less(netip.MustParseAddr(b.First)) && !netip.MustParseAddr(b.Last).Less(a) {
			return true
		}
	}
	return false
}

// freeFresh lists the addresses the host could hand out that lie in blocks
// it owns and that were never reclaimed from another host: every address of
// those blocks except the subnet's network and broadcast addresses, the
// gateway and what the host holds.
func (c *cnode) freeFresh(id string) []netip.Addr {
	c.t.Helper()
	s := c.status(id)
	subnet := netip.MustParsePrefix(s.Pool)
	held := map[netip.Addr]bool{}
	for _, a := range c.allocations(id) {
		held[a] = true
	}
	var out []netip.Addr
	for _, b := range s.Blocks {
		if b.Owner != c.name || b.Reclaimed {
			continue
		}
		last := netip.MustParseAddr(b.Last)
		for a := netip.MustParseAddr(b.First); a.IsValid() && !last.Less(a); a = a.Next() {
			if a == subnet.Addr() || a == lastAddr(subnet) || a.String() == s.Gateway || held[a] {
				continue
			}
			out = append(out, a)
		}
	}
	return out
}

// lastAddr is the broadcast address of an IPv4 prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// noDuplicatesExcept is noDuplicates for a pool where allowed may be held
// twice: the address a host held in a block reclaimed while it was away
// (the documented residual risk of a reclaim).
func noDuplicatesExcept(t *testing.T, ids map[*cnode]string, allowed netip.Addr) {
	t.Helper()
	seen := map[netip.Addr]string{}
	for c, id := range ids {
		for _, a := range c.allocations(id) {
			if other, dup := seen[a]; dup && a != allowed {
				t.Fatalf("address %s held by both %s and %s", a, other, c.name)
			}
			seen[a] = c.name
		}
	}
}
