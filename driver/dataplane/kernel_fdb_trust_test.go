package dataplane

import (
	"net"
	"slices"
	"testing"
)

// TestListFDBForeignFlooding: an all-zero (flooding) entry towards some
// VTEP, which grapevine never writes, is listed, so the repair loop can see
// and remove it; DelFDB removes it.
func TestListFDBForeignFlooding(t *testing.T) {
	tn, k := newKernelNS(t)
	setupOverlay(t, tn, k)
	vx := vxlanSpec().Name
	zero := net.HardwareAddr{0, 0, 0, 0, 0, 0}

	run(t, "bridge", "fdb", "append", zero.String(), "dev", vx, "dst", "198.18.0.66", "self", "permanent")
	got, err := k.ListFDB(vx)
	if err != nil {
		t.Fatal(err)
	}
	if g, w := fdbStrings(got), []string{zero.String() + " dst 198.18.0.66"}; !slices.Equal(g, w) {
		t.Fatalf("ListFDB = %q, want %q", g, w)
	}
	if err := k.DelFDB(vx, zero); err != nil {
		t.Fatal(err)
	}
	if got, err := k.ListFDB(vx); err != nil || len(got) != 0 {
		t.Fatalf("after DelFDB: ListFDB = %q, %v; want nothing", fdbStrings(got), err)
	}
}
