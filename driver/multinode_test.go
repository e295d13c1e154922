package driver

import (
	"fmt"
	"maps"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/network"
	"go.etcd.io/bbolt"

	"grapevine/driver/dataplane"
	"grapevine/driver/dataplane/dataplanetest"
	"grapevine/gossip"
	"grapevine/gossip/gossiptest"
)

// host is one simulated grapevine host on a gossiptest network: a real
// gossip.Cluster, a Fake kernel and a Driver sharing one bbolt file.
type host struct {
	t    *testing.T
	name string
	vtep string
	net  *gossiptest.Net
	db   *bbolt.DB
	fake *dataplanetest.Fake
	c    *gossip.Cluster
	d    *Driver
	env  *env
}

// startHost starts host name; its VTEP is its gossip address, as in a
// real deployment (other hosts refuse any other VTEP).
func startHost(t *testing.T, gn *gossiptest.Net, name string) *host {
	t.Helper()
	gn.Config(name) // assigns the address
	vtep := netip.MustParseAddrPort(gn.Addr(name)).Addr().String()
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "state.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	h := &host{t: t, name: name, vtep: vtep, net: gn, db: db, fake: dataplanetest.NewFake()}
	h.fake.SetUnderlay(&dataplane.Underlay{Addr: netip.MustParseAddr(vtep), Link: "eth0", MTU: 1500})
	h.start()
	return h
}

// start (re)starts the host's gossip node and driver on its DB.
func (h *host) start() {
	h.t.Helper()
	h.c = h.net.Node(h.t, h.name, func(cfg *gossip.Config) {
		cfg.DB = h.db
		cfg.Meta = gossip.NodeMeta{VTEP: netip.MustParseAddr(h.vtep), VXLANPort: 4789}
	})
	f := h.fake
	d, err := New(Config{
		DB:            h.db,
		Dataplane:     f,
		Underlay:      func() (dataplane.Underlay, error) { return f.ResolveUnderlay("") },
		VXLANPort:     testVXLANPort,
		Scope:         "local",
		AddressSpaces: testSpaces,
		Cluster:       h.c,
		PeerRepair:    -1, // only gossip events program here
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.d = d
	h.t.Cleanup(d.Close) // runs before the node's own cleanup
	h.env = &env{t: h.t, fake: f, db: h.db, d: d}
}

// remotes returns the IP → (MAC, VTEP) entries programmed on vx.
func (h *host) remotes(vx string) map[string]string {
	out := map[string]string{}
	fdb := h.fake.FDB(vx)
	for ip, mac := range h.fake.Neigh(vx) {
		out[ip.String()] = mac + "@" + fdb[mac].String()
	}
	return out
}

// TestMultiNode runs three hosts over real gossip on an in-memory network:
// they agree on the network's VNI, program each other's endpoints, drop a
// dead host's endpoints and take them back when it returns.
func TestMultiNode(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node gossip test")
	}
	gn := gossiptest.NewNet()
	hosts := []*host{
		startHost(t, gn, "h1"),
		startHost(t, gn, "h2"),
		startHost(t, gn, "h3"),
	}
	gossiptest.Eventually(t, 10*time.Second, "three members", func() bool {
		for _, h := range hosts {
			alive := 0
			for _, m := range h.c.Members() {
				if m.State == gossip.StateAlive {
					alive++
				}
			}
			if alive != 3 {
				return false
			}
		}
		return true
	})

	// h1 defines the subnet with an explicit VNI; the others adopt it once
	// they have its record, and refuse another VNI.
	nids := map[string]string{}
	for _, h := range hosts {
		nids[h.name] = id("net-" + h.name) // Docker's ids differ per host
	}
	hosts[0].env.mustCreateNetwork(netReq{id: nids["h1"], subnet: sub20, opts: map[string]string{"vni": "9000000"}})
	key := networkKey(netip.MustParsePrefix(sub20), "h1")
	for _, h := range hosts[1:] {
		gossiptest.Eventually(t, 10*time.Second, h.name+" learns h1's network", func() bool {
			_, ok := h.c.Get(kindNetwork, key)
			return ok
		})
		err := h.d.CreateNetwork(h.env.createReq(netReq{id: nids[h.name], subnet: sub20, opts: map[string]string{"vni": "5"}}))
		wantErr(t, err, "198.19.20.0/24 is already defined on host h1 as mode=vxlan vni=9000000; use -o vni=9000000 or omit -o vni")
		h.env.mustCreateNetwork(netReq{id: nids[h.name], subnet: sub20})
		if l, _ := h.fake.Link(vxlanName(nids[h.name])); l.VXLAN.VNI != 9000000 {
			t.Fatalf("%s: vni %d, want the adopted 9000000", h.name, l.VXLAN.VNI)
		}
	}

	// Two endpoints per host.
	want := map[string]map[string]string{} // host → ip → mac@vtep of its own endpoints
	for i, h := range hosts {
		want[h.name] = map[string]string{}
		for j := range 2 {
			ip := fmt.Sprintf("198.19.20.%d", 10*(i+1)+j)
			resp := h.env.mustCreateEndpoint(nids[h.name], id(h.name+ip), ip+"/24", "")
			want[h.name][ip] = resp.Interface.MacAddress + "@" + h.vtep
		}
	}
	expect := func(h *host, except ...string) map[string]string {
		out := map[string]string{}
		for _, o := range hosts {
			if o == h || slices.Contains(except, o.name) {
				continue
			}
			maps.Copy(out, want[o.name])
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
	start := time.Now()
	for _, h := range hosts {
		waitRemotes("all endpoints", h, expect(h))
	}
	t.Logf("every host programmed the others' endpoints %s after the last CreateEndpoint", time.Since(start))

	// An endpoint removed on h2 disappears elsewhere.
	if err := hosts[1].d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: nids["h2"], EndpointID: id("h2198.19.20.21")}); err != nil {
		t.Fatal(err)
	}
	delete(want["h2"], "198.19.20.21")
	for _, h := range hosts {
		waitRemotes("endpoint deleted on h2", h, expect(h))
	}

	// A partition isolates h1: each side drops the other's endpoints, and
	// takes them back when it heals.
	gn.Partition([]string{"h1"}, []string{"h2", "h3"})
	waitRemotes("partition", hosts[0], map[string]string{})
	waitRemotes("partition", hosts[1], expect(hosts[1], "h1"))
	gn.Heal()
	for _, h := range hosts {
		waitRemotes("healed", h, expect(h))
	}

	// h3 dies: the others drop its endpoints.
	start = time.Now()
	gn.Kill("h3")
	for _, h := range hosts[:2] {
		waitRemotes("h3 dead", h, expect(h, "h3"))
	}
	t.Logf("h3's endpoints removed %s after it was cut off", time.Since(start))
	st := hosts[0].d.Status()
	if len(st) != 1 || st[0].RemoteEndpoints != 1 || st[0].RemoteUnreachable != 2 || st[0].RemoteHosts["h3"] != 2 {
		t.Fatalf("h1 status %+v, want 1 programmed and h3's 2 unreachable", st)
	}

	// h3 comes back (same state on disk): everything is programmed again.
	hosts[2].d.Close()
	if err := hosts[2].c.Shutdown(); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	hosts[2].start()
	if err := hosts[2].d.Reconcile(); err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		waitRemotes("h3 back", h, expect(h))
	}
	t.Logf("h3's endpoints back on every host %s after its restart", time.Since(start))
}
