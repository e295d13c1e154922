package dataplane

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// vxlanLab is a namespace with a Kernel and a UDP socket on the VXLAN port,
// wired by a veth to a second namespace that sends from a member's and from
// an outsider's address.
type vxlanLab struct {
	k       *Kernel
	sink    net.PacketConn
	senders map[string]net.PacketConn // by source address
}

const (
	labHost     = "198.18.0.1"
	labMember   = "198.18.0.12"
	labOutsider = "198.18.0.99"
	labPort     = 4789
)

func newVXLANLab(t *testing.T) *vxlanLab {
	t.Helper()
	tn, k := newKernelNS(t)
	_, peerNS, peerNL := otherNS(t)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ul0"}, PeerName: "ul1"}
	if err := tn.nl.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	peer := tn.link("ul1")
	if err := tn.nl.LinkSetNsFd(peer, int(peerNS)); err != nil {
		t.Fatalf("move ul1: %v", err)
	}
	addAddr(t, tn.nl, tn.link("ul0"), labHost+"/24")
	if err := tn.nl.LinkSetUp(tn.link("ul0")); err != nil {
		t.Fatal(err)
	}
	p, err := peerNL.LinkByName("ul1")
	if err != nil {
		t.Fatal(err)
	}
	addAddr(t, peerNL, p, labMember+"/24")
	addAddr(t, peerNL, p, labOutsider+"/24")
	if err := peerNL.LinkSetUp(p); err != nil {
		t.Fatal(err)
	}
	lab := &vxlanLab{k: k, senders: map[string]net.PacketConn{}}
	if lab.sink, err = net.ListenPacket("udp4", labHost+":4789"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.sink.Close() })
	inNS(t, peerNS, func() {
		for _, src := range []string{labMember, labOutsider} {
			c, err := net.ListenPacket("udp4", src+":0")
			if err != nil {
				t.Fatalf("sender on %s: %v", src, err)
			}
			t.Cleanup(func() { c.Close() })
			lab.senders[src] = c
		}
	})
	return lab
}

// arrives sends one datagram from src to the VXLAN port and reports whether
// the host's socket received it.
func (l *vxlanLab) arrives(t *testing.T, src string) bool {
	t.Helper()
	msg := "from " + src + " " + randHex(t, 4)
	dst := &net.UDPAddr{IP: net.ParseIP(labHost), Port: labPort}
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) { // the first may wait for ARP
		if _, err := l.senders[src].WriteTo([]byte(msg), dst); err != nil {
			t.Fatalf("send from %s: %v", src, err)
		}
		buf := make([]byte, 256)
		_ = l.sink.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		for {
			n, _, err := l.sink.ReadFrom(buf)
			if err != nil {
				break
			}
			if string(buf[:n]) == msg {
				return true
			}
		}
	}
	return false
}

func setMembers(t *testing.T) []string {
	t.Helper()
	set, err := netlink.IpsetList(vtepSet)
	if err != nil {
		t.Fatalf("ipset list %s: %v", vtepSet, err)
	}
	var out []string
	for _, e := range set.Entries {
		out = append(out, e.IP.String())
	}
	slices.Sort(out)
	return out
}

func TestVXLANIngressFilter(t *testing.T) {
	lab := newVXLANLab(t)
	k := lab.k
	// the veth may take a moment to carry traffic
	for start := time.Now(); !lab.arrives(t, labOutsider) || !lab.arrives(t, labMember); {
		if time.Since(start) > 10*time.Second {
			t.Fatal("without the filter the lab does not deliver datagrams")
		}
	}

	fw := testFirewall()
	fw.VXLAN = VXLANIngress{Port: labPort, Peers: []netip.Addr{mustAddr(labMember), mustAddr("198.18.0.13")}}
	if err := k.SyncFirewall(fw); err != nil {
		t.Fatalf("SyncFirewall: %v", err)
	}
	raw := saveTable(t, "raw")
	if got, want := ruleLines(raw, chainVXLAN), []string{vxlanRule(fw.VXLAN)}; !slices.Equal(got, want) {
		t.Errorf("raw %s:\n got %q\nwant %q", chainVXLAN, got, want)
	}
	if got := ruleLines(raw, "PREROUTING"); len(got) != 1 || !strings.HasSuffix(got[0], "-j "+chainVXLAN) {
		t.Errorf("raw PREROUTING: %q", got)
	}
	if got := setMembers(t); !slices.Equal(got, []string{labMember, "198.18.0.13"}) {
		t.Errorf("set members %q", got)
	}
	if lab.arrives(t, labOutsider) {
		t.Errorf("a datagram from the outsider %s reached the VXLAN port", labOutsider)
	}
	if !lab.arrives(t, labMember) {
		t.Errorf("a datagram from the member %s did not reach the VXLAN port", labMember)
	}
	if n, err := k.VXLANDrops(); err != nil || n == 0 {
		t.Errorf("VXLANDrops = %d, %v; want > 0", n, err)
	}
	writes := k.restores
	if err := k.SyncFirewall(fw); err != nil {
		t.Fatal(err)
	}
	if k.restores != writes {
		t.Errorf("a repeated sync rewrote the tables")
	}

	// Membership changes: the outsider joins, the member leaves.
	if err := k.SetVXLANPeers(VXLANIngress{Peers: []netip.Addr{mustAddr(labOutsider)}}); err != nil {
		t.Fatalf("SetVXLANPeers: %v", err)
	}
	if got := setMembers(t); !slices.Equal(got, []string{labOutsider}) {
		t.Errorf("set members after SetVXLANPeers: %q", got)
	}
	if !lab.arrives(t, labOutsider) || lab.arrives(t, labMember) {
		t.Errorf("after the change: outsider arrives %t (want true), old member arrives %t (want false)",
			lab.arrives(t, labOutsider), lab.arrives(t, labMember))
	}
	if err := k.SetVXLANPeers(VXLANIngress{Peers: []netip.Addr{mustAddr("fd00::1")}}); err == nil {
		t.Errorf("SetVXLANPeers accepted an IPv6 VTEP")
	}

	checkPartialSync(t, k, fw)
	checkFilterRemoval(t, lab, fw)
}

