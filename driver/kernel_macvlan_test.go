package driver

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.etcd.io/bbolt"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"grapevine/driver/dataplane"
	"grapevine/gossip/gossiptest"
	"grapevine/internal/nstest"
	"grapevine/internal/testreq"
)

// kns is a namespace made by a test, with a netlink handle bound to it.
type kns struct {
	ns netns.NsHandle
	nl *netlink.Handle
}

// newKNS creates a named namespace without entering it (the calling thread
// must be locked, as after enterTestNS); it is deleted in t.Cleanup.
func newKNS(t *testing.T) kns {
	t.Helper()
	n := nstest.New(t, "gvd")
	return kns{ns: n.Handle, nl: n.NL}
}

// wire connects name (in a) to a port of bridge sw (in lan) with a veth,
// with an optional address on name.
func lanPort(t *testing.T, lan kns, sw string, a kns, name, addr string) {
	t.Helper()
	port := "p-" + name
	attrs := netlink.NewLinkAttrs()
	attrs.Name = port
	if err := lan.nl.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: name}); err != nil {
		t.Fatalf("add veth %s: %v", port, err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	peer, err := lan.nl.LinkByName(name)
	must(err)
	must(lan.nl.LinkSetNsFd(peer, int(a.ns)))
	p, err := lan.nl.LinkByName(port)
	must(err)
	br, err := lan.nl.LinkByName(sw)
	must(err)
	must(lan.nl.LinkSetMasterByIndex(p, br.Attrs().Index))
	must(lan.nl.LinkSetUp(p))
	l, err := a.nl.LinkByName(name)
	must(err)
	if addr != "" {
		ad, err := netlink.ParseAddr(addr)
		must(err)
		must(a.nl.AddrAdd(l, ad))
	}
	must(a.nl.LinkSetUp(l))
}

// kping sends one echo from inside ns and waits for the reply; "" = success.
func kping(t *testing.T, ns netns.NsHandle, dst string, seq int) string {
	t.Helper()
	var conn *icmp.PacketConn
	var err error
	(&nstest.NS{Name: "of the pinger", Handle: ns}).Do(t, func() { conn, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0") })
	if err != nil {
		t.Fatalf("icmp socket: %v", err)
	}
	defer conn.Close()
	id := os.Getpid() & 0xffff
	b, err := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("grapevine")}}).Marshal(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.WriteTo(b, &net.IPAddr{IP: net.ParseIP(dst)}); err != nil {
		return fmt.Sprintf("send to %s: %v", dst, err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 1500)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			return fmt.Sprintf("no reply from %s: %v", dst, err)
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id && e.Seq == seq && from.String() == dst {
			return ""
		}
	}
}

// kHost is one simulated Docker host of the macvlan test: its namespace, a
// Kernel and a Driver on its own database.
type kHost struct {
	name string
	ns   kns
	k    *dataplane.Kernel
	e    *env
	path string
	// containers: endpoint id → its namespace
	cns map[string]kns
}

func newKHost(t *testing.T, name string, ns kns) *kHost {
	t.Helper()
	h := &kHost{name: name, ns: ns, path: filepath.Join(t.TempDir(), "state.db"), cns: map[string]kns{}}
	var err error
	(&nstest.NS{Name: "of host " + name, Handle: ns.ns}).Do(t, func() {
		h.k, err = dataplane.NewKernel(testLogger(t).WithField("host", name))
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.k.Close)
	h.start(t)
	return h
}

// start opens the database and a Driver, as a plugin start does; with a
// cluster of its own so the node name is h.name (host-<node> aux keys).
func (h *kHost) start(t *testing.T) {
	t.Helper()
	db, err := bbolt.Open(h.path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := gossiptest.NewFakeCluster(h.name)
	d, err := New(Config{
		DB:            db,
		Dataplane:     h.k,
		Underlay:      func() (dataplane.Underlay, error) { return dataplane.Underlay{}, errors.New("no underlay needed") },
		VXLANPort:     testVXLANPort,
		Scope:         "local",
		AddressSpaces: testSpaces,
		Cluster:       c,
		PeerRepair:    -1,
		Log:           testLogger(t).WithField("host", h.name),
	})
	if err != nil {
		t.Fatal(err)
	}
	h.e = &env{t: t, d: d, db: db, cluster: c}
	t.Cleanup(func() { h.stop() })
}

func (h *kHost) stop() {
	if h.e == nil {
		return
	}
	h.e.d.Close()
	_ = h.e.db.Close()
	h.e = nil
}

// run attaches a container: CreateEndpoint, Join, then what Docker does —
// move the link into the container's namespace, name it, address it, up.
func (h *kHost) run(t *testing.T, netID, epID, addr string) {
	t.Helper()
	h.e.mustCreateEndpoint(netID, epID, addr, "")
	jr := h.e.mustJoin(netID, epID)
	c := newKNS(t)
	l, err := h.ns.nl.LinkByName(jr.InterfaceName.SrcName)
	if err != nil {
		t.Fatalf("%s: the link Join returned is not in the host: %v", h.name, err)
	}
	if err := h.ns.nl.LinkSetNsFd(l, int(c.ns)); err != nil {
		t.Fatal(err)
	}
	if l, err = c.nl.LinkByName(jr.InterfaceName.SrcName); err == nil {
		err = c.nl.LinkSetName(l, jr.InterfaceName.DstPrefix+"0")
	}
	if err == nil {
		l, err = c.nl.LinkByName("eth0")
	}
	if err != nil {
		t.Fatal(err)
	}
	ad, err := netlink.ParseAddr(addr)
	if err == nil {
		err = c.nl.AddrAdd(l, ad)
	}
	if err == nil {
		err = c.nl.LinkSetUp(l)
	}
	if err != nil {
		t.Fatal(err)
	}
	h.cns[epID] = c
}

// stopContainer is the teardown: Leave, the container's namespace goes (its
// links with it, as when a container exits), DeleteEndpoint.
func (h *kHost) stopContainer(t *testing.T, netID, epID string) {
	t.Helper()
	if err := h.e.d.Leave(&network.LeaveRequest{NetworkID: netID, EndpointID: epID}); err != nil {
		t.Fatal(err)
	}
	if c, ok := h.cns[epID]; ok {
		if l, err := c.nl.LinkByName("eth0"); err == nil {
			_ = c.nl.LinkDel(l)
		}
	}
	if err := h.e.d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netID, EndpointID: epID}); err != nil {
		t.Fatal(err)
	}
}

// grapevineLinksIn lists gv* and VLAN (dotted) links of a namespace.
func grapevineLinksIn(t *testing.T, h *netlink.Handle) []string {
	t.Helper()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range links {
		if n := l.Attrs().Name; dataplane.IsManagedName(n) || strings.Contains(n, ".") {
			out = append(out, n)
		}
	}
	return out
}

// TestKernelMacvlanTwoHosts runs the driver against real kernels: two hosts
// whose NICs are named differently (eth0, ens5) and a plain LAN machine on one
// switch. One create request per network (parent by CIDR) fits both hosts;
// containers of two subnets on the untagged parent reach each other across
// the hosts and the LAN machine reaches them; host_access gives a host its
// own containers (and not without it); a restarted driver repairs its shim;
// VLAN parents run for real where 802.1q exists and are skipped with the
// reason where it does not; removal leaves no link behind.
func TestKernelMacvlanTwoHosts(t *testing.T) {
	enterTestNS(t)
	lan := newKNS(t)
	if err := lan.nl.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "sw", MTU: 1500}}); err != nil {
		t.Fatal(err)
	}
	sw, _ := lan.nl.LinkByName("sw")
	if err := lan.nl.LinkSetUp(sw); err != nil {
		t.Fatal(err)
	}
	ns1, ns2, machine := newKNS(t), newKNS(t), newKNS(t)
	lanPort(t, lan, "sw", ns1, "eth0", "198.18.0.5/24")
	lanPort(t, lan, "sw", ns2, "ens5", "198.18.0.6/24")
	lanPort(t, lan, "sw", machine, "nic0", "198.18.0.9/24")
	if err := machine.nl.AddrAdd(mustLinkNL(t, machine.nl, "nic0"), mustAddrNL(t, "198.19.50.9/24")); err != nil {
		t.Fatal(err)
	}
	h1, h2 := newKHost(t, "h1", ns1), newKHost(t, "h2", ns2)

	a, b := id("kA"), id("kB")
	reqA := lanReq(a, lanSubnet, map[string]string{"parent": "198.18.0.0/24", "host_access": "true"})
	reqA = withAux(withAux(reqA, "host-h1", "198.18.0.201"), "host-h2", "198.18.0.202")
	reqB := netReq{id: b, subnet: "198.19.50.0/24", gateway: "198.19.50.254/24", opts: map[string]string{"mode": "macvlan", "parent": "198.18.0.0/24"}}
	h1.e.mustCreateNetwork(reqA)
	noHA := reqA
	noHA.opts = map[string]string{"mode": "macvlan", "parent": "198.18.0.0/24", "host_access": "false"}
	h2.e.mustCreateNetwork(noHA) // host 2 without host_access
	h1.e.mustCreateNetwork(reqB)
	h2.e.mustCreateNetwork(reqB)

	h1.run(t, a, id("c1a"), "198.18.0.131/24")
	h2.run(t, a, id("c2a"), "198.18.0.132/24")
	h1.run(t, b, id("c1b"), "198.19.50.11/24")
	h2.run(t, b, id("c2b"), "198.19.50.12/24")

	seq := 0
	reach := func(ns netns.NsHandle, dst string) func() string {
		return func() string { seq++; return kping(t, ns, dst, seq) }
	}
	blocked := func(what string, ns netns.NsHandle, dst string) {
		t.Helper()
		seq++
		if msg := kping(t, ns, dst, seq); msg == "" {
			t.Fatalf("%s: %s answers, want no answer", what, dst)
		}
	}
	c1a, c2a, c1b, c2b := h1.cns[id("c1a")].ns, h2.cns[id("c2a")].ns, h1.cns[id("c1b")].ns, h2.cns[id("c2b")].ns
	steps := []struct {
		what string
		from netns.NsHandle
		to   string
	}{
		{"network A, host 1 → host 2", c1a, "198.18.0.132"},
		{"network A, host 2 → host 1", c2a, "198.18.0.131"},
		{"network B, host 1 → host 2", c1b, "198.19.50.12"},
		{"network B, host 2 → host 1", c2b, "198.19.50.11"},
		{"LAN machine → container on host 1", machine.ns, "198.18.0.131"},
		{"container on host 2 → LAN machine", c2a, "198.18.0.9"},
		{"LAN machine → network B container", machine.ns, "198.19.50.12"},
		{"host 2 (a LAN machine for host 1's containers) → container on host 1", ns2.ns, "198.18.0.131"},
		{"host 1 → its own container (host_access)", ns1.ns, "198.18.0.131"},
		{"own container → host 1's shim address", c1a, "198.18.0.201"},
		{"host 2's container → host 1's shim address", c2a, "198.18.0.201"},
	}
	for _, s := range steps {
		t.Run(s.what, func(t *testing.T) { eventually(t, 5*time.Second, reach(s.from, s.to)) })
	}
	blocked("host 2 → its own container without host_access", ns2.ns, "198.18.0.132")

	// A restarted driver after its shim went away (a reboot loses links):
	// Reconcile brings the shim and the route back.
	shim := shimName(a)
	if l, err := ns1.nl.LinkByName(shim); err != nil {
		t.Fatalf("shim %s missing: %v", shim, err)
	} else if err := ns1.nl.LinkDel(l); err != nil {
		t.Fatal(err)
	}
	blocked("host 1 → own container with the shim gone", ns1.ns, "198.18.0.131")
	h1.stop()
	h1.start(t)
	if err := h1.e.d.Reconcile(); err != nil {
		t.Fatalf("Reconcile after restart: %v", err)
	}
	eventually(t, 5*time.Second, reach(ns1.ns, "198.18.0.131"))

	t.Run("vlan", func(t *testing.T) { kernelVLANCase(t, h1, h2, reach) })

	// Removal leaves nothing.
	h1.stopContainer(t, a, id("c1a"))
	h1.stopContainer(t, b, id("c1b"))
	h2.stopContainer(t, a, id("c2a"))
	h2.stopContainer(t, b, id("c2b"))
	for _, h := range []*kHost{h1, h2} {
		for _, n := range []string{a, b} {
			h.e.deleteNet(n)
		}
		if got := grapevineLinksIn(t, h.ns.nl); len(got) != 0 {
			t.Errorf("%s: links left after removal: %v", h.name, got)
		}
		if err := h.e.d.Reconcile(); err != nil {
			t.Errorf("%s: Reconcile after removal: %v", h.name, err)
		}
	}
}

