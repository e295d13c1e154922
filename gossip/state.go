package gossip

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// rkey identifies a record.
type rkey struct{ kind, key string }

func (k rkey) compare(o rkey) int {
	if c := strings.Compare(k.kind, o.kind); c != 0 {
		return c
	}
	return strings.Compare(k.key, o.key)
}

// entry is the local state of one key: a live record, a tombstone (gossiped
// until rec.ReapAt) or a floor (a reaped tombstone, kept silently until
// forgetAt to reject stale copies).
type entry struct {
	rec      Record
	floor    bool
	forgetAt time.Time
}

type subscription struct {
	kind string // "" = every kind
	fn   func(old, cur *Record)
	q    *eventQueue // the subscriber's delivery queue
}

// applyResult says what apply did with a received record.
type applyResult int

const (
	applied    applyResult = iota // newer than what we had: stored
	stale                         // same or older: ignored
	staleFloor                    // a live copy of a reaped record: ignored, re-announce the tombstone
	refused                       // refused: see the refusal
)

// store is the replicated state of one node, independent of memberlist.
// All methods are safe for concurrent use.
type store struct {
	self         string
	now          func() time.Time
	tombstoneTTL time.Duration
	floorTTL     time.Duration
	events       *eventQueue // delivery queue of subscribers that name none
	limits       writerLimits

	mu         sync.Mutex
	clock      uint64 // Lamport clock: ≥ every version seen
	entries    map[rkey]*entry
	order      []rkey // sorted keys of entries, for the rotating push/pull window
	orderDirty bool
	cursor     int
	dirty      map[rkey]struct{} // keys to write to (or delete from) the DB
	clockDirty bool
	subs       []subscription
	usage      map[string]writerUsage // gossiped entries (floors excluded) by owner
}

// writerLimits bounds what one writer may hold in the store, and says
// whether records in this node's own name may come from elsewhere.
type writerLimits struct {
	records int
	bytes   int
	// guardSelf refuses received records in this node's name that are
	// newer than its own copy: with a DB, a node keeps everything it wrote
	// (persisted before it is sent), so such a record was forged.
	guardSelf bool
}

type writerUsage struct{ records, bytes int }

// refusal is why apply (or a local write) refused a record.
type refusal struct {
	cause RefusalCause
	err   error
}

func newStore(self string, now func() time.Time, tombstoneTTL, floorTTL time.Duration, events *eventQueue, limits writerLimits) *store {
	return &store{
		self:         self,
		now:          now,
		tombstoneTTL: tombstoneTTL,
		floorTTL:     floorTTL,
		events:       events,
		limits:       limits,
		entries:      make(map[rkey]*entry),
		dirty:        make(map[rkey]struct{}),
		usage:        make(map[string]writerUsage),
	}
}

