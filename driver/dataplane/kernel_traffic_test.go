package dataplane

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// overlayHost is one simulated host of the traffic test.
type overlayHost struct {
	k        *Kernel
	nl       *netlink.Handle // read/setup handle in the host namespace
	vtep     netip.Addr
	underlay string
	cNS      netns.NsHandle // the "container" namespace
	cIP      netip.Addr
	cMAC     net.HardwareAddr
}

// ping sends one ICMP echo from inside ns to dst and waits up to timeout for
// the reply. It returns "" on success, else why it failed.
func ping(t *testing.T, ns netns.NsHandle, dst netip.Addr, seq int, timeout time.Duration) string {
	t.Helper()
	var conn *icmp.PacketConn
	var err error
	inNS(t, ns, func() { conn, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0") })
	if err != nil {
		t.Fatalf("open icmp socket: %v", err)
	}
	defer conn.Close()
	id := os.Getpid() & 0xffff
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("grapevine")}}
	b, err := msg.Marshal(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.WriteTo(b, &net.IPAddr{IP: net.IP(dst.AsSlice())}); err != nil {
		return fmt.Sprintf("send echo to %s: %v", dst, err)
	}
	deadline := time.Now().Add(timeout)
	if err := conn.SetReadDeadline(deadline); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			return fmt.Sprintf("no echo reply from %s: %v", dst, err)
		}
		rm, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || rm.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		if e, ok := rm.Body.(*icmp.Echo); ok && e.ID == id && e.Seq == seq && from.String() == dst.String() {
			return ""
		}
	}
}

// TestOverlayTraffic programs two simulated hosts (namespaces joined by a veth
// "underlay") only through Kernel, puts a "container" behind each, and checks
// that they reach each other across the VXLAN and stop when the FDB entry goes.
//
// Isolated, each bridge lives in a namespace of its own: the same traffic
// must flow, the bridged path must not depend on the host's FORWARD rules,
// and deleting the bridge must remove its namespace, pin and uplink.
func TestOverlayTraffic(t *testing.T) {
	for _, isolated := range []bool{false, true} {
		t.Run(fmt.Sprintf("isolated=%t", isolated), func(t *testing.T) { overlayTraffic(t, isolated) })
	}
}

// isolate makes k keep bridges in namespaces pinned in two temporary
// directories (as the plugin pins in its propagated mount and its state
// directory), unpinned again in t.Cleanup. It returns the directories.
func isolate(t *testing.T, k *Kernel) []string {
	t.Helper()
	dirs := []string{t.TempDir(), t.TempDir()}
	if err := k.IsolateNetworks(dirs...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, dir := range dirs {
			pins, _ := os.ReadDir(dir)
			for _, p := range pins {
				if err := unpin(dir + "/" + p.Name()); err != nil {
					t.Errorf("unpin %s: %v", p.Name(), err)
				}
			}
		}
	})
	return dirs
}