// kernelVLANCase: networks on VLAN 30 and 40 of each host's NIC. An id out
// of range is refused on every kernel first. On a kernel without 802.1q the
// driver's refusal names the reason, leaves nothing, and the rest of the case
// is skipped with that reason (a failure with GV_REQUIRE=vlan).
func kernelVLANCase(t *testing.T, h1, h2 *kHost, reach func(netns.NsHandle, string) func() string) {
	v30, v40 := id("kV30"), id("kV40")
	req := func(nic string, vlan int, netID string) netReq {
		sub := fmt.Sprintf("198.19.%d.0/24", vlan)
		return netReq{id: netID, subnet: sub, gateway: fmt.Sprintf("198.19.%d.254/24", vlan),
			opts: map[string]string{"mode": "macvlan", "parent": fmt.Sprintf("%s.%d", nic, vlan)}}
	}
	before := grapevineLinksIn(t, h1.ns.nl)
	refusedLeavesNothing := func(what string) {
		t.Helper()
		if got := grapevineLinksIn(t, h1.ns.nl); !slices.Equal(got, before) {
			t.Fatalf("refused %s left links: %v, before %v", what, got, before)
		}
		if len(h1.e.d.vlans) != 0 || h1.e.d.networks[id("kV5k")] != nil {
			t.Fatalf("refused %s left records: vlans %v", what, h1.e.d.vlans)
		}
	}
	r5k := netReq{id: id("kV5k"), subnet: "198.19.51.0/24", gateway: "198.19.51.254/24",
		opts: map[string]string{"mode": "macvlan", "parent": "eth0.5000"}}
	err := h1.e.d.CreateNetwork(h1.e.createReq(r5k))
	if want := "-o parent=eth0.5000: VLAN id 5000 is out of range: use 1 to 4094"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("CreateNetwork on eth0.5000: %v, want an error containing %q", err, want)
	}
	refusedLeavesNothing("vlan id 5000")

	err = h1.e.d.CreateNetwork(h1.e.createReq(req("eth0", 30, v30)))
	if errors.Is(err, dataplane.ErrVLANUnsupported) || (err != nil && strings.Contains(err.Error(), dataplane.ErrVLANUnsupported.Error())) {
		refusedLeavesNothing("vlan network")
		testreq.Missing(t, testreq.VLAN, err.Error())
	}
	if err != nil {
		t.Fatalf("CreateNetwork on eth0.30: %v", err)
	}
	h2.e.mustCreateNetwork(req("ens5", 30, v30))
	h1.e.mustCreateNetwork(req("eth0", 40, v40))
	h2.e.mustCreateNetwork(req("ens5", 40, v40))
	h1.run(t, v30, id("v1"), "198.19.30.11/24")
	h2.run(t, v30, id("v2"), "198.19.30.12/24")
	h1.run(t, v40, id("v3"), "198.19.40.11/24")
	h2.run(t, v40, id("v4"), "198.19.40.12/24")
	eventually(t, 5*time.Second, reach(h1.cns[id("v1")].ns, "198.19.30.12"))
	eventually(t, 5*time.Second, reach(h2.cns[id("v4")].ns, "198.19.40.11"))
	for _, c := range []struct {
		h       *kHost
		net, ep string
	}{{h1, v30, id("v1")}, {h2, v30, id("v2")}, {h1, v40, id("v3")}, {h2, v40, id("v4")}} {
		c.h.stopContainer(t, c.net, c.ep)
	}
	for _, h := range []*kHost{h1, h2} {
		h.e.deleteNet(v30)
		h.e.deleteNet(v40)
		for _, l := range grapevineLinksIn(t, h.ns.nl) {
			if strings.Contains(l, ".") {
				t.Errorf("%s: vlan link %s left after its networks", h.name, l)
			}
		}
	}
}