// checkPartialSync: a restart before contact with the cluster knows fewer
// members; the others keep their place until membership is complete.
func checkPartialSync(t *testing.T, k *Kernel, fw Firewall) {
	t.Helper()
	partial := fw
	partial.VXLAN = VXLANIngress{Port: labPort, Peers: []netip.Addr{mustAddr(labMember)}, Partial: true}
	if err := k.SyncFirewall(partial); err != nil {
		t.Fatal(err)
	}
	if got := setMembers(t); !slices.Equal(got, []string{labMember, labOutsider}) {
		t.Errorf("set members after a partial sync: %q, want both", got)
	}
	partial.VXLAN.Partial = false
	if err := k.SyncFirewall(partial); err != nil {
		t.Fatal(err)
	}
	if got := setMembers(t); !slices.Equal(got, []string{labMember}) {
		t.Errorf("set members after a complete sync: %q", got)
	}
}

// checkFilterRemoval: the filter goes with the last VXLAN network and with
// RemoveFirewall, repeatably.
func checkFilterRemoval(t *testing.T, lab *vxlanLab, fw Firewall) {
	t.Helper()
	k := lab.k
	// The last VXLAN network goes: rule and set go, nothing is filtered.
	if err := k.SyncFirewall(Firewall{}); err != nil {
		t.Fatal(err)
	}
	if raw := saveTable(t, "raw"); strings.Contains(raw, "GRAPEVINE") || strings.Contains(raw, "grapevine") {
		t.Errorf("raw table after the filter was turned off:\n%s", raw)
	}
	if _, err := netlink.IpsetList(vtepSet); !isNoSet(err) {
		t.Errorf("ipset %s still exists (%v)", vtepSet, err)
	}
	if !lab.arrives(t, labMember) || !lab.arrives(t, labOutsider) {
		t.Errorf("datagrams still filtered after the filter was removed")
	}
	if err := k.SetVXLANPeers(VXLANIngress{Peers: []netip.Addr{mustAddr(labMember)}}); err != nil {
		t.Errorf("SetVXLANPeers without a filter: %v", err)
	}
	if _, err := netlink.IpsetList(vtepSet); !isNoSet(err) {
		t.Errorf("SetVXLANPeers created the set without a filter (%v)", err)
	}

	// Shutdown with the filter in place removes it; twice is fine.
	if err := k.SyncFirewall(fw); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := k.RemoveFirewall(); err != nil {
			t.Fatalf("RemoveFirewall #%d: %v", i+1, err)
		}
	}
	if _, err := netlink.IpsetList(vtepSet); !isNoSet(err) {
		t.Errorf("ipset %s survives RemoveFirewall (%v)", vtepSet, err)
	}
	if raw := saveTable(t, "raw"); strings.Contains(raw, "GRAPEVINE") {
		t.Errorf("raw table after RemoveFirewall:\n%s", raw)
	}
}

// TestVXLANSetNotOurs: a set of that name with another type is not taken over.
func TestVXLANSetNotOurs(t *testing.T) {
	_, k := newKernelNS(t)
	if err := netlink.IpsetCreate(vtepSet, "hash:net", netlink.IpsetCreateOptions{}); err != nil {
		t.Fatal(err)
	}
	fw := Firewall{VXLAN: VXLANIngress{Port: labPort}}
	if err := k.SyncFirewall(fw); err == nil || !strings.Contains(err.Error(), "not grapevine's") {
		t.Errorf("SyncFirewall over a foreign set: %v, want an error naming it", err)
	}
}
