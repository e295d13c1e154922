package gossip

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

func newTestStore(t *testing.T, self string, clk *FakeClock) *store {
	t.Helper()
	q := newEventQueue(testLog(self))
	q.start()
	t.Cleanup(q.close)
	return newStore(self, clk.Now, time.Hour, 24*time.Hour, q, writerLimits{records: DefaultMaxRecordsPerWriter, bytes: DefaultMaxBytesPerWriter})
}

func TestStorePutValidation(t *testing.T) {
	s := newTestStore(t, "a", &FakeClock{})
	tests := []struct {
		name      string
		kind, key string
		value     []byte
		wantErr   error
		wantInErr string
	}{
		{"ok", "block", "k", []byte("v"), nil, ""},
		{"empty kind", "", "k", nil, ErrInvalidRecord, "record kind is empty"},
		{"empty key", "block", "", nil, ErrInvalidRecord, "record key is empty"},
		{"long kind", strings.Repeat("k", MaxKindLen+1), "k", nil, ErrInvalidRecord, "more than 64"},
		{"long key", "block", strings.Repeat("k", MaxKeyLen+1), nil, ErrInvalidRecord, "more than 256"},
		{"value too large", "block", "big", make([]byte, MaxRecordBytes), ErrRecordTooLarge, "store less in its value"},
		{"largest value", "block", "fits", make([]byte, MaxRecordBytes-2-encodedLen(&Record{Kind: "block", Key: "fits", Owner: "a", Version: 1})-1), nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := s.put(tt.kind, tt.key, tt.value)
			if !errors.Is(err, tt.wantErr) || (err != nil && !strings.Contains(err.Error(), tt.wantInErr)) {
				t.Fatalf("put: %v, want %v containing %q", err, tt.wantErr, tt.wantInErr)
			}
		})
	}
}

func TestStorePutDeleteSemantics(t *testing.T) {
	s := newTestStore(t, "a", &FakeClock{})
	r1, changed, err := s.put("host", "a", []byte("v"))
	if err != nil || !changed || r1.Version != 1 || r1.Owner != "a" {
		t.Fatalf("first put: %+v %v %v", r1, changed, err)
	}
	if _, changed, _ := s.put("host", "a", []byte("v")); changed {
		t.Error("re-putting the same own value must be a no-op")
	}
	// A peer's newer record with the same value: our re-put must win again.
	s.apply(&Record{Kind: "host", Key: "a", Value: []byte("v"), Owner: "b", Version: 10})
	r2, changed, _ := s.put("host", "a", []byte("v"))
	if !changed || r2.Version != 11 || r2.Owner != "a" {
		t.Errorf("put over a peer's copy: %+v %v", r2, changed)
	}
	if _, changed, _ := s.del("host", "missing"); changed {
		t.Error("deleting a missing key must be a no-op")
	}
	tomb, changed, _ := s.del("host", "a")
	if !changed || !tomb.Deleted || tomb.Version != 12 || tomb.Value != nil {
		t.Errorf("delete: %+v %v", tomb, changed)
	}
	if _, changed, _ := s.del("host", "a"); changed {
		t.Error("deleting twice must be a no-op")
	}
	if _, ok := s.get("host", "a"); ok {
		t.Error("get returned a deleted record")
	}
	if len(s.list("host")) != 0 {
		t.Error("list returned a deleted record")
	}
}

// Whatever order copies arrive in, every store ends with the same winner and
// a clock at least as high as every version seen.
func TestStoreApplyOrderIndependent(t *testing.T) {
	var copies []*Record
	for i := range 30 {
		owner := fmt.Sprintf("n%d", i%4)
		copies = append(copies, &Record{Kind: "network", Key: fmt.Sprintf("k%d", i%3), Value: []byte(fmt.Sprint(i)),
			Owner: owner, Version: uint64(i % 7), Deleted: i%5 == 0})
	}
	var want map[string]Record
	r := rand.New(rand.NewPCG(5, 6))
	for trial := range 20 {
		s := newTestStore(t, "x", &FakeClock{})
		for _, i := range r.Perm(len(copies)) {
			c := *copies[i]
			s.apply(&c)
		}
		got := map[string]Record{}
		for _, k := range []string{"k0", "k1", "k2"} {
			e, ok := s.entryState("network", k)
			if !ok {
				t.Fatalf("key %s missing", k)
			}
			got[k] = e.rec
		}
		if s.stats().Clock != 6 {
			t.Errorf("clock %d, want 6", s.stats().Clock)
		}
		if trial == 0 {
			want = got
			continue
		}
		for k, w := range want {
			g := got[k]
			if !sameVersion(&g, &w) {
				t.Fatalf("trial %d key %s: %+v, want %+v", trial, k, g, w)
			}
		}
	}
}

