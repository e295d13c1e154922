package gossip

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/sirupsen/logrus"
)

// Cluster is this host's membership in the grapevine cluster and its copy of
// the replicated records. All methods are safe for concurrent use.
type Cluster struct {
	cfg   Config
	log   *logrus.Entry
	meta  []byte
	peers []string // normalised PEERS

	store  *store
	events *eventQueue // the default delivery queue (Subscribe, OnNodeEvent)
	queue  *memberlist.TransmitLimitedQueue
	ml     atomic.Pointer[memberlist.Memberlist]

	joined     atomic.Bool
	stats      counters
	refused    refusals
	validators validators
	keyring    *memberlist.Keyring // nil without keys
	health     health              // last contacts, undecryptable gossip

	// crashPoint, set by tests only, runs after an own write is persisted
	// and before it is stored in memory or sent; returning false stops the
	// write there, as if the process died.
	crashPoint func(Record) bool

	metaMu sync.Mutex // guards meta, read by memberlist through NodeMeta

	mu       sync.Mutex
	self     Member                    // this node, set by Start
	alive    map[string]Member         // other alive members, from node events
	departed map[string]departedMember // dead or left members, for Members
	leaving  map[string]bool           // members that announced a graceful leave
	failed   rejoinSet                 // failed members to contact again
	// ppPending holds push/pulls to run (member name, "" = a random
	// alive member) with the time they are due; ppKick wakes pushPullLoop.
	ppPending map[string]time.Time
	ppKick    chan struct{}
	nodeSubs  []nodeSub
	consumers map[string]*eventQueue // named delivery queues (Consumer)
	direct    directPeers            // fast-path targets
	started   bool
	closed    bool
	stop      chan struct{}
	wg        sync.WaitGroup
	flushMu   sync.Mutex
	flushCh   chan struct{}
	directCh  chan []byte // own writes for the fast path (encoded)
	// reassertCh carries forgeries of this node's records to reassertLoop.
	reassertCh chan *Record
}

// nodeSub is one OnNodeEvent callback and its delivery queue.
type nodeSub struct {
	fn func(Member, EventType)
	q  *eventQueue
}

type departedMember struct {
	m     Member
	since time.Time
}

// counters are internal statistics, also used by tests and benchmarks.
type counters struct {
	recvBroadcast  atomic.Uint64 // broadcast messages received
	recvPushPull   atomic.Uint64 // records received by push/pull
	floorHits      atomic.Uint64 // stale copies rejected by floors
	maxLocalState  atomic.Int64  // largest LocalState produced, bytes
	localStateSent atomic.Uint64 // LocalState calls
	joinAttempts   atomic.Uint64 // calls to memberlist's Join
	directSent     atomic.Uint64 // fast-path packets sent
	directDropped  atomic.Uint64 // own writes that skipped the fast path
	rejoinAttempts atomic.Uint64 // joins of failed members or PEERS by rejoin rounds
	triggeredPP    atomic.Uint64 // push/pulls run on a member's return or after joining
	in, out        traffic       // grapevine's messages received and handed to memberlist
}

// traffic counts messages and their bytes in one direction.
type traffic struct{ msgs, bytes atomic.Uint64 }

func (t *traffic) note(msgs, bytes int) {
	t.msgs.Add(uint64(msgs))
	t.bytes.Add(uint64(bytes))
}

func (s *counters) noteLocalState(n int) {
	s.localStateSent.Add(1)
	for {
		cur := s.maxLocalState.Load()
		if int64(n) <= cur || s.maxLocalState.CompareAndSwap(cur, int64(n)) {
			return
		}
	}
}

