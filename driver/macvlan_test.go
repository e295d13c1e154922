package driver

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/docker/go-plugins-helpers/network"

	"grapevine/driver/dataplane"
	"grapevine/driver/dataplane/dataplanetest"
	"grapevine/gossip"
)

const (
	lanSubnet = "198.18.0.0/24"
	lanGW     = "198.18.0.254/24"
)

// newLANEnv is a host whose NIC eth0 (198.18.0.5/24, MTU 1500) is on the LAN
// 198.18.0.0/24; eth1 carries 198.19.7.0/24; eth2 has no address; br0 is a
// bridge with port eth3; mv0 is a macvlan.
func newLANEnv(t *testing.T) *env {
	t.Helper()
	e := newEnv(t)
	setupLAN(e.fake, "eth0")
	return e
}

func setupLAN(f *dataplanetest.Fake, nic string) {
	f.SetLinkInfo(dataplane.LinkInfo{Name: nic, Kind: "device", MTU: 1500, Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("198.18.0.5/24")}})
	f.SetLinkInfo(dataplane.LinkInfo{Name: "eth1", Kind: "device", MTU: 9000, Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("198.19.7.5/24")}})
	f.SetLinkInfo(dataplane.LinkInfo{Name: "eth2", Kind: "device", MTU: 1500, Up: true})
	f.SetLinkInfo(dataplane.LinkInfo{Name: "br0", Kind: "bridge", MTU: 1500, Up: true})
	f.SetLinkInfo(dataplane.LinkInfo{Name: "eth3", Kind: "device", MTU: 1500, Up: true, Master: "br0"})
	f.SetLinkInfo(dataplane.LinkInfo{Name: "mv0", Kind: "macvlan", MTU: 1500, Up: true, Parent: "eth2"})
	f.SetLinkInfo(dataplane.LinkInfo{Name: "lo", Kind: "device", MTU: 65536, Up: true, Loopback: true})
	f.SetRoutes(
		dataplane.Route{Dst: netip.MustParsePrefix("198.18.0.0/24"), Dev: nic},
		dataplane.Route{Dst: netip.MustParsePrefix("198.19.7.0/24"), Dev: "eth1"},
	)
}

func lanReq(netID, subnet string, opts map[string]string) netReq {
	o := map[string]string{"mode": "macvlan"}
	maps.Copy(o, opts)
	gw := ""
	if subnet == lanSubnet {
		gw = lanGW
	}
	return netReq{id: netID, subnet: subnet, gateway: gw, opts: o}
}

func (e *env) createEP(netID, epID, addr string) {
	e.t.Helper()
	e.mustCreateEndpoint(netID, epID, addr, "")
}

func (e *env) deleteEP(netID, epID string) {
	e.t.Helper()
	if err := e.d.Leave(&network.LeaveRequest{NetworkID: netID, EndpointID: epID}); err != nil {
		e.t.Fatalf("Leave: %v", err)
	}
	if err := e.d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netID, EndpointID: epID}); err != nil {
		e.t.Fatalf("DeleteEndpoint: %v", err)
	}
}

func (e *env) deleteNet(netID string) {
	e.t.Helper()
	if err := e.d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: netID}); err != nil {
		e.t.Fatalf("DeleteNetwork: %v", err)
	}
}

// grapevineLinks lists the links grapevine made or may have made (gv* and
// VLAN links, which contain a dot).
func grapevineLinks(f *dataplanetest.Fake) []string {
	var out []string
	for _, n := range f.LinkNames() {
		if dataplane.IsManagedName(n) || strings.Contains(n, ".") {
			out = append(out, n)
		}
	}
	return out
}

func mustLink(t *testing.T, f *dataplanetest.Fake, name string) dataplanetest.FakeLink {
	t.Helper()
	l, ok := f.Link(name)
	if !ok {
		t.Fatalf("link %s missing; links: %v", name, f.LinkNames())
	}
	return l
}

