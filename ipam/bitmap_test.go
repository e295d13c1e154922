package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"github.com/docker/go-plugins-helpers/ipam"
	"go.etcd.io/bbolt"
)

func TestBitmapFirstClearAndCount(t *testing.T) {
	b := newBitmap(200)
	for i := range uint32(130) {
		b.set(i)
	}
	tests := []struct {
		lo, hi uint32
		want   uint32
		ok     bool
		clear  int
	}{
		{0, 199, 130, true, 70},
		{0, 129, 0, false, 0},
		{5, 63, 0, false, 0},
		{131, 199, 131, true, 69},
		{199, 199, 199, true, 1},
		{150, 140, 0, false, 0}, // empty interval
		{0, 200, 0, false, 0},   // beyond the bitmap
	}
	for _, tc := range tests {
		got, ok := b.firstClear(tc.lo, tc.hi)
		if got != tc.want || ok != tc.ok {
			t.Errorf("firstClear(%d,%d) = %d,%v want %d,%v", tc.lo, tc.hi, got, ok, tc.want, tc.ok)
		}
		if n := b.countClear(tc.lo, tc.hi); n != tc.clear {
			t.Errorf("countClear(%d,%d) = %d want %d", tc.lo, tc.hi, n, tc.clear)
		}
	}
	b.clear(64)
	if got, ok := b.firstClear(3, 199); got != 64 || !ok {
		t.Errorf("after clear(64): %d,%v", got, ok)
	}
}

func TestAllocatorSpansAndWrap(t *testing.T) {
	a := newAllocator(256)
	a.setSpans([]span{{10, 12}, {100, 101}, {250, 255}})
	if a.free != 11 || a.capacity() != 11 {
		t.Fatalf("free %d capacity %d", a.free, a.capacity())
	}
	var got []uint32
	for {
		o, ok := a.next()
		if !ok {
			break
		}
		got = append(got, o)
	}
	if fmt.Sprint(got) != "[10 11 12 100 101 250 251 252 253 254 255]" {
		t.Fatalf("order %v", got)
	}
	// Release two behind the cursor: the next search wraps to them.
	a.release(11)
	a.release(101)
	if o, _ := a.next(); o != 11 {
		t.Fatalf("wrap got %d want 11", o)
	}
	if o, _ := a.next(); o != 101 {
		t.Fatalf("wrap got %d want 101", o)
	}
	// A claim outside the spans does not change free.
	if !a.claim(50) || a.free != 0 || a.claim(50) {
		t.Fatalf("claim outside spans: free %d", a.free)
	}
	// Cursor inside a span, free bits only before it in the same span.
	a.release(250)
	a.cursor = 253
	if o, ok := a.next(); o != 250 || !ok {
		t.Fatalf("same-span wrap got %d,%v", o, ok)
	}
}

func TestOwnershipGrantDonate(t *testing.T) {
	o := newOwnership(span{0, 9}, span{20, 29})
	o.grant(span{10, 19}) // fills the gap: one range
	if fmt.Sprint(o.ranges) != "[{0 29}]" {
		t.Fatalf("merge: %v", o.ranges)
	}
	o.donate(span{5, 24})
	if fmt.Sprint(o.ranges) != "[{0 4} {25 29}]" {
		t.Fatalf("donate: %v", o.ranges)
	}
	if !o.contains(4) || o.contains(5) || o.contains(24) || !o.contains(25) || o.contains(30) {
		t.Fatal("contains is wrong")
	}
	if got := o.intersect(3, 26); fmt.Sprint(got) != "[{3 4} {25 26}]" {
		t.Fatalf("intersect: %v", got)
	}
	base := netip.MustParseAddr("198.19.10.0")
	txt := o.format(base)
	back, err := parseOwnership(netip.MustParsePrefix("198.19.10.0/24"), txt)
	if err != nil || fmt.Sprint(back.ranges) != fmt.Sprint(o.ranges) {
		t.Fatalf("round trip %v -> %v, %v", txt, back.ranges, err)
	}
	for _, bad := range []string{"198.19.10.1", "x-198.19.10.2", "198.19.10.1-x", "198.19.10.9-198.19.10.1", "198.19.10.1-198.19.11.1"} {
		if _, err := parseOwnership(netip.MustParsePrefix("198.19.10.0/24"), []string{bad}); err == nil {
			t.Errorf("parseOwnership(%q) accepted", bad)
		}
	}
}