func TestStoreWindowRotatesWithinBudget(t *testing.T) {
	s := newTestStore(t, "a", &FakeClock{})
	const n, budget = 1000, 4096
	for i := range n {
		if _, _, err := s.put("block", fmt.Sprintf("b%04d", i), []byte("0123456789")); err != nil {
			t.Fatal(err)
		}
	}
	s.del("block", "b0007")
	// A floor is never sent.
	s.apply(&Record{Kind: "block", Key: "floor", Owner: "z", Version: 1, Deleted: true})
	s.mu.Lock()
	s.entries[rkey{"block", "floor"}].floor = true
	s.mu.Unlock()

	seen := map[string]int{}
	recLen := encodedLen(&Record{Kind: "block", Key: "b0000", Value: []byte("0123456789"), Owner: "a", Version: 1000})
	// Each window is filled to within one record of the budget, so a full
	// rotation takes at most this many windows.
	maxWindows := n*recLen/(budget-recLen) + 1
	windows := 0
	for ; len(seen) < n; windows++ {
		if windows > maxWindows {
			t.Fatalf("after %d windows only %d of %d records were sent", windows, len(seen), n)
		}
		w := s.window(budget)
		if len(w) > budget+12 {
			t.Fatalf("window of %d bytes, budget %d", len(w), budget)
		}
		typ, recs, err := decodeMsg(w)
		if err != nil || typ != msgState || len(recs) == 0 {
			t.Fatalf("window %d: %v %d %d", windows, err, typ, len(recs))
		}
		for _, r := range recs {
			if r.Key == "floor" {
				t.Fatal("a floor was sent")
			}
			seen[r.Key]++
			if r.Key == "b0007" && !r.Deleted {
				t.Error("tombstone sent as a live record")
			}
		}
	}
	// A record larger than the budget still goes out, alone.
	big := newTestStore(t, "a", &FakeClock{})
	big.put("block", "big", make([]byte, 900))
	big.put("block", "big2", make([]byte, 900))
	if _, recs, _ := decodeMsg(big.window(100)); len(recs) != 1 {
		t.Errorf("window with a tiny budget carried %d records, want 1", len(recs))
	}
	if w := newTestStore(t, "a", &FakeClock{}).window(budget); w != nil {
		t.Errorf("empty store sent %d bytes", len(w))
	}
}

func TestStoreReapFloorForget(t *testing.T) {
	clk := &FakeClock{}
	s := newTestStore(t, "a", clk)
	s.put("endpoint", "e", []byte("v"))
	live, _ := s.get("endpoint", "e")
	s.del("endpoint", "e")

	if f, g := s.reap(); f+g != 0 {
		t.Fatalf("reaped %d/%d before the TTL", f, g)
	}
	clk.Advance(time.Hour)
	if f, _ := s.reap(); f != 1 {
		t.Fatalf("floored %d, want 1", f)
	}
	if st := s.stats(); st.Floors != 1 || st.Tombstones != 0 {
		t.Fatalf("stats %+v", st)
	}
	// A stale live copy is refused and answered with the tombstone.
	stale := live
	res, tomb, _ := s.apply(&stale)
	if res != staleFloor || tomb == nil || !tomb.Deleted || tomb.Version != 2 || !tomb.ReapAt.IsZero() {
		t.Fatalf("stale copy: %v %+v", res, tomb)
	}
	if _, ok := s.get("endpoint", "e"); ok {
		t.Fatal("stale copy resurrected the record")
	}
	// A genuinely newer write after the deletion is accepted.
	res, _, _ = s.apply(&Record{Kind: "endpoint", Key: "e", Value: []byte("new"), Owner: "b", Version: 3})
	if res != applied {
		t.Fatalf("newer write after deletion: %v", res)
	}
	s.del("endpoint", "e")
	clk.Advance(time.Hour)
	s.reap()
	clk.Advance(24 * time.Hour)
	if _, g := s.reap(); g != 1 {
		t.Fatalf("forgot %d floors, want 1", g)
	}
	if _, ok := s.entryState("endpoint", "e"); ok {
		t.Fatal("floor kept past FloorTTL")
	}
}