// TestMacvlanLifecycle: a network on eth0 makes no bridge, VXLAN device or
// firewall rule; an endpoint is a macvlan child of eth0 with the parent's
// MTU and the endpoint's MAC; the LAN router is the gateway; published ports
// are ignored; removal leaves no link behind.
func TestMacvlanLifecycle(t *testing.T) {
	e := newLANEnv(t)
	n, ep := id("lan"), id("ep1")
	e.mustCreateNetwork(lanReq(n, lanSubnet, map[string]string{"parent": "eth0"}))
	if got := grapevineLinks(e.fake); len(got) != 0 {
		t.Fatalf("network creation made links %v, want none", got)
	}
	if fw := e.fake.Firewall(); len(fw.Networks) != 0 {
		t.Fatalf("macvlan network got firewall rules %+v", fw.Networks)
	}
	resp := e.mustCreateEndpoint(n, ep, "198.18.0.130/24", "")
	if resp.Interface == nil || resp.Interface.MacAddress != "02:42:c6:12:00:82" {
		t.Fatalf("CreateEndpoint response %+v, want the derived MAC", resp.Interface)
	}
	jr := e.mustJoin(n, ep)
	want := network.JoinResponse{InterfaceName: network.InterfaceName{SrcName: contVeth(ep), DstPrefix: "eth"}, Gateway: "198.18.0.254"}
	if jr.InterfaceName != want.InterfaceName || jr.Gateway != want.Gateway || jr.DisableGatewayService || len(jr.StaticRoutes) != 0 {
		t.Fatalf("Join = %+v, want %+v", jr, want)
	}
	child := mustLink(t, e.fake, contVeth(ep))
	if child.Kind != dataplanetest.KindMacvlan || child.Macvlan.Parent != "eth0" || child.Macvlan.MTU != 1500 ||
		child.Macvlan.MAC.String() != "02:42:c6:12:00:82" || child.Macvlan.Address.IsValid() {
		t.Fatalf("container link %+v", child)
	}
	// Published ports: ignored, nothing programmed, nothing reported.
	if err := e.program(n, ep, pb{Proto: 6, Port: 80, HostPort: 8080}); err != nil {
		t.Fatalf("ProgramExternalConnectivity: %v", err)
	}
	if fw := e.fake.Firewall(); len(fw.Ports) != 0 {
		t.Fatalf("published port programmed on macvlan: %+v", fw.Ports)
	}
	info, err := e.d.EndpointInfo(&network.InfoRequest{NetworkID: n, EndpointID: ep})
	if err != nil {
		t.Fatal(err)
	}
	if pm, _ := info[optPortMap].([]dockerPortBinding); len(pm) != 0 {
		t.Fatalf("EndpointInfo reports ports %+v", pm)
	}
	st := e.d.Status()
	if len(st) != 1 || st[0].Mode != "macvlan" || st[0].Parent != "eth0" || st[0].Bridge != "" || st[0].VXLAN != "" ||
		st[0].Reach != "LAN of eth0, gateway 198.18.0.254" || st[0].Endpoints != 1 || st[0].Internal {
		t.Fatalf("status %+v", st)
	}
	// Docker moves the link into the container; Leave leaves it there and
	// DeleteEndpoint removes it once Docker has moved it back.
	e.fake.MoveOut(contVeth(ep))
	if err := e.d.Leave(&network.LeaveRequest{NetworkID: n, EndpointID: ep}); err != nil {
		t.Fatal(err)
	}
	e.fake.AddLink(contVeth(ep), dataplanetest.KindMacvlan) // moved back
	if err := e.d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: n, EndpointID: ep}); err != nil {
		t.Fatal(err)
	}
	if got := grapevineLinks(e.fake); len(got) != 0 {
		t.Fatalf("links after DeleteEndpoint: %v", got)
	}
	e.deleteNet(n)
	if got := grapevineLinks(e.fake); len(got) != 0 {
		t.Fatalf("links after DeleteNetwork: %v", got)
	}
	if e.fake.CallCount("EnsureBridge")+e.fake.CallCount("EnsureVXLAN")+e.fake.CallCount("EnsureVeth") != 0 {
		t.Fatalf("vxlan-mode calls on a macvlan network: %v", e.fake.Calls())
	}
}

