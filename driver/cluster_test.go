package driver

import (
	"encoding/json"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/docker/go-plugins-helpers/network"

	"grapevine/driver/dataplane/dataplanetest"
	"grapevine/gossip"
	"grapevine/gossip/gossiptest"
)

const (
	sub20 = "198.19.20.0/24"
	sub21 = "198.19.21.0/24"
)

// flush applies every pending remote-endpoint change, as the peer worker would.
func (e *env) flush() {
	e.t.Helper()
	e.cluster.Deliver()
	e.d.applyDirty(0)
}

// remote is the expected programming of one remote endpoint.
type remote struct{ ip, mac, vtep string }

// checkRemotes asserts that vx holds exactly the entries for want: FDB self
// and bridge entries and permanent neighbours.
func checkRemotes(t *testing.T, f *dataplanetest.Fake, vx string, want ...remote) {
	t.Helper()
	wantFDB := map[string]netip.Addr{}
	wantNeigh := map[netip.Addr]string{}
	var wantMaster []string
	for _, r := range want {
		wantFDB[r.mac] = netip.MustParseAddr(r.vtep)
		wantNeigh[netip.MustParseAddr(r.ip)] = r.mac
		wantMaster = append(wantMaster, r.mac)
	}
	slices.Sort(wantMaster)
	wantMaster = slices.Compact(wantMaster)
	if got := f.FDB(vx); !maps.Equal(got, wantFDB) {
		t.Fatalf("fdb of %s = %v, want %v", vx, got, wantFDB)
	}
	if got := f.FDBMaster(vx); !slices.Equal(got, wantMaster) {
		t.Fatalf("bridge entries of %s = %v, want %v", vx, got, wantMaster)
	}
	if got := f.Neigh(vx); !maps.Equal(got, wantNeigh) {
		t.Fatalf("neighbours of %s = %v, want %v", vx, got, wantNeigh)
	}
}

func networkDefOf(t *testing.T, c *gossiptest.FakeCluster, subnet, node string) (networkDef, bool) {
	t.Helper()
	r, ok := c.Get(kindNetwork, networkKey(netip.MustParsePrefix(subnet), node))
	if !ok {
		return networkDef{}, false
	}
	var def networkDef
	if err := json.Unmarshal(r.Value, &def); err != nil {
		t.Fatal(err)
	}
	return def, true
}

type nodeDef struct {
	node string
	def  networkDef
}

