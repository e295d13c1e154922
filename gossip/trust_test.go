package gossip

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"go.etcd.io/bbolt"
)

// A record claiming a version far ahead of the clock is refused and leaves
// the clock alone, so the next local write neither wraps nor jumps.
func TestApplyRefusesVersionsFarAhead(t *testing.T) {
	s := newTestStore(t, "a", &FakeClock{})
	s.apply(&Record{Kind: "host", Key: "b", Value: []byte("v"), Owner: "b", Version: 10})
	for _, v := range []uint64{math.MaxUint64, math.MaxUint64 - 1, 10 + MaxClockAhead + 1, MaxVersion + 1} {
		res, _, why := s.apply(&Record{Kind: "host", Key: "evil", Value: []byte("x"), Owner: "evil", Version: v})
		if res != refused || why == nil || why.cause != CauseVersion {
			t.Fatalf("version %d: result %v %+v, want refused for its version", v, res, why)
		}
	}
	if c := s.stats().Clock; c != 10 {
		t.Fatalf("clock %d after refused records, want 10", c)
	}
	if _, ok := s.get("host", "evil"); ok {
		t.Fatal("a refused record was stored")
	}
	r, _, err := s.put("host", "a", []byte("mine"))
	if err != nil || r.Version != 11 {
		t.Fatalf("own write after the attack: %+v %v, want version 11", r, err)
	}
	// Exactly MaxClockAhead ahead is still accepted (an honest partition).
	if res, _, why := s.apply(&Record{Kind: "host", Key: "c", Owner: "c", Version: 11 + MaxClockAhead}); res != applied {
		t.Fatalf("record at the bound: %v %+v", res, why)
	}
}

// The clock stops at MaxVersion: a write fails rather than wrap to 0.
func TestClockNeverWraps(t *testing.T) {
	s := newTestStore(t, "a", &FakeClock{})
	s.mu.Lock()
	s.clock = MaxVersion - 1
	s.mu.Unlock()
	if r, _, err := s.put("host", "a", []byte("1")); err != nil || r.Version != MaxVersion {
		t.Fatalf("last write: %+v %v, want version %d", r, err, MaxVersion)
	}
	if _, _, err := s.put("host", "a", []byte("2")); !errors.Is(err, ErrClockExhausted) {
		t.Fatalf("write past MaxVersion: %v, want ErrClockExhausted", err)
	}
	if _, _, err := s.del("host", "a"); !errors.Is(err, ErrClockExhausted) {
		t.Fatalf("delete past MaxVersion: %v, want ErrClockExhausted", err)
	}
	if r, _ := s.get("host", "a"); r.Version != MaxVersion || string(r.Value) != "1" {
		t.Fatalf("record %+v changed by refused writes", r)
	}
}

func TestCheckRecord(t *testing.T) {
	ok := Record{Kind: "net", Key: "k", Value: []byte("v"), Owner: "host-1a2b3c", Version: 1}
	tests := []struct {
		name  string
		mod   func(r *Record)
		cause RefusalCause
	}{
		{"fine", func(r *Record) {}, ""},
		{"dotted owner", func(r *Record) { r.Owner = "h1.example_2" }, ""},
		{"empty kind", func(r *Record) { r.Kind = "" }, CauseBadRecord},
		{"long kind", func(r *Record) { r.Kind = strings.Repeat("k", MaxKindLen+1) }, CauseBadRecord},
		{"long key", func(r *Record) { r.Key = strings.Repeat("k", MaxKeyLen+1) }, CauseBadRecord},
		{"empty owner", func(r *Record) { r.Owner = "" }, CauseBadRecord},
		{"owner with slash", func(r *Record) { r.Owner = "a/b" }, CauseBadRecord},
		{"owner with newline", func(r *Record) { r.Owner = "a\nlevel=error" }, CauseBadRecord},
		{"owner starting with dash", func(r *Record) { r.Owner = "-a" }, CauseBadRecord},
		{"long owner", func(r *Record) { r.Owner = strings.Repeat("o", MaxOwnerLen+1) }, CauseBadRecord},
		{"tombstone with value", func(r *Record) { r.Deleted = true }, CauseBadRecord},
		{"oversized", func(r *Record) { r.Value = make([]byte, MaxRecordBytes) }, CauseBadRecord},
		{"version 2^64-1", func(r *Record) { r.Version = math.MaxUint64 }, CauseVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := *ok.clone()
			tt.mod(&r)
			cause, err := checkRecord(&r)
			if cause != tt.cause || (err == nil) != (tt.cause == "") {
				t.Fatalf("cause %q (%v), want %q", cause, err, tt.cause)
			}
		})
	}
}