// TestMacvlanBadInput: every refusal is clear and leaves nothing behind.
func TestMacvlanBadInput(t *testing.T) {
	tests := []struct {
		name  string
		req   netReq
		setup func(e *env)
		want  string
	}{
		{name: "missing parent", req: lanReq("", lanSubnet, map[string]string{"parent": "eth9"}),
			want: "-o parent=eth9: this host has no interface eth9"},
		{name: "empty parent", req: lanReq("", lanSubnet, map[string]string{"parent": " "}),
			want: `-o parent=" " is empty`},
		{name: "parent is a bridge", req: lanReq("", lanSubnet, map[string]string{"parent": "br0"}),
			want: "-o parent=br0 is a bridge link: a macvlan parent must be a plain interface"},
		{name: "parent is a macvlan", req: lanReq("", lanSubnet, map[string]string{"parent": "mv0"}),
			want: "-o parent=mv0 is a macvlan link"},
		{name: "parent is a bridge port", req: lanReq("", lanSubnet, map[string]string{"parent": "eth3"}),
			want: "-o parent=eth3 is enslaved to br0"},
		{name: "parent is loopback", req: lanReq("", lanSubnet, map[string]string{"parent": "lo"}),
			want: "-o parent=lo is the loopback interface"},
		{name: "parent is grapevine's", req: lanReq("", lanSubnet, map[string]string{"parent": "gvb-x"}),
			setup: func(e *env) { e.fake.AddLink("gvb-x", dataplanetest.KindBridge) },
			want:  "-o parent=gvb-x is a link grapevine made"},
		{name: "parent name too long", req: lanReq("", lanSubnet, map[string]string{"parent": "averyverylongname0"}),
			want: "longer than 15 characters"},
		{name: "vlan id too large", req: lanReq("", lanSubnet, map[string]string{"parent": "eth0.4095"}),
			want: "-o parent=eth0.4095: VLAN id 4095 is out of range: use 1 to 4094"},
		{name: "vlan id zero", req: lanReq("", lanSubnet, map[string]string{"parent": "eth0.0"}),
			want: "VLAN id 0 is out of range"},
		{name: "vlan on a missing interface", req: lanReq("", lanSubnet, map[string]string{"parent": "eth9.30"}),
			want: "-o parent=eth9.30: this host has no interface eth9 to make VLAN 30 on"},
		{name: "vlan on a bridge", req: lanReq("", lanSubnet, map[string]string{"parent": "br0.30"}),
			want: "is a bridge link"},
		{name: "subnet inside the parent's network", req: lanReq("", "198.18.0.0/25", map[string]string{"parent": "eth0"}),
			want: "--subnet 198.18.0.0/25 does not match the network 198.18.0.0/24 of the parent eth0 (address 198.18.0.5/24): use --subnet 198.18.0.0/24"},
		{name: "subnet around the parent's network", req: lanReq("", "198.18.0.0/23", map[string]string{"parent": "eth0"}),
			want: "--subnet 198.18.0.0/23 does not match the network 198.18.0.0/24 of the parent eth0"},
		{name: "subnet overlapping the parent's network", req: lanReq("", "198.18.0.128/25", map[string]string{"parent": "198.18.0.0/24"}),
			want: "--subnet 198.18.0.128/25 does not match the network 198.18.0.0/24 of the parent eth0"},
		{name: "subnet routed through another interface", req: lanReq("", "198.19.7.0/24", map[string]string{"parent": "eth2"}),
			want: "--subnet 198.19.7.0/24 overlaps the host route 198.19.7.0/24 dev eth1, but the parent is eth2: use -o parent=eth1"},
		{name: "cidr matching no interface", req: lanReq("", "198.19.9.0/24", map[string]string{"parent": "198.19.9.0/24"}),
			want: "-o parent=198.19.9.0/24: no interface of this host has an address in 198.19.9.0/24"},
		{name: "cidr matching two interfaces", req: lanReq("", "198.18.0.0/15", map[string]string{"parent": "198.18.0.0/15"}),
			want: "matches 2 interfaces of this host (eth0, eth1): use a narrower CIDR"},
		{name: "bad cidr", req: lanReq("", lanSubnet, map[string]string{"parent": "198.18.0.0/33"}),
			want: "-o parent=198.18.0.0/33 is neither an interface name nor an IPv4 CIDR"},
		{name: "mtu above the parent's", req: lanReq("", lanSubnet, map[string]string{"parent": "eth0", optMTU: "1501"}),
			want: `-o com.docker.network.driver.mtu="1501" is not allowed: use a number from 68 to 1500 (the MTU of the parent eth0)`},
		{name: "mtu not a number", req: lanReq("", lanSubnet, map[string]string{optMTU: "big"}),
			want: `mtu="big" is not allowed: use a number from 68 to 65535`},
		{name: "host_access not a boolean", req: lanReq("", lanSubnet, map[string]string{"parent": "eth0", "host_access": "maybe"}),
			want: `-o host_access="maybe" is not a boolean`},
		{name: "host_access without an address", req: lanReq("", lanSubnet, map[string]string{"parent": "eth0", "host_access": "true"}),
			want: "-o host_access=true needs this host's shim address: add --aux-address host-"},
		{name: "host_access address outside the subnet",
			req:  withAux(lanReq("", lanSubnet, map[string]string{"parent": "eth0", "host_access": "true"}), "host", "198.19.0.200"),
			want: "--aux-address host=198.19.0.200 is not a host address of --subnet 198.18.0.0/24"},
		{name: "host_access address is the gateway",
			req:  withAux(lanReq("", lanSubnet, map[string]string{"parent": "eth0", "host_access": "true"}), "host", "198.18.0.254/24"),
			want: "is the gateway (the LAN's router)"},
		{name: "vlan unsupported by the kernel", req: lanReq("", "198.19.30.0/24", map[string]string{"parent": "eth0.30"}),
			setup: func(e *env) { e.fake.SetVLANSupport(false) },
			want:  "-o parent=eth0.30 needs VLAN 30 on eth0, but create vlan eth0.30: this kernel has no 802.1q VLAN support"},
		{name: "same subnet twice on one parent", req: lanReq("", lanSubnet, map[string]string{"parent": "eth0"}),
			setup: func(e *env) { e.mustCreateNetwork(lanReq(id("first"), lanSubnet, map[string]string{"parent": "eth0"})) },
			want:  "subnet 198.18.0.0/24 overlaps grapevine macvlan network " + shortID(id("first")) + " (subnet 198.18.0.0/24 on parent eth0) on this host"},
		{name: "shim fails: the vlan made for it goes too", req: withAux(lanReq("", "198.19.30.0/24", map[string]string{"parent": "eth0.30", "host_access": "true"}), "host", "198.19.30.200"),
			setup: func(e *env) { e.fake.SetFail("EnsureMacvlan", errors.New("injected")) },
			want:  "host shim " + shimName(id("bad")) + ": injected"},
		{name: "internal parent fails", req: lanReq("", "198.19.31.0/24", nil),
			setup: func(e *env) { e.fake.SetFail("EnsureStandalone", errors.New("injected")) },
			want:  "internal parent " + internalParent(id("bad")) + ": injected"},
		{name: "firewall fails after the links", req: withAux(lanReq("", "198.19.30.0/24", map[string]string{"parent": "eth0.30", "host_access": "true"}), "host", "198.19.30.200"),
			setup: func(e *env) { e.fake.SetFail("SyncFirewall", errors.New("injected")) },
			want:  "injected"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newLANEnv(t)
			if tc.setup != nil {
				tc.setup(e)
			}
			before := grapevineLinks(e.fake)
			nets := len(e.d.Status())
			tc.req.id = id("bad")
			err := e.d.CreateNetwork(e.createReq(tc.req))
			wantErr(t, err, tc.want)
			t.Logf("refused: %v", err)
			if got := grapevineLinks(e.fake); !slices.Equal(got, before) {
				t.Fatalf("links %v after the refusal, want %v", got, before)
			}
			if len(e.d.Status()) != nets || len(e.d.vlans) != 0 {
				t.Fatalf("state after the refusal: networks %v vlans %v", e.d.Status(), e.d.vlans)
			}
			if vl, err := e.d.store.loadVLANs(); err != nil || len(vl) != 0 {
				t.Fatalf("persisted vlans after the refusal: %v %v", vl, err)
			}
		})
	}
}

