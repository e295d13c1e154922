package dataplane

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestExecInheritsNetns checks the premise of every namespace test: a command
// started from the locked thread runs in that thread's namespace.
func TestExecInheritsNetns(t *testing.T) {
	tn := enterNewNS(t)
	want, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatalf("read own netns: %v", err)
	}
	if want == tn.outer {
		t.Fatalf("test thread is still in the outer namespace %s", want)
	}
	got := strings.TrimSpace(run(t, "readlink", "/proc/self/ns/net"))
	if got != want {
		t.Fatalf("child process netns %s, test thread in %s (%s)", got, want, tn.name)
	}
}

func bridgeSpec() BridgeSpec {
	return BridgeSpec{
		Name:    "gvb-test",
		MTU:     1450,
		MAC:     net.HardwareAddr{0x02, 0x42, 0xc6, 0x13, 0x00, 0x01},
		Address: mustPrefix("198.19.0.1/24"),
	}
}

func checkBridge(t *testing.T, tn *testNS, spec BridgeSpec) {
	t.Helper()
	l := tn.link(spec.Name)
	if l.Type() != "bridge" {
		t.Fatalf("%s is a %s, want bridge", spec.Name, l.Type())
	}
	a := l.Attrs()
	if a.MTU != spec.MTU {
		t.Errorf("mtu %d, want %d", a.MTU, spec.MTU)
	}
	if !bytes.Equal(a.HardwareAddr, spec.MAC) {
		t.Errorf("mac %s, want %s", a.HardwareAddr, spec.MAC)
	}
	if a.Flags&net.FlagUp == 0 {
		t.Errorf("bridge is down")
	}
	addrs, err := tn.nl.AddrList(l, unix.AF_INET)
	if err != nil {
		t.Fatalf("list addresses: %v", err)
	}
	var got []string
	for _, ad := range addrs {
		got = append(got, ad.IPNet.String())
	}
	if want := []string{spec.Address.String()}; !slices.Equal(got, want) {
		t.Errorf("addresses %v, want %v", got, want)
	}
}

func TestEnsureBridge(t *testing.T) {
	tn, k := newKernelNS(t)
	spec := bridgeSpec()
	for i := range 2 { // idempotent
		if err := k.EnsureBridge(spec); err != nil {
			t.Fatalf("EnsureBridge #%d: %v", i+1, err)
		}
		checkBridge(t, tn, spec)
	}

	// Drift: MTU, MAC, an extra address, down; EnsureBridge repairs all of it.
	l := tn.link(spec.Name)
	if err := tn.nl.LinkSetMTU(l, 1300); err != nil {
		t.Fatal(err)
	}
	if err := tn.nl.LinkSetHardwareAddr(l, net.HardwareAddr{0x02, 0, 0, 0, 0, 9}); err != nil {
		t.Fatal(err)
	}
	addAddr(t, tn.nl, l, "198.19.9.1/24")
	if err := tn.nl.LinkSetDown(l); err != nil {
		t.Fatal(err)
	}
	if err := k.EnsureBridge(spec); err != nil {
		t.Fatalf("EnsureBridge after drift: %v", err)
	}
	checkBridge(t, tn, spec)

	// A changed gateway replaces the old address.
	spec.Address = mustPrefix("198.19.0.254/24")
	if err := k.EnsureBridge(spec); err != nil {
		t.Fatalf("EnsureBridge new address: %v", err)
	}
	checkBridge(t, tn, spec)

	// A link of another type under the name is refused and left alone.
	addIfb(t, tn.nl, "gvb-other", 1500)
	err := k.EnsureBridge(BridgeSpec{Name: "gvb-other"})
	if !errors.Is(err, ErrIncompatibleLink) || !strings.Contains(err.Error(), "gvb-other") {
		t.Fatalf("EnsureBridge over ifb: %v, want ErrIncompatibleLink naming the link", err)
	}
	if tn.link("gvb-other").Type() != "ifb" {
		t.Fatalf("foreign link was changed")
	}
}

func vxlanSpec() VXLANSpec {
	return VXLANSpec{
		Name:     "gvx-test",
		VNI:      4242,
		Port:     4789,
		Local:    mustAddr("198.18.0.1"),
		Underlay: "u0",
		MTU:      1450,
		Master:   "gvb-test",
	}
}