// With only part of a pool owned (what the cluster layer will arrange),
// allocation stays inside the owned blocks, static addresses outside them are
// refused, and the ownership survives a restart.
func TestAllocationOnlyInOwnedBlocks(t *testing.T) {
	h := newHarness(t, Config{})
	id := h.pool("", "198.19.10.0/24", "")
	h.gateway(id, "")
	h.d.mu.Lock()
	p := h.d.pools[id]
	p.owned.donate(span{0, 255})
	p.owned.grant(span{64, 71})
	p.rebuildSpans()
	h.d.mu.Unlock()
	if err := h.d.persist(id); err != nil {
		t.Fatal(err)
	}
	h.restart()
	if s := h.status(id); fmt.Sprint(s.Owned) != "[198.19.10.64-198.19.10.71]" || s.Capacity != 8 {
		t.Fatalf("status = %+v", s)
	}
	for i := range 8 {
		if got, want := h.addr(id, ""), fmt.Sprintf("198.19.10.%d/24", 64+i); got != want {
			t.Fatalf("address %d = %s want %s", i, got, want)
		}
	}
	_, err := h.d.RequestAddress(&ipam.RequestAddressRequest{PoolID: id})
	wantErr(t, err, ErrExhausted, "8 assignable addresses, 8 in use")
	_, err = h.d.RequestAddress(&ipam.RequestAddressRequest{PoolID: id, Address: "198.19.10.9", Options: endpointOpts()})
	wantErr(t, err, ErrNotOwned, "--ip 198.19.10.9 lies in a block of 198.19.10.0/24 owned by another host")
	// An --aux-address is reserved whoever owns its block, and never handed out.
	if got := h.aux(id, "198.19.10.9"); got != "198.19.10.9/24" {
		t.Fatalf("aux in a block of another host = %s", got)
	}
	h.d.mu.Lock()
	p = h.d.pools[id]
	p.owned.grant(span{8, 15})
	p.rebuildSpans()
	h.d.mu.Unlock()
	for i := range 7 {
		if got := h.addr(id, ""); got == "198.19.10.9/24" {
			t.Fatalf("address %d: the aux address 198.19.10.9 was handed out", i)
		}
	}
	_, err = h.d.RequestAddress(&ipam.RequestAddressRequest{PoolID: id})
	wantErr(t, err, ErrExhausted, "16 assignable addresses, 16 in use")

	h.d.mu.Lock()
	p = h.d.pools[id]
	p.owned.donate(span{0, 255})
	p.rebuildSpans()
	h.d.mu.Unlock()
	_, err = h.d.RequestAddress(&ipam.RequestAddressRequest{PoolID: id})
	wantErr(t, err, ErrExhausted, "this host owns no block of 198.19.10.0/24 yet")
}

func TestCommitterGroupsAndIsolatesFailures(t *testing.T) {
	h := newHarness(t, Config{})
	c := &committer{db: h.db}
	boom := errors.New("boom")
	var wg sync.WaitGroup
	errs := make([]error, 40)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.do(func(tx *bbolt.Tx) error {
				if i%10 == 3 {
					return boom
				}
				b, err := tx.CreateBucketIfNotExists([]byte("committer-test"))
				if err != nil {
					return err
				}
				return b.Put([]byte(fmt.Sprint(i)), []byte("x"))
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if (i%10 == 3) != errors.Is(err, boom) || (i%10 != 3 && err != nil) {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	err := h.db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte("committer-test"))
		for i := range errs {
			if got := b.Get([]byte(fmt.Sprint(i))) != nil; got != (i%10 != 3) {
				return fmt.Errorf("key %d stored = %v", i, got)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.busy || len(c.pending) != 0 {
		t.Fatalf("committer left busy=%v pending=%d", c.busy, len(c.pending))
	}
}

func TestLoadRejectsCorruptState(t *testing.T) {
	tests := []struct {
		name  string
		write func(b *bbolt.Bucket) error
		want  string
	}{
		{"bad meta", func(b *bbolt.Bucket) error { return b.Put(metaKey, []byte("{")) }, "reading meta"},
		{"newer version", func(b *bbolt.Bucket) error {
			return b.Put(metaKey, []byte(`{"version":2}`))
		}, "record version 2"},
		{"bad address", func(b *bbolt.Bucket) error {
			a, err := b.CreateBucketIfNotExists(addrsBucket)
			if err != nil {
				return err
			}
			return a.Put([]byte("198.19.99.1"), []byte(`{"version":1}`))
		}, "stored address \"198.19.99.1\""},
		{"gateway stored as address", func(b *bbolt.Bucket) error {
			a, err := b.CreateBucketIfNotExists(addrsBucket)
			if err != nil {
				return err
			}
			return a.Put([]byte("198.19.10.1"), []byte(`{"version":1}`))
		}, "reserved or duplicated"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			id := h.pool("", "198.19.10.0/24", "")
			h.gateway(id, "")
			err := h.db.Update(func(tx *bbolt.Tx) error {
				return tc.write(tx.Bucket(rootBucket).Bucket(poolsBucket).Bucket([]byte(id)))
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := h.db.Close(); err != nil {
				t.Fatal(err)
			}
			db, err := bbolt.Open(h.path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			h.db = db
			_, err = New(Config{DB: db, DefaultPool: testPool})
			wantErr(t, err, nil, tc.want)
		})
	}
}
