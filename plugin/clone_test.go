package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/sirupsen/logrus"
	bolt "go.etcd.io/bbolt"

	"grapevine/gossip"
	"grapevine/gossip/gossiptest"
)

// clonePeriod makes the quiet window (cloneQuietPeriods × clonePeriod, 10 s)
// longer than gossip's pace of overriding one key (5 s), as in production.
const clonePeriod = 500 * time.Millisecond

func openDB(t *testing.T, path string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// guard starts a clone guard on c until the returned stop is called (or the
// test ends).
func guard(t *testing.T, c *gossip.Cluster) (*cloneGuard, func()) {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	g, err := newCloneGuard(c, clonePeriod, logrus.NewEntry(log))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	g.start(ctx, &wg, c.LocalAddr().String())
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return g, stop
}

// TestClonedIdentityIsDetected copies a running host's state (its node
// identity, Lamport clock and records, as a machine image cloned after
// grapevine first ran would) to a second host on another address. Both
// twins detect each other and refuse allocations with a message saying how
// to reset; a third host sees nothing wrong; once the copy is gone, the
// original allocates again.
func TestClonedIdentityIsDetected(t *testing.T) {
	n := gossiptest.NewNet()
	dir := t.TempDir()
	other := n.Node(t, "h2-cccccc", nil)
	gOther, _ := guard(t, other)
	dbA := openDB(t, filepath.Join(dir, "a.db"))
	orig := n.Node(t, "h1-aaaaaa", func(c *gossip.Config) { c.DB = dbA })
	gOrig, _ := guard(t, orig)

	cloned := filepath.Join(dir, "clone.db")
	if err := dbA.View(func(tx *bolt.Tx) error { return tx.CopyFile(cloned, 0o600) }); err != nil {
		t.Fatal(err)
	}
	cfg := n.Clone("h1-aaaaaa")
	cfg.DB = openDB(t, cloned)
	clone := n.Start(t, cfg)
	gClone, stopClone := guard(t, clone)
	if orig.LocalAddr() == clone.LocalAddr() {
		t.Fatalf("setup: the clone has the original's address %s", clone.LocalAddr())
	}

	gossiptest.Eventually(t, 60*time.Second, "both twins detect the shared identity", func() bool {
		return gOrig.conflictError() != nil && gClone.conflictError() != nil
	})
	for _, tc := range []struct {
		g    *cloneGuard
		peer string
	}{{gOrig, clone.LocalAddr().String()}, {gClone, orig.LocalAddr().String()}} {
		err := tc.g.conflictError()
		for _, want := range []string{"refuses to allocate", `"h1-aaaaaa"`, tc.peer, "state directory", "docker plugin disable -f"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("conflict error %q does not mention %q", err, want)
			}
		}
		a := ipamAdapter{clone: tc.g} // no driver: a refused call must not reach it
		if _, err := a.RequestAddress(&ipam.RequestAddressRequest{PoolID: "p"}); err == nil || !strings.Contains(err.Error(), "refuses to allocate") {
			t.Errorf("RequestAddress during a conflict: %v", err)
		}
		if _, err := a.RequestPool(&ipam.RequestPoolRequest{Pool: "198.19.40.0/24"}); err == nil || !strings.Contains(err.Error(), "refuses to allocate") {
			t.Errorf("RequestPool during a conflict: %v", err)
		}
	}
	if err := gOther.conflictError(); err != nil {
		t.Errorf("a host with its own identity reports a conflict: %v", err)
	}

	// the copy is reset (here: stopped); the original allocates again
	stopClone()
	if err := clone.Shutdown(); err != nil {
		t.Fatal(err)
	}
	gossiptest.Eventually(t, 60*time.Second, "the original clears the conflict", func() bool {
		return gOrig.conflictError() == nil
	})
}

