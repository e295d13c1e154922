package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"grapevine/internal/testreq"
)

// addVethPair adds a veth pair a/b in the namespace of h, both ends up.
func addVethPair(t *testing.T, h *netlink.Handle, a, b string) {
	t.Helper()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = a
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: b}); err != nil {
		t.Fatalf("add veth %s/%s: %v", a, b, err)
	}
	for _, n := range []string{a, b} {
		l, err := h.LinkByName(n)
		if err == nil {
			err = h.LinkSetUp(l)
		}
		if err != nil {
			t.Fatalf("set %s up: %v", n, err)
		}
	}
}

func TestKernelEnsureMacvlan(t *testing.T) {
	tn, k := newKernelNS(t)
	addVethPair(t, tn.nl, "lan0", "lan1")
	mac := mustMAC(t, "02:42:c6:12:0a:0b")
	spec := MacvlanSpec{Name: "gvc-m1", Parent: "lan0", MTU: 1400, MAC: mac}
	for i := range 2 { // the second call repairs nothing and must succeed
		if err := k.EnsureMacvlan(spec); err != nil {
			t.Fatalf("EnsureMacvlan #%d: %v", i+1, err)
		}
	}
	l := tn.link("gvc-m1")
	mv, ok := l.(*netlink.Macvlan)
	if !ok {
		t.Fatalf("gvc-m1 is a %s, want macvlan", l.Type())
	}
	if mv.Mode != netlink.MACVLAN_MODE_BRIDGE {
		t.Errorf("mode %v, want bridge", mv.Mode)
	}
	if mv.ParentIndex != tn.link("lan0").Attrs().Index {
		t.Errorf("parent index %d, want lan0's %d", mv.ParentIndex, tn.link("lan0").Attrs().Index)
	}
	if mv.MTU != 1400 || mv.HardwareAddr.String() != mac.String() || mv.Flags&net.FlagUp == 0 {
		t.Errorf("mtu %d mac %s flags %v, want 1400 %s up", mv.MTU, mv.HardwareAddr, mv.Flags, mac)
	}

	// Another parent: recreated there.
	spec.Parent = "lan1"
	if err := k.EnsureMacvlan(spec); err != nil {
		t.Fatalf("EnsureMacvlan on lan1: %v", err)
	}
	if got := tn.link("gvc-m1").Attrs().ParentIndex; got != tn.link("lan1").Attrs().Index {
		t.Errorf("after a parent change the parent index is %d, want lan1's", got)
	}

	cases := []struct {
		name string
		spec MacvlanSpec
		is   error
	}{
		{"missing parent", MacvlanSpec{Name: "gvc-m2", Parent: "nope0"}, ErrLinkNotFound},
		{"name taken by a veth", MacvlanSpec{Name: "lan1", Parent: "lan0"}, ErrIncompatibleLink},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := k.EnsureMacvlan(c.spec); !errors.Is(err, c.is) {
				t.Fatalf("EnsureMacvlan: %v, want %v", err, c.is)
			}
		})
	}
	// An MTU above the parent's is refused by the kernel and nothing is left.
	err := k.EnsureMacvlan(MacvlanSpec{Name: "gvc-m3", Parent: "lan0", MTU: 9000})
	if err == nil {
		t.Fatal("EnsureMacvlan with mtu 9000 on a 1500 parent succeeded")
	}
	t.Logf("mtu above the parent: %v", err)
	if names, _ := k.ListLinks("gvc-m3"); len(names) != 0 {
		t.Errorf("failed EnsureMacvlan left %v", names)
	}
}