func mustLinkNL(t *testing.T, h *netlink.Handle, name string) netlink.Link {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func mustAddrNL(t *testing.T, s string) *netlink.Addr {
	t.Helper()
	a, err := netlink.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// eventually polls cond until it returns "" or the deadline passes.
func eventually(t *testing.T, d time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not met within %s: %s", d, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestKernelMacvlanInternal: through the driver, a network without a parent
// lets its containers reach each other and gives them no gateway.
func TestKernelMacvlanInternal(t *testing.T) {
	enterTestNS(t)
	h := newKHost(t, "h1", newKNS(t))
	n := id("kInt")
	h.e.mustCreateNetwork(netReq{id: n, subnet: "198.19.41.0/24", opts: map[string]string{"mode": "macvlan"}})
	h.run(t, n, id("ki1"), "198.19.41.2/24")
	h.run(t, n, id("ki2"), "198.19.41.3/24")
	seq := 0
	eventually(t, 5*time.Second, func() string { seq++; return kping(t, h.cns[id("ki1")].ns, "198.19.41.3", seq) })
	eventually(t, 5*time.Second, func() string { seq++; return kping(t, h.cns[id("ki2")].ns, "198.19.41.2", seq) })
	h.stopContainer(t, n, id("ki1"))
	h.stopContainer(t, n, id("ki2"))
	h.e.deleteNet(n)
	if got := grapevineLinksIn(t, h.ns.nl); len(got) != 0 {
		t.Fatalf("links left: %v", got)
	}
}
