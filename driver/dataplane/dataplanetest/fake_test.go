package dataplanetest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"grapevine/driver/dataplane"
)

func TestFakeLinks(t *testing.T) {
	f := NewFake()
	br := dataplane.BridgeSpec{Name: "gvb-a", MTU: 1450, Address: netip.MustParsePrefix("198.19.1.1/24")}
	if err := f.EnsureBridge(br); err != nil {
		t.Fatal(err)
	}
	if err := f.EnsureVXLAN(dataplane.VXLANSpec{Name: "gvx-a", VNI: 10, Port: 4789, Master: "gvb-missing"}); !errors.Is(err, dataplane.ErrLinkNotFound) {
		t.Fatalf("vxlan with missing master: got %v, want ErrLinkNotFound", err)
	}
	if err := f.EnsureVXLAN(dataplane.VXLANSpec{Name: "gvx-a", VNI: 10, Port: 4789, Master: "gvb-a"}); err != nil {
		t.Fatal(err)
	}
	// same VNI, same port, other device: refused; other port: fine.
	if err := f.EnsureBridge(dataplane.BridgeSpec{Name: "gvb-b"}); err != nil {
		t.Fatal(err)
	}
	if err := f.EnsureVXLAN(dataplane.VXLANSpec{Name: "gvx-b", VNI: 10, Port: 4789, Master: "gvb-b"}); !errors.Is(err, dataplane.ErrVNIInUse) {
		t.Fatalf("duplicate vni: got %v, want ErrVNIInUse", err)
	}
	if err := f.EnsureVXLAN(dataplane.VXLANSpec{Name: "gvx-b", VNI: 10, Port: 4790, Master: "gvb-b"}); err != nil {
		t.Fatal(err)
	}
	f.SetForeignVNI(4789, 4096)
	if err := f.EnsureVXLAN(dataplane.VXLANSpec{Name: "gvx-c", VNI: 4096, Port: 4789, Master: "gvb-b"}); !errors.Is(err, dataplane.ErrVNIInUse) {
		t.Fatalf("foreign vni: got %v, want ErrVNIInUse", err)
	}
	// a name taken by another kind
	if err := f.EnsureVXLAN(dataplane.VXLANSpec{Name: "gvb-a", VNI: 11, Port: 4789}); !errors.Is(err, dataplane.ErrIncompatibleLink) {
		t.Fatalf("incompatible: got %v", err)
	}

	veth := dataplane.VethSpec{HostName: "gve-1", ContainerName: "gvc-1", MTU: 1450, Master: "gvb-a", Hairpin: true,
		MAC: net.HardwareAddr{2, 0x42, 198, 19, 1, 2}}
	if err := f.EnsureVeth(veth); err != nil {
		t.Fatal(err)
	}
	if err := f.EnsureVeth(veth); err != nil { // repeat
		t.Fatal(err)
	}
	f.MoveOut("gvc-1")
	if err := f.EnsureVeth(veth); err != nil { // only host end repaired
		t.Fatal(err)
	}
	if _, ok := f.Link("gvc-1"); ok {
		t.Fatal("EnsureVeth recreated a container end that was moved out")
	}
	got, _ := f.ListLinks("gv")
	want := []string{"gvb-a", "gvb-b", "gve-1", "gvx-a", "gvx-b"}
	if !slices.Equal(got, want) {
		t.Fatalf("links %v, want %v", got, want)
	}
	rs, _ := f.Routes()
	if len(rs) != 1 || rs[0].Dev != "gvb-a" || !rs[0].Ours || rs[0].Dst != netip.MustParsePrefix("198.19.1.0/24") {
		t.Fatalf("routes %+v", rs)
	}

	// deleting one veth end deletes the other
	if err := f.EnsureVeth(dataplane.VethSpec{HostName: "gve-2", ContainerName: "gvc-2", Master: "gvb-a"}); err != nil {
		t.Fatal(err)
	}
	if err := f.DeleteLink("gve-2"); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.Link("gvc-2"); ok {
		t.Fatal("peer survived DeleteLink")
	}
	if err := f.DeleteLink("gve-2"); err != nil { // missing = success
		t.Fatal(err)
	}
}