func TestKernelMacvlanShimAddressAndRoutes(t *testing.T) {
	tn, k := newKernelNS(t)
	addVethPair(t, tn.nl, "lan0", "lan1")
	addAddr(t, tn.nl, tn.link("lan0"), "198.18.10.251/24")
	shim := MacvlanSpec{Name: "gvh-n1", Parent: "lan0", MAC: mustMAC(t, "02:42:c6:12:0a:c8"), Address: mustPrefix("198.18.10.200/32")}
	for range 2 {
		if err := k.EnsureMacvlan(shim); err != nil {
			t.Fatal(err)
		}
	}
	info, err := k.LinkInfo("gvh-n1")
	if err != nil {
		t.Fatal(err)
	}
	if info.Kind != "macvlan" || info.Parent != "lan0" || !slices.Equal(info.Addrs, []netip.Prefix{mustPrefix("198.18.10.200/32")}) || !info.Up {
		t.Fatalf("shim info %+v", info)
	}
	// A new address replaces the old one.
	shim.Address = mustPrefix("198.18.10.201/32")
	if err := k.EnsureMacvlan(shim); err != nil {
		t.Fatal(err)
	}
	if info, _ = k.LinkInfo("gvh-n1"); !slices.Equal(info.Addrs, []netip.Prefix{mustPrefix("198.18.10.201/32")}) {
		t.Fatalf("addresses after the change: %v", info.Addrs)
	}

	dst := mustPrefix("198.18.10.11/32")
	for range 2 {
		if err := k.SetRoute(dst, "gvh-n1", mustAddr("198.18.10.201")); err != nil {
			t.Fatal(err)
		}
	}
	routes, err := k.Routes()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(routes, Route{Dst: dst, Dev: "gvh-n1", Ours: true}) {
		t.Fatalf("route %s dev gvh-n1 not listed: %+v", dst, routes)
	}
	if !slices.Contains(routes, Route{Dst: mustPrefix("198.18.10.0/24"), Dev: "lan0"}) {
		t.Fatalf("lan0's connected route not listed: %+v", routes)
	}
	for range 2 {
		if err := k.DelRoute(dst, "gvh-n1"); err != nil {
			t.Fatal(err)
		}
	}
	if routes, _ = k.Routes(); slices.ContainsFunc(routes, func(r Route) bool { return r.Dev == "gvh-n1" }) {
		t.Fatalf("route still there after DelRoute: %+v", routes)
	}
	if err := k.DelRoute(dst, "gvh-gone"); err != nil {
		t.Fatalf("DelRoute on a missing link: %v", err)
	}
	if err := k.SetRoute(dst, "gvh-gone", mustAddr("198.18.10.201")); !errors.Is(err, ErrLinkNotFound) {
		t.Fatalf("SetRoute on a missing link: %v, want ErrLinkNotFound", err)
	}
}

func TestKernelLinkInfos(t *testing.T) {
	tn, k := newKernelNS(t)
	addVethPair(t, tn.nl, "lan0", "lan1")
	addAddr(t, tn.nl, tn.link("lan0"), "198.18.10.251/24")
	addAddr(t, tn.nl, tn.link("lan0"), "198.19.10.251/25")
	if err := k.EnsureBridge(BridgeSpec{Name: "gvb-li", MTU: 1500}); err != nil {
		t.Fatal(err)
	}
	if err := tn.nl.LinkSetMasterByIndex(tn.link("lan1"), tn.link("gvb-li").Attrs().Index); err != nil {
		t.Fatal(err)
	}
	if err := k.EnsureMacvlan(MacvlanSpec{Name: "gvc-li", Parent: "lan0"}); err != nil {
		t.Fatal(err)
	}
	all, err := k.LinkInfos()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]LinkInfo{}
	for _, l := range all {
		byName[l.Name] = l
	}
	one, err := k.LinkInfo("lan0")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]LinkInfo{
		"lo":     {Name: "lo", Kind: "device", MTU: 65536, Up: true, Loopback: true},
		"lan0":   {Name: "lan0", Kind: "veth", MTU: 1500, Up: true, Addrs: []netip.Prefix{mustPrefix("198.18.10.251/24"), mustPrefix("198.19.10.251/25")}},
		"lan1":   {Name: "lan1", Kind: "veth", MTU: 1500, Up: true, Master: "gvb-li"},
		"gvb-li": {Name: "gvb-li", Kind: "bridge", MTU: 1500, Up: true},
		"gvc-li": {Name: "gvc-li", Kind: "macvlan", MTU: 1500, Up: true, Parent: "lan0"},
	}
	for name, w := range want {
		if got := byName[name]; !infoEqual(got, w) {
			t.Errorf("LinkInfos %s = %+v, want %+v", name, got, w)
		}
	}
	if !infoEqual(one, want["lan0"]) {
		t.Errorf("LinkInfo lan0 = %+v, want %+v", one, want["lan0"])
	}
	if _, err := k.LinkInfo("nope0"); !errors.Is(err, ErrLinkNotFound) {
		t.Errorf("LinkInfo of a missing link: %v", err)
	}
}