func checkVXLAN(t *testing.T, tn *testNS, spec VXLANSpec) {
	t.Helper()
	l := tn.link(spec.Name)
	vx, ok := l.(*netlink.Vxlan)
	if !ok {
		t.Fatalf("%s is a %s, want vxlan", spec.Name, l.Type())
	}
	if uint32(vx.VxlanId) != spec.VNI || vx.Port != spec.Port || !vx.SrcAddr.Equal(net.IP(spec.Local.AsSlice())) {
		t.Errorf("vni %d port %d local %s, want %d %d %s", vx.VxlanId, vx.Port, vx.SrcAddr, spec.VNI, spec.Port, spec.Local)
	}
	if vx.Learning {
		t.Errorf("learning is on")
	}
	if !vx.Proxy {
		t.Errorf("proxy is off")
	}
	if u := tn.link(spec.Underlay); vx.VtepDevIndex != u.Attrs().Index {
		t.Errorf("bound to link index %d, want %d (%s)", vx.VtepDevIndex, u.Attrs().Index, spec.Underlay)
	}
	if vx.MTU != spec.MTU {
		t.Errorf("mtu %d, want %d", vx.MTU, spec.MTU)
	}
	if m := tn.link(spec.Master); vx.MasterIndex != m.Attrs().Index {
		t.Errorf("master index %d, want %d (%s)", vx.MasterIndex, m.Attrs().Index, spec.Master)
	}
	if vx.Flags&net.FlagUp == 0 {
		t.Errorf("vxlan is down")
	}
	fdb, err := tn.nl.NeighList(vx.Index, unix.AF_BRIDGE)
	if err != nil {
		t.Fatalf("list fdb: %v", err)
	}
	for _, e := range fdb {
		if bytes.Equal(e.HardwareAddr, make(net.HardwareAddr, 6)) {
			t.Errorf("all-zero flooding entry present: %+v", e)
		}
	}
	// Offloads must stay as the kernel made them.
	out := run(t, "ip", "-d", "link", "show", spec.Name)
	if !strings.Contains(out, "nolearning") || !strings.Contains(out, "proxy") {
		t.Errorf("ip -d link shows %q", out)
	}
}

func TestEnsureVXLAN(t *testing.T) {
	tn, k := newKernelNS(t)
	addIfb(t, tn.nl, "u0", 1500, "198.18.0.1/24")
	if err := k.EnsureBridge(bridgeSpec()); err != nil {
		t.Fatal(err)
	}
	spec := vxlanSpec()
	for i := range 2 {
		if err := k.EnsureVXLAN(spec); err != nil {
			t.Fatalf("EnsureVXLAN #%d: %v", i+1, err)
		}
		checkVXLAN(t, tn, spec)
	}
	index := tn.link(spec.Name).Attrs().Index

	// Drift: MTU, master, a flooding entry, down. Repaired in place.
	l := tn.link(spec.Name)
	if err := tn.nl.LinkSetNoMaster(l); err != nil {
		t.Fatal(err)
	}
	if err := tn.nl.LinkSetMTU(l, 1400); err != nil {
		t.Fatal(err)
	}
	run(t, "bridge", "fdb", "append", "00:00:00:00:00:00", "dev", spec.Name, "dst", "198.18.0.9", "self", "permanent")
	if err := tn.nl.LinkSetDown(l); err != nil {
		t.Fatal(err)
	}
	if err := k.EnsureVXLAN(spec); err != nil {
		t.Fatalf("EnsureVXLAN after drift: %v", err)
	}
	checkVXLAN(t, tn, spec)
	if got := tn.link(spec.Name).Attrs().Index; got != index {
		t.Errorf("device was recreated (index %d → %d) for drift that can be repaired", index, got)
	}

	// Learning switched on by hand: recreated with the right flags.
	run(t, "ip", "link", "set", spec.Name, "type", "vxlan", "learning")
	if err := k.EnsureVXLAN(spec); err != nil {
		t.Fatalf("EnsureVXLAN after learning on: %v", err)
	}
	checkVXLAN(t, tn, spec)

	// A different VNI recreates the device.
	spec.VNI = 4343
	if err := k.EnsureVXLAN(spec); err != nil {
		t.Fatalf("EnsureVXLAN new vni: %v", err)
	}
	checkVXLAN(t, tn, spec)

	// MTU above what the underlay allows is refused with a hint.
	bad := vxlanSpec()
	bad.Name, bad.VNI, bad.MTU = "gvx-big", 77, 1490
	if err := k.EnsureVXLAN(bad); err == nil || !strings.Contains(err.Error(), "mtu") {
		t.Errorf("EnsureVXLAN mtu 1490 over 1500 underlay: %v, want an mtu error", err)
	}
	if _, err := tn.nl.LinkByName(bad.Name); err == nil {
		t.Errorf("failed EnsureVXLAN left %q behind", bad.Name)
	}

	// Missing master is reported as ErrLinkNotFound.
	nm := vxlanSpec()
	nm.Name, nm.VNI, nm.Master = "gvx-nm", 78, "gvb-missing"
	if err := k.EnsureVXLAN(nm); !errors.Is(err, ErrLinkNotFound) {
		t.Errorf("EnsureVXLAN with missing master: %v, want ErrLinkNotFound", err)
	}
}