// TestRestartIsNotAClone restarts a host on its own state: the record of
// its previous run is not another live instance.
func TestRestartIsNotAClone(t *testing.T) {
	n := gossiptest.NewNet()
	other := n.Node(t, "h2-cccccc", nil)
	gOther, _ := guard(t, other)
	db := openDB(t, filepath.Join(t.TempDir(), "a.db"))
	first := n.Node(t, "h1-aaaaaa", func(c *gossip.Config) { c.DB = db })
	_, stopFirst := guard(t, first)
	gossiptest.Eventually(t, 10*time.Second, "the other host holds the first run's instance record", func() bool {
		_, ok := other.Get(kindInstance, "h1-aaaaaa")
		return ok
	})
	stopFirst()
	if err := first.Shutdown(); err != nil {
		t.Fatal(err)
	}
	second := n.Node(t, "h1-aaaaaa", func(c *gossip.Config) { c.DB = db })
	gSecond, _ := guard(t, second)
	gossiptest.Eventually(t, 10*time.Second, "the other host holds the second run's instance record", func() bool {
		r, ok := other.Get(kindInstance, "h1-aaaaaa")
		var rec instanceRecord
		return ok && json.Unmarshal(r.Value, &rec) == nil && rec.Instance == gSecond.mine.Instance
	})
	deadline := time.Now().Add(8 * clonePeriod)
	for time.Now().Before(deadline) {
		if err := gSecond.conflictError(); err != nil {
			t.Fatalf("a restarted host reports a conflict with its own previous run: %v", err)
		}
		if err := gOther.conflictError(); err != nil {
			t.Fatalf("another host reports a conflict: %v", err)
		}
		time.Sleep(clonePeriod / 2)
	}
}

// TestStrayOrForgedInstanceRecords: a leftover record of this host's own
// earlier run (a state file restored from a backup), however often it is
// relayed, is not a clone; a record under this host's name from another
// writer, or a malformed one, is refused at the boundary; new versions from
// another instance are.
func TestStrayOrForgedInstanceRecords(t *testing.T) {
	n := gossiptest.NewNet()
	c := n.Node(t, "h1-aaaaaa", nil)
	g, _ := guard(t, c)
	stray, _ := json.Marshal(instanceRecord{Version: instanceVersion, Instance: "0123456789abcdef", Addr: "100.64.9.9:7947"})
	rec := func(owner string, version uint64, value []byte) gossip.Record {
		return gossip.Record{Kind: kindInstance, Key: "h1-aaaaaa", Owner: owner, Value: value, Version: version}
	}

	for _, v := range []uint64{1 << 40, 1 << 41} {
		if err := g.validate(rec("h2-cccccc", v, stray)); !errors.Is(err, gossip.ErrNotOwner) {
			t.Errorf("a record under this host's name written by another host: %v, want it refused as not its owner's", err)
		}
	}
	if err := g.validate(rec("h1-aaaaaa", 9, []byte(`{"instance":""}`))); err == nil {
		t.Error("an instance record without an instance id was accepted")
	}
	if err := g.conflictError(); err != nil {
		t.Fatalf("refused records count as a clone: %v", err)
	}

	for range 3 { // one write, relayed by three hosts
		if err := g.validate(rec("h1-aaaaaa", 7, stray)); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.conflictError(); err != nil {
		t.Fatalf("one leftover record of an earlier run counts as a clone: %v", err)
	}
	gossiptest.Eventually(t, 30*time.Second, "the open sighting closes after the quiet periods", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.strikes == 0
	})

	// a live twin keeps writing: two versions are a conflict
	for _, v := range []uint64{20, 21} {
		if err := g.validate(rec("h1-aaaaaa", v, stray)); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.conflictError(); err == nil || !strings.Contains(err.Error(), "100.64.9.9:7947") {
		t.Fatalf("two writes of another instance: %v", err)
	}
}

func TestStatusShowsIdentityConflict(t *testing.T) {
	raw, err := json.Marshal(Status{Schema: StatusSchema, Host: "h1", IdentityConflict: "grapevine refuses to allocate: another live host (gossip address 100.64.0.3:7947) uses this host's node identity"})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := PrintStatus(&out, raw); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "IDENTITY CONFLICT: grapevine refuses to allocate: another live host (gossip address 100.64.0.3:7947)") {
		t.Errorf("status does not show the conflict:\n%s", out.String())
	}
	out.Reset()
	raw, _ = json.Marshal(Status{Schema: StatusSchema, Host: "h1"})
	if err := PrintStatus(&out, raw); err != nil || strings.Contains(out.String(), "IDENTITY CONFLICT") {
		t.Errorf("status without a conflict: %v\n%s", err, out.String())
	}
}