func infoEqual(a, b LinkInfo) bool {
	return a.Name == b.Name && a.Kind == b.Kind && a.MTU == b.MTU && a.Up == b.Up && a.Loopback == b.Loopback &&
		a.Master == b.Master && a.Parent == b.Parent && a.VLANID == b.VLANID && slices.Equal(a.Addrs, b.Addrs)
}

// TestKernelEnsureVLANIDRange: an id outside 1..4094 is refused before the
// kernel is asked, so it runs on every kernel, with or without 802.1q.
func TestKernelEnsureVLANIDRange(t *testing.T) {
	tn, k := newKernelNS(t)
	addVethPair(t, tn.nl, "lan0", "lan1")
	for _, id := range []int{0, 4095, 5000} {
		name := fmt.Sprintf("lan0.%d", id)
		err := k.EnsureVLAN(VLANSpec{Name: name, Parent: "lan0", ID: id})
		want := fmt.Sprintf("vlan id %d outside 1..4094", id)
		if err == nil || !strings.Contains(err.Error(), want) || errors.Is(err, ErrVLANUnsupported) {
			t.Errorf("EnsureVLAN id %d: %v, want an error containing %q", id, err, want)
		}
	}
	if names, err := k.ListLinks("lan0."); err != nil || len(names) != 0 {
		t.Errorf("refused EnsureVLAN left %v (%v)", names, err)
	}
}

// TestKernelEnsureVLAN runs for real on a kernel with 802.1q; on one without
// (CONFIG_VLAN_8021Q not set, as on the test machines) it checks that the
// refusal is ErrVLANUnsupported with nothing left behind, then skips (fails
// with GV_REQUIRE=vlan).
func TestKernelEnsureVLAN(t *testing.T) {
	tn, k := newKernelNS(t)
	addVethPair(t, tn.nl, "lan0", "lan1")
	spec := VLANSpec{Name: "lan0.30", Parent: "lan0", ID: 30}
	err := k.EnsureVLAN(spec)
	if errors.Is(err, ErrVLANUnsupported) {
		if names, _ := k.ListLinks("lan0."); len(names) != 0 {
			t.Fatalf("refused EnsureVLAN left %v", names)
		}
		testreq.Missing(t, testreq.VLAN, err.Error())
	}
	if err != nil {
		t.Fatalf("EnsureVLAN: %v", err)
	}
	if err := k.EnsureVLAN(spec); err != nil {
		t.Fatalf("EnsureVLAN repeated: %v", err)
	}
	info, err := k.LinkInfo("lan0.30")
	if err != nil {
		t.Fatal(err)
	}
	if info.Kind != "vlan" || info.VLANID != 30 || info.Parent != "lan0" || !info.Up {
		t.Fatalf("vlan info %+v", info)
	}
	if err := k.EnsureVLAN(VLANSpec{Name: "lan0.30", Parent: "lan0", ID: 31}); !errors.Is(err, ErrIncompatibleLink) {
		t.Fatalf("EnsureVLAN with another id on an existing name: %v, want ErrIncompatibleLink", err)
	}
	if err := k.EnsureVLAN(VLANSpec{Name: "lan0.40", Parent: "lan0", ID: 40}); err != nil {
		t.Fatalf("second vlan on the same parent: %v", err)
	}
	// Macvlan children on two VLANs of one parent.
	for _, p := range []string{"lan0.30", "lan0.40"} {
		if err := k.EnsureMacvlan(MacvlanSpec{Name: "gvc-" + p[5:], Parent: p}); err != nil {
			t.Fatalf("macvlan on %s: %v", p, err)
		}
	}
}

// macvlanHost is one simulated host of the macvlan traffic test.
type macvlanHost struct {
	k   *Kernel
	nl  *netlink.Handle
	ns  netns.NsHandle
	lan netip.Addr // the host's own address on the LAN (198.18.10.0/24)
	// containers by address; each in its own namespace
	cNS map[netip.Addr]netns.NsHandle
}