func TestEnsureVXLANVNIInUse(t *testing.T) {
	tn, k := newKernelNS(t)
	addIfb(t, tn.nl, "u0", 1500, "198.18.0.1/24")
	if err := k.EnsureBridge(bridgeSpec()); err != nil {
		t.Fatal(err)
	}
	// Someone else (e.g. Docker's overlay) holds VNI 4242 on the same port.
	run(t, "ip", "link", "add", "vx-docker", "type", "vxlan", "id", "4242", "dstport", "4789")

	tests := []struct {
		name    string
		mutate  func(*VXLANSpec)
		wantErr error
	}{
		{"same vni and port, bound", func(*VXLANSpec) {}, ErrVNIInUse},
		{"same vni and port, unbound", func(s *VXLANSpec) { s.Underlay, s.Local = "", netip.Addr{} }, ErrVNIInUse},
		{"same vni other port", func(s *VXLANSpec) { s.Port = 4790 }, nil},
		{"other vni same port", func(s *VXLANSpec) { s.VNI = 4243; s.Name = "gvx-t2" }, nil},
	}
	for _, tc := range tests {
		spec := vxlanSpec()
		tc.mutate(&spec)
		err := k.EnsureVXLAN(spec)
		if tc.wantErr == nil {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			if err := k.DeleteLink(spec.Name); err != nil {
				t.Errorf("%s: delete: %v", tc.name, err)
			}
			continue
		}
		if !errors.Is(err, tc.wantErr) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.wantErr)
			continue
		}
		if !strings.Contains(err.Error(), "vx-docker") {
			t.Errorf("%s: error %q does not name the device holding the vni", tc.name, err)
		}
		if _, err := tn.nl.LinkByName(spec.Name); err == nil {
			t.Errorf("%s: a device %q was left behind", tc.name, spec.Name)
		}
	}
}

func vethSpec() VethSpec {
	return VethSpec{
		HostName:      "gvh-test",
		ContainerName: "gvc-test",
		MTU:           1450,
		MAC:           net.HardwareAddr{0x02, 0x42, 0xc6, 0x13, 0x00, 0x0b},
		Master:        "gvb-test",
		Hairpin:       true,
	}
}

func checkVethHost(t *testing.T, tn *testNS, spec VethSpec) {
	t.Helper()
	host := tn.link(spec.HostName)
	if host.Type() != "veth" {
		t.Fatalf("%s is a %s", spec.HostName, host.Type())
	}
	if host.Attrs().MTU != spec.MTU {
		t.Errorf("host end mtu %d, want %d", host.Attrs().MTU, spec.MTU)
	}
	if m := tn.link(spec.Master); host.Attrs().MasterIndex != m.Attrs().Index {
		t.Errorf("host end master %d, want %d", host.Attrs().MasterIndex, m.Attrs().Index)
	}
	if host.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("host end is down")
	}
	pi, err := tn.nl.LinkGetProtinfo(host)
	if err != nil {
		t.Fatalf("protinfo: %v", err)
	}
	if pi.Hairpin != spec.Hairpin {
		t.Errorf("hairpin %t, want %t", pi.Hairpin, spec.Hairpin)
	}
}

func checkVethPeer(t *testing.T, tn *testNS, spec VethSpec) {
	t.Helper()
	peer := tn.link(spec.ContainerName)
	if peer.Attrs().MTU != spec.MTU {
		t.Errorf("container end mtu %d, want %d", peer.Attrs().MTU, spec.MTU)
	}
	if !bytes.Equal(peer.Attrs().HardwareAddr, spec.MAC) {
		t.Errorf("container end mac %s, want %s", peer.Attrs().HardwareAddr, spec.MAC)
	}
	if peer.Attrs().ParentIndex != tn.link(spec.HostName).Attrs().Index {
		t.Errorf("container end is not the host end's peer")
	}
}

