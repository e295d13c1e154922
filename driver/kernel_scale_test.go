package driver

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"go.etcd.io/bbolt"

	"grapevine/driver/dataplane"
	"grapevine/gossip"
	"grapevine/gossip/gossiptest"
	"grapevine/internal/nstest"
)

// enterTestNS locks the test goroutine to its thread and moves the thread
// into a new namespace until the test ends (nstest.Enter), with the underlay
// link u0 holding 198.18.0.1. Skips, saying why, without root.
func enterTestNS(t *testing.T) {
	t.Helper()
	nstest.Enter(t, "gvd")
	for _, l := range []netlink.Link{&netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: "u0", MTU: 1500}}} {
		if err := netlink.LinkAdd(l); err != nil {
			t.Fatalf("add %s: %v", l.Attrs().Name, err)
		}
	}
	u0, err := netlink.LinkByName("u0")
	if err == nil {
		err = netlink.AddrAdd(u0, &netlink.Addr{IPNet: netlink.NewIPNet(netip.MustParseAddr("198.18.0.1").AsSlice())})
	}
	if err == nil {
		err = netlink.LinkSetUp(u0)
	}
	if err != nil {
		t.Fatalf("underlay u0: %v", err)
	}
}

func testLogger(t *testing.T) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(tbWriter{t})
	l.SetLevel(logrus.InfoLevel)
	return logrus.NewEntry(l)
}

type tbWriter struct{ t *testing.T }

func (w tbWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// countEntries reads back a VXLAN device through the Kernel.
func countEntries(t *testing.T, k *dataplane.Kernel, vx string) (self, master, neigh int) {
	t.Helper()
	fdb, err := k.ListFDB(vx)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range fdb {
		if e.Master {
			master++
		} else {
			self++
		}
	}
	ns, err := k.ListNeigh(vx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ns {
		if n.Permanent {
			neigh++
		}
	}
	return self, master, neigh
}

// TestKernelScale5000 programs 5,000 remote endpoints of one network through
// the driver's path into a real kernel (a test namespace), checks every entry,
// removes them when their host dies and brings them back when it rejoins.
// Timings are logged, not asserted.
//
// Neighbour limits: the IPv4 neighbour table's gc_thresh3 (1024 by default,
// global, not per namespace) does not apply: permanent entries are exempt
// from garbage collection and from the table limit, so nothing is raised.
func TestKernelScale5000(t *testing.T) {
	if testing.Short() {
		t.Skip("scale test")
	}
	const n = 5000
	enterTestNS(t)
	if b, err := os.ReadFile("/proc/sys/net/ipv4/neigh/default/gc_thresh3"); err == nil {
		t.Logf("host net.ipv4.neigh.default.gc_thresh3 = %s (permanent entries are exempt)", strings.TrimSpace(string(b)))
	}
	k, err := dataplane.NewKernel(testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "state.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	c := gossiptest.NewFakeCluster("h0")
	d, err := New(Config{
		DB:            db,
		Dataplane:     k,
		Underlay:      func() (dataplane.Underlay, error) { return k.ResolveUnderlay("u0") },
		VXLANPort:     testVXLANPort,
		Scope:         "local",
		AddressSpaces: testSpaces,
		Cluster:       c,
		PeerRepair:    -1,
		Log:           testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	e := &env{t: t, d: d, cluster: c}
	nid := id("scale")
	vx := vxlanName(nid)
	e.mustCreateNetwork(netReq{id: nid, subnet: "198.19.64.0/18"})

	c.SetMember("h1", "198.18.0.2", gossip.StateAlive, gossip.EventJoin)
	start := time.Now()
	base := netip.MustParseAddr("198.19.64.10")
	ip := base
	for i := range n {
		remoteEndpoint(t, c, "h1", "198.19.64.0/18", ip.String(), fmt.Sprintf("02:43:00:00:%02x:%02x", i>>8, i&0xff))
		ip = ip.Next()
	}
	e.flush()
	t.Logf("programmed %d remote endpoints (FDB self + bridge + neighbour) in %s", n, time.Since(start))
	if s, m, nb := countEntries(t, k, vx); s != n || m != n || nb != n {
		t.Fatalf("kernel holds %d self, %d bridge, %d neighbour entries; want %d each", s, m, nb, n)
	}
	start = time.Now()
	if err := d.ReconcilePeers(); err != nil {
		t.Fatal(err)
	}
	t.Logf("ReconcilePeers over %d clean entries: %s", n, time.Since(start))
	if st := d.Status(); st[0].RemoteEndpoints != n {
		t.Fatalf("status counts %d remote endpoints, want %d", st[0].RemoteEndpoints, n)
	}

	// Drift at scale: 500 entries deleted behind the driver's back return.
	a := base
	for i := range n {
		if i%10 == 0 {
			if err := k.DelNeigh(vx, a); err != nil {
				t.Fatal(err)
			}
		}
		a = a.Next()
	}
	start = time.Now()
	if err := d.ReconcilePeers(); err != nil {
		t.Fatal(err)
	}
	t.Logf("ReconcilePeers repairing 500 neighbours among %d: %s", n, time.Since(start))
	if _, _, nb := countEntries(t, k, vx); nb != n {
		t.Fatalf("after repair %d neighbour entries, want %d", nb, n)
	}

	start = time.Now()
	c.SetMember("h1", "198.18.0.2", gossip.StateDead, gossip.EventDead)
	e.flush()
	t.Logf("removed %d remote endpoints of a dead host in %s", n, time.Since(start))
	if s, m, nb := countEntries(t, k, vx); s+m+nb != 0 {
		t.Fatalf("after host death: %d self, %d bridge, %d neighbour entries left", s, m, nb)
	}

	start = time.Now()
	c.SetMember("h1", "198.18.0.2", gossip.StateAlive, gossip.EventJoin)
	e.flush()
	t.Logf("re-programmed %d remote endpoints of a returning host in %s", n, time.Since(start))
	if s, m, nb := countEntries(t, k, vx); s != n || m != n || nb != n {
		t.Fatalf("after rejoin: %d self, %d bridge, %d neighbour entries; want %d each", s, m, nb, n)
	}
}