// TestMacvlanTraffic puts two hosts on one LAN (a veth pair between two
// namespaces) and programs only through Kernel what the driver asks for a
// macvlan network: containers of two networks with different subnets on one
// untagged parent reach each other across the hosts and reach a LAN address
// that runs no grapevine; a host does not reach its own containers until it
// has a shim (host_access), then it does, both ways.
func TestMacvlanTraffic(t *testing.T) {
	tn1, k1 := newKernelNS(t)
	ns2, nl2, k2 := secondKernel(t)
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "eth0"
	if err := tn1.nl.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "peer0"}); err != nil {
		t.Fatal(err)
	}
	if err := tn1.nl.LinkSetNsFd(tn1.link("peer0"), int(ns2)); err != nil {
		t.Fatal(err)
	}
	// Host 2 names its NIC differently: the parent is chosen per host.
	p2, err := nl2.LinkByName("peer0")
	if err == nil {
		err = nl2.LinkSetName(p2, "ens5")
	}
	if err != nil {
		t.Fatal(err)
	}
	hosts := []*macvlanHost{
		{k: k1, nl: tn1.nl, ns: tn1.ns, lan: mustAddr("198.18.10.251"), cNS: map[netip.Addr]netns.NsHandle{}},
		{k: k2, nl: nl2, ns: ns2, lan: mustAddr("198.18.10.252"), cNS: map[netip.Addr]netns.NsHandle{}},
	}
	parents := []string{"eth0", "ens5"}
	containers := [][]string{
		{"198.18.10.11/24", "198.19.10.11/24"},
		{"198.18.10.12/24", "198.19.10.12/24"},
	}
	for i, h := range hosts {
		nic, err := h.nl.LinkByName(parents[i])
		if err != nil {
			t.Fatal(err)
		}
		addAddr(t, h.nl, nic, h.lan.String()+"/24")
		if err := h.nl.LinkSetUp(nic); err != nil {
			t.Fatal(err)
		}
		for j, c := range containers[i] {
			p := mustPrefix(c)
			name := fmt.Sprintf("gvc-h%dc%d", i+1, j)
			mac := net.HardwareAddr{0x02, 0x42}
			mac = append(mac, p.Addr().AsSlice()...)
			if err := h.k.EnsureMacvlan(MacvlanSpec{Name: name, Parent: parents[i], MAC: mac}); err != nil {
				t.Fatalf("host %d container %d: %v", i+1, j, err)
			}
			// What Docker does: move it into the container and configure it.
			_, cns, cnl := otherNS(t)
			l, err := h.nl.LinkByName(name)
			if err != nil {
				t.Fatal(err)
			}
			if err := h.nl.LinkSetNsFd(l, int(cns)); err != nil {
				t.Fatal(err)
			}
			if l, err = cnl.LinkByName(name); err != nil {
				t.Fatal(err)
			}
			addAddr(t, cnl, l, c)
			if err := cnl.LinkSetUp(l); err != nil {
				t.Fatal(err)
			}
			h.cNS[p.Addr()] = cns
		}
	}
	seq := 0
	reach := func(ns netns.NsHandle, dst netip.Addr) func() string {
		return func() string { seq++; return ping(t, ns, dst, seq, 300*time.Millisecond) }
	}
	unreachable := func(what string, ns netns.NsHandle, dst netip.Addr) {
		t.Helper()
		seq++
		if msg := ping(t, ns, dst, seq, 300*time.Millisecond); msg == "" {
			t.Fatalf("%s: ping %s works, want it blocked", what, dst)
		}
	}
	h1, h2 := hosts[0], hosts[1]
	// Both networks, across the hosts, both ways.
	for _, pair := range [][2]string{{"198.18.10.11", "198.18.10.12"}, {"198.19.10.11", "198.19.10.12"}} {
		a, b := mustAddr(pair[0]), mustAddr(pair[1])
		eventually(t, 5*time.Second, reach(h1.cNS[a], b))
		eventually(t, 5*time.Second, reach(h2.cNS[b], a))
	}
	// A LAN machine without grapevine (host 2's own address) and a container
	// of host 1 reach each other.
	eventually(t, 5*time.Second, reach(h1.cNS[mustAddr("198.18.10.11")], h2.lan))
	eventually(t, 5*time.Second, reach(h2.ns, mustAddr("198.18.10.11")))

	// host_access off: Linux blocks parent <-> child.
	unreachable("host 1 to its own container without a shim", h1.ns, mustAddr("198.18.10.11"))

	// host_access on: a shim with its own address and a /32 per container.
	shimIP := mustAddr("198.18.10.200")
	if err := k1.EnsureMacvlan(MacvlanSpec{Name: "gvh-t", Parent: "eth0", MAC: mustMAC(t, "02:42:c6:12:0a:c8"), Address: mustPrefix("198.18.10.200/32")}); err != nil {
		t.Fatal(err)
	}
	if err := k1.SetRoute(mustPrefix("198.18.10.11/32"), "gvh-t", shimIP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, reach(h1.ns, mustAddr("198.18.10.11")))
	eventually(t, 5*time.Second, reach(h1.cNS[mustAddr("198.18.10.11")], shimIP))
	// The other host's containers still reach the shim address over the LAN.
	eventually(t, 5*time.Second, reach(h2.cNS[mustAddr("198.18.10.12")], shimIP))

	// Off again: route and shim removed, the block is back.
	if err := k1.DelRoute(mustPrefix("198.18.10.11/32"), "gvh-t"); err != nil {
		t.Fatal(err)
	}
	if err := k1.DeleteLink("gvh-t"); err != nil {
		t.Fatal(err)
	}
	unreachable("host 1 to its own container after the shim is gone", h1.ns, mustAddr("198.18.10.11"))
}