// preparePut makes the record a Put of (kind, key) = value by this node
// would write, reserving its version, without storing it: the caller
// persists it, then installs it. It returns nil when nothing would change:
// re-putting the value this node already owns is a no-op, so reconcilers
// may call Put freely.
func (s *store) preparePut(kind, key string, value []byte) (*Record, error) {
	if err := validateName("kind", kind, MaxKindLen); err != nil {
		return nil, err
	}
	if err := validateName("key", key, MaxKeyLen); err != nil {
		return nil, err
	}
	if len(value) == 0 {
		value = nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[rkey{kind, key}]
	if e != nil && !e.rec.Deleted && e.rec.Owner == s.self && bytes.Equal(e.rec.Value, value) {
		return nil, nil
	}
	r := &Record{Kind: kind, Key: key, Value: append([]byte(nil), value...), Owner: s.self, Version: s.clock + 1}
	if value == nil {
		r.Value = nil
	}
	if n := 2 + encodedLen(r); n > MaxRecordBytes {
		return nil, errTooLarge(kind, key, n)
	}
	return r, s.reserveLocked(e, r)
}

// prepareDel makes the tombstone a Delete of (kind, key) by this node would
// write, like preparePut. Deleting an absent or already deleted key is a
// no-op (nil).
func (s *store) prepareDel(kind, key string) (*Record, error) {
	if err := validateName("kind", kind, MaxKindLen); err != nil {
		return nil, err
	}
	if err := validateName("key", key, MaxKeyLen); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[rkey{kind, key}]
	if e == nil || e.rec.Deleted {
		return nil, nil
	}
	r := &Record{Kind: kind, Key: key, Owner: s.self, Version: s.clock + 1, Deleted: true,
		ReapAt: s.now().Add(s.tombstoneTTL)}
	return r, s.reserveLocked(e, r)
}

// reserveLocked checks that this node may write r over old and takes its
// version from the clock. s.mu must be held.
func (s *store) reserveLocked(old *entry, r *Record) error {
	if s.clock >= MaxVersion {
		return fmt.Errorf("write %s/%.32q: the clock reached %d: %w", r.Kind, r.Key, MaxVersion, ErrClockExhausted)
	}
	if !s.fitsLocked(old, r) {
		u := s.usage[s.self]
		return fmt.Errorf("write %s/%.32q: this node already holds %d records of %d bytes (MaxRecordsPerWriter %d, MaxBytesPerWriter %d): delete records it no longer needs: %w",
			r.Kind, r.Key, u.records, u.bytes, s.limits.records, s.limits.bytes, ErrWriterCap)
	}
	s.clock++
	s.clockDirty = true
	return nil
}

// install stores an own record made by preparePut or prepareDel once it is
// persisted. It reports false when a newer copy of the key arrived in
// between (the write lost, as concurrent writes do).
func (s *store) install(r *Record) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := rkey{r.Kind, r.Key}
	e := s.entries[k]
	if e != nil && !newer(r, &e.rec) {
		return false
	}
	s.setLocked(k, e, r.clone())
	delete(s.dirty, k) // persisted as it is now
	return true
}

// apply merges a record received from a peer, unless its version is too
// far ahead of the clock, its writer holds too much, or it forges this
// node's name (then it returns refused and why).
func (s *store) apply(r *Record) (applyResult, *Record, *refusal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.Version > MaxVersion || r.Version > s.clock+MaxClockAhead {
		return refused, nil, &refusal{CauseVersion, fmt.Errorf("version %d is more than %d ahead of the local clock %d", r.Version, MaxClockAhead, s.clock)}
	}
	k := rkey{r.Kind, r.Key}
	e := s.entries[k]
	if e != nil && !newer(r, &e.rec) {
		if e.floor && !r.Deleted {
			t := e.rec
			t.ReapAt = time.Time{}
			return staleFloor, &t, nil
		}
		return stale, nil, nil
	}
	if s.limits.guardSelf && r.Owner == s.self {
		return refused, nil, &refusal{CauseImpersonation, fmt.Errorf("record in this node's name (version %d) that this node never wrote", r.Version)}
	}
	if !s.fitsLocked(e, r) {
		u := s.usage[r.Owner]
		return refused, nil, &refusal{CauseWriterCap, fmt.Errorf("writer holds %d records of %d bytes already (caps %d and %d)", u.records, u.bytes, s.limits.records, s.limits.bytes)}
	}
	if r.Version > s.clock {
		s.clock = r.Version
		s.clockDirty = true
	}
	r = r.clone()
	r.ReapAt = time.Time{}
	if r.Deleted {
		r.Value = nil
		r.ReapAt = s.now().Add(s.tombstoneTTL)
	}
	s.setLocked(k, e, r)
	return applied, nil, nil
}

// wouldApply reports whether r is newer than the local copy of its key (so
// that the consumers' validators need to see it).
func (s *store) wouldApply(r *Record) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[rkey{r.Kind, r.Key}]
	return e == nil || newer(r, &e.rec)
}

// fitsLocked reports whether r may replace old within its writer's caps.
func (s *store) fitsLocked(old *entry, r *Record) bool {
	u := s.usage[r.Owner]
	if old != nil && !old.floor && old.rec.Owner == r.Owner {
		u.records--
		u.bytes -= encodedLen(&old.rec)
	}
	return u.records+1 <= s.limits.records && u.bytes+encodedLen(r) <= s.limits.bytes
}