func withAux(r netReq, key, addr string) netReq {
	if r.aux == nil {
		r.aux = map[string]string{}
	}
	r.aux[key] = addr
	return r
}

// TestMacvlanVLANOwnership: IF.VLAN is created when missing, shared by the
// networks that name it, removed with the last of them (also after a
// restart), and never removed when grapevine did not create it.
func TestMacvlanVLANOwnership(t *testing.T) {
	e := newLANEnv(t)
	e.fake.SetLinkInfo(dataplane.LinkInfo{Name: "eth0.50", Kind: "vlan", MTU: 1500, Up: true, Parent: "eth0", VLANID: 50})
	a, b, c, d := id("v30a"), id("v30b"), id("v40"), id("v50")
	e.mustCreateNetwork(lanReq(a, "198.19.30.0/25", map[string]string{"parent": "eth0.30"}))
	e.mustCreateNetwork(lanReq(b, "198.19.30.128/25", map[string]string{"parent": "eth0.30"}))
	e.mustCreateNetwork(lanReq(c, "198.19.40.0/24", map[string]string{"parent": "eth0.40"}))
	e.mustCreateNetwork(lanReq(d, "198.19.50.0/24", map[string]string{"parent": "eth0.50"}))
	// The requests grapevine sends: one per VLAN it had to make.
	var vlanCalls []string
	for _, call := range e.fake.Calls() {
		if strings.HasPrefix(call, "EnsureVLAN") {
			vlanCalls = append(vlanCalls, call)
		}
	}
	if want := []string{"EnsureVLAN eth0.30", "EnsureVLAN eth0.40"}; !slices.Equal(vlanCalls, want) {
		t.Fatalf("vlan requests %v, want %v", vlanCalls, want)
	}
	for name, want := range map[string]dataplane.VLANSpec{
		"eth0.30": {Name: "eth0.30", Parent: "eth0", ID: 30},
		"eth0.40": {Name: "eth0.40", Parent: "eth0", ID: 40},
	} {
		if l := mustLink(t, e.fake, name); l.Kind != dataplanetest.KindVLAN || l.VLAN != want {
			t.Fatalf("%s = %+v, want %+v", name, l, want)
		}
	}
	// Endpoints on two VLANs of one parent, side by side.
	e.createEP(a, id("ea"), "198.19.30.10/25")
	e.createEP(c, id("ec"), "198.19.40.10/24")
	e.mustJoin(a, id("ea"))
	e.mustJoin(c, id("ec"))
	if p := mustLink(t, e.fake, contVeth(id("ea"))).Macvlan.Parent; p != "eth0.30" {
		t.Fatalf("endpoint on VLAN 30 has parent %s", p)
	}
	if p := mustLink(t, e.fake, contVeth(id("ec"))).Macvlan.Parent; p != "eth0.40" {
		t.Fatalf("endpoint on VLAN 40 has parent %s", p)
	}
	e.deleteEP(a, id("ea"))
	e.deleteEP(c, id("ec"))

	e.deleteNet(a)
	mustLink(t, e.fake, "eth0.30") // b still uses it
	e.deleteNet(c)
	if _, ok := e.fake.Link("eth0.40"); ok {
		t.Fatal("eth0.40 survived the last network that used it")
	}
	e.deleteNet(d)
	mustLink(t, e.fake, "eth0.50") // not grapevine's: kept

	// After a restart the record says eth0.30 is grapevine's.
	e.restart(e.fake)
	if err := e.d.Reconcile(); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	mustLink(t, e.fake, "eth0.30")
	e.deleteNet(b)
	if got := grapevineLinks(e.fake); !slices.Equal(got, []string{"eth0.50"}) {
		t.Fatalf("links after deleting every network: %v", got)
	}
	if vl, _ := e.d.store.loadVLANs(); len(vl) != 0 {
		t.Fatalf("vlan records left: %v", vl)
	}
}

// TestMacvlanVLANKeptForOthers: a VLAN link grapevine made that another
// program has put links on is left in place when grapevine is done with it.
func TestMacvlanVLANKeptForOthers(t *testing.T) {
	e := newLANEnv(t)
	n := id("v30")
	e.mustCreateNetwork(lanReq(n, "198.19.30.0/24", map[string]string{"parent": "eth0.30"}))
	e.fake.SetLinkInfo(dataplane.LinkInfo{Name: "dm-30", Kind: "macvlan", Parent: "eth0.30"})
	e.deleteNet(n)
	mustLink(t, e.fake, "eth0.30")
	if len(e.d.vlans) != 0 {
		t.Fatalf("vlan still managed: %v", e.d.vlans)
	}
}

