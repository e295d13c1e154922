package driver

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/docker/go-plugins-helpers/network"

	"grapevine/driver/dataplane"
	"grapevine/driver/dataplane/dataplanetest"
)

func TestCreateNetworkValidation(t *testing.T) {
	cases := []struct {
		name  string
		setup func(e *env)
		req   func(e *env) *network.CreateNetworkRequest
		want  string
	}{
		{
			name: "unknown key",
			req: func(e *env) *network.CreateNetworkRequest {
				return e.createReq(netReq{id: id("n"), subnet: "198.19.1.0/24", opts: map[string]string{"colour": "red"}})
			},
			want: "unknown option -o colour: grapevine allows mode, vni, com.docker.network.driver.mtu, parent, host_access",
		},
		{
			name: "vni zero",
			req: func(e *env) *network.CreateNetworkRequest {
				return e.createReq(netReq{id: id("n"), subnet: "198.19.1.0/24", opts: map[string]string{"vni": "0"}})
			},
			want: `-o vni="0" is not allowed: use a number from 1 to 16777215`,
		},
		{
			name: "vni too big",
			req: func(e *env) *network.CreateNetworkRequest {
				return e.createReq(netReq{id: id("n"), subnet: "198.19.1.0/24", opts: map[string]string{"vni": "16777216"}})
			},
			want: "from 1 to 16777215",
		},
		{
			name: "vni not a number",
			req: func(e *env) *network.CreateNetworkRequest {
				return e.createReq(netReq{id: id("n"), subnet: "198.19.1.0/24", opts: map[string]string{"vni": "ten"}})
			},
			want: `-o vni="ten"`,
		},
		{
			name: "mtu above underlay minus 50",
			req: func(e *env) *network.CreateNetworkRequest {
				return e.createReq(netReq{id: id("n"), subnet: "198.19.1.0/24", opts: map[string]string{optMTU: "1451"}})
			},
			want: "com.docker.network.driver.mtu=\"1451\" is not allowed: use a number from 68 to 1450",
		},
		{
			name: "mtu too small",
			req: func(e *env) *network.CreateNetworkRequest {
				return e.createReq(netReq{id: id("n"), subnet: "198.19.1.0/24", opts: map[string]string{optMTU: "67"}})
			},
			want: "from 68 to 1450",
		},
		{
			name: "ipv6 flag",
			req: func(e *env) *network.CreateNetworkRequest {
				r := e.createReq(netReq{id: id("n"), subnet: "198.19.1.0/24"})
				r.Options[optEnableIPv6] = true
				return r
			},
			want: "--ipv6 is not supported",
		},
		{
			name: "ipv6 data",
			req: func(e *env) *network.CreateNetworkRequest {
				r := e.createReq(netReq{id: id("n"), subnet: "198.19.1.0/24"})
				r.IPv6Data = []*network.IPAMData{{AddressSpace: "grapevine-local", Pool: "fd00::/64"}}
				return r
			},
			want: "--ipv6 is not supported",
		},
		{
			name: "foreign address space",
			req: func(e *env) *network.CreateNetworkRequest {
				return e.createReq(netReq{id: id("n"), subnet: "198.19.1.0/24", space: "LocalDefault"})
			},
			want: "grapevine networks need grapevine's IPAM (address space \"LocalDefault\" is not one of grapevine-local, grapevine-global): add --ipam-driver grapevine:test",
		},
		{
			name: "route overlap",
			setup: func(e *env) {
				e.fake.SetRoutes(dataplane.Route{Dst: netip.MustParsePrefix("198.19.0.0/16"), Dev: "eth1"})
			},
			req: func(e *env) *network.CreateNetworkRequest {
				return e.createReq(netReq{id: id("n"), subnet: "198.19.1.0/24"})
			},
			want: "subnet 198.19.1.0/24 overlaps the host route 198.19.0.0/16 dev eth1",
		},
		{
			name: "vni clash with grapevine network",
			setup: func(e *env) {
				e.mustCreateNetwork(netReq{id: id("a"), subnet: "198.19.2.0/24", opts: map[string]string{"vni": "100"}})
			},
			req: func(e *env) *network.CreateNetworkRequest {
				return e.createReq(netReq{id: id("n"), subnet: "198.19.1.0/24", opts: map[string]string{"vni": "100"}})
			},
			want: "vni 100 is already used by grapevine network",
		},
		{
			name:  "vni clash with foreign vxlan",
			setup: func(e *env) { e.fake.SetForeignVNI(4789, 4096) },
			req: func(e *env) *network.CreateNetworkRequest {
				return e.createReq(netReq{id: id("n"), subnet: "198.19.1.0/24", opts: map[string]string{"vni": "4096"}})
			},
			want: "vni 4096 is already used by another VXLAN device on UDP port 4789 on this host (Docker's overlay allocates 4096 and up); pick another -o vni",
		},
		{
			name: "subnet overlaps grapevine network",
			setup: func(e *env) {
				e.mustCreateNetwork(netReq{id: id("a"), subnet: "198.19.0.0/16"})
			},
			req: func(e *env) *network.CreateNetworkRequest {
				return e.createReq(netReq{id: id("n"), subnet: "198.19.1.0/24"})
			},
			want: "overlaps grapevine network",
		},
		{
			name: "vni with macvlan",
			req: func(e *env) *network.CreateNetworkRequest {
				return e.createReq(netReq{id: id("n"), subnet: "198.19.1.0/24", opts: map[string]string{"mode": "macvlan", "vni": "42"}})
			},
			want: "-o vni is only allowed with -o mode=vxlan",
		},
		{
			name: "mode unknown",
			req: func(e *env) *network.CreateNetworkRequest {
				return e.createReq(netReq{id: id("n"), subnet: "198.19.1.0/24", opts: map[string]string{"mode": "ipvlan"}})
			},
			want: `-o mode="ipvlan" is not allowed: use vxlan (the default) or macvlan`,
		},
		{
			name: "parent without macvlan",
			req: func(e *env) *network.CreateNetworkRequest {
				return e.createReq(netReq{id: id("n"), subnet: "198.19.1.0/24", opts: map[string]string{"parent": "eth0"}})
			},
			want: "-o parent is only allowed with -o mode=macvlan",
		},
		{
			name: "host_access without macvlan",
			req: func(e *env) *network.CreateNetworkRequest {
				return e.createReq(netReq{id: id("n"), subnet: "198.19.1.0/24", opts: map[string]string{"host_access": "true"}})
			},
			want: "-o host_access is only allowed with -o mode=macvlan",
		},
		{
			name: "generic value not a string",
			req: func(e *env) *network.CreateNetworkRequest {
				r := e.createReq(netReq{id: id("n"), subnet: "198.19.1.0/24"})
				r.Options[optGeneric] = map[string]any{"vni": 7.0}
				return r
			},
			want: "option -o vni has a float64 value: options must be strings",
		},
		{
			name: "generic not an object",
			req: func(e *env) *network.CreateNetworkRequest {
				r := e.createReq(netReq{id: id("n"), subnet: "198.19.1.0/24"})
				r.Options[optGeneric] = []any{"x"}
				return r
			},
			want: "expected an object of string options",
		},
		{
			name: "internal not a boolean",
			req: func(e *env) *network.CreateNetworkRequest {
				r := e.createReq(netReq{id: id("n"), subnet: "198.19.1.0/24"})
				r.Options[optInternal] = 3.0
				return r
			},
			want: "option com.docker.network.internal is a float64, expected a boolean",
		},
		{
			name: "no ipv4 data",
			req: func(e *env) *network.CreateNetworkRequest {
				r := e.createReq(netReq{id: id("n"), subnet: "198.19.1.0/24"})
				r.IPv4Data = nil
				return r
			},
			want: "exactly one IPv4 subnet, got 0",
		},
		{
			name: "nil ipv4 data",
			req: func(e *env) *network.CreateNetworkRequest {
				r := e.createReq(netReq{id: id("n"), subnet: "198.19.1.0/24"})
				r.IPv4Data = []*network.IPAMData{nil}
				return r
			},
			want: "exactly one IPv4 subnet",
		},
		{
			name: "gateway outside subnet",
			req: func(e *env) *network.CreateNetworkRequest {
				return e.createReq(netReq{id: id("n"), subnet: "198.19.1.0/24", gateway: "198.19.2.1/24"})
			},
			want: "gateway 198.19.2.1 is not a host address of subnet 198.19.1.0/24",
		},
		{
			name: "pool not ipv4",
			req: func(e *env) *network.CreateNetworkRequest {
				r := e.createReq(netReq{id: id("n"), subnet: "198.19.1.0/24"})
				r.IPv4Data[0].Pool = "banana"
				return r
			},
			want: `IPv4 pool "banana" is not an IPv4 subnet`,
		},
		{
			name: "bad network id",
			req: func(e *env) *network.CreateNetworkRequest {
				return e.createReq(netReq{id: "a/b", subnet: "198.19.1.0/24"})
			},
			want: `NetworkID "a/b" contains '/'`,
		},
		{
			name:  "no underlay",
			setup: func(e *env) { e.fake.SetUnderlay(nil) },
			req: func(e *env) *network.CreateNetworkRequest {
				return e.createReq(netReq{id: id("n"), subnet: "198.19.1.0/24"})
			},
			want: "the underlay (plugin setting ADVERTISE) is not usable",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			if c.setup != nil {
				c.setup(e)
			}
			before := e.fake.LinkNames()
			nBefore := len(e.d.Status())
			err := e.d.CreateNetwork(c.req(e))
			wantErr(t, err, c.want)
			if got := e.fake.LinkNames(); len(got) != len(before) {
				t.Fatalf("links after refused create: %v, before: %v", got, before)
			}
			if n := len(e.d.Status()); n != nBefore {
				t.Fatalf("%d networks after refused create, want %d", n, nBefore)
			}
		})
	}
}

