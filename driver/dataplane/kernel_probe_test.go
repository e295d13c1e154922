package dataplane

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// TestProbeAcrossVXLAN: two simulated hosts (namespaces joined by a veth
// underlay) each keep a probe device; a probe crosses at full size, a
// lowered underlay MTU on the far host stops the large probe but not a
// small one, a host that no longer names the peer stops answering it, and
// removing the probe (again, and by Close) leaves nothing behind: the VNI
// and port are free again in the host namespace.
func TestProbeAcrossVXLAN(t *testing.T) {
	tn1, k1 := newKernelNS(t)
	ns2, nl2, k2 := secondKernel(t)
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "u1"
	if err := tn1.nl.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "u2"}); err != nil {
		t.Fatal(err)
	}
	if err := tn1.nl.LinkSetNsFd(tn1.link("u2"), int(ns2)); err != nil {
		t.Fatal(err)
	}
	v1, v2 := mustAddr("198.18.0.1"), mustAddr("198.18.0.2")
	for _, h := range []struct {
		nl   *netlink.Handle
		name string
		vtep string
	}{{tn1.nl, "u1", "198.18.0.1/24"}, {nl2, "u2", "198.18.0.2/24"}} {
		u, err := h.nl.LinkByName(h.name)
		if err != nil {
			t.Fatal(err)
		}
		addAddr(t, h.nl, u, h.vtep)
		if err := h.nl.LinkSetUp(u); err != nil {
			t.Fatal(err)
		}
	}
	const vni, port = 8388607, 4789
	spec1 := ProbeSpec{VNI: vni, Port: port, Local: v1, Peers: []netip.Addr{v2}}
	spec2 := ProbeSpec{VNI: vni, Port: port, Local: v2, Peers: []netip.Addr{v1}}
	for range 2 { // twice: idempotent
		if err := k1.EnsureProbe(spec1); err != nil {
			t.Fatal(err)
		}
		if err := k2.EnsureProbe(spec2); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tn1.nl.LinkByName(ProbeName); err == nil {
		t.Fatalf("%s is in the host namespace; it must live in its private one", ProbeName)
	}
	eventually(t, 5*time.Second, func() string {
		if _, err := k1.Probe(v2, 1450, 300*time.Millisecond); err != nil {
			return err.Error()
		}
		return ""
	})

	// host 2's underlay carries 1400 bytes: 1450+50 no longer fits
	u2, err := nl2.LinkByName("u2")
	if err != nil {
		t.Fatal(err)
	}
	if err := nl2.LinkSetMTU(u2, 1400); err != nil {
		t.Fatal(err)
	}
	if _, err := k1.Probe(v2, 1450, 300*time.Millisecond); !errors.Is(err, ErrProbeLost) {
		t.Errorf("probe of 1450 bytes with the far underlay at mtu 1400: %v, want it lost", err)
	}
	if _, err := k1.Probe(v2, 1340, 500*time.Millisecond); err != nil {
		t.Errorf("probe of 1340 bytes with the far underlay at mtu 1400: %v", err)
	}

	// host 2 no longer names host 1: it does not answer
	spec2.Peers = nil
	if err := k2.EnsureProbe(spec2); err != nil {
		t.Fatal(err)
	}
	if _, err := k1.Probe(v2, 128, 300*time.Millisecond); !errors.Is(err, ErrProbeLost) {
		t.Errorf("probe to a host whose probe does not name this one: %v, want it lost", err)
	}

	for range 2 {
		if err := k1.RemoveProbe(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := k1.Probe(v2, 128, 100*time.Millisecond); !errors.Is(err, ErrNoProbe) {
		t.Errorf("probe after RemoveProbe: %v, want ErrNoProbe", err)
	}
	k2.Close()
	for _, h := range []*netlink.Handle{tn1.nl, nl2} {
		eventually(t, 5*time.Second, func() string { return vniFree(h, vni, port) })
	}
}

// vniFree reports "" when a VXLAN device with vni on port can be made in
// h's namespace (nothing else holds them), else why not.
func vniFree(h *netlink.Handle, vni, port int) string {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "gvtprobe"
	if err := h.LinkAdd(&netlink.Vxlan{LinkAttrs: attrs, VxlanId: vni, Port: port, SrcAddr: net.IPv4(198, 18, 0, 9)}); err != nil {
		return "vni still held: " + err.Error()
	}
	l, err := h.LinkByName("gvtprobe")
	if err == nil {
		err = h.LinkDel(l)
	}
	if err != nil {
		return err.Error()
	}
	return ""
}