func TestSubscribeReplaysThenStreamsInOrder(t *testing.T) {
	s := newTestStore(t, "a", &FakeClock{})
	s.put("network", "n1", []byte("1"))
	s.put("network", "n2", []byte("2"))
	s.put("host", "h", []byte("h"))

	var mu sync.Mutex
	var got []string
	s.subscribe("network", func(old, cur *Record) {
		mu.Lock()
		defer mu.Unlock()
		o := "-"
		if old != nil {
			o = string(old.Value)
		}
		n := string(cur.Value)
		if cur.Deleted {
			n = "deleted"
		}
		got = append(got, fmt.Sprintf("%s:%s>%s", cur.Key, o, n))
	}, nil)
	s.put("network", "n1", []byte("1b"))
	s.put("host", "h", []byte("h2")) // other kind: not delivered
	s.del("network", "n2")
	s.apply(&Record{Kind: "network", Key: "n2", Owner: "z", Version: 99, Deleted: true}) // tombstone over tombstone: silent
	s.apply(&Record{Kind: "network", Key: "n3", Owner: "z", Version: 100, Value: []byte("3")})
	s.apply(&Record{Kind: "network", Key: "n9", Owner: "z", Version: 101, Deleted: true}) // unknown key deleted: silent

	want := []string{"n1:->1", "n2:->2", "n1:1>1b", "n2:2>deleted", "n3:->3"}
	waitFor(t, 5*time.Second, "callbacks", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= len(want)
	})
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("callbacks\n got %v\nwant %v", got, want)
	}
}

func TestSubscriberPanicDoesNotStopDelivery(t *testing.T) {
	s := newTestStore(t, "a", &FakeClock{})
	done := make(chan string, 2)
	s.subscribe("k", func(_, cur *Record) {
		if cur.Key == "boom" {
			panic("consumer bug")
		}
		done <- cur.Key
	}, nil)
	s.put("k", "boom", nil)
	s.put("k", "after", nil)
	select {
	case k := <-done:
		if k != "after" {
			t.Fatalf("got %s", k)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("delivery stopped after a panicking callback")
	}
}

func TestPersistenceAcrossNew(t *testing.T) {
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "p.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	clk := &FakeClock{}
	cfg := Config{NodeName: "a", Port: testPort, DB: db, Log: testLog("a"), Now: clk.Now}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.Put("block", "own", []byte("mine"))
	c.Put("block", "gone", []byte("x"))
	c.Delete("block", "gone")
	c.merge([]*Record{{Kind: "block", Key: "peer", Value: []byte("theirs"), Owner: "b", Version: 50}}, false)
	if err := c.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := c.Put("block", "late", nil); !errors.Is(err, ErrClosed) {
		t.Errorf("put after shutdown: %v", err)
	}

	c2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Shutdown()
	if r, ok := c2.Get("block", "own"); !ok || string(r.Value) != "mine" || r.Owner != "a" {
		t.Errorf("own record after restart: %+v %v", r, ok)
	}
	if r, ok := c2.Get("block", "peer"); !ok || r.Version != 50 {
		t.Errorf("peer record after restart: %+v %v", r, ok)
	}
	e, ok := c2.store.entryState("block", "gone")
	if !ok || !e.rec.Deleted || e.rec.ReapAt.IsZero() {
		t.Errorf("tombstone after restart: %+v %v", e, ok)
	}
	if st := c2.Stats(); st.Clock != 50 {
		t.Errorf("clock after restart %d, want 50", st.Clock)
	}
	c2.Put("block", "own", []byte("again"))
	if r, _ := c2.Get("block", "own"); r.Version != 51 {
		t.Errorf("first version after restart %d, want 51", r.Version)
	}

	// Another node name on the same DB: the records stay, now foreign.
	c2.Shutdown()
	cfg.NodeName = "renamed"
	c3, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Shutdown()
	if r, _ := c3.Get("block", "own"); r.Owner != "a" {
		t.Errorf("owner after rename %q", r.Owner)
	}
}