func TestCreateNetworkKernelObjects(t *testing.T) {
	e := newEnv(t)
	nid := id("net")
	e.mustCreateNetwork(netReq{id: nid, subnet: "198.19.1.0/24", opts: map[string]string{"vni": "42", optMTU: "1400"}})
	br, ok := e.fake.Link(bridgeName(nid))
	if !ok || br.Kind != dataplanetest.KindBridge {
		t.Fatalf("bridge %s missing", bridgeName(nid))
	}
	if br.Bridge.Address != netip.MustParsePrefix("198.19.1.1/24") || br.Bridge.MTU != 1400 {
		t.Fatalf("bridge spec %+v", br.Bridge)
	}
	if mac := br.Bridge.MAC; len(mac) != 6 || mac[0]&2 == 0 || mac[0]&1 != 0 || mac.String() != bridgeMAC(nid).String() {
		t.Fatalf("bridge MAC %v is not the stable locally administered one", mac)
	}
	vx, ok := e.fake.Link(vxlanName(nid))
	if !ok {
		t.Fatal("vxlan missing")
	}
	want := dataplane.VXLANSpec{Name: vxlanName(nid), VNI: 42, Port: 4789, Local: netip.MustParseAddr("198.18.0.1"),
		Underlay: "eth0", MTU: 1400, Master: bridgeName(nid)}
	if vx.VXLAN != want {
		t.Fatalf("vxlan spec %+v, want %+v", vx.VXLAN, want)
	}
	if len(bridgeName(nid)) > 15 || len(vxlanName(nid)) > 15 {
		t.Fatal("link names longer than IFNAMSIZ")
	}
	fw := e.fake.Firewall()
	if len(fw.Networks) != 1 || !fw.Networks[0].Masquerade || fw.Networks[0].Internal ||
		fw.Networks[0].Subnet != netip.MustParsePrefix("198.19.1.0/24") || fw.Networks[0].Bridge != bridgeName(nid) {
		t.Fatalf("firewall %+v", fw)
	}
	st := e.d.Status()
	if len(st) != 1 || st[0].VNI != 42 || st[0].MTU != 1400 || st[0].Gateway != "198.19.1.1" || st[0].Bridge != bridgeName(nid) {
		t.Fatalf("status %+v", st)
	}

	// internal network: no masquerade; default MTU from the underlay.
	e.fake.SetUnderlay(&dataplane.Underlay{Addr: netip.MustParseAddr("198.18.0.1"), Link: "eth0", MTU: 9000})
	iid := id("internal")
	e.mustCreateNetwork(netReq{id: iid, subnet: "100.64.0.0/24", internal: true})
	fw = e.fake.Firewall()
	if len(fw.Networks) != 2 {
		t.Fatalf("firewall networks %+v", fw.Networks)
	}
	for _, n := range fw.Networks {
		if n.NetworkID == iid && (!n.Internal || n.Masquerade) {
			t.Fatalf("internal network rules %+v", n)
		}
	}
	if l, _ := e.fake.Link(vxlanName(iid)); l.VXLAN.MTU != 8950 {
		t.Fatalf("default MTU %d, want 8950", l.VXLAN.MTU)
	}
}

