package gossip_test

import (
	"bytes"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
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

// Keys rotate on a live cluster with no partition: install the new key
// everywhere, make it primary everywhere, remove the old one. No member
// ever receives a packet or stream it cannot open, and writes keep
// converging after every step; at the end a host with only the old key
// stays out and one with the new key joins.
func TestKeyRotationWithoutPartition(t *testing.T) {
	oldKey, newKey := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 16)
	var undecryptable atomic.Int64
	net, nodes := startCluster(t, 3, func(i int, cfg *gossip.Config) {
		cfg.Keys = [][]byte{oldKey}
		cfg.Log = countingLog(cfg.NodeName, "decrypt", &undecryptable)
	})
	step := 0
	converge := func(what string) {
		t.Helper()
		step++
		w := nodes[step%len(nodes)]
		if err := w.c.Put("rotation", "step", []byte{byte(step)}); err != nil {
			t.Fatal(err)
		}
		r, _ := w.c.Get("rotation", "step")
		gossiptest.Eventually(t, 20*time.Second, "a write to converge "+what, func() bool { return allHave(nodes, r) })
	}
	for _, n := range nodes {
		if err := n.c.InstallKey(newKey); err != nil {
			t.Fatal(err)
		}
		converge("after installing the new key on " + n.name)
	}
	for _, n := range nodes {
		if err := n.c.UseKey(newKey); err != nil {
			t.Fatal(err)
		}
		converge("after " + n.name + " switched to the new key")
	}
	for _, n := range nodes {
		if err := n.c.RemoveKey(newKey); err == nil {
			t.Fatal("removing the primary key succeeded")
		}
		if err := n.c.RemoveKey(oldKey); err != nil {
			t.Fatal(err)
		}
		converge("after removing the old key from " + n.name)
	}
	// Several probe, gossip and push/pull rounds with the new key only.
	time.Sleep(time.Second)
	converge("at the end")
	if n := undecryptable.Load(); n != 0 {
		t.Fatalf("members logged %d messages they could not decrypt during the rotation", n)
	}
	for _, n := range nodes {
		if n.c.KeyCount() != 1 {
			t.Fatalf("%s holds %d keys, want 1", n.name, n.c.KeyCount())
		}
	}

	stale := net.Config("stale")
	stale.Keys = [][]byte{oldKey}
	s := startNode(t, net, stale)
	fresh := net.Config("fresh")
	fresh.Keys = [][]byte{newKey}
	f := startNode(t, net, fresh)
	waitMembers(t, append(nodes, f), 4)
	if s.c.Joined() || nodes[0].c.Stats().Members != 4 {
		t.Fatalf("a host with only the removed key joined: joined=%v, members=%d", s.c.Joined(), nodes[0].c.Stats().Members)
	}
	// The counter works: the stale host's attempts could not be opened.
	gossiptest.Eventually(t, 10*time.Second, "the stale host's packets to be refused", func() bool { return undecryptable.Load() > 0 })
}

// A host restarted with a keyring (GOSSIP_KEY "old,new" then "new,old")
// talks to hosts that have not restarted yet at every step.
func TestKeyRotationByRestarts(t *testing.T) {
	oldKey, newKey := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	net, nodes := startCluster(t, 2, func(i int, cfg *gossip.Config) { cfg.Keys = [][]byte{oldKey} })
	for round, keys := range [][][]byte{{oldKey, newKey}, {newKey, oldKey}, {newKey}} {
		for i, n := range nodes {
			n.stop(t, net)
			cfg := n.cfg
			cfg.Keys = keys
			cfg.Peers = []string{net.Addr(nodes[1-i].name)}
			nodes[i] = startNode(t, net, cfg)
			waitMembers(t, nodes, 2)
			if err := nodes[i].c.Put("rotation", nodes[i].name, []byte{byte(round)}); err != nil {
				t.Fatal(err)
			}
			r, _ := nodes[i].c.Get("rotation", nodes[i].name)
			gossiptest.Eventually(t, 20*time.Second, "a write after a restart to converge", func() bool { return allHave(nodes, r) })
		}
	}
}

// countingLog is gossiptest.Log that also counts the lines (memberlist's
// included) whose message contains word, case-insensitively.
func countingLog(name, word string, n *atomic.Int64) *logrus.Entry {
	l := gossiptest.Log(name)
	l.Logger.SetLevel(logrus.DebugLevel)
	l.Logger.AddHook(&countHook{word: strings.ToLower(word), n: n})
	return l
}

type countHook struct {
	word string
	n    *atomic.Int64
}

func (h *countHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h *countHook) Fire(e *logrus.Entry) error {
	if strings.Contains(strings.ToLower(e.Message), h.word) {
		h.n.Add(1)
	}
	return nil
}