func TestFakeFailInjection(t *testing.T) {
	f := NewFake()
	boom := errors.New("boom")
	f.SetFail("EnsureBridge:gvb-x", boom)
	if err := f.EnsureBridge(dataplane.BridgeSpec{Name: "gvb-y"}); err != nil {
		t.Fatalf("targeted failure hit another name: %v", err)
	}
	if err := f.EnsureBridge(dataplane.BridgeSpec{Name: "gvb-x"}); !errors.Is(err, boom) {
		t.Fatalf("got %v, want boom", err)
	}
	if _, ok := f.Link("gvb-x"); ok {
		t.Fatal("failed call had an effect")
	}
	f.SetFail("EnsureBridge:gvb-x", nil)
	f.Fail["SyncFirewall"] = boom
	if err := f.SyncFirewall(dataplane.Firewall{Networks: []dataplane.NetworkRules{{NetworkID: "n"}}}); !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
	if len(f.Firewall().Networks) != 0 || f.FirewallSyncs() != 0 {
		t.Fatal("failed SyncFirewall changed state")
	}
	if n := f.CallCount("EnsureBridge"); n != 2 {
		t.Fatalf("EnsureBridge calls = %d, want 2", n)
	}
}

func TestFakeFDBNeighPorts(t *testing.T) {
	f := NewFake()
	mac := net.HardwareAddr{2, 0x42, 1, 2, 3, 4}
	vtep := netip.MustParseAddr("198.18.0.2")
	if err := f.SetFDB("gvx-a", mac, vtep); !errors.Is(err, dataplane.ErrLinkNotFound) {
		t.Fatalf("fdb on missing link: %v", err)
	}
	_ = f.EnsureBridge(dataplane.BridgeSpec{Name: "gvb-a"})
	_ = f.EnsureVXLAN(dataplane.VXLANSpec{Name: "gvx-a", VNI: 5, Port: 4789, Master: "gvb-a"})
	if err := f.SetFDB("gvx-a", mac, vtep); err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr("198.19.1.5")
	if err := f.SetNeigh("gvx-a", ip, mac); err != nil {
		t.Fatal(err)
	}
	if f.FDB("gvx-a")[mac.String()] != vtep || f.Neigh("gvx-a")[ip] != mac.String() {
		t.Fatal("entries not recorded")
	}
	_ = f.DelFDB("gvx-a", mac)
	_ = f.DelNeigh("gvx-a", ip)
	if len(f.FDB("gvx-a")) != 0 || len(f.Neigh("gvx-a")) != 0 {
		t.Fatal("entries not deleted")
	}

	f.SetPortBusy(dataplane.TCP, netip.MustParseAddr("198.18.0.1"), 8080, "sshd")
	cases := []struct {
		proto dataplane.Proto
		ip    string
		port  uint16
		want  bool
	}{
		{dataplane.TCP, "198.18.0.1", 8080, true},
		{dataplane.TCP, "", 8080, true},
		{dataplane.TCP, "198.18.0.9", 8080, false},
		{dataplane.UDP, "198.18.0.1", 8080, false},
		{dataplane.TCP, "198.18.0.1", 8081, false},
	}
	for _, c := range cases {
		var a netip.Addr
		if c.ip != "" {
			a = netip.MustParseAddr(c.ip)
		}
		got, holder, err := f.PortInUse(c.proto, a, c.port)
		if err != nil || got != c.want || (got && holder != "sshd") {
			t.Errorf("PortInUse(%v,%q,%d) = %v,%q,%v", c.proto, c.ip, c.port, got, holder, err)
		}
	}
}