func TestOwnerKeyedValidators(t *testing.T) {
	tests := []struct {
		name  string
		fn    func(Record) error
		key   string
		owner string
		ok    bool
	}{
		{"suffix own", OwnerSuffix("/"), "198.18.0.0/16/b", "b", true},
		{"suffix other's", OwnerSuffix("/"), "198.18.0.0/16/a", "b", false},
		{"suffix longer name", OwnerSuffix("/"), "198.18.0.0/16/ab", "b", false},
		{"suffix no separator", OwnerSuffix("/"), "b", "b", false},
		{"prefix own", OwnerPrefix("/"), "b/x", "b", true},
		{"prefix other's", OwnerPrefix("/"), "a/x", "b", false},
		{"whole key own", OwnerIsKey(), "b", "b", true},
		{"whole key other's", OwnerIsKey(), "a", "b", false},
	}
	for _, tt := range tests {
		for _, deleted := range []bool{false, true} {
			r := Record{Kind: "net", Key: tt.key, Owner: tt.owner, Version: 1, Deleted: deleted}
			err := tt.fn(r)
			if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrNotOwner)) {
				t.Errorf("%s (deleted %v): %v, want ok=%v", tt.name, deleted, err, tt.ok)
			}
		}
	}
}

func TestWriterCaps(t *testing.T) {
	s := newTestStore(t, "a", &FakeClock{})
	s.limits = writerLimits{records: 3, bytes: 200}
	rec := func(owner, key string, v uint64, value string) *Record {
		return &Record{Kind: "k", Key: key, Value: []byte(value), Owner: owner, Version: v}
	}
	for i := range 3 {
		if res, _, why := s.apply(rec("evil", fmt.Sprint(i), uint64(i+1), "x")); res != applied {
			t.Fatalf("record %d under the cap: %v %+v", i, res, why)
		}
	}
	res, _, why := s.apply(rec("evil", "3", 4, "x"))
	if res != refused || why.cause != CauseWriterCap {
		t.Fatalf("record past the cap: %v %+v", res, why)
	}
	// Overwriting its own records stays possible; other writers are not
	// affected; a tombstone of its own counts until reaped into a floor.
	if res, _, _ := s.apply(rec("evil", "0", 5, "y")); res != applied {
		t.Fatalf("overwrite under the cap: %v", res)
	}
	if res, _, _ := s.apply(rec("b", "0b", 6, "x")); res != applied {
		t.Fatalf("another writer: %v", res)
	}
	if res, _, _ := s.apply(rec("b", "big", 7, strings.Repeat("x", 200))); res != refused {
		t.Fatal("a record over the byte cap was stored")
	}
	if res, _, _ := s.apply(&Record{Kind: "k", Key: "1", Owner: "evil", Version: 8, Deleted: true}); res != applied {
		t.Fatal("tombstone over own record refused")
	}
	if res, _, _ := s.apply(rec("evil", "4", 9, "x")); res != refused {
		t.Fatal("a tombstone freed room before it was reaped")
	}
	s.mu.Lock()
	s.entries[rkey{"k", "1"}].rec.ReapAt = time.Time{}.Add(1)
	s.mu.Unlock()
	s.reap()
	if res, _, why := s.apply(rec("evil", "4", 10, "x")); res != applied {
		t.Fatalf("after reaping its tombstone: %v %+v", res, why)
	}
	// Own writes past the cap fail: peers would refuse them.
	for i := range 3 {
		if _, _, err := s.put("k", fmt.Sprint("own", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.put("k", "own3", []byte("v")); !errors.Is(err, ErrWriterCap) {
		t.Fatalf("own write past the cap: %v", err)
	}
	if st := s.stats(); st.Records != 7 {
		t.Fatalf("%d live records, want 7", st.Records)
	}
}

// A flooding writer is logged once per cause (then once per interval), with
// its name, and every refusal is counted.
func TestRefusalsLoggedOncePerPeerAndCause(t *testing.T) {
	logger, hook := logtest.NewNullLogger()
	clk := &FakeClock{}
	c, err := New(Config{NodeName: "a", Port: testPort, Log: logrus.NewEntry(logger), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Shutdown()
	for i := range 100 {
		c.merge([]*Record{
			{Kind: "k", Key: fmt.Sprint(i), Owner: "evil", Version: math.MaxUint64},
			{Kind: "k", Key: fmt.Sprint(i), Owner: "bad/name", Version: 1},
			{Kind: "k", Key: fmt.Sprint(i), Owner: "evil", Version: 1, Value: make([]byte, MaxRecordBytes)},
		}, true)
	}
	lines := func() map[string]int {
		out := map[string]int{}
		for _, e := range hook.AllEntries() {
			if e.Level == logrus.WarnLevel && strings.HasPrefix(e.Message, "refused gossip record") {
				out[fmt.Sprint(e.Data["peer"], " ", e.Data["cause"])]++
			}
		}
		return out
	}
	want := map[string]int{"evil version": 1, "(invalid) bad-record": 1, "evil bad-record": 1}
	if got := lines(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("log lines %v, want %v", got, want)
	}
	stats := c.RefusalStats()
	wantStats := []Refusal{{"(invalid)", CauseBadRecord, 100}, {"evil", CauseBadRecord, 100}, {"evil", CauseVersion, 100}}
	if fmt.Sprint(stats) != fmt.Sprint(wantStats) {
		t.Fatalf("RefusalStats %v, want %v", stats, wantStats)
	}
	if c.Stats().Refused != 300 {
		t.Fatalf("Stats.Refused %d, want 300", c.Stats().Refused)
	}
	clk.Advance(refusalLogInterval)
	c.merge([]*Record{{Kind: "k", Key: "x", Owner: "evil", Version: math.MaxUint64}}, true)
	if got := lines()["evil version"]; got != 2 {
		t.Fatalf("%d lines for evil/version after the interval, want 2", got)
	}
	last := hook.LastEntry()
	if last.Data["refused"] != uint64(100) || last.Data["refused_total"] != uint64(101) {
		t.Fatalf("second line counts %v", last.Data)
	}
	if len(c.store.list("")) != 0 || c.Stats().Clock != 0 {
		t.Fatal("refused records changed the state")
	}
}

// Peer-chosen owner names cannot grow the refusal table without bound.
func TestRefusalPairsBounded(t *testing.T) {
	c, err := New(Config{NodeName: "a", Port: testPort, Log: testLog("a")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Shutdown()
	for i := range 3 * maxRefusalPairs {
		c.merge([]*Record{{Kind: "k", Key: "k", Owner: fmt.Sprint("n", i), Version: math.MaxUint64}}, false)
	}
	stats := c.RefusalStats()
	if len(stats) != maxRefusalPairs+1 || c.Stats().Refused != 3*maxRefusalPairs {
		t.Fatalf("%d pairs, %d refusals", len(stats), c.Stats().Refused)
	}
}

func openDB(t *testing.T) *bbolt.DB {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "state.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Validators run before a record is stored or relayed; a panicking one
// refuses; one registered late drops what it refuses from the store; with
// a DB, records in this node's name it never wrote are refused.
func TestMergeRunsValidatorsAndGuardsOwnName(t *testing.T) {
	c, err := New(Config{NodeName: "a", Port: testPort, Log: testLog("a"), DB: openDB(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Shutdown()
	c.merge([]*Record{{Kind: "late", Key: "x/a", Value: []byte("v"), Owner: "b", Version: 1}}, false)
	c.RegisterValidator("net", OwnerSuffix("/"))
	c.RegisterValidator("pan", func(Record) error { panic("consumer bug") })
	c.merge([]*Record{
		{Kind: "net", Key: "198.18.0.0/15/b", Value: []byte("ok"), Owner: "b", Version: 2},
		{Kind: "net", Key: "198.18.0.0/15/c", Value: []byte("forged"), Owner: "b", Version: 3},
		{Kind: "net", Key: "198.18.0.0/15/b", Owner: "c", Version: 4, Deleted: true},
		{Kind: "pan", Key: "p", Owner: "b", Version: 5},
		{Kind: "own", Key: "o", Value: []byte("forged"), Owner: "a", Version: 6},
	}, true)
	if r, ok := c.Get("net", "198.18.0.0/15/b"); !ok || string(r.Value) != "ok" {
		t.Fatalf("honest record %+v %v; a foreign tombstone must not delete it", r, ok)
	}
	for _, k := range []rkey{{"net", "198.18.0.0/15/c"}, {"pan", "p"}, {"own", "o"}} {
		if _, ok := c.store.entryState(k.kind, k.key); ok {
			t.Errorf("refused %v was stored", k)
		}
	}
	if n := c.queue.NumQueued(); n != 1 {
		t.Errorf("%d records queued for relaying, want only the honest one", n)
	}
	c.RegisterValidator("late", OwnerSuffix("/"))
	if _, ok := c.Get("late", "x/a"); ok {
		t.Error("a stored record refused by a late validator is still there")
	}
	got := []string{}
	for _, r := range c.RefusalStats() {
		got = append(got, fmt.Sprint(r.Peer, "/", r.Cause, "=", r.Count))
	}
	if fmt.Sprint(got) != "[a/impersonation=1 b/not-owner=2 b/validator=1 c/not-owner=1]" {
		t.Fatalf("refusals %v", got)
	}
	if c.Stats().Refused != 5 {
		t.Fatalf("%d refusals, want 5", c.Stats().Refused)
	}
}

// A DB poisoned by an older release (which trusted any version) or by hand
// is checked on load like a peer's records: the poisoned clock and records
// are refused, logged, counted and deleted, and writes go on from the
// highest trusted version.
func TestLoadRefusesPoisonedState(t *testing.T) {
	db := openDB(t)
	poison := []dirtyItem{
		{k: rkey{"block", "good"}, e: &entry{rec: Record{Kind: "block", Key: "good", Value: []byte("v"), Owner: "b", Version: 40}}},
		{k: rkey{"block", "own"}, e: &entry{rec: Record{Kind: "block", Key: "own", Value: []byte("v"), Owner: "a", Version: 41}}},
		{k: rkey{"block", "wrap"}, e: &entry{rec: Record{Kind: "block", Key: "wrap", Value: []byte("v"), Owner: "evil", Version: math.MaxUint64}}},
		{k: rkey{"block", "ahead"}, e: &entry{rec: Record{Kind: "block", Key: "ahead", Owner: "evil", Version: 41 + MaxClockAhead + 1, Deleted: true}}},
		{k: rkey{"block", "name"}, e: &entry{rec: Record{Kind: "block", Key: "name", Owner: "bad name", Version: 3}}},
	}
	if err := writeState(db, "a", poison, math.MaxUint64); err != nil {
		t.Fatal(err)
	}
	logger, hook := logtest.NewNullLogger()
	c, err := New(Config{NodeName: "a", Port: testPort, DB: db, Log: logrus.NewEntry(logger)})
	if err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.Clock != 41 || st.Records != 2 || st.Tombstones != 0 {
		t.Fatalf("loaded %+v, want clock 41 and the two good records", st)
	}
	if c.Stats().Refused != 3 {
		t.Fatalf("%d refusals, want 3: %v", c.Stats().Refused, c.RefusalStats())
	}
	clockLogged := false
	for _, e := range hook.AllEntries() {
		clockLogged = clockLogged || strings.Contains(e.Message, "refusing the persisted Lamport clock")
	}
	if !clockLogged {
		t.Fatal("the refused clock was not logged")
	}
	if err := c.Put("block", "own", []byte("next")); err != nil {
		t.Fatal(err)
	}
	if r, _ := c.Get("block", "own"); r.Version != 42 {
		t.Fatalf("first write after load has version %d, want 42", r.Version)
	}
	if err := c.Shutdown(); err != nil {
		t.Fatal(err)
	}
	entries, meta, _, err := loadState(db)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || meta.Clock != 42 {
		t.Fatalf("DB after restart holds %d records and clock %d, want 2 and 42", len(entries), meta.Clock)
	}
}

// The override of a forgery in this node's name beats the forgery: its own
// live record again, or a tombstone, with a version above the forgery's.
func TestPrepareReassertBeatsTheForgery(t *testing.T) {
	s := newTestStore(t, "a", &FakeClock{})
	if _, _, err := s.put("net", "k1", []byte("mine")); err != nil {
		t.Fatal(err)
	}
	f1 := &Record{Kind: "net", Key: "k1", Value: []byte("forged"), Owner: "a", Version: 100}
	r, err := s.prepareReassert(f1)
	if err != nil || r == nil || !newer(r, f1) || r.Deleted || string(r.Value) != "mine" || r.Owner != "a" {
		t.Fatalf("override of a live own record: %+v %v", r, err)
	}
	s.install(r)
	f2 := &Record{Kind: "net", Key: "never", Value: []byte("forged"), Owner: "a", Version: 500}
	r, err = s.prepareReassert(f2)
	if err != nil || r == nil || !newer(r, f2) || !r.Deleted || r.Value != nil {
		t.Fatalf("override of a key never written: %+v %v", r, err)
	}
	if r, _ := s.prepareReassert(f1); r != nil {
		t.Fatalf("a stale forgery was overridden again: %+v", r)
	}
}
