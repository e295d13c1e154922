package gossip

import (
	"bytes"
	"math"
	"testing"
	"time"
)

// Run briefly with
//
//	go test -run='^$' -fuzz='^FuzzDecode$' -fuzztime=10s ./gossip/
//	go test -run='^$' -fuzz='^FuzzApply$' -fuzztime=10s ./gossip/
//
// The seed corpus is under testdata/fuzz/; plain `go test` runs the seeds.

// fuzzSeeds are valid and hostile messages every target starts from.
func fuzzSeeds() [][]byte {
	rec := func(r Record) []byte { return encodeRecordMsg(&r) }
	state := func(recs ...Record) []byte {
		b := []byte{wireVersion, msgState, byte(len(recs))}
		for _, r := range recs {
			b = appendRecord(b, &r)
		}
		return b
	}
	return [][]byte{
		rec(Record{Kind: "host", Key: "b", Value: []byte("v"), Owner: "b", Version: 3}),
		rec(Record{Kind: "net", Key: "198.18.0.0/15/b", Owner: "b", Version: 4, Deleted: true}),
		rec(Record{Kind: "net", Key: "198.18.0.0/15/a", Value: []byte("forged"), Owner: "b", Version: 5}),
		rec(Record{Kind: "host", Key: "e", Value: []byte("x"), Owner: "e", Version: math.MaxUint64}),
		rec(Record{Kind: "host", Key: "e", Owner: "bad name", Version: 2}),
		state(Record{Kind: "k", Key: "1", Owner: "f", Version: 1}, Record{Kind: "k", Key: "2", Owner: "f", Version: 1 << 33},
			Record{Kind: "k", Key: "3", Value: bytes.Repeat([]byte{1}, 300), Owner: "f", Version: 7}),
		{wireVersion, msgState, 0xff, 0xff, 0xff, 0xff, 0x0f},
		{wireVersion, msgRecord, 1, 0, 0xff, 0xff, 0x03},
	}
}

// Decoding never panics, and what it accepts re-encodes to a message that
// decodes to the same records.
func FuzzDecode(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		typ, recs, err := decodeMsg(msg)
		if err != nil {
			return
		}
		for _, r := range recs {
			if r.Kind == "" || r.Key == "" || r.Owner == "" || (r.Deleted && r.Value != nil) {
				t.Fatalf("decoded an invalid record %+v", r)
			}
			if typ != msgRecord {
				continue
			}
			_, again, err := decodeMsg(encodeRecordMsg(r))
			if err != nil || len(again) != 1 || !sameVersion(again[0], r) || again[0].Kind != r.Kind || again[0].Key != r.Key {
				t.Fatalf("re-encoding %+v gave %+v, %v", r, again, err)
			}
		}
	})
}

// Applying any message never panics, no record moves the clock by more
// than MaxClockAhead, and the store's invariants hold: the clock within
// MaxVersion and not behind any version, every
// record passing the generic checks and its kind's validator, the
// per-writer usage equal to a recount and within the caps, and own writes
// still possible.
func FuzzApply(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		clk := &FakeClock{}
		c, err := New(Config{NodeName: "a", Port: testPort, Log: testLog("a"), Now: clk.Now, MaxRecordsPerWriter: 4, MaxBytesPerWriter: 2 * MaxRecordBytes})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Shutdown()
		c.RegisterValidator("net", OwnerSuffix("/"))
		c.merge([]*Record{
			{Kind: "host", Key: "b", Value: []byte("old"), Owner: "b", Version: 2},
			{Kind: "net", Key: "198.18.0.0/15/b", Value: []byte("old"), Owner: "b", Version: 1},
		}, false)
		if err := c.Put("host", "a", []byte("mine")); err != nil {
			t.Fatal(err)
		}
		if _, recs, err := decodeMsg(msg); err == nil {
			for _, r := range recs {
				before := c.store.clockValue()
				c.merge([]*Record{r}, true)
				if after := c.store.clockValue(); after > before+MaxClockAhead {
					t.Fatalf("one record moved the clock from %d to %d", before, after)
				}
			}
		}
		clk.Advance(2 * time.Hour) // tombstones become floors
		c.store.reap()
		checkStoreInvariants(t, c)
		if err := c.Put("host", "a", []byte("again")); err != nil {
			t.Fatalf("own write after the message: %v", err)
		}
	})
}

func checkStoreInvariants(t *testing.T, c *Cluster) {
	t.Helper()
	s := c.store
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.clock > MaxVersion {
		t.Fatalf("clock %d beyond MaxVersion", s.clock)
	}
	usage := map[string]writerUsage{}
	for k, e := range s.entries {
		if e.rec.Version > s.clock {
			t.Fatalf("%v has version %d above the clock %d", k, e.rec.Version, s.clock)
		}
		if k.kind != e.rec.Kind || k.key != e.rec.Key {
			t.Fatalf("entry %v holds %+v", k, e.rec)
		}
		if cause, err := checkRecord(&e.rec); err != nil {
			t.Fatalf("stored %+v fails the checks: %s %v", e.rec, cause, err)
		}
		if k.kind == "net" && e.rec.Owner != "a" {
			if err := OwnerSuffix("/")(e.rec); err != nil && !e.floor {
				t.Fatalf("stored %+v refused by its validator: %v", e.rec, err)
			}
		}
		if !e.floor {
			u := usage[e.rec.Owner]
			u.records++
			u.bytes += encodedLen(&e.rec)
			usage[e.rec.Owner] = u
		}
	}
	for owner, u := range usage {
		if u != s.usage[owner] || u.records > s.limits.records || u.bytes > s.limits.bytes {
			t.Fatalf("writer %q: recount %+v, tracked %+v, caps %+v", owner, u, s.usage[owner], s.limits)
		}
	}
	if len(usage) != len(s.usage) {
		t.Fatalf("tracked usage %v, recount %v", s.usage, usage)
	}
}
