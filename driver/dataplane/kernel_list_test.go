package dataplane

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

func fdbStrings(es []FDBEntry) []string {
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

func neighStrings(es []NeighEntry) []string {
	var out []string
	for _, e := range es {
		out = append(out, fmt.Sprintf("%s %s permanent=%t", e.IP, e.MAC, e.Permanent))
	}
	slices.Sort(out)
	return out
}

// TestListFDB: ListFDB reports what SetFDB wrote (both entries) and leaves out
// the kernel's own entries for the device's address; DelFDB removes an entry
// with several remotes in one go.
func TestListFDB(t *testing.T) {
	tn, k := newKernelNS(t)
	setupOverlay(t, tn, k)
	vx := vxlanSpec().Name
	m1 := mustMAC(t, "02:42:c6:13:00:0c")
	m2 := mustMAC(t, "02:42:c6:13:00:0d")

	if got, err := k.ListFDB(vx); err != nil || len(got) != 0 {
		t.Fatalf("fresh device: ListFDB = %q, %v; want nothing (own entries left out)", fdbStrings(got), err)
	}
	for _, s := range []struct {
		mac  string
		vtep string
	}{{m1.String(), "198.18.0.2"}, {m2.String(), "198.18.0.3"}} {
		if err := k.SetFDB(vx, mustMAC(t, s.mac), mustAddr(s.vtep)); err != nil {
			t.Fatal(err)
		}
	}
	// A learned (dynamic) bridge entry is not grapevine's.
	run(t, "bridge", "fdb", "add", "02:42:c6:13:00:99", "dev", vx, "master", "dynamic")
	want := []string{
		m1.String() + " dst 198.18.0.2", m1.String() + " master",
		m2.String() + " dst 198.18.0.3", m2.String() + " master",
	}
	slices.Sort(want)
	got, err := k.ListFDB(vx)
	if err != nil {
		t.Fatal(err)
	}
	if g := fdbStrings(got); !slices.Equal(g, want) {
		t.Fatalf("ListFDB = %q, want %q", g, want)
	}

	// Two remotes for one MAC (as `bridge fdb append` makes): one DelFDB
	// removes both and the bridge entry.
	run(t, "bridge", "fdb", "append", m1.String(), "dev", vx, "dst", "198.18.0.9", "self", "permanent")
	if err := k.DelFDB(vx, m1); err != nil {
		t.Fatal(err)
	}
	got, err = k.ListFDB(vx)
	if err != nil {
		t.Fatal(err)
	}
	if g, w := fdbStrings(got), []string{m2.String() + " dst 198.18.0.3", m2.String() + " master"}; !slices.Equal(g, w) {
		t.Fatalf("after DelFDB: ListFDB = %q, want %q", g, w)
	}

	if _, err := k.ListFDB("gvx-missing"); !errors.Is(err, ErrLinkNotFound) {
		t.Fatalf("ListFDB on a missing device: %v, want ErrLinkNotFound", err)
	}
}

// TestListNeigh: permanent entries are reported as such, resolved entries as
// not permanent, proxy entries not at all.
func TestListNeigh(t *testing.T) {
	tn, k := newKernelNS(t)
	setupOverlay(t, tn, k)
	vx := vxlanSpec().Name
	m1 := mustMAC(t, "02:42:c6:13:00:0c")
	if err := k.SetNeigh(vx, mustAddr("198.19.0.12"), m1); err != nil {
		t.Fatal(err)
	}
	run(t, "ip", "neigh", "add", "198.19.0.13", "lladdr", "02:42:c6:13:00:0d", "dev", vx, "nud", "reachable")
	run(t, "ip", "neigh", "add", "proxy", "198.19.0.14", "dev", vx)
	got, err := k.ListNeigh(vx)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"198.19.0.12 " + m1.String() + " permanent=true",
		"198.19.0.13 02:42:c6:13:00:0d permanent=false",
	}
	if g := neighStrings(got); !slices.Equal(g, want) {
		t.Fatalf("ListNeigh = %q, want %q", g, want)
	}
	if _, err := k.ListNeigh("gvx-missing"); !errors.Is(err, ErrLinkNotFound) {
		t.Fatalf("ListNeigh on a missing device: %v, want ErrLinkNotFound", err)
	}
}
