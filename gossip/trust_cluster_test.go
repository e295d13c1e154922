package gossip_test

import (
	"bytes"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"grapevine/gossip"
	"grapevine/gossip/gossiptest"
)

func openDB(t *testing.T, path string) *bbolt.DB {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// A donor that dies between persisting a write and sending it loses
// nothing: at that instant no peer and no push/pull window can hold the
// record, and after a restart from the disk as it was then, the record is
// there and reaches the peers.
func TestCrashBetweenPersistAndSendLosesNothing(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, filepath.Join(dir, "n0.db"))
	net, nodes := startCluster(t, 2, func(i int, cfg *gossip.Config) {
		if i == 0 {
			cfg.DB = db
		}
	})
	a, b := nodes[0], nodes[1]
	if err := a.c.Put("block", "kept", []byte("before")); err != nil {
		t.Fatal(err)
	}
	kept, _ := a.c.Get("block", "kept")
	gossiptest.Eventually(t, 20*time.Second, "the first record on n1", func() bool { return allHave(nodes, kept) })
	gossiptest.Eventually(t, 5*time.Second, "n0's broadcast queue to drain", func() bool { return a.c.Stats().QueuedBroadcasts == 0 })

	snapshot := filepath.Join(dir, "crash.db")
	var crashed atomic.Bool
	a.c.SetCrashPoint(func(r gossip.Record) bool {
		crashed.Store(true)
		if n := a.c.Stats().QueuedBroadcasts; n != 0 {
			t.Errorf("at the crash point %d broadcasts are queued: the record left before it was persisted", n)
		}
		if _, ok := a.c.Get(r.Kind, r.Key); ok {
			t.Error("at the crash point the record is already in memory, where push/pull and subscribers see it")
		}
		if err := db.View(func(tx *bbolt.Tx) error { return tx.CopyFile(snapshot, 0o600) }); err != nil {
			t.Errorf("copying the disk at the crash point: %v", err)
		}
		return false
	})
	if err := a.c.Put("block", "given", []byte("to n1")); err == nil || !crashed.Load() {
		t.Fatalf("the write went past the crash point: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	if _, ok := b.c.Get("block", "given"); ok {
		t.Fatal("n1 received a write that stopped at the crash point")
	}

	// The process died there: off the network, restarted from the disk
	// as it was at the crash point.
	net.Kill(a.name)
	_ = a.c.Shutdown()
	cfg := a.cfg
	cfg.DB = openDB(t, snapshot)
	cfg.Peers = []string{net.Addr(b.name)}
	nodes[0] = startNode(t, net, cfg)
	given, ok := nodes[0].c.Get("block", "given")
	if !ok || !bytes.Equal(given.Value, []byte("to n1")) || given.Owner != a.name {
		t.Fatalf("after the restart n0 holds %+v %v, want its persisted write", given, ok)
	}
	gossiptest.Eventually(t, 20*time.Second, "the persisted write to reach n1", func() bool { return allHave(nodes, given) })
	if r, _ := nodes[0].c.Get("block", "kept"); !gossip.SameVersion(&r, &kept) {
		t.Fatalf("earlier record after the restart: %+v", r)
	}
}