// accountLocked adds (sign 1) or removes (sign -1) e from its owner's
// usage; floors are not counted. s.mu must be held.
func (s *store) accountLocked(e *entry, sign int) {
	if e == nil || e.floor {
		return
	}
	u := s.usage[e.rec.Owner]
	u.records += sign
	u.bytes += sign * encodedLen(&e.rec)
	if u.records <= 0 {
		delete(s.usage, e.rec.Owner)
		return
	}
	s.usage[e.rec.Owner] = u
}

// drop forgets (kind, key) if it still holds exactly r: a stored record
// that a consumer's validator refused after the fact. No tombstone is
// written; a peer that sends it again is refused again.
func (s *store) drop(r *Record) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := rkey{r.Kind, r.Key}
	e := s.entries[k]
	if e == nil || e.floor || !sameVersion(&e.rec, r) {
		return false
	}
	s.accountLocked(e, -1)
	delete(s.entries, k)
	s.dirty[k] = struct{}{}
	s.orderDirty = true
	return true
}

// remote returns the gossiped records of kind (tombstones included) that
// another node wrote.
func (s *store) remote(kind string) []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Record
	for k, e := range s.entries {
		if k.kind == kind && !e.floor && e.rec.Owner != s.self {
			out = append(out, *e.rec.clone())
		}
	}
	return out
}

// setLocked stores r (owned by the store from now on, ReapAt set by the
// caller) in place of old and queues subscriber callbacks. s.mu must be
// held.
func (s *store) setLocked(k rkey, old *entry, r *Record) {
	if old == nil {
		s.orderDirty = true
	}
	s.accountLocked(old, -1)
	e := &entry{rec: *r}
	s.accountLocked(e, 1)
	s.entries[k] = e
	s.dirty[k] = struct{}{}

	oldLive := old != nil && !old.rec.Deleted
	if !oldLive && r.Deleted {
		return // nothing visible changed
	}
	var oldRec *Record
	if oldLive {
		oldRec = &old.rec
	}
	for _, sub := range s.subs {
		if sub.kind != "" && sub.kind != k.kind {
			continue
		}
		var o *Record
		if oldRec != nil {
			o = oldRec.clone()
		}
		n, fn := r.clone(), sub.fn
		sub.q.push(func() { fn(o, n) })
	}
}

// get returns the live record for (kind, key).
func (s *store) get(kind, key string) (Record, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[rkey{kind, key}]
	if e == nil || e.rec.Deleted {
		return Record{}, false
	}
	return *e.rec.clone(), true
}

// list returns the live records of kind ("" = all kinds) sorted by kind and key.
func (s *store) list(kind string) []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Record
	for k, e := range s.entries {
		if e.rec.Deleted || (kind != "" && k.kind != kind) {
			continue
		}
		out = append(out, *e.rec.clone())
	}
	slices.SortFunc(out, func(a, b Record) int {
		return rkey{a.Kind, a.Key}.compare(rkey{b.Kind, b.Key})
	})
	return out
}

// subscribe registers fn and queues (nil, r) for every live record of kind
// present now, atomically with respect to writes, so the subscriber sees
// the whole state followed by every later change, without gaps. Callbacks
// go to q (nil: the store's default queue).
func (s *store) subscribe(kind string, fn func(old, cur *Record), q *eventQueue) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub := subscription{kind: kind, fn: fn, q: q}
	if q == nil {
		sub.q = s.events
	}
	s.subs = append(s.subs, sub)
	keys := make([]rkey, 0, len(s.entries))
	for k, e := range s.entries {
		if !e.rec.Deleted && (kind == "" || k.kind == kind) {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, rkey.compare)
	for _, k := range keys {
		n := s.entries[k].rec.clone()
		sub.q.push(func() { fn(nil, n) })
	}
}