// TestMacvlanInternalParent checks the parent grapevine uses when no -o parent
// is given: EnsureStandalone's dummy link (ifb on this kernel, which has no
// dummy). Children on it reach each other and nothing else. (A bridge without
// ports would not do: once its MAC is set it has no carrier, and neither have
// its macvlan children.)
func TestMacvlanInternalParent(t *testing.T) {
	tn, k := newKernelNS(t)
	for range 2 {
		if err := k.EnsureStandalone("gvm-int", 1500); err != nil {
			t.Fatal(err)
		}
	}
	if l := tn.link("gvm-int"); (l.Type() != "dummy" && l.Type() != "ifb") || l.Attrs().Flags&net.FlagUp == 0 {
		t.Fatalf("standalone link is a %s, flags %v", l.Type(), l.Attrs().Flags)
	}
	if err := k.EnsureBridge(BridgeSpec{Name: "gvb-x"}); err != nil {
		t.Fatal(err)
	}
	if err := k.EnsureStandalone("gvb-x", 0); !errors.Is(err, ErrIncompatibleLink) {
		t.Fatalf("EnsureStandalone over a bridge: %v", err)
	}
	addrs := []string{"198.18.20.11/24", "198.18.20.12/24"}
	var cns []netns.NsHandle
	for i, a := range addrs {
		name := "gvc-int" + string(rune('a'+i))
		if err := k.EnsureMacvlan(MacvlanSpec{Name: name, Parent: "gvm-int"}); err != nil {
			t.Fatal(err)
		}
		_, ns, cnl := otherNS(t)
		if err := tn.nl.LinkSetNsFd(tn.link(name), int(ns)); err != nil {
			t.Fatal(err)
		}
		l, err := cnl.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		addAddr(t, cnl, l, a)
		if err := cnl.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		cns = append(cns, ns)
	}
	seq := 0
	eventually(t, 5*time.Second, func() string { seq++; return ping(t, cns[0], mustAddr("198.18.20.12"), seq, 300*time.Millisecond) })
	eventually(t, 5*time.Second, func() string { seq++; return ping(t, cns[1], mustAddr("198.18.20.11"), seq, 300*time.Millisecond) })
	// The host has no way in.
	seq++
	if msg := ping(t, tn.ns, mustAddr("198.18.20.11"), seq, 300*time.Millisecond); msg == "" {
		t.Fatal("the host reaches a container of an internal macvlan network without a shim")
	}
}