// TestClusterNetworkIdentity: a subnet another host defines keeps its mode,
// VNI and gateway; the refusals name the host and its definition.
func TestClusterNetworkIdentity(t *testing.T) {
	h1def := networkDef{Version: 1, Mode: modeVXLAN, VNI: 9000000, Gateway: netip.MustParseAddr("198.19.20.1"), MTU: 1450}
	tests := []struct {
		name    string
		remote  []nodeDef // definitions of sub20, in the order written
		other   []nodeDef // definitions of sub21
		req     netReq
		wantErr string
		wantVNI uint32
	}{
		{name: "other explicit vni refused",
			remote: []nodeDef{{"h1", h1def}}, req: netReq{subnet: sub20, opts: map[string]string{"vni": "5"}},
			wantErr: "198.19.20.0/24 is already defined on host h1 as mode=vxlan vni=9000000; use -o vni=9000000 or omit -o vni"},
		{name: "first definer named",
			remote: []nodeDef{{"h2", h1def}, {"h1", h1def}}, req: netReq{subnet: sub20, opts: map[string]string{"vni": "5"}},
			wantErr: "is already defined on host h2 as"},
		{name: "other gateway refused",
			remote: []nodeDef{{"h1", h1def}}, req: netReq{subnet: sub20, gateway: "198.19.20.254/24"},
			wantErr: "198.19.20.0/24 is already defined on host h1 with gateway 198.19.20.1; use --gateway 198.19.20.1"},
		{name: "other mode refused",
			remote:  []nodeDef{{"h1", networkDef{Version: 1, Mode: modeMACVLAN, Gateway: h1def.Gateway}}},
			req:     netReq{subnet: sub20},
			wantErr: "198.19.20.0/24 is already defined on host h1 as mode=macvlan; use -o mode=macvlan"},
		{name: "vni adopted",
			remote: []nodeDef{{"h1", h1def}}, req: netReq{subnet: sub20}, wantVNI: 9000000},
		{name: "same explicit vni accepted",
			remote: []nodeDef{{"h1", h1def}}, req: netReq{subnet: sub20, opts: map[string]string{"vni": "9000000"}}, wantVNI: 9000000},
		{name: "vni of another subnet refused",
			other: []nodeDef{{"h2", networkDef{Version: 1, Mode: modeVXLAN, VNI: 777}}}, req: netReq{subnet: sub20, opts: map[string]string{"vni": "777"}},
			wantErr: "vni 777 is already used by subnet 198.19.21.0/24 (defined on host h2): pick another -o vni or omit it"},
		{name: "automatic vni skips another subnet's",
			other:   []nodeDef{{"h2", networkDef{Version: 1, Mode: modeVXLAN, VNI: autoVNI(netip.MustParsePrefix(sub20))}}},
			req:     netReq{subnet: sub20},
			wantVNI: nextAutoVNI(autoVNI(netip.MustParsePrefix(sub20)))},
		{name: "no definition: automatic vni",
			req: netReq{subnet: sub20}, wantVNI: autoVNI(netip.MustParsePrefix(sub20))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, c := newClusterEnv(t, "h0", "198.18.0.1")
			for _, nd := range tc.remote {
				remoteNetwork(t, c, nd.node, sub20, nd.def)
			}
			for _, nd := range tc.other {
				remoteNetwork(t, c, nd.node, sub21, nd.def)
			}
			tc.req.id = id("n")
			err := e.d.CreateNetwork(e.createReq(tc.req))
			if tc.wantErr != "" {
				wantErr(t, err, tc.wantErr)
				if _, ok := networkDefOf(t, c, sub20, "h0"); ok {
					t.Fatal("a refused network was published")
				}
				if links := e.fake.LinkNames(); len(links) != 0 {
					t.Fatalf("a refused network left links %v", links)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			vx, _ := e.fake.Link(vxlanName(tc.req.id))
			if vx.VXLAN.VNI != tc.wantVNI {
				t.Fatalf("vni %d, want %d", vx.VXLAN.VNI, tc.wantVNI)
			}
			def, ok := networkDefOf(t, c, sub20, "h0")
			want := networkDef{Version: 1, Mode: modeVXLAN, VNI: tc.wantVNI, Gateway: netip.MustParseAddr("198.19.20.1"), MTU: 1450}
			if !ok || def != want {
				t.Fatalf("published %+v (%t), want %+v", def, ok, want)
			}
			if st := e.d.Status(); len(st) != 1 || st[0].Conflict != "" {
				t.Fatalf("status %+v, want one network without conflict", st)
			}
		})
	}
}

// TestClusterAdoptedVNIUsedLocally: the cluster's VNI for a subnet is taken by
// another local network: refused, naming both.
func TestClusterAdoptedVNIUsedLocally(t *testing.T) {
	e, c := newClusterEnv(t, "h0", "198.18.0.1")
	e.mustCreateNetwork(netReq{id: id("a"), subnet: sub21, opts: map[string]string{"vni": "500"}})
	remoteNetwork(t, c, "h1", sub20, networkDef{Version: 1, Mode: modeVXLAN, VNI: 500, Gateway: netip.MustParseAddr("198.19.20.1")})
	err := e.d.CreateNetwork(e.createReq(netReq{id: id("b"), subnet: sub20}))
	wantErr(t, err, "198.19.20.0/24 is already defined on host h1 as mode=vxlan vni=500, but vni 500 is already used by grapevine network "+shortID(id("a")))

	// A definition that arrives later and disagrees shows in status.
	remoteNetwork(t, c, "h2", sub21, networkDef{Version: 1, Mode: modeVXLAN, VNI: 501, Gateway: netip.MustParseAddr("198.19.21.1")})
	st := e.d.Status()
	if len(st) != 1 || st[0].Conflict == "" {
		t.Fatalf("status %+v, want a conflict", st)
	}
	wantErr(t, errString(st[0].Conflict), "host h2 defines 198.19.21.0/24 as mode=vxlan vni=501")
}

type errString string

func (e errString) Error() string { return string(e) }

// TestClusterEndpointRecords: endpoints and networks are published and
// withdrawn with their local counterparts.
func TestClusterEndpointRecords(t *testing.T) {
	e, c := newClusterEnv(t, "h0", "198.18.0.1")
	nid := id("n")
	e.mustCreateNetwork(netReq{id: nid, subnet: sub20})
	e.mustCreateEndpoint(nid, id("a"), "198.19.20.5/24", "")
	e.mustCreateEndpoint(nid, id("b"), "198.19.20.6/24", "02:00:00:00:00:06")

	wantKeys := func(kind string, want ...string) {
		t.Helper()
		if got := c.Keys(kind, "h0"); !slices.Equal(got, want) {
			t.Fatalf("%s records %q, want %q", kind, got, want)
		}
	}
	wantKeys(kindEndpoint, sub20+"/198.19.20.5", sub20+"/198.19.20.6")
	wantKeys(kindNetwork, sub20+"/h0")
	r, _ := c.Get(kindEndpoint, sub20+"/198.19.20.6")
	var def endpointDef
	if err := json.Unmarshal(r.Value, &def); err != nil || def != (endpointDef{Version: 1, MAC: "02:00:00:00:00:06", Node: "h0"}) {
		t.Fatalf("endpoint record %s: %+v %v", r.Value, def, err)
	}

	if err := e.d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: nid, EndpointID: id("a")}); err != nil {
		t.Fatal(err)
	}
	wantKeys(kindEndpoint, sub20+"/198.19.20.6")

	// An address that another host has since taken over is not withdrawn.
	remoteEndpoint(t, c, "h1", sub20, "198.19.20.6", "02:00:00:00:01:06")
	if err := e.d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: nid}); err != nil {
		t.Fatal(err)
	}
	wantKeys(kindNetwork)
	wantKeys(kindEndpoint)
	if got := c.Keys(kindEndpoint, "h1"); !slices.Equal(got, []string{sub20 + "/198.19.20.6"}) {
		t.Fatalf("h1's record was touched: %q", got)
	}
}