func TestEnsureVeth(t *testing.T) {
	tn, k := newKernelNS(t)
	if err := k.EnsureBridge(bridgeSpec()); err != nil {
		t.Fatal(err)
	}
	if err := k.EnsureBridge(BridgeSpec{Name: "gvb-other"}); err != nil {
		t.Fatal(err)
	}
	spec := vethSpec()
	for i := range 2 {
		if err := k.EnsureVeth(spec); err != nil {
			t.Fatalf("EnsureVeth #%d: %v", i+1, err)
		}
		checkVethHost(t, tn, spec)
		checkVethPeer(t, tn, spec)
	}

	// Drift on both ends.
	host, peer := tn.link(spec.HostName), tn.link(spec.ContainerName)
	if err := tn.nl.LinkSetMaster(host, tn.link("gvb-other")); err != nil {
		t.Fatal(err)
	}
	if err := tn.nl.LinkSetHairpin(host, false); err != nil {
		t.Fatal(err)
	}
	for _, l := range []netlink.Link{host, peer} {
		if err := tn.nl.LinkSetMTU(l, 1280); err != nil {
			t.Fatal(err)
		}
	}
	if err := tn.nl.LinkSetHardwareAddr(peer, net.HardwareAddr{2, 0, 0, 0, 0, 7}); err != nil {
		t.Fatal(err)
	}
	if err := k.EnsureVeth(spec); err != nil {
		t.Fatalf("EnsureVeth after drift: %v", err)
	}
	checkVethHost(t, tn, spec)
	checkVethPeer(t, tn, spec)

	// The container end moves into a container: only the host end is repaired.
	_, cns, _ := otherNS(t)
	if err := tn.nl.LinkSetNsFd(tn.link(spec.ContainerName), int(cns)); err != nil {
		t.Fatalf("move container end: %v", err)
	}
	if err := tn.nl.LinkSetMTU(tn.link(spec.HostName), 1300); err != nil {
		t.Fatal(err)
	}
	if err := k.EnsureVeth(spec); err != nil {
		t.Fatalf("EnsureVeth with container end moved: %v", err)
	}
	checkVethHost(t, tn, spec)
	if _, err := tn.nl.LinkByName(spec.ContainerName); err == nil {
		t.Fatalf("a new container end was created next to the moved one")
	}

	// A foreign link with the container end's name is not taken over.
	spec2 := vethSpec()
	spec2.HostName, spec2.ContainerName = "gvh-two", "u-foreign"
	addIfb(t, tn.nl, "u-foreign", 1500)
	if err := k.EnsureVeth(spec2); !errors.Is(err, ErrIncompatibleLink) {
		t.Fatalf("EnsureVeth over a foreign container name: %v, want ErrIncompatibleLink", err)
	}
}

func TestDeleteAndListLinks(t *testing.T) {
	tn, k := newKernelNS(t)
	addIfb(t, tn.nl, "u0", 1500)
	for _, n := range []string{"gvb-a", "gvb-b"} {
		if err := k.EnsureBridge(BridgeSpec{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := k.ListLinks("gv")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if want := []string{"gvb-a", "gvb-b"}; !slices.Equal(got, want) {
		t.Fatalf("ListLinks(%q) = %v, want %v", "gv", got, want)
	}
	for i := range 2 { // missing link is success
		if err := k.DeleteLink("gvb-a"); err != nil {
			t.Fatalf("DeleteLink #%d: %v", i+1, err)
		}
	}
	got, err = k.ListLinks("gvb-")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"gvb-b"}; !slices.Equal(got, want) {
		t.Fatalf("after delete ListLinks = %v, want %v", got, want)
	}
}

func TestRoutes(t *testing.T) {
	tn, k := newKernelNS(t)
	addIfb(t, tn.nl, "u0", 1500, "198.18.0.1/24")
	if err := k.EnsureBridge(BridgeSpec{Name: "gvb-r", Address: mustPrefix("198.19.4.1/24")}); err != nil {
		t.Fatal(err)
	}
	run(t, "ip", "route", "add", "default", "via", "198.18.0.254", "dev", "u0")
	run(t, "ip", "route", "add", "198.18.64.0/18", "via", "198.18.0.254", "dev", "u0")
	run(t, "ip", "route", "add", "198.18.99.0/24", "dev", "u0", "table", "100")

	routes, err := k.Routes()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Route{}
	for _, r := range routes {
		got[r.Dst.String()] = r
	}
	want := map[string]Route{
		"198.18.0.0/24":  {Dst: mustPrefix("198.18.0.0/24"), Dev: "u0"},
		"198.18.64.0/18": {Dst: mustPrefix("198.18.64.0/18"), Dev: "u0"},
		"198.19.4.0/24":  {Dst: mustPrefix("198.19.4.0/24"), Dev: "gvb-r", Ours: true},
	}
	if len(got) != len(want) {
		t.Errorf("Routes() = %v, want %v", routes, want)
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("route %s = %+v, want %+v", k, got[k], w)
		}
	}
}
