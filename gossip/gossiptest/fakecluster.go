package gossiptest

import (
	"net/netip"
	"slices"
	"strings"
	"sync"

	"grapevine/gossip"
)

// FakeCluster is a gossip.Replicated of one process, for unit tests of the
// packages that consume replicated state without running memberlist (use Net
// for that). Records follow gossip's rules (Lamport versions, the winner
// chosen by gossip.Record.Supersedes, tombstones owned by the deleter);
// callbacks run in order, never inside the caller's Put/Delete (as with the
// real Cluster, whose worker is another goroutine): they are queued and run
// by Deliver, which RemotePut, RemoteDelete and SetMember call from the
// test's goroutine. So a test sees every effect synchronously and
// deterministically.
type FakeCluster struct {
	self string

	mu       sync.Mutex
	clock    uint64
	recs     map[string]map[string]gossip.Record // kind → key → record (tombstones kept)
	members  map[string]gossip.Member
	subs     []fakeSub
	nodeSubs []func(gossip.Member, gossip.EventType)
	pending  []func()
	checks   map[string][]func(gossip.Record) error

	delivering sync.Mutex
}

type fakeSub struct {
	kind string
	fn   func(old, cur *gossip.Record)
}

var _ gossip.Replicated = (*FakeCluster)(nil)

func NewFakeCluster(self string) *FakeCluster {
	return &FakeCluster{
		self:    self,
		recs:    map[string]map[string]gossip.Record{},
		members: map[string]gossip.Member{self: {Name: self, State: gossip.StateAlive, Self: true}},
	}
}

func (c *FakeCluster) LocalName() string { return c.self }
func (c *FakeCluster) Joined() bool      { return true }
func (c *FakeCluster) HasPeers() bool    { return len(c.Members()) > 1 }