// TestClusterRemoteProgramming: remote endpoints are programmed when both
// their record and their host are known and their network exists here, and
// removed on tombstone, host death or departure, and with the network.
func TestClusterRemoteProgramming(t *testing.T) {
	e, c := newClusterEnv(t, "h0", "198.18.0.1")
	nid := id("n")
	vx := vxlanName(nid)
	a := remote{"198.19.20.10", "02:00:00:00:00:0a", "198.18.0.2"}
	b := remote{"198.19.20.11", "02:00:00:00:00:0b", "198.18.0.2"}
	x := remote{"198.19.20.12", "02:00:00:00:00:0c", "198.18.0.3"}

	// Records arrive before the network exists and before h2 is known.
	c.SetMember("h1", a.vtep, gossip.StateAlive, gossip.EventJoin)
	remoteEndpoint(t, c, "h1", sub20, a.ip, a.mac)
	remoteEndpoint(t, c, "h2", sub20, x.ip, x.mac)
	remoteEndpoint(t, c, "h1", sub21, "198.19.21.10", "02:00:00:00:01:0a") // a network this host lacks
	e.mustCreateNetwork(netReq{id: nid, subnet: sub20})
	e.flush()
	checkRemotes(t, e.fake, vx, a)

	steps := []struct {
		name string
		do   func()
		want []remote
	}{
		{"host joins", func() { c.SetMember("h2", x.vtep, gossip.StateAlive, gossip.EventJoin) }, []remote{a, x}},
		{"record arrives", func() { remoteEndpoint(t, c, "h1", sub20, b.ip, b.mac) }, []remote{a, b, x}},
		{"record tombstoned", func() { c.RemoteDelete("h1", kindEndpoint, sub20+"/"+b.ip) }, []remote{a, x}},
		{"host dead", func() { c.SetMember("h1", a.vtep, gossip.StateDead, gossip.EventDead) }, []remote{x}},
		{"host rejoins", func() { c.SetMember("h1", a.vtep, gossip.StateAlive, gossip.EventJoin) }, []remote{a, x}},
		{"vtep changes", func() { c.SetMember("h1", "198.18.0.9", gossip.StateAlive, gossip.EventUpdate) },
			[]remote{{a.ip, a.mac, "198.18.0.9"}, x}},
		{"mac changes", func() { remoteEndpoint(t, c, "h1", sub20, a.ip, "02:00:00:00:00:aa") },
			[]remote{{a.ip, "02:00:00:00:00:aa", "198.18.0.9"}, x}},
		{"host leaves: kept for the grace", func() { c.SetMember("h2", x.vtep, gossip.StateLeft, gossip.EventLeave) },
			[]remote{{a.ip, "02:00:00:00:00:aa", "198.18.0.9"}, x}},
		{"address moves to another host", func() {
			c.SetMember("h2", x.vtep, gossip.StateAlive, gossip.EventJoin)
			c.RemoteDelete("h1", kindEndpoint, sub20+"/"+a.ip) // its host withdraws it first
			remoteEndpoint(t, c, "h2", sub20, a.ip, x.mac)
		}, []remote{{a.ip, x.mac, x.vtep}, x}},
		{"own record ignored", func() { remoteEndpoint(t, c, "h0", sub20, "198.19.20.20", "02:00:00:00:00:20") },
			[]remote{{a.ip, x.mac, x.vtep}, x}},
	}
	for _, s := range steps {
		s.do()
		e.flush()
		t.Run(s.name, func(t *testing.T) { checkRemotes(t, e.fake, vx, s.want...) })
	}
	st := e.d.Status()
	if len(st) != 1 || st[0].RemoteEndpoints != 2 || !maps.Equal(st[0].RemoteHosts, map[string]int{"h2": 2}) {
		t.Fatalf("status %+v, want 2 remote endpoints on h2", st)
	}

	// A local endpoint on an address a remote host also announces wins here.
	e.mustCreateEndpoint(nid, id("local"), x.ip+"/24", "")
	e.flush()
	checkRemotes(t, e.fake, vx, remote{a.ip, x.mac, x.vtep})

	// The network goes: so do its entries (with the device), and nothing is
	// programmed for it afterwards.
	if err := e.d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: nid}); err != nil {
		t.Fatal(err)
	}
	e.fake.ResetCalls()
	remoteEndpoint(t, c, "h2", sub20, "198.19.20.30", "02:00:00:00:00:30")
	e.flush()
	if n := e.fake.CallCount("SetFDB") + e.fake.CallCount("SetNeigh"); n != 0 {
		t.Fatalf("%d programming calls for a deleted network: %v", n, e.fake.Calls())
	}
	// Recreated: every known endpoint comes back.
	e.mustCreateNetwork(netReq{id: nid, subnet: sub20})
	e.flush()
	// (x's record was overwritten by this host's endpoint, then withdrawn: the
	// key has one writer at a time; h2 republishes it on its next reconcile.)
	checkRemotes(t, e.fake, vx, remote{a.ip, x.mac, x.vtep}, remote{"198.19.20.30", "02:00:00:00:00:30", x.vtep})
}