// New checks cfg, fills in defaults and loads the persisted records and
// clock. It does no network I/O; Start does.
func New(cfg Config) (*Cluster, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		cfg:        cfg,
		log:        cfg.Log,
		alive:      make(map[string]Member),
		departed:   make(map[string]departedMember),
		leaving:    make(map[string]bool),
		failed:     newRejoinSet(maxRejoinTargets),
		ppPending:  make(map[string]time.Time),
		consumers:  make(map[string]*eventQueue),
		ppKick:     make(chan struct{}, 1),
		stop:       make(chan struct{}),
		flushCh:    make(chan struct{}, 1),
		directCh:   make(chan []byte, directQueueLen),
		reassertCh: make(chan *Record, reassertQueueLen),
	}
	c.meta, _ = cfg.Meta.encode() // checked by withDefaults
	for _, p := range cfg.Peers {
		n, _ := NormalizePeer(p, cfg.Port) // checked by withDefaults
		c.peers = append(c.peers, n)
	}
	c.refused = refusals{log: c.log, now: cfg.Now}
	if len(cfg.Keys) > 0 {
		c.keyring, _ = memberlist.NewKeyring(cfg.Keys[1:], cfg.Keys[0]) // checked by withDefaults
	}
	c.events = newEventQueue(c.log)
	c.store = newStore(cfg.NodeName, cfg.Now, cfg.TombstoneTTL, cfg.FloorTTL, c.events, writerLimits{
		records: cfg.MaxRecordsPerWriter, bytes: cfg.MaxBytesPerWriter, guardSelf: cfg.DB != nil,
	})
	c.queue = &memberlist.TransmitLimitedQueue{
		NumNodes:       c.numNodes,
		RetransmitMult: cfg.RetransmitMult,
	}
	if cfg.DB != nil {
		if err := c.load(); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// load reads the persisted records and clock, refusing what a peer's copy
// would be refused for (see checkLoaded).
func (c *Cluster) load() error {
	entries, meta, skipped, err := loadState(c.cfg.DB)
	if err != nil {
		return err
	}
	for _, s := range skipped {
		c.log.WithField("record", s).Warn("skipping undecodable persisted gossip record; peers will send it again")
	}
	if meta.Node != "" && meta.Node != c.cfg.NodeName {
		c.log.WithFields(logrus.Fields{"previous": meta.Node, "node": c.cfg.NodeName}).
			Warn("gossip state was written under another node name; records owned by the old name are no longer this host's")
	}
	clock, bad := checkLoaded(entries, meta.Clock)
	var purge []rkey
	rewrite := false
	for _, b := range bad {
		if b.rec == nil {
			rewrite = true
			c.log.WithError(b.err).WithField("clock", clock).Error("refusing the persisted Lamport clock; continuing from the highest stored version")
			continue
		}
		purge = append(purge, rkey{b.rec.Kind, b.rec.Key})
		c.refused.note(b.rec, b.cause, fmt.Errorf("persisted record: %w", b.err))
	}
	c.store.load(entries, clock, purge, rewrite)
	return nil
}

// numNodes feeds the broadcast queue's retransmit limit.
func (c *Cluster) numNodes() int {
	if ml := c.ml.Load(); ml != nil {
		return ml.NumMembers()
	}
	return 1
}

// Start creates the memberlist, listening on BindAddr:Port (or the given
// Transport), and returns without waiting for peers: joining PEERS runs in
// the background, retried forever with a capped backoff (see Joined).
// Start may be called once.
func (c *Cluster) Start() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	if c.started {
		c.mu.Unlock()
		return fmt.Errorf("gossip cluster already started")
	}
	c.started = true
	c.mu.Unlock()

	if c.keyring == nil {
		c.log.Warn("GOSSIP_KEY is empty: gossip is neither encrypted nor authenticated; any host that reaches GOSSIP_PORT can join and write records")
	}
	c.events.start()
	ml, err := memberlist.Create(c.memberlistConfig())
	if err != nil {
		return fmt.Errorf("start gossip on %s:%d (GOSSIP_PORT): %w", c.cfg.BindAddr, c.cfg.Port, err)
	}
	// Copied now: the local node's fields change later (leave
	// announcement) under memberlist's lock only.
	self, _ := c.member(ml.LocalNode())
	c.mu.Lock()
	c.self = self
	c.mu.Unlock()
	c.ml.Store(ml)
	if len(c.peers) == 0 {
		c.joined.Store(true)
	}
	c.log.WithFields(logrus.Fields{"node": c.cfg.NodeName, "addr": self.Addr.String(), "peers": c.peers}).
		Info("gossip started")

	c.wg.Add(7)
	go c.reassertLoop()
	go c.directLoop()
	go c.joinLoop()
	go c.rejoinLoop()
	go c.pushPullLoop()
	go c.flushLoop()
	go c.reapLoop()
	return nil
}