func TestAutoVNI(t *testing.T) {
	h1, h2 := newEnv(t), newEnv(t)
	// Different network ids (local scope), same subnet: the same VNI everywhere.
	h1.mustCreateNetwork(netReq{id: id("h1"), subnet: "198.19.7.0/24"})
	h2.mustCreateNetwork(netReq{id: id("h2"), subnet: "198.19.7.0/24"})
	v1, v2 := h1.d.Status()[0].VNI, h2.d.Status()[0].VNI
	if v1 != v2 {
		t.Fatalf("hosts chose vni %d and %d for the same subnet", v1, v2)
	}
	if v1 < 1<<23 || v1 >= 1<<24 {
		t.Fatalf("automatic vni %d outside [2^23, 2^24)", v1)
	}
	// Another subnet gets another VNI.
	h1.mustCreateNetwork(netReq{id: id("h1b"), subnet: "198.19.8.0/24"})
	for _, s := range h1.d.Status() {
		if s.Subnet == "198.19.8.0/24" && s.VNI == v1 {
			t.Fatal("two subnets hashed to the same vni")
		}
	}

	// A foreign device holding the hashed VNI: probe forward.
	h3 := newEnv(t)
	want := autoVNI(netip.MustParsePrefix("198.19.7.0/24"))
	h3.fake.SetForeignVNI(4789, want)
	h3.mustCreateNetwork(netReq{id: id("h3"), subnet: "198.19.7.0/24"})
	if got := h3.d.Status()[0].VNI; got != nextAutoVNI(want) {
		t.Fatalf("vni %d, want the next one %d", got, nextAutoVNI(want))
	}
	if nextAutoVNI(1<<24-1) != 1<<23 {
		t.Fatal("automatic vni probing does not wrap inside its range")
	}
}