func TestFakeConcurrent(t *testing.T) {
	f := NewFake()
	_ = f.EnsureBridge(dataplane.BridgeSpec{Name: "gvb-a"})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := string(rune('a' + i))
			_ = f.EnsureVeth(dataplane.VethSpec{HostName: "gve-" + n, ContainerName: "gvc-" + n, Master: "gvb-a"})
			_, _ = f.ListLinks("gv")
			_ = f.SyncFirewall(dataplane.Firewall{})
			_ = f.DeleteLink("gve-" + n)
		}()
	}
	wg.Wait()
	if got := f.LinkNames(); !slices.Equal(got, []string{"gvb-a"}) {
		t.Fatalf("links left: %v", got)
	}
}

// TestFakeListFDBNeigh: the Fake lists what SetFDB/SetNeigh wrote, with the
// bridge entry only for an enslaved device, and what tests inject or drop.
func TestFakeListFDBNeigh(t *testing.T) {
	f := NewFake()
	if err := f.EnsureBridge(dataplane.BridgeSpec{Name: "gvb-a"}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []dataplane.VXLANSpec{{Name: "gvx-a", VNI: 1, Master: "gvb-a"}, {Name: "gvx-b", VNI: 2}} {
		if err := f.EnsureVXLAN(s); err != nil {
			t.Fatal(err)
		}
	}
	m1 := mustMAC(t, "02:00:00:00:00:01")
	m2 := mustMAC(t, "02:00:00:00:00:02")
	for _, vx := range []string{"gvx-a", "gvx-b"} {
		if err := f.SetFDB(vx, m1, netip.MustParseAddr("198.18.0.2")); err != nil {
			t.Fatal(err)
		}
		if err := f.SetNeigh(vx, netip.MustParseAddr("198.19.0.2"), m1); err != nil {
			t.Fatal(err)
		}
	}
	f.InjectFDB("gvx-a", m2, netip.MustParseAddr("198.18.0.3"), false)
	f.InjectNeigh("gvx-a", netip.MustParseAddr("198.19.0.3"), m2, false)

	tests := []struct {
		dev       string
		wantFDB   []string
		wantNeigh []string
	}{
		{"gvx-a",
			[]string{m1.String() + " dst 198.18.0.2", m1.String() + " master", m2.String() + " dst 198.18.0.3"},
			[]string{"198.19.0.2 " + m1.String() + " permanent=true", "198.19.0.3 " + m2.String() + " permanent=false"}},
		{"gvx-b",
			[]string{m1.String() + " dst 198.18.0.2"},
			[]string{"198.19.0.2 " + m1.String() + " permanent=true"}},
	}
	for _, tc := range tests {
		fdb, err := f.ListFDB(tc.dev)
		if err != nil {
			t.Fatal(err)
		}
		if g := fdbStrings(fdb); !slices.Equal(g, tc.wantFDB) {
			t.Errorf("%s: ListFDB = %q, want %q", tc.dev, g, tc.wantFDB)
		}
		nb, err := f.ListNeigh(tc.dev)
		if err != nil {
			t.Fatal(err)
		}
		if g := neighStrings(nb); !slices.Equal(g, tc.wantNeigh) {
			t.Errorf("%s: ListNeigh = %q, want %q", tc.dev, g, tc.wantNeigh)
		}
	}
	f.DropFDB("gvx-a", m1, false, true)
	if got := f.FDBMaster("gvx-a"); len(got) != 0 {
		t.Errorf("after DropFDB master: %q", got)
	}
	if err := f.DelFDB("gvx-a", m2); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.FDB("gvx-a")[m2.String()]; ok {
		t.Errorf("DelFDB left %s", m2)
	}
	if _, err := f.ListFDB("gvx-missing"); !errors.Is(err, dataplane.ErrLinkNotFound) {
		t.Errorf("ListFDB on a missing device: %v", err)
	}
	if _, err := f.ListNeigh("gvx-missing"); !errors.Is(err, dataplane.ErrLinkNotFound) {
		t.Errorf("ListNeigh on a missing device: %v", err)
	}
}

func TestFakeMacvlanVLANAndRoutes(t *testing.T) {
	f := NewFake()
	f.SetLinkInfo(dataplane.LinkInfo{Name: "eth0", MTU: 9000, Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("198.18.0.5/24")}})
	if err := f.EnsureMacvlan(dataplane.MacvlanSpec{Name: "gvc-1", Parent: "eth9"}); !errors.Is(err, dataplane.ErrLinkNotFound) {
		t.Fatalf("missing parent: %v", err)
	}
	if err := f.EnsureMacvlan(dataplane.MacvlanSpec{Name: "gvc-1", Parent: "eth0"}); err != nil {
		t.Fatal(err)
	}
	if err := f.EnsureVLAN(dataplane.VLANSpec{Name: "eth0.30", Parent: "eth0", ID: 4095}); err == nil {
		t.Fatal("vlan id 4095 accepted")
	}
	if err := f.EnsureVLAN(dataplane.VLANSpec{Name: "eth0.30", Parent: "eth0", ID: 30}); err != nil {
		t.Fatal(err)
	}
	if err := f.EnsureVLAN(dataplane.VLANSpec{Name: "eth0.30", Parent: "eth0", ID: 31}); !errors.Is(err, dataplane.ErrIncompatibleLink) {
		t.Fatalf("other id on an existing vlan: %v", err)
	}
	f.SetVLANSupport(false)
	if err := f.EnsureVLAN(dataplane.VLANSpec{Name: "eth0.40", Parent: "eth0", ID: 40}); !errors.Is(err, dataplane.ErrVLANUnsupported) {
		t.Fatalf("without 802.1q: %v", err)
	}
	if err := f.EnsureMacvlan(dataplane.MacvlanSpec{Name: "gvh-1", Parent: "eth0.30", Address: netip.MustParsePrefix("198.18.0.200/32")}); err != nil {
		t.Fatal(err)
	}
	infos, err := f.LinkInfos()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, li := range infos {
		got = append(got, li.Name+":"+li.Kind+":"+li.Parent)
		if li.MTU != 9000 {
			t.Errorf("%s mtu %d, want the parent's 9000", li.Name, li.MTU)
		}
	}
	if want := []string{"eth0:device:", "eth0.30:vlan:eth0", "gvc-1:macvlan:eth0", "gvh-1:macvlan:eth0.30"}; !slices.Equal(got, want) {
		t.Fatalf("LinkInfos %v, want %v", got, want)
	}
	dst := netip.MustParsePrefix("198.18.0.130/32")
	if err := f.SetRoute(dst, "gvh-1", netip.MustParseAddr("198.18.0.200")); err != nil {
		t.Fatal(err)
	}
	routes, _ := f.Routes()
	if !slices.Contains(routes, dataplane.Route{Dst: dst, Dev: "gvh-1", Ours: true}) {
		t.Fatalf("routes %v", routes)
	}
	// Deleting the parent takes the vlan, its macvlan child and the route.
	if err := f.DeleteLink("eth0.30"); err != nil {
		t.Fatal(err)
	}
	if names := f.LinkNames(); !slices.Equal(names, []string{"eth0", "gvc-1"}) {
		t.Fatalf("links after deleting the vlan: %v", names)
	}
	if _, ok := f.RouteSrc(dst, "gvh-1"); ok {
		t.Fatal("route survived its link")
	}
}

func mustMAC(t *testing.T, s string) net.HardwareAddr {
	t.Helper()
	m, err := net.ParseMAC(s)
	if err != nil {
		t.Fatalf("parse mac %q: %v", s, err)
	}
	return m
}

func fdbStrings(es []dataplane.FDBEntry) []string {
	var out []string
	for _, e := range es {
		if e.Master {
			out = append(out, e.MAC.String()+" master")
		} else {
			out = append(out, e.MAC.String()+" dst "+e.VTEP.String())
		}
	}
	slices.Sort(out)
	return out
}

func neighStrings(es []dataplane.NeighEntry) []string {
	var out []string
	for _, e := range es {
		out = append(out, fmt.Sprintf("%s %s permanent=%t", e.IP, e.MAC, e.Permanent))
	}
	slices.Sort(out)
	return out
}