// Joined reports whether this node has been in contact with at least one
// other member since Start (it stays true once set), or has no PEERS.
func (c *Cluster) Joined() bool { return c.joined.Load() }

// LocalAddr returns the address memberlist advertises for this node
// (invalid before Start).
func (c *Cluster) LocalAddr() netip.AddrPort {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.self.Addr
}

// Members returns every known member: this node, alive and suspect ones,
// plus dead and departed ones until they return (or for TombstoneTTL).
// Sorted by name; empty before Start. It is built from the node events
// (copies taken under memberlist's lock), never from memberlist's own
// nodes, which memberlist updates while others read them.
func (c *Cluster) Members() []Member {
	if c.ml.Load() == nil {
		return nil
	}
	c.mu.Lock()
	out := make([]Member, 0, 1+len(c.alive)+len(c.departed))
	out = append(out, c.self)
	for _, m := range c.alive {
		out = append(out, m)
	}
	for name, d := range c.departed {
		if _, ok := c.alive[name]; !ok {
			out = append(out, d.m)
		}
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}

// OnNodeEvent registers fn for join, leave, update and dead events of other
// members (never this node). Callbacks run on the same worker, in the same
// order, as Subscribe callbacks; they must not block for long and must not
// call Shutdown.
func (c *Cluster) OnNodeEvent(fn func(Member, EventType)) { c.onNodeEvent(fn, c.events) }

func (c *Cluster) onNodeEvent(fn func(Member, EventType), q *eventQueue) {
	q.start()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodeSubs = append(c.nodeSubs, nodeSub{fn: fn, q: q})
}

// nodeEvent runs under memberlist's node lock: record and queue only.
func (c *Cluster) nodeEvent(n *memberlist.Node, ev EventType) {
	m, leaving := c.member(n)
	if m.Self {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.direct.update(n, ev == EventJoin || ev == EventUpdate)
	switch {
	case ev == EventUpdate && leaving:
		// The leave announcement: remembered, not reported as an update.
		c.leaving[m.Name] = true
		c.log.WithField("peer", m.Name).Debug("peer announced it is leaving")
		return
	case ev == EventDead && c.leaving[m.Name]:
		ev = EventLeave
	}
	l := c.log.WithFields(logrus.Fields{"peer": m.Name, "addr": m.Addr.String()})
	if m.Meta.VTEP.IsValid() {
		l = l.WithField("vtep", m.Meta.VTEP.String())
	}
	switch ev {
	case EventJoin:
		c.joined.Store(true)
		l.Info("peer joined")
	case EventUpdate:
		l.Info("peer updated")
	case EventLeave:
		l.Info("peer left")
	case EventDead:
		l.Warn("peer failed")
	}
	if m.MetaErr != "" {
		l.WithField("error", m.MetaErr).Warn("peer metadata undecodable")
	}
	switch ev {
	case EventLeave:
		delete(c.alive, m.Name)
		c.failed.remove(m.Name) // left on purpose: not contacted again
		m.State = StateLeft
		c.departed[m.Name] = departedMember{m: m, since: c.cfg.Now()}
	case EventDead:
		delete(c.alive, m.Name)
		c.failed.add(m.Name, m.Addr.String(), c.cfg.Now())
		m.State = StateDead
		c.departed[m.Name] = departedMember{m: m, since: c.cfg.Now()}
	default:
		_, wasDeparted := c.departed[m.Name]
		if wasDeparted || c.failed.has(m.Name) {
			// Back after a failure, a partition or a restart: it may hold
			// records we missed and miss ours; push/pull with it now rather
			// than at the next periodic push/pull. Every member does so in
			// small clusters, about pushPullFanIn of them in large ones.
			if others := len(c.alive); others < pushPullFanIn || rand.IntN(others) < pushPullFanIn {
				c.schedulePushPull(m.Name, 0)
			}
		}
		c.alive[m.Name] = m
		c.failed.remove(m.Name)
		delete(c.departed, m.Name)
		delete(c.leaving, m.Name)
	}
	for _, sub := range c.nodeSubs {
		fn := sub.fn
		sub.q.push(func() { fn(m, ev) })
	}
}

// joinLoop contacts PEERS until another member is alive, backing off
// between failed attempts; it keeps watching afterwards and rejoins if this
// node ends up alone (e.g. after every peer restarted during a partition).
func (c *Cluster) joinLoop() {
	defer c.wg.Done()
	if len(c.peers) == 0 {
		return
	}
	backoff := c.cfg.JoinBackoffMin
	for {
		ml := c.ml.Load()
		wait := c.cfg.JoinBackoffMax
		if ml.NumMembers() <= 1 {
			c.stats.joinAttempts.Add(1)
			n, err := ml.Join(c.peers)
			if ml.NumMembers() > 1 {
				if !c.joined.Swap(true) {
					c.log.WithFields(logrus.Fields{"peers": c.peers, "contacted": n}).Info("joined gossip cluster")
				}
				backoff = c.cfg.JoinBackoffMin
				// Members that joined at the same time may have missed
				// each other: push/pull with a random member once the
				// announcements have spread.
				c.mu.Lock()
				c.schedulePushPull("", min(c.cfg.PushPullInterval/2, maxJoinSettle))
				c.mu.Unlock()
			} else {
				l := c.log.WithFields(logrus.Fields{"peers": c.peers, "retry_in": backoff})
				if err != nil {
					l = l.WithError(err)
				}
				l.Warn("no PEERS reachable yet (check addresses, GOSSIP_PORT, GOSSIP_KEY and firewalls); retrying")
				wait = backoff
				backoff = min(2*backoff, c.cfg.JoinBackoffMax)
			}
		}
		// ±20 % jitter so restarted fleets do not retry in lockstep.
		wait += time.Duration((rand.Float64()*0.4 - 0.2) * float64(wait))
		t := time.NewTimer(wait)
		select {
		case <-c.stop:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// flushLoop persists records received from peers shortly after they arrive.
func (c *Cluster) flushLoop() {
	defer c.wg.Done()
	for {
		select {
		case <-c.stop:
			return
		case <-c.flushCh:
			if err := c.flush(); err != nil {
				c.log.WithError(err).Error("persisting gossip records failed; will retry")
			}
		}
	}
}

// reapLoop expires tombstones, floors and departed members.
func (c *Cluster) reapLoop() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.ReapInterval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			c.reap()
		}
	}
}

func (c *Cluster) reap() {
	floored, forgotten := c.store.reap()
	if floored+forgotten > 0 {
		c.log.WithFields(logrus.Fields{"reaped": floored, "forgotten": forgotten}).Debug("expired gossip tombstones")
		c.kickFlush()
	}
	now := c.cfg.Now()
	c.mu.Lock()
	for name, d := range c.departed {
		if now.Sub(d.since) > c.cfg.TombstoneTTL {
			delete(c.departed, name)
		}
	}
	c.mu.Unlock()
}

// Shutdown leaves the cluster gracefully (waiting at most LeaveTimeout for
// the leave to spread), stops memberlist and the background goroutines,
// and writes pending records. Undelivered callbacks are dropped. It does
// not close the DB. Safe to call more than once; must not be called from a
// callback.
func (c *Cluster) Shutdown() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()

	close(c.stop)
	var firstErr error
	if ml := c.ml.Load(); ml != nil {
		// Announce the leave in our metadata first, so that peers report
		// EventLeave rather than EventDead.
		c.metaMu.Lock() // SetTunnelKey may change cfg.Meta
		meta, err := encodeLeavingMeta(c.cfg.Meta)
		if err == nil {
			c.meta = meta
		}
		c.metaMu.Unlock()
		if err == nil {
			if err := ml.UpdateNode(c.cfg.LeaveTimeout); err != nil {
				c.log.WithError(err).Debug("leave announcement did not complete")
			}
		}
		if err := ml.Leave(c.cfg.LeaveTimeout); err != nil {
			c.log.WithError(err).Warn("graceful leave did not complete; peers will notice the failure instead")
		}
		if err := ml.Shutdown(); err != nil {
			firstErr = fmt.Errorf("stop memberlist: %w", err)
		}
	}
	c.wg.Wait()
	if err := c.flush(); err != nil && firstErr == nil {
		firstErr = err
	}
	c.events.close()
	c.mu.Lock()
	consumers := slices.Collect(maps.Values(c.consumers))
	c.mu.Unlock()
	for _, q := range consumers {
		q.close()
	}
	c.log.Info("gossip stopped")
	return firstErr
}

func (c *Cluster) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// Put writes (kind, key) = value as this node's record with a new version.
// The record is persisted (fsync'd) first; only then is it stored in
// memory, handed to subscribers, queued for gossip and to the fast path
// (Config.FanOut, sent from a background goroutine: Put never waits for
// the network), and Put returns. On a persistence error nothing of this
// happens and Put returns the error (the version number is used up). So
// no host ever learns of a write that the writer could forget by crashing.
// Re-putting the value this node already owns is a no-op. Value is copied.
// Put works before Start (the record spreads once the cluster runs).
func (c *Cluster) Put(kind, key string, value []byte) error {
	if c.isClosed() {
		return ErrClosed
	}
	return c.write(func() (*Record, error) { return c.store.preparePut(kind, key, value) })
}

// Delete replaces (kind, key) by a tombstone owned by this node, persisted
// and spread like Put. Deleting an absent key is a no-op.
func (c *Cluster) Delete(kind, key string) error {
	if c.isClosed() {
		return ErrClosed
	}
	return c.write(func() (*Record, error) { return c.store.prepareDel(kind, key) })
}

// errCrashed is returned by a write stopped at the test crash point.
var errCrashed = errors.New("stopped at the crash point")

// write persists the own record prepare makes, then installs and sends it.
// flushMu is held from the version's reservation to the installation, so
// no flush can write an older copy of the key over it in between.
func (c *Cluster) write(prepare func() (*Record, error)) error {
	c.flushMu.Lock()
	r, err := prepare()
	if err != nil || r == nil {
		c.flushMu.Unlock()
		return err
	}
	if err := c.persistOwn(r); err != nil {
		c.flushMu.Unlock()
		return fmt.Errorf("write %s/%s: %w", r.Kind, r.Key, err)
	}
	if c.crashPoint != nil && !c.crashPoint(*r.clone()) {
		c.flushMu.Unlock()
		return errCrashed
	}
	installed := c.store.install(r)
	c.flushMu.Unlock()
	if installed {
		c.broadcast(r)
		c.sendDirect(r)
	}
	return nil
}

// persistOwn writes one own record durably, together with the clock and
// the received records waiting for the flusher (one transaction instead of
// two). flushMu held.
func (c *Cluster) persistOwn(r *Record) error {
	if c.cfg.DB == nil {
		return nil
	}
	pending, clock, _ := c.store.takeDirty()
	items := append(slices.Clip(pending), dirtyItem{k: rkey{r.Kind, r.Key}, e: &entry{rec: *r}}) // last: wins over a pending copy of the key
	if err := writeState(c.cfg.DB, c.cfg.NodeName, items, clock); err != nil {
		c.store.redirty(pending)
		return err
	}
	return nil
}

// Get returns the live record (kind, key); false if absent or deleted.
func (c *Cluster) Get(kind, key string) (Record, bool) { return c.store.get(kind, key) }

// List returns the live records of kind ("" = every kind), sorted by key.
func (c *Cluster) List(kind string) []Record { return c.store.list(kind) }

// Subscribe registers fn for changes to records of kind ("" = every kind).
//
// fn first receives (nil, r) for every live record present at the call,
// then every later change in the order it was applied: old is the previous
// live record (nil if the key was absent or deleted) and cur the record now
// in force; cur.Deleted reports a deletion (then cur.Owner is the deleting
// node). Changes between tombstones (re-deletions) are not reported, nor is
// reaping. Records may be own writes or received from peers.
//
// Callbacks run one at a time on the default delivery queue's worker
// goroutine, shared with OnNodeEvent and every other consumer that did not
// ask for a queue of its own (Consumer), never on memberlist's goroutines;
// a slow callback delays the others on its queue (the queue grows) but
// never gossip or another queue. Callbacks may call Get, List, Put and
// Delete, but not Shutdown. Callbacks still queued at Shutdown are dropped.
// There is no unsubscribe: subscribe for the Cluster's lifetime.
func (c *Cluster) Subscribe(kind string, fn func(old, cur *Record)) {
	c.subscribe(kind, fn, c.events)
}

func (c *Cluster) subscribe(kind string, fn func(old, cur *Record), q *eventQueue) {
	q.start()
	c.store.subscribe(kind, fn, q)
}

// Consumer returns this Cluster with a delivery queue of its own, named
// name: Subscribe and OnNodeEvent callbacks registered through it run on
// that queue's worker, so they never wait behind another consumer's slow
// callbacks (nor the others behind them). Every other method is the
// Cluster's. The same name gives the same queue; "" is the default queue.
//
// Ordering: the callbacks of one queue run one at a time, record changes
// in the order they were applied to the store (across kinds) and node
// events in the order memberlist reported them, interleaved as they
// happened. Callbacks of different queues are not ordered with respect to
// each other.
func (c *Cluster) Consumer(name string) Replicated {
	if name == "" {
		return c
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	q := c.consumers[name]
	if q == nil {
		q = newEventQueue(c.log.WithField("consumer", name))
		if c.closed {
			q.close()
		}
		c.consumers[name] = q
	}
	return consumer{Cluster: c, q: q}
}

// consumer is a Cluster whose subscriptions use a queue of their own.
type consumer struct {
	*Cluster
	q *eventQueue
}

func (c consumer) Subscribe(kind string, fn func(old, cur *Record)) {
	c.subscribe(kind, fn, c.q)
}

func (c consumer) OnNodeEvent(fn func(Member, EventType)) { c.onNodeEvent(fn, c.q) }

// Stats describes the local replicated state, the gossip queue and what
// this node has sent and received since New. Counters only grow.
type Stats struct {
	StoreStats
	QueuedBroadcasts int
	Members          int // alive members, this node included

	JoinAttempts       uint64 // attempts to reach PEERS
	ReceivedBroadcasts uint64 // record messages received (gossip and fast path)
	ReceivedPushPull   uint64 // records received by push/pull
	FloorHits          uint64 // stale copies of deleted records rejected
	Refused            uint64 // records refused, every cause (see RefusalStats)
	DirectSent         uint64 // fast-path packets sent (Config.FanOut)
	DirectDropped      uint64 // own writes that skipped a backlogged fast path
	RejoinAttempts     uint64 // contacts of failed members or PEERS by rejoin rounds
	TriggeredPushPulls uint64 // push/pulls run on a member's return or after joining
	// MessagesIn and BytesIn count grapevine's messages received (record
	// broadcasts, fast-path packets and push/pull state windows, refused
	// ones included); MessagesOut and BytesOut those handed to memberlist
	// to send (a broadcast is counted once however many members it
	// reaches). Bytes are before encryption; memberlist's own probes and
	// membership messages are not counted.
	MessagesIn, BytesIn, MessagesOut, BytesOut uint64
}

// Stats returns current statistics, e.g. for the status endpoint.
func (c *Cluster) Stats() Stats {
	return Stats{
		StoreStats:         c.store.stats(),
		QueuedBroadcasts:   c.queue.NumQueued(),
		Members:            c.numNodes(),
		JoinAttempts:       c.stats.joinAttempts.Load(),
		ReceivedBroadcasts: c.stats.recvBroadcast.Load(),
		ReceivedPushPull:   c.stats.recvPushPull.Load(),
		FloorHits:          c.stats.floorHits.Load(),
		Refused:            c.refused.count(),
		DirectSent:         c.stats.directSent.Load(),
		DirectDropped:      c.stats.directDropped.Load(),
		RejoinAttempts:     c.stats.rejoinAttempts.Load(),
		TriggeredPushPulls: c.stats.triggeredPP.Load(),
		MessagesIn:         c.stats.in.msgs.Load(),
		BytesIn:            c.stats.in.bytes.Load(),
		MessagesOut:        c.stats.out.msgs.Load(),
		BytesOut:           c.stats.out.bytes.Load(),
	}
}