func overlayTraffic(t *testing.T, isolated bool) {
	tn1, k1 := newKernelNS(t)
	ns2, nl2, k2 := secondKernel(t)
	var pins []string
	if isolated {
		pins = isolate(t, k1)
		isolate(t, k2)
	}

	// Underlay: u1 (host 1) <-> u2 (host 2).
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "u1"
	if err := tn1.nl.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "u2"}); err != nil {
		t.Fatal(err)
	}
	if err := tn1.nl.LinkSetNsFd(tn1.link("u2"), int(ns2)); err != nil {
		t.Fatal(err)
	}
	hosts := []*overlayHost{
		{k: k1, nl: tn1.nl, vtep: mustAddr("198.18.0.1"), underlay: "u1", cIP: mustAddr("198.19.0.11"), cMAC: mustMAC(t, "02:42:c6:13:00:0b")},
		{k: k2, nl: nl2, vtep: mustAddr("198.18.0.2"), underlay: "u2", cIP: mustAddr("198.19.0.12"), cMAC: mustMAC(t, "02:42:c6:13:00:0c")},
	}
	for i, h := range hosts {
		u, err := h.nl.LinkByName(h.underlay)
		if err != nil {
			t.Fatal(err)
		}
		addAddr(t, h.nl, u, h.vtep.String()+"/24")
		if err := h.nl.LinkSetUp(u); err != nil {
			t.Fatal(err)
		}

		// What the driver does for a network and a local endpoint.
		if err := h.k.EnsureBridge(BridgeSpec{Name: "gvb-t", MTU: 1450, MAC: net.HardwareAddr{2, 0x47, 0, 0, 0, byte(i + 1)}, Address: mustPrefix("198.19.0.1/24")}); err != nil {
			t.Fatalf("host %d: %v", i+1, err)
		}
		vx := VXLANSpec{Name: "gvx-t", VNI: 42, Port: 4789, Local: h.vtep, Underlay: h.underlay, MTU: 1450, Master: "gvb-t"}
		if err := h.k.EnsureVXLAN(vx); err != nil {
			t.Fatalf("host %d: %v", i+1, err)
		}
		veth := VethSpec{HostName: "gvh-t", ContainerName: "gvc-t", MTU: 1450, MAC: h.cMAC, Master: "gvb-t"}
		if err := h.k.EnsureVeth(veth); err != nil {
			t.Fatalf("host %d: %v", i+1, err)
		}

		// What Docker does: move the container end into the container and
		// configure it there.
		var cnl *netlink.Handle
		_, h.cNS, cnl = otherNS(t)
		cEnd, err := h.nl.LinkByName("gvc-t")
		if err != nil {
			t.Fatal(err)
		}
		if err := h.nl.LinkSetNsFd(cEnd, int(h.cNS)); err != nil {
			t.Fatal(err)
		}
		if cEnd, err = cnl.LinkByName("gvc-t"); err != nil {
			t.Fatal(err)
		}
		addAddr(t, cnl, cEnd, h.cIP.String()+"/24")
		if err := cnl.LinkSetUp(cEnd); err != nil {
			t.Fatal(err)
		}
		if cEnd.Attrs().MTU != 1450 {
			t.Errorf("host %d: container end mtu %d after the move, want 1450", i+1, cEnd.Attrs().MTU)
		}
		// The reconciler repeats Ensure after the move: only the host end is touched.
		if err := h.k.EnsureVeth(veth); err != nil {
			t.Fatalf("host %d: EnsureVeth after the move: %v", i+1, err)
		}
	}

	// What gossip does: each host learns the other's endpoint.
	for i, h := range hosts {
		peer := hosts[1-i]
		if err := h.k.SetFDB("gvx-t", peer.cMAC, peer.vtep); err != nil {
			t.Fatal(err)
		}
		if err := h.k.SetNeigh("gvx-t", peer.cIP, peer.cMAC); err != nil {
			t.Fatal(err)
		}
	}

	seq := 0
	pingOK := func(from, to *overlayHost) func() string {
		return func() string { seq++; return ping(t, from.cNS, to.cIP, seq, 300*time.Millisecond) }
	}
	eventually(t, 5*time.Second, pingOK(hosts[0], hosts[1]))
	eventually(t, 5*time.Second, pingOK(hosts[1], hosts[0]))

	if isolated {
		isolatedChecks(t, hosts, pins, pingOK)
		return
	}

	// Docker's FORWARD policy is DROP and br_netfilter (on in every namespace
	// here) sends bridged frames through FORWARD: grapevine's rules must keep
	// the bridged overlay path open.
	run(t, "iptables", "-P", "FORWARD", "DROP")
	fw := Firewall{Networks: []NetworkRules{{NetworkID: "overlaytest", Bridge: "gvb-t", Subnet: mustPrefix("198.19.0.0/24"), Masquerade: true}}}
	if err := k1.SyncFirewall(fw); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, pingOK(hosts[0], hosts[1]))
	eventually(t, 5*time.Second, pingOK(hosts[1], hosts[0]))
	// Control: without grapevine's rules the same policy blocks the path.
	if err := k1.RemoveFirewall(); err != nil {
		t.Fatal(err)
	}
	seq++
	if msg := ping(t, hosts[0].cNS, hosts[1].cIP, seq, 300*time.Millisecond); msg == "" {
		t.Fatalf("ping works with FORWARD policy DROP and no grapevine rules; the firewall check above proves nothing")
	}
	if err := k1.SyncFirewall(fw); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, pingOK(hosts[0], hosts[1]))

	// Without the FDB entry host 1 has nowhere to send the frames.
	if err := k1.DelFDB("gvx-t", hosts[1].cMAC); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		seq++
		if msg := ping(t, hosts[0].cNS, hosts[1].cIP, seq, 300*time.Millisecond); msg == "" {
			t.Fatalf("ping across the overlay still works after DelFDB")
		}
	}

	// And with it back, traffic resumes.
	if err := k1.SetFDB("gvx-t", hosts[1].cMAC, hosts[1].vtep); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, pingOK(hosts[0], hosts[1]))
}