func TestCreateNetworkRollback(t *testing.T) {
	boom := errors.New("boom")
	for _, method := range []string{"EnsureVXLAN", "SyncFirewall", "EnsureBridge"} {
		t.Run(method, func(t *testing.T) {
			e := newEnv(t)
			e.fake.SetFail(method, boom)
			err := e.d.CreateNetwork(e.createReq(netReq{id: id("n"), subnet: "198.19.1.0/24"}))
			if !errors.Is(err, boom) {
				t.Fatalf("error %v does not wrap the dataplane's", err)
			}
			if links := e.fake.LinkNames(); len(links) != 0 {
				t.Fatalf("links left after rollback: %v", links)
			}
			if len(e.d.Status()) != 0 {
				t.Fatal("network kept in memory")
			}
			e.fake.SetFail(method, nil)
			e.restart(e.fake)
			if len(e.d.Status()) != 0 {
				t.Fatal("network persisted despite the failure")
			}
			// and it can be created afterwards
			e.mustCreateNetwork(netReq{id: id("n"), subnet: "198.19.1.0/24"})
		})
	}
}

func TestCreateNetworkRepeat(t *testing.T) {
	e := newEnv(t)
	nid := id("n")
	e.mustCreateNetwork(netReq{id: nid, subnet: "198.19.1.0/24"})
	_ = e.fake.DeleteLink(vxlanName(nid))
	e.mustCreateNetwork(netReq{id: nid, subnet: "198.19.1.0/24"}) // repairs
	if _, ok := e.fake.Link(vxlanName(nid)); !ok {
		t.Fatal("repeat CreateNetwork did not repair the vxlan device")
	}
	err := e.d.CreateNetwork(e.createReq(netReq{id: nid, subnet: "198.19.2.0/24"}))
	wantErr(t, err, "already exists on this host with subnet 198.19.1.0/24")
	if len(e.d.Status()) != 1 {
		t.Fatal("repeat created a second network")
	}
}