func (c *FakeCluster) Members() []gossip.Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []gossip.Member
	for _, m := range c.members {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b gossip.Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// RegisterValidator adds a check that records other hosts write must pass.
func (c *FakeCluster) RegisterValidator(kind string, fn func(gossip.Record) error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.checks == nil {
		c.checks = map[string][]func(gossip.Record) error{}
	}
	c.checks[kind] = append(c.checks[kind], fn)
}

// admit runs the validators of r's kind, outside mu (as gossip does:
// validators may call Get), and reports whether r may be written.
func (c *FakeCluster) admit(r gossip.Record) bool {
	c.mu.Lock()
	checks := c.checks[r.Kind]
	c.mu.Unlock()
	for _, check := range checks {
		if check(r) != nil {
			return false
		}
	}
	return true
}

// write stores r when it supersedes the stored record and queues the
// callbacks.
// Caller holds mu.
func (c *FakeCluster) write(r gossip.Record) {
	if r.Version > c.clock {
		c.clock = r.Version
	}
	if c.recs[r.Kind] == nil {
		c.recs[r.Kind] = map[string]gossip.Record{}
	}
	old, had := c.recs[r.Kind][r.Key]
	if had && !r.Supersedes(&old) {
		return
	}
	if had && old.Deleted && r.Deleted {
		c.recs[r.Kind][r.Key] = r
		return
	}
	c.recs[r.Kind][r.Key] = r
	var oldp *gossip.Record
	if had && !old.Deleted {
		o := old
		oldp = &o
	}
	for _, s := range c.subs {
		if s.kind == "" || s.kind == r.Kind {
			fn, o, n := s.fn, oldp, r
			c.pending = append(c.pending, func() { fn(o, &n) })
		}
	}
}

func (c *FakeCluster) Put(kind, key string, value []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.recs[kind][key]; ok && !old.Deleted && old.Owner == c.self && string(old.Value) == string(value) {
		return nil
	}
	c.clock++
	c.write(gossip.Record{Kind: kind, Key: key, Value: slices.Clone(value), Owner: c.self, Version: c.clock})
	return nil
}

func (c *FakeCluster) Delete(kind, key string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.recs[kind][key]; !ok || old.Deleted {
		return nil
	}
	c.clock++
	c.write(gossip.Record{Kind: kind, Key: key, Owner: c.self, Version: c.clock, Deleted: true})
	return nil
}

func (c *FakeCluster) Get(kind, key string) (gossip.Record, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.recs[kind][key]
	if !ok || r.Deleted {
		return gossip.Record{}, false
	}
	return r, true
}

func (c *FakeCluster) List(kind string) []gossip.Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []gossip.Record
	for k, m := range c.recs {
		if kind != "" && k != kind {
			continue
		}
		for _, r := range m {
			if !r.Deleted {
				out = append(out, r)
			}
		}
	}
	slices.SortFunc(out, func(a, b gossip.Record) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// Subscribe replays the live records synchronously (the driver subscribes
// without holding its lock), then follows changes through Deliver.
func (c *FakeCluster) Subscribe(kind string, fn func(old, cur *gossip.Record)) {
	c.mu.Lock()
	c.subs = append(c.subs, fakeSub{kind, fn})
	c.mu.Unlock()
	for _, r := range c.List(kind) {
		fn(nil, &r)
	}
}

// Consumer returns c itself: Deliver runs every callback in order anyway.
func (c *FakeCluster) Consumer(string) gossip.Replicated { return c }

func (c *FakeCluster) OnNodeEvent(fn func(gossip.Member, gossip.EventType)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodeSubs = append(c.nodeSubs, fn)
}

// Deliver runs the queued callbacks in order.
func (c *FakeCluster) Deliver() {
	c.delivering.Lock()
	defer c.delivering.Unlock()
	for {
		c.mu.Lock()
		if len(c.pending) == 0 {
			c.mu.Unlock()
			return
		}
		fn := c.pending[0]
		c.pending = c.pending[1:]
		c.mu.Unlock()
		fn()
	}
}

// Seed stores records as they are, with their versions, and runs no
// callbacks: the state a restarted node reads back from its disk.
func (c *FakeCluster) Seed(recs ...gossip.Record) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range recs {
		if c.recs[r.Kind] == nil {
			c.recs[r.Kind] = map[string]gossip.Record{}
		}
		c.recs[r.Kind][r.Key] = r
		c.clock = max(c.clock, r.Version)
	}
}

// --- what other hosts do ---

// RemotePut writes a record as host owner would, with a version newer than
// everything seen, and delivers the callbacks.
func (c *FakeCluster) RemotePut(owner, kind, key string, value []byte) {
	c.remoteWrite(gossip.Record{Kind: kind, Key: key, Value: slices.Clone(value), Owner: owner})
}

// RemoteDelete tombstones a record as host owner would.
func (c *FakeCluster) RemoteDelete(owner, kind, key string) {
	c.remoteWrite(gossip.Record{Kind: kind, Key: key, Owner: owner, Deleted: true})
}

// remoteWrite gives r, unless the validators refuse it as gossip would, a
// version newer than everything seen, stores it and delivers the callbacks.
func (c *FakeCluster) remoteWrite(r gossip.Record) {
	if !c.admit(r) {
		return // refused, as gossip refuses it
	}
	c.mu.Lock()
	c.clock++
	r.Version = c.clock
	c.write(r)
	c.mu.Unlock()
	c.Deliver()
}

// SetMember sets a member's state and VTEP (also its gossip address, as a
// member's VTEP must be) on VXLAN port 4789, and reports ev to the
// subscribers.
func (c *FakeCluster) SetMember(name, vtep string, state gossip.MemberState, ev gossip.EventType) {
	m := gossip.Member{Name: name, State: state, Meta: gossip.NodeMeta{Version: 1, VXLANPort: 4789}}
	if vtep != "" {
		m.Meta.VTEP = netip.MustParseAddr(vtep)
		m.Addr = netip.AddrPortFrom(m.Meta.VTEP, 7946) // a VTEP is the member's gossip address
	}
	c.mu.Lock()
	c.members[name] = m
	for _, fn := range c.nodeSubs {
		c.pending = append(c.pending, func() { fn(m, ev) })
	}
	c.mu.Unlock()
	c.Deliver()
}

// Keys lists the live keys of kind owned by owner ("" = any owner).
func (c *FakeCluster) Keys(kind, owner string) []string {
	var out []string
	for _, r := range c.List(kind) {
		if owner == "" || r.Owner == owner {
			out = append(out, r.Key)
		}
	}
	return out
}

// PutMember lists m as a member without reporting an event, as a snapshot
// (Members) shows a state no event announced.
func (c *FakeCluster) PutMember(m gossip.Member) {
	c.mu.Lock()
	c.members[m.Name] = m
	c.mu.Unlock()
}