// window encodes the next records of the rotating anti-entropy window, up
// to budget bytes (at least one record), and advances the cursor. Floors
// are never sent. It returns nil when there is nothing to send.
func (s *store) window(budget int) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.orderDirty {
		s.order = s.order[:0]
		for k := range s.entries {
			s.order = append(s.order, k)
		}
		slices.SortFunc(s.order, rkey.compare)
		s.orderDirty = false
	}
	n := len(s.order)
	if n == 0 {
		return nil
	}
	if s.cursor >= n {
		s.cursor = 0
	}
	var body []byte
	count, visited := 0, 0
	for ; visited < n; visited++ {
		e := s.entries[s.order[(s.cursor+visited)%n]]
		if e == nil || e.floor {
			continue
		}
		if count > 0 && len(body)+encodedLen(&e.rec) > budget {
			break
		}
		body = appendRecord(body, &e.rec)
		count++
	}
	s.cursor = (s.cursor + visited) % n
	if count == 0 {
		return nil
	}
	out := make([]byte, 0, len(body)+12)
	out = append(out, wireVersion, msgState)
	out = binary.AppendUvarint(out, uint64(count))
	return append(out, body...)
}

// windowCount returns how many push/pull windows of budget bytes the
// records gossiped now (floors excluded) fill.
func (s *store) windowCount(budget int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	total := 0
	for _, e := range s.entries {
		if !e.floor {
			total += encodedLen(&e.rec)
		}
	}
	return (total + budget - 1) / max(1, budget)
}

// reap turns tombstones past their ReapAt into floors and forgets floors
// past forgetAt. It returns how many of each it changed.
func (s *store) reap() (floored, forgotten int) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, e := range s.entries {
		switch {
		case e.floor:
			if !now.Before(e.forgetAt) {
				delete(s.entries, k)
				s.dirty[k] = struct{}{}
				s.orderDirty = true
				forgotten++
			}
		case e.rec.Deleted && !now.Before(e.rec.ReapAt):
			s.accountLocked(e, -1)
			e.floor = true
			e.forgetAt = now.Add(s.floorTTL)
			s.dirty[k] = struct{}{}
			floored++
		}
	}
	return floored, forgotten
}

// dirtyItem is one key to persist: e == nil means delete it.
type dirtyItem struct {
	k rkey
	e *entry
}

// takeDirty hands the pending changes to the persister and clears them.
func (s *store) takeDirty() ([]dirtyItem, uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	items := make([]dirtyItem, 0, len(s.dirty))
	for k := range s.dirty {
		var c *entry
		if e := s.entries[k]; e != nil {
			cp := *e
			c = &cp
		}
		items = append(items, dirtyItem{k: k, e: c})
	}
	clear(s.dirty)
	clockDirty := s.clockDirty
	s.clockDirty = false
	return items, s.clock, clockDirty
}

// redirty puts back changes whose write failed, so the next flush retries.
func (s *store) redirty(items []dirtyItem) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, it := range items {
		s.dirty[it.k] = struct{}{}
	}
	s.clockDirty = true
}

// load installs persisted entries (checked by checkLoaded) and the clock,
// before any traffic; purge lists refused keys to delete from the DB, and
// rewrite asks for the clock to be written again (a refused stored clock).
func (s *store) load(entries map[rkey]*entry, clock uint64, purge []rkey, rewrite bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range purge {
		s.dirty[k] = struct{}{}
	}
	s.clockDirty = s.clockDirty || rewrite || len(purge) > 0
	for k, e := range entries {
		s.accountLocked(s.entries[k], -1)
		s.entries[k] = e
		s.accountLocked(e, 1)
		clock = max(clock, e.rec.Version)
	}
	s.clock = max(s.clock, clock)
	s.orderDirty = true
}

// clockValue is the Lamport clock now.
func (s *store) clockValue() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clock
}

// StoreStats counts the local replicated state.
type StoreStats struct {
	Clock      uint64 // Lamport clock
	Records    int    // live records
	Tombstones int    // tombstones still gossiped
	Floors     int    // reaped tombstones kept to block stale copies
	// RecordsByKind counts the live records by kind.
	RecordsByKind map[string]int
}

func (s *store) stats() StoreStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := StoreStats{Clock: s.clock, RecordsByKind: map[string]int{}}
	for _, e := range s.entries {
		switch {
		case e.floor:
			st.Floors++
		case e.rec.Deleted:
			st.Tombstones++
		default:
			st.Records++
			st.RecordsByKind[e.rec.Kind]++
		}
	}
	return st
}

// entryState returns a copy of the raw entry for tests and diagnostics.
func (s *store) entryState(kind, key string) (entry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[rkey{kind, key}]
	if e == nil {
		return entry{}, false
	}
	return *e, true
}