// TestMacvlanVLANOrphan: a VLAN record whose network never got persisted (a
// crash in between) is cleared by Reconcile together with its link.
func TestMacvlanVLANOrphan(t *testing.T) {
	e := newLANEnv(t)
	v := &vlanRecord{Version: recordVersion, Name: "eth0.77", Parent: "eth0", ID: 77}
	if err := e.d.store.putVLAN(v); err != nil {
		t.Fatal(err)
	}
	if err := e.fake.EnsureVLAN(vlanSpec(v)); err != nil {
		t.Fatal(err)
	}
	e.restart(e.fake)
	if err := e.d.Reconcile(); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if _, ok := e.fake.Link("eth0.77"); ok {
		t.Fatal("orphan vlan link kept")
	}
	if vl, _ := e.d.store.loadVLANs(); len(vl) != 0 {
		t.Fatalf("orphan vlan record kept: %v", vl)
	}
}

// TestMacvlanTwoSubnetsOneParent: two networks with different subnets on one
// untagged parent work side by side (Docker's own macvlan driver refuses),
// also when the parent has an address in only one of them.
func TestMacvlanTwoSubnetsOneParent(t *testing.T) {
	e := newLANEnv(t)
	a, b := id("s0"), id("s1")
	e.mustCreateNetwork(lanReq(a, lanSubnet, map[string]string{"parent": "eth0"}))
	e.mustCreateNetwork(lanReq(b, "198.18.1.0/24", map[string]string{"parent": "eth0"}))
	e.createEP(a, id("e0"), "198.18.0.10/24")
	e.createEP(b, id("e1"), "198.18.1.10/24")
	e.mustJoin(a, id("e0"))
	e.mustJoin(b, id("e1"))
	for _, ep := range []string{id("e0"), id("e1")} {
		if l := mustLink(t, e.fake, contVeth(ep)); l.Macvlan.Parent != "eth0" {
			t.Fatalf("%s on %s", l.Name, l.Macvlan.Parent)
		}
	}
}

// TestMacvlanParentByCIDR: one create request fits hosts whose NICs are named
// differently.
func TestMacvlanParentByCIDR(t *testing.T) {
	for _, nic := range []string{"eth0", "ens5"} {
		t.Run(nic, func(t *testing.T) {
			e := newEnv(t)
			setupLAN(e.fake, nic)
			n := id("cidr")
			e.mustCreateNetwork(lanReq(n, lanSubnet, map[string]string{"parent": "198.18.0.0/24"}))
			e.createEP(n, id("ep"), "198.18.0.131/24")
			e.mustJoin(n, id("ep"))
			if p := mustLink(t, e.fake, contVeth(id("ep"))).Macvlan.Parent; p != nic {
				t.Fatalf("parent %s, want %s", p, nic)
			}
			st := e.d.Status()
			if st[0].ParentOption != "198.18.0.0/24" || st[0].Parent != nic {
				t.Fatalf("status %+v", st[0])
			}
		})
	}
}

// TestMacvlanInternal: without a parent the network is internal-only: a
// standalone link (dummy/ifb) as parent, no gateway, and Docker told not to add its
// gateway bridge; --internal keeps Docker's own rule (no gateway).
func TestMacvlanInternal(t *testing.T) {
	e := newLANEnv(t)
	n, ni := id("int"), id("int2")
	e.mustCreateNetwork(lanReq(n, "198.19.60.0/24", map[string]string{optMTU: "9000"}))
	r := lanReq(ni, "198.19.61.0/24", nil)
	r.internal = true
	e.mustCreateNetwork(r)
	br := mustLink(t, e.fake, internalParent(n))
	if br.Kind != dataplanetest.KindStandalone || br.MTU != 9000 {
		t.Fatalf("internal parent %+v", br)
	}
	e.createEP(n, id("i1"), "198.19.60.10/24")
	jr := e.mustJoin(n, id("i1"))
	if jr.Gateway != "" || !jr.DisableGatewayService {
		t.Fatalf("Join on an internal-only network = %+v, want no gateway and the gateway service disabled", jr)
	}
	if l := mustLink(t, e.fake, contVeth(id("i1"))); l.Macvlan.Parent != internalParent(n) || l.Macvlan.MTU != 9000 {
		t.Fatalf("child %+v", l)
	}
	e.createEP(ni, id("i2"), "198.19.61.10/24")
	if jr := e.mustJoin(ni, id("i2")); jr.Gateway != "" || jr.DisableGatewayService {
		t.Fatalf("Join on --internal = %+v", jr)
	}
	st := e.d.Status()
	for _, s := range st {
		if !s.Internal || !strings.HasPrefix(s.Reach, "internal only: no parent interface") || s.Parent != "" {
			t.Fatalf("status %+v", s)
		}
	}
	e.deleteEP(n, id("i1"))
	e.deleteNet(n)
	e.deleteNet(ni)
	if got := grapevineLinks(e.fake); len(got) != 0 {
		t.Fatalf("links left: %v", got)
	}
}