// isolatedChecks: the bridge is not in the host namespace, its uplink holds
// the gateway there, the overlay path works with the host's FORWARD policy
// DROP and no rules, and deleting the bridge removes everything it had.
func isolatedChecks(t *testing.T, hosts []*overlayHost, pins []string, pingOK func(from, to *overlayHost) func() string) {
	h1 := hosts[0]
	if _, err := h1.nl.LinkByName("gvb-t"); err == nil {
		t.Fatalf("bridge gvb-t is in the host namespace")
	}
	up, err := h1.nl.LinkByName("gvu-t")
	if err != nil {
		t.Fatalf("uplink gvu-t not in the host namespace: %v", err)
	}
	addrs, err := h1.nl.AddrList(up, netlink.FAMILY_V4)
	if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != "198.19.0.1/24" {
		t.Fatalf("uplink addresses %v (%v), want the gateway 198.19.0.1/24", addrs, err)
	}
	if got := up.Attrs().HardwareAddr.String(); got != "02:47:00:00:00:01" {
		t.Errorf("uplink mac %s, want the bridge spec's 02:47:00:00:00:01", got)
	}
	names, err := h1.k.ListLinks("gv")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"gvb-t", "gvh-t", "gvx-t"}; !slices.Equal(names, want) {
		t.Errorf("ListLinks(gv) = %v, want %v (container end gone into its container, uplinks hidden)", names, want)
	}

	run(t, "iptables", "-P", "FORWARD", "DROP")
	t.Cleanup(func() { run(t, "iptables", "-P", "FORWARD", "ACCEPT") })
	eventually(t, 5*time.Second, pingOK(hosts[0], hosts[1]))
	eventually(t, 5*time.Second, pingOK(hosts[1], hosts[0]))

	// FDB and neighbour entries are found in the isolated namespace.
	fdb, err := h1.k.ListFDB("gvx-t")
	if err != nil || len(fdb) == 0 {
		t.Fatalf("ListFDB(gvx-t) = %v, %v; want the peer's entry", fdb, err)
	}
	if err := h1.k.DelFDB("gvx-t", hosts[1].cMAC); err != nil {
		t.Fatal(err)
	}
	for seq := 1000; seq < 1003; seq++ {
		if msg := ping(t, h1.cNS, hosts[1].cIP, seq, 300*time.Millisecond); msg == "" {
			t.Fatalf("ping across the overlay still works after DelFDB")
		}
	}

	// br_netfilter is off in the isolated namespace (it holds no rules)
	if s := h1.k.spaces["gvb-t"]; s == nil {
		t.Errorf("no open namespace for gvb-t")
	} else if err := inNetNS(s.fd, func() error {
		v, err := os.ReadFile("/proc/sys/net/bridge/bridge-nf-call-iptables")
		if err == nil && strings.TrimSpace(string(v)) != "0" {
			err = fmt.Errorf("bridge-nf-call-iptables is %q", strings.TrimSpace(string(v)))
		}
		return err
	}); err != nil {
		t.Errorf("br_netfilter in the isolated namespace: %v", err)
	}

	// Pinned in both directories; a lost pin is made again when the
	// namespace is next opened (a restarted plugin, a stale pin file).
	for _, dir := range pins {
		if !isNetNSFile(t, dir+"/gvb-t") {
			t.Fatalf("no namespace pinned at %s/gvb-t", dir)
		}
	}
	if err := unpin(pins[0] + "/gvb-t"); err != nil {
		t.Fatal(err)
	}
	h1.k.Close()
	k, err := NewKernel(testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	if err := k.IsolateNetworks(pins...); err != nil {
		t.Fatal(err)
	}
	h1.k = k
	if nb, err := k.ListNeigh("gvx-t"); err != nil || len(nb) == 0 {
		t.Fatalf("new Kernel: ListNeigh(gvx-t) = %v, %v; want the peer's entry", nb, err)
	}
	if !isNetNSFile(t, pins[0]+"/gvb-t") {
		t.Errorf("lost pin not made again at %s/gvb-t", pins[0])
	}

	// Deleting the bridge removes namespace, pins, uplink; repeating is fine.
	for range 2 {
		if err := h1.k.DeleteLink("gvb-t"); err != nil {
			t.Fatal(err)
		}
	}
	for _, dir := range pins {
		if _, err := os.Stat(dir + "/gvb-t"); !os.IsNotExist(err) {
			t.Errorf("pin %s/gvb-t still there: %v", dir, err)
		}
	}
	if _, err := h1.nl.LinkByName("gvu-t"); err == nil {
		t.Errorf("uplink gvu-t left after its bridge was deleted")
	}
	if names, err := h1.k.ListLinks("gv"); err != nil || len(names) != 0 {
		t.Errorf("ListLinks(gv) after delete = %v, %v; want none", names, err)
	}
}

// isNetNSFile reports whether path is a mounted network namespace pin.
func isNetNSFile(t *testing.T, path string) bool {
	t.Helper()
	fd, err := netns.GetFromPath(path)
	if err != nil {
		return false
	}
	defer fd.Close()
	return isNetNS(fd)
}
