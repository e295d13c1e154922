package dataplane

import (
	"bytes"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// fdbOf summarises the FDB entries for mac on link as "self dst=IP state=N" and
// "master state=N" strings.
func fdbOf(t *testing.T, tn *testNS, link string, mac net.HardwareAddr) []string {
	t.Helper()
	l := tn.link(link)
	entries, err := tn.nl.NeighList(l.Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		t.Fatalf("list fdb of %s: %v", link, err)
	}
	var out []string
	for _, e := range entries {
		if !bytes.Equal(e.HardwareAddr, mac) {
			continue
		}
		switch {
		case e.Flags&netlink.NTF_SELF != 0:
			out = append(out, fmt.Sprintf("self dst=%s state=%#x", e.IP, e.State))
		case e.Flags&netlink.NTF_MASTER != 0 || e.MasterIndex != 0:
			out = append(out, fmt.Sprintf("master state=%#x", e.State))
		default:
			out = append(out, fmt.Sprintf("flags=%#x state=%#x", e.Flags, e.State))
		}
	}
	slices.Sort(out)
	return out
}

func setupOverlay(t *testing.T, tn *testNS, k *Kernel) {
	t.Helper()
	addIfb(t, tn.nl, "u0", 1500, "198.18.0.1/24")
	if err := k.EnsureBridge(bridgeSpec()); err != nil {
		t.Fatal(err)
	}
	if err := k.EnsureVXLAN(vxlanSpec()); err != nil {
		t.Fatal(err)
	}
}

func TestFDB(t *testing.T) {
	tn, k := newKernelNS(t)
	setupOverlay(t, tn, k)
	vx := vxlanSpec().Name
	mac := mustMAC(t, "02:42:c6:13:00:0c")
	other := mustMAC(t, "02:42:c6:13:00:0d")

	steps := []struct {
		name string
		do   func() error
		want []string
	}{
		{"set", func() error { return k.SetFDB(vx, mac, mustAddr("198.18.0.2")) },
			[]string{"master state=0x40", "self dst=198.18.0.2 state=0x80"}},
		{"set again", func() error { return k.SetFDB(vx, mac, mustAddr("198.18.0.2")) },
			[]string{"master state=0x40", "self dst=198.18.0.2 state=0x80"}},
		{"replace vtep", func() error { return k.SetFDB(vx, mac, mustAddr("198.18.0.3")) },
			[]string{"master state=0x40", "self dst=198.18.0.3 state=0x80"}},
		{"delete other mac", func() error { return k.DelFDB(vx, other) },
			[]string{"master state=0x40", "self dst=198.18.0.3 state=0x80"}},
		{"delete", func() error { return k.DelFDB(vx, mac) }, nil},
		{"delete again", func() error { return k.DelFDB(vx, mac) }, nil},
		{"delete on missing device", func() error { return k.DelFDB("gvx-missing", mac) }, nil},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := fdbOf(t, tn, vx, mac); !slices.Equal(got, s.want) {
			t.Fatalf("%s: fdb entries %q, want %q", s.name, got, s.want)
		}
	}

	// The bridge(8) view matches the reference programming.
	if err := k.SetFDB(vx, mac, mustAddr("198.18.0.2")); err != nil {
		t.Fatal(err)
	}
	out := run(t, "bridge", "fdb", "show", "dev", vx)
	for _, want := range []string{
		mac.String() + " dst 198.18.0.2 self permanent",
		mac.String() + " master " + bridgeSpec().Name + " static",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("bridge fdb show lacks %q:\n%s", want, out)
		}
	}

	if err := k.SetFDB("gvx-missing", mac, mustAddr("198.18.0.2")); err == nil || !strings.Contains(err.Error(), "gvx-missing") {
		t.Errorf("SetFDB on missing device: %v, want an error naming it", err)
	}
	if err := k.SetFDB(vx, net.HardwareAddr{1, 2}, mustAddr("198.18.0.2")); err == nil {
		t.Errorf("SetFDB with a 2-byte mac succeeded")
	}
}

func TestNeigh(t *testing.T) {
	tn, k := newKernelNS(t)
	setupOverlay(t, tn, k)
	vx := vxlanSpec().Name
	ip := mustAddr("198.19.0.12")
	m1 := mustMAC(t, "02:42:c6:13:00:0c")
	m2 := mustMAC(t, "02:42:c6:13:00:0e")

	neigh := func() string {
		entries, err := tn.nl.NeighList(tn.link(vx).Attrs().Index, unix.AF_INET)
		if err != nil {
			t.Fatalf("list neighbours: %v", err)
		}
		var out []string
		for _, e := range entries {
			out = append(out, fmt.Sprintf("%s %s %#x", e.IP, e.HardwareAddr, e.State))
		}
		return strings.Join(out, ",")
	}
	steps := []struct {
		name string
		do   func() error
		want string
	}{
		{"set", func() error { return k.SetNeigh(vx, ip, m1) }, "198.19.0.12 " + m1.String() + " 0x80"},
		{"set again", func() error { return k.SetNeigh(vx, ip, m1) }, "198.19.0.12 " + m1.String() + " 0x80"},
		{"replace mac", func() error { return k.SetNeigh(vx, ip, m2) }, "198.19.0.12 " + m2.String() + " 0x80"},
		{"delete", func() error { return k.DelNeigh(vx, ip) }, ""},
		{"delete again", func() error { return k.DelNeigh(vx, ip) }, ""},
		{"delete on missing device", func() error { return k.DelNeigh("gvx-missing", ip) }, ""},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := neigh(); got != s.want {
			t.Fatalf("%s: neighbours %q, want %q", s.name, got, s.want)
		}
	}
	if err := k.SetNeigh(vx, ip, m1); err != nil {
		t.Fatal(err)
	}
	if out := run(t, "ip", "neigh", "show", "dev", vx); !strings.Contains(out, "198.19.0.12 lladdr "+m1.String()+" PERMANENT") {
		t.Errorf("ip neigh show: %q", out)
	}
}