// TestMacvlanHostAccess: the shim holds the host's address as a /32 on the
// parent, each joined container gets a /32 route through it, Leave takes the
// route away, and the address cannot be given to a container.
func TestMacvlanHostAccess(t *testing.T) {
	e := newLANEnv(t)
	n := id("ha")
	host, _ := os.Hostname()
	r := withAux(lanReq(n, lanSubnet, map[string]string{"parent": "eth0", "host_access": "true"}), "host", "198.18.0.200")
	r = withAux(r, "host-"+host, "198.18.0.201") // this host's own key wins
	r = withAux(r, "host-otherhost", "198.18.0.202")
	e.mustCreateNetwork(r)
	shim := mustLink(t, e.fake, shimName(n))
	if shim.Kind != dataplanetest.KindMacvlan || shim.Macvlan.Parent != "eth0" ||
		shim.Macvlan.Address != netip.MustParsePrefix("198.18.0.201/32") || shim.Macvlan.MAC.String() != "02:42:c6:12:00:c9" {
		t.Fatalf("shim %+v", shim)
	}
	if st := e.d.Status(); st[0].HostAccess != "198.18.0.201" {
		t.Fatalf("status %+v", st[0])
	}
	if _, err := e.d.CreateEndpoint(wire(t, &network.CreateEndpointRequest{NetworkID: n, EndpointID: id("x"),
		Interface: &network.EndpointInterface{Address: "198.18.0.201/24"}})); err == nil {
		t.Fatal("the host_access address was given to a container")
	}
	ep := id("hc")
	e.createEP(n, ep, "198.18.0.140/24")
	e.mustJoin(n, ep)
	dst := netip.MustParsePrefix("198.18.0.140/32")
	if src, ok := e.fake.RouteSrc(dst, shimName(n)); !ok || src != netip.MustParseAddr("198.18.0.201") {
		t.Fatalf("route to the container through the shim: %v %v", src, ok)
	}
	if err := e.d.Leave(&network.LeaveRequest{NetworkID: n, EndpointID: ep}); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.fake.RouteSrc(dst, shimName(n)); ok {
		t.Fatal("route kept after Leave")
	}
	// DeleteEndpoint without Leave removes the route too.
	ep2 := id("hc2")
	e.createEP(n, ep2, "198.18.0.141/24")
	e.mustJoin(n, ep2)
	if err := e.d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: n, EndpointID: ep2}); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.fake.RouteSrc(netip.MustParsePrefix("198.18.0.141/32"), shimName(n)); ok {
		t.Fatal("route kept after DeleteEndpoint")
	}
	// Join failing on the route leaves no link.
	e.fake.SetFail("SetRoute", errors.New("injected"))
	if _, err := e.d.Join(&network.JoinRequest{NetworkID: n, EndpointID: ep}); err == nil {
		t.Fatal("Join succeeded with a failing route")
	}
	if _, ok := e.fake.Link(contVeth(ep)); ok {
		t.Fatal("failed Join left the container link")
	}
	e.fake.SetFail("SetRoute", nil)

	// host_access off (the default): no shim.
	m := id("noha")
	e.mustCreateNetwork(lanReq(m, "198.19.70.0/24", map[string]string{"parent": "eth2", "host_access": "false"}))
	if _, ok := e.fake.Link(shimName(m)); ok {
		t.Fatal("shim made with host_access=false")
	}
}