// TestClusterSharedMAC: two remote endpoints with one MAC (a user-set
// --mac-address on two hosts): removing one keeps the other's FDB entry.
func TestClusterSharedMAC(t *testing.T) {
	e, c := newClusterEnv(t, "h0", "198.18.0.1")
	nid := id("n")
	e.mustCreateNetwork(netReq{id: nid, subnet: sub20})
	c.SetMember("h1", "198.18.0.2", gossip.StateAlive, gossip.EventJoin)
	c.SetMember("h2", "198.18.0.3", gossip.StateAlive, gossip.EventJoin)
	remoteEndpoint(t, c, "h1", sub20, "198.19.20.10", "02:00:00:00:00:99")
	remoteEndpoint(t, c, "h2", sub20, "198.19.20.11", "02:00:00:00:00:99")
	e.flush()
	c.SetMember("h2", "198.18.0.3", gossip.StateDead, gossip.EventDead)
	e.flush()
	checkRemotes(t, e.fake, vxlanName(nid), remote{"198.19.20.10", "02:00:00:00:00:99", "198.18.0.2"})
}

// TestClusterReconcilePeers: entries deleted behind the driver's back come
// back, wrong ones are corrected, foreign ones are removed; a clean kernel is
// only read.
func TestClusterReconcilePeers(t *testing.T) {
	e, c := newClusterEnv(t, "h0", "198.18.0.1")
	nid := id("n")
	vx := vxlanName(nid)
	e.mustCreateNetwork(netReq{id: nid, subnet: sub20})
	c.SetMember("h1", "198.18.0.2", gossip.StateAlive, gossip.EventJoin)
	rs := []remote{
		{"198.19.20.10", "02:00:00:00:00:0a", "198.18.0.2"},
		{"198.19.20.11", "02:00:00:00:00:0b", "198.18.0.2"},
		{"198.19.20.12", "02:00:00:00:00:0c", "198.18.0.2"},
		{"198.19.20.13", "02:00:00:00:00:0d", "198.18.0.2"},
	}
	for _, r := range rs {
		remoteEndpoint(t, c, "h1", sub20, r.ip, r.mac)
	}
	e.flush()
	checkRemotes(t, e.fake, vx, rs...)

	mac := func(s string) net.HardwareAddr {
		m, err := net.ParseMAC(s)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	e.fake.DropFDB(vx, mac(rs[0].mac), true, false)                                             // self entry gone
	e.fake.DropFDB(vx, mac(rs[1].mac), false, true)                                             // bridge entry gone
	e.fake.DropNeigh(vx, netip.MustParseAddr(rs[2].ip))                                         // neighbour gone
	e.fake.InjectFDB(vx, mac(rs[3].mac), netip.MustParseAddr("198.18.0.66"), false)             // wrong VTEP
	e.fake.InjectFDB(vx, mac("02:00:00:00:00:ee"), netip.MustParseAddr("198.18.0.2"), true)     // bogus MAC
	e.fake.InjectFDB(vx, mac("02:00:00:00:00:ef"), netip.Addr{}, true)                          // bogus bridge entry
	e.fake.InjectNeigh(vx, netip.MustParseAddr("198.19.20.99"), mac("02:00:00:00:00:ee"), true) // bogus neighbour
	e.fake.InjectNeigh(vx, netip.MustParseAddr(rs[3].ip), mac(rs[3].mac), false)                // not permanent
	if err := e.d.ReconcilePeers(); err != nil {
		t.Fatal(err)
	}
	checkRemotes(t, e.fake, vx, rs...)

	e.fake.ResetCalls()
	if err := e.d.ReconcilePeers(); err != nil {
		t.Fatal(err)
	}
	if got, want := e.fake.Calls(), []string{"ListFDB " + vx, "ListNeigh " + vx}; !slices.Equal(got, want) {
		t.Fatalf("second pass calls %q, want only %q", got, want)
	}

	// A dead host's entries that linger (say, a failed delete) go too.
	c.SetMember("h1", "198.18.0.2", gossip.StateDead, gossip.EventDead)
	e.fake.SetFail("DelFDB", errString("injected"))
	e.flush()
	e.fake.SetFail("DelFDB", nil)
	if err := e.d.Reconcile(); err != nil {
		t.Fatal(err)
	}
	checkRemotes(t, e.fake, vx)
}

// TestClusterRestart: a restarted host republishes its persisted networks and
// endpoints, withdraws its records of things it no longer has, and programs
// the remote endpoints it learns again.
func TestClusterRestart(t *testing.T) {
	e, c := newClusterEnv(t, "h0", "198.18.0.1")
	nid := id("n")
	e.mustCreateNetwork(netReq{id: nid, subnet: sub20})
	e.mustCreateEndpoint(nid, id("a"), "198.19.20.5/24", "")
	e.mustCreateEndpoint(nid, id("b"), "198.19.20.6/24", "")
	c.SetMember("h1", "198.18.0.2", gossip.StateAlive, gossip.EventJoin)
	remoteEndpoint(t, c, "h1", sub20, "198.19.20.10", "02:00:00:00:00:0a")
	e.flush()

	// While the plugin was down its records drifted: one was lost, and one
	// describes an endpoint (and a network) it no longer has.
	c2 := gossiptest.NewFakeCluster("h0")
	for _, r := range c.List("") {
		if r.Key == sub20+"/198.19.20.6" {
			continue
		}
		c2.Seed(r)
	}
	_ = c2.Put(kindEndpoint, sub20+"/198.19.20.7", []byte(`{"version":1,"mac":"02:42:c6:13:14:07","node":"h0"}`))
	_ = c2.Put(kindNetwork, sub21+"/h0", []byte(`{"version":1,"mode":"vxlan","vni":9}`))
	c2.SetMember("h1", "198.18.0.2", gossip.StateAlive, gossip.EventJoin)
	e.cluster = c2
	e.restart(dataplanetest.NewFake())
	if err := e.d.Reconcile(); err != nil {
		t.Fatal(err)
	}
	e.flush()

	if got, want := c2.Keys(kindEndpoint, "h0"), []string{sub20 + "/198.19.20.5", sub20 + "/198.19.20.6"}; !slices.Equal(got, want) {
		t.Fatalf("own endpoint records %q, want %q", got, want)
	}
	if got, want := c2.Keys(kindNetwork, "h0"), []string{sub20 + "/h0"}; !slices.Equal(got, want) {
		t.Fatalf("own network records %q, want %q", got, want)
	}
	checkRemotes(t, e.fake, vxlanName(nid), remote{"198.19.20.10", "02:00:00:00:00:0a", "198.18.0.2"})
}

// TestClusterNilKeepsSingleHost: without a cluster nothing is published and
// ReconcilePeers is a no-op.
func TestClusterNilKeepsSingleHost(t *testing.T) {
	e := newEnv(t)
	e.mustCreateNetwork(netReq{id: id("n"), subnet: sub20})
	e.fake.ResetCalls()
	if err := e.d.ReconcilePeers(); err != nil {
		t.Fatal(err)
	}
	if calls := e.fake.Calls(); len(calls) != 0 {
		t.Fatalf("ReconcilePeers without a cluster made calls %q", calls)
	}
	if st := e.d.Status(); st[0].RemoteEndpoints != 0 || st[0].RemoteHosts != nil || st[0].Conflict != "" {
		t.Fatalf("status %+v", st)
	}
}

// TestClusterForgottenHostFenced: a host the cluster forgot by agreement
// that comes back is treated as dead: its endpoints are not programmed and
// its VTEP is not accepted by the VXLAN ingress filter (its addresses may
// have been handed out again), while another live host's are.
func TestClusterForgottenHostFenced(t *testing.T) {
	e, c := newClusterEnv(t, "h0", "198.18.0.1")
	var mu sync.Mutex
	forgotten := map[string]bool{}
	e.forgotten = func(node string) bool {
		mu.Lock()
		defer mu.Unlock()
		return forgotten[node]
	}
	e.restart(e.fake)
	nid := id("n")
	vx := vxlanName(nid)
	a := remote{"198.19.20.10", "02:00:00:00:00:0a", "198.18.0.2"}
	x := remote{"198.19.20.12", "02:00:00:00:00:0c", "198.18.0.3"}
	e.mustCreateNetwork(netReq{id: nid, subnet: sub20})
	c.SetMember("h1", a.vtep, gossip.StateAlive, gossip.EventJoin)
	c.SetMember("h2", x.vtep, gossip.StateAlive, gossip.EventJoin)
	remoteEndpoint(t, c, "h1", sub20, a.ip, a.mac)
	remoteEndpoint(t, c, "h2", sub20, x.ip, x.mac)
	e.flush()
	checkRemotes(t, e.fake, vx, a, x)

	c.SetMember("h1", a.vtep, gossip.StateDead, gossip.EventDead)
	e.flush()
	mu.Lock()
	forgotten["h1"] = true // forgotten while dead, as grapevine forget requires
	mu.Unlock()
	c.SetMember("h1", a.vtep, gossip.StateAlive, gossip.EventJoin) // back with its old state
	remoteEndpoint(t, c, "h1", sub20, "198.19.20.11", "02:00:00:00:00:0b")
	e.flush()
	if err := e.d.ReconcilePeers(); err != nil {
		t.Fatal(err)
	}
	checkRemotes(t, e.fake, vx, x)
	in, err := e.d.VXLANIngress()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(in.Peers, []string{x.vtep}) {
		t.Errorf("VXLAN ingress accepts %v, want only the live host's VTEP %s (not the forgotten host's %s)", in.Peers, x.vtep, a.vtep)
	}
}