// TestMacvlanReconcile: Reconcile repairs the VLAN link, the internal parent,
// the shim and its routes, removes stray routes and orphan links, and says
// clearly when a parent has gone.
func TestMacvlanReconcile(t *testing.T) {
	e := newLANEnv(t)
	n, ni := id("rc"), id("rci")
	e.mustCreateNetwork(withAux(lanReq(n, "198.19.30.0/24", map[string]string{"parent": "eth0.30", "host_access": "true"}), "host", "198.19.30.200"))
	e.mustCreateNetwork(lanReq(ni, "198.19.60.0/24", nil))
	ep := id("rcep")
	e.createEP(n, ep, "198.19.30.10/24")
	e.mustJoin(n, ep)
	e.fake.MoveOut(contVeth(ep))

	// A reboot: every link grapevine made is gone; eth0 is back.
	fresh := dataplanetest.NewFake()
	setupLAN(fresh, "eth0")
	fresh.AddLink(shimName(id("gone")), dataplanetest.KindMacvlan)      // orphan
	fresh.AddLink(internalParent(id("gone")), dataplanetest.KindBridge) // orphan
	e.restart(fresh)
	if err := e.d.Reconcile(); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	want := []string{"eth0.30", internalParent(ni), shimName(n)}
	slices.Sort(want)
	if got := grapevineLinks(e.fake); !slices.Equal(got, want) {
		t.Fatalf("links after Reconcile %v, want %v", got, want)
	}
	if l := mustLink(t, e.fake, shimName(n)); l.Macvlan.Parent != "eth0.30" || l.Macvlan.Address != netip.MustParsePrefix("198.19.30.200/32") {
		t.Fatalf("shim %+v", l)
	}
	dst := netip.MustParsePrefix("198.19.30.10/32")
	if _, ok := e.fake.RouteSrc(dst, shimName(n)); !ok {
		t.Fatal("route to the joined container not restored")
	}
	// A stray route through the shim is removed; the joined one stays.
	stray := netip.MustParsePrefix("198.19.30.99/32")
	if err := e.fake.SetRoute(stray, shimName(n), netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	if err := e.d.Reconcile(); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if _, ok := e.fake.RouteSrc(stray, shimName(n)); ok {
		t.Fatal("stray route kept")
	}
	if _, ok := e.fake.RouteSrc(dst, shimName(n)); !ok {
		t.Fatal("joined container's route removed")
	}
	if e.fake.CallCount("EnsureVeth")+e.fake.CallCount("EnsureVXLAN") != 0 {
		t.Fatalf("vxlan-mode calls for macvlan networks: %v", e.fake.Calls())
	}
	// The container's own link is in the container: Reconcile does not make
	// another one in the host.
	if _, ok := e.fake.Link(contVeth(ep)); ok {
		t.Fatal("Reconcile made a container link in the host namespace")
	}

	// The parent NIC disappears: the error says so.
	if err := e.fake.DeleteLink("eth0"); err != nil {
		t.Fatal(err)
	}
	err := e.d.Reconcile()
	wantErr(t, err, "vlan")
	wantErr(t, err, "eth0")
	t.Logf("with the NIC gone: %v", err)
}

// TestMacvlanParentGone: a network whose parent has gone says so on Join.
func TestMacvlanParentGone(t *testing.T) {
	e := newLANEnv(t)
	n := id("pg")
	e.mustCreateNetwork(lanReq(n, "198.19.70.0/24", map[string]string{"parent": "eth2"}))
	if err := e.fake.DeleteLink("eth2"); err != nil {
		t.Fatal(err)
	}
	e.createEP(n, id("pge"), "198.19.70.10/24")
	_, err := e.d.Join(&network.JoinRequest{NetworkID: n, EndpointID: id("pge")})
	wantErr(t, err, "the parent eth2 of network "+shortID(n)+" is missing on this host")
	err = e.d.Reconcile()
	wantErr(t, err, "the parent eth2 (-o parent=eth2) is missing on this host")
}

// TestMacvlanCluster: the network record says mode=macvlan; a host_access
// address another host uses is refused; other hosts' endpoints are not
// programmed (they are on the LAN) but are counted.
func TestMacvlanCluster(t *testing.T) {
	e, c := newClusterEnv(t, "h0", "198.18.0.1")
	setupLAN(e.fake, "eth0")
	c.SetMember("h1", "198.18.0.2", gossip.StateAlive, gossip.EventJoin)
	remoteNetwork(t, c, "h1", lanSubnet, networkDef{Version: 1, Mode: modeMACVLAN, Gateway: netip.MustParseAddr("198.18.0.254"), MTU: 1500, HostAccess: netip.MustParseAddr("198.18.0.200")})
	remoteEndpoint(t, c, "h1", lanSubnet, "198.18.0.129", "02:42:c6:12:00:81")
	n := id("cl")
	base := lanReq(n, lanSubnet, map[string]string{"parent": "eth0", "host_access": "true"})
	err := e.d.CreateNetwork(e.createReq(withAux(withAux(base, "host-h1", "198.18.0.200"), "host", "198.18.0.200")))
	wantErr(t, err, "host_access address 198.18.0.200 is already the shim address of host h1 on 198.18.0.0/24: give each host its own with --aux-address host-<hostname>=IP")
	vx := lanReq(n, lanSubnet, nil)
	vx.opts = map[string]string{"mode": "vxlan"}
	wantErr(t, e.d.CreateNetwork(e.createReq(vx)), "is already defined on host h1 as mode=macvlan; use -o mode=macvlan")

	e.mustCreateNetwork(withAux(withAux(base, "host-h1", "198.18.0.200"), "host-h0", "198.18.0.201"))
	def, ok := networkDefOf(t, c, lanSubnet, "h0")
	if !ok || def.Mode != modeMACVLAN || def.VNI != 0 || def.HostAccess != netip.MustParseAddr("198.18.0.201") {
		t.Fatalf("published %+v %v", def, ok)
	}
	e.createEP(n, id("cle"), "198.18.0.130/24")
	e.mustJoin(n, id("cle"))
	e.flush()
	if err := e.d.ReconcilePeers(); err != nil {
		t.Fatalf("ReconcilePeers: %v", err)
	}
	if got := e.fake.CallCount("SetFDB") + e.fake.CallCount("SetNeigh") + e.fake.CallCount("ListFDB"); got != 0 {
		t.Fatalf("remote endpoints programmed on a macvlan network: %v", e.fake.Calls())
	}
	if keys := c.Keys(kindEndpoint, "h0"); !slices.Equal(keys, []string{"198.18.0.0/24/198.18.0.130"}) {
		t.Fatalf("endpoint records %v", keys)
	}
	st := e.d.Status()
	if st[0].RemoteHosts["h1"] != 1 || st[0].RemoteUnreachable != 0 || st[0].RemoteEndpoints != 0 || st[0].Conflict != "" {
		t.Fatalf("status %+v", st[0])
	}
}

// hostAddrs stands in for the IPAM's HostAddress: one address per subnet,
// the same on every repeat, counting calls.
type hostAddrs struct {
	mu    sync.Mutex
	next  netip.Addr
	held  map[netip.Prefix]netip.Addr
	calls int
	err   error
}

func (h *hostAddrs) get(space string, subnet netip.Prefix) (netip.Addr, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls++
	if h.err != nil {
		return netip.Addr{}, h.err
	}
	if space != "grapevine-local" {
		return netip.Addr{}, fmt.Errorf("unexpected address space %q", space)
	}
	if a, ok := h.held[subnet]; ok {
		return a, nil
	}
	a := h.next
	h.next = a.Next()
	h.held[subnet] = a
	return a, nil
}

// TestMacvlanHostAccessAllocated: host_access without an --aux-address for
// this host gets the address the IPAM allocates, shown as allocated, kept
// across a restart without asking again; an explicit one is used as
// before; a failed allocation names the cause and the --aux-address way
// and leaves nothing behind.
func TestMacvlanHostAccessAllocated(t *testing.T) {
	ha := &hostAddrs{next: netip.MustParseAddr("198.18.0.130"), held: map[netip.Prefix]netip.Addr{}}
	e := &env{t: t, fake: dataplanetest.NewFake(), path: filepath.Join(t.TempDir(), "state.db"), hostAddress: ha.get}
	setupLAN(e.fake, "eth0")
	e.open()
	t.Cleanup(func() {
		e.d.Close()
		_ = e.db.Close()
	})
	n := id("auto")
	r := withAux(lanReq(n, lanSubnet, map[string]string{"parent": "eth0", "host_access": "true"}), "host-otherhost", "198.18.0.202")
	e.mustCreateNetwork(r)
	shim := mustLink(t, e.fake, shimName(n))
	if shim.Macvlan.Address != netip.MustParsePrefix("198.18.0.130/32") || shim.Macvlan.Parent != "eth0" {
		t.Fatalf("shim %+v, want 198.18.0.130/32 on eth0", shim)
	}
	if st := e.d.Status(); st[0].HostAccess != "198.18.0.130" || !st[0].HostAccessAllocated {
		t.Fatalf("status %+v", st[0])
	}
	ep := id("autoep")
	e.createEP(n, ep, "198.18.0.140/24")
	e.mustJoin(n, ep)
	if src, ok := e.fake.RouteSrc(netip.MustParsePrefix("198.18.0.140/32"), shimName(n)); !ok || src != netip.MustParseAddr("198.18.0.130") {
		t.Fatalf("route to the container through the shim: %v %v", src, ok)
	}

	// A restart keeps the address: the record holds it.
	calls := ha.calls
	fake := dataplanetest.NewFake()
	setupLAN(fake, "eth0")
	e.restart(fake)
	if err := e.d.Reconcile(); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if shim := mustLink(t, e.fake, shimName(n)); shim.Macvlan.Address != netip.MustParsePrefix("198.18.0.130/32") {
		t.Fatalf("shim after the restart %+v", shim)
	}
	if ha.calls != calls {
		t.Fatalf("the restart asked the IPAM again (%d calls, %d before)", ha.calls, calls)
	}
	e.deleteEP(n, ep)
	e.deleteNet(n)

	// An explicit address for this host: the IPAM is not asked.
	host, _ := os.Hostname()
	m := id("explicit")
	e.mustCreateNetwork(withAux(lanReq(m, lanSubnet, map[string]string{"parent": "eth0", "host_access": "true"}), "host-"+host, "198.18.0.201"))
	if st := e.d.Status(); st[0].HostAccess != "198.18.0.201" || st[0].HostAccessAllocated || ha.calls != calls {
		t.Fatalf("status %+v after %d calls, want 198.18.0.201 given, %d calls", st[0], ha.calls, calls)
	}
	e.deleteNet(m)

	// The IPAM refuses: the error says why and how else; nothing is made.
	ha.err = errors.New("no free address left in --ip-range 198.18.0.128/25 of 198.18.0.0/24: the range is full")
	k := id("full")
	err := e.d.CreateNetwork(e.createReq(lanReq(k, lanSubnet, map[string]string{"parent": "eth0", "host_access": "true"})))
	wantErr(t, err, "-o host_access=true: allocating this host's shim address in 198.18.0.0/24: no free address left in --ip-range 198.18.0.128/25 of 198.18.0.0/24: the range is full (or give one with --aux-address host-")
	if got := grapevineLinks(e.fake); len(got) != 0 {
		t.Fatalf("links left: %v", got)
	}
	if st := e.d.Status(); len(st) != 0 {
		t.Fatalf("networks after the refusal: %+v", st)
	}
}

// TestMacvlanHostShimsStatus: the status lists every host's shim address
// on the subnet, this host's included.
func TestMacvlanHostShimsStatus(t *testing.T) {
	e, c := newClusterEnv(t, "h0", "198.18.0.1")
	setupLAN(e.fake, "eth0")
	c.SetMember("h1", "198.18.0.2", gossip.StateAlive, gossip.EventJoin)
	c.SetMember("h2", "198.18.0.3", gossip.StateAlive, gossip.EventJoin)
	remoteNetwork(t, c, "h1", lanSubnet, networkDef{Version: 1, Mode: modeMACVLAN, Gateway: netip.MustParseAddr("198.18.0.254"), MTU: 1500, HostAccess: netip.MustParseAddr("198.18.0.131")})
	remoteNetwork(t, c, "h2", lanSubnet, networkDef{Version: 1, Mode: modeMACVLAN, Gateway: netip.MustParseAddr("198.18.0.254"), MTU: 1500})
	n := id("shims")
	e.mustCreateNetwork(withAux(lanReq(n, lanSubnet, map[string]string{"parent": "eth0", "host_access": "true"}), "host-h0", "198.18.0.130"))
	want := map[string]string{"h0": "198.18.0.130", "h1": "198.18.0.131"}
	if st := e.d.Status(); !maps.Equal(st[0].HostShims, want) {
		t.Fatalf("host shims %v, want %v", st[0].HostShims, want)
	}
}
