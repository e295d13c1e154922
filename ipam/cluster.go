package ipam

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"go.etcd.io/bbolt"

	"grapevine/gossip"
)

// Defaults of the cluster timings in Config.
const (
	defaultReclaimAfter  = 24 * time.Hour
	defaultAgreeTimeout  = 5 * time.Second
	defaultDonateTimeout = 5 * time.Second
	defaultForgetAfter   = time.Hour
)

// clusterState is the Driver's view of the replicated state: membership,
// the Paxos acceptor, and the wake-up channel of goroutines waiting for
// records to change. Nil on a Driver without a cluster.
type clusterState struct {
	r             gossip.Replicated
	db            *bbolt.DB // this host's acceptor state (accstore.go)
	self          string
	log           *logrus.Entry
	agreeTimeout  time.Duration
	donateTimeout time.Duration
	reclaimAfter  time.Duration
	forgetAfter   time.Duration
	now           func() time.Time

	// vote, when set, is asked before this acceptor answers a proposal
	// of an instance; reclaims use it to agree only when the dead host has
	// been absent long enough from here too.
	vote func(inst string) bool

	accMu sync.Mutex // serialises writes of this node's acceptor records

	mu      sync.Mutex
	sig     chan struct{} // closed and replaced whenever a record changes
	stopped bool
	stop    chan struct{}
	absent  map[string]time.Time // known hosts not alive, since when (this process's view)
	instMu  map[string]*sync.Mutex
	// members is the membership as node events reported it (name → alive).
	// gossip's Members() reads memberlist nodes outside memberlist's lock
	// (a data race), so it is called once at start only; events carry
	// copies made under that lock.
	members map[string]bool
	leading map[string]bool // instances this host runs for another host
	damaged map[string]bool // instances whose stored acceptor state is unreadable (logged once)
	// forgets are the decided forget instances this host learned, in
	// order (forget/1 first); forgotten is every host they name.
	forgets   []forgetValue
	forgotten map[string]bool
	bg        sync.WaitGroup // leader goroutines
	// decidedHook is called after this host chose a value as leader.
	decidedHook func(inst string, v json.RawMessage)

	ledMu    sync.Mutex         // guards ledgers and refusals; taken after d.mu
	ledgers  map[string]*ledger // by subnet (ledger.go)
	refusals map[string]uint64  // refused block records by cause

	observeAgreement, observeDonation func(time.Duration, error) // nil: not observed
}

func newClusterState(cfg Config, log *logrus.Entry) *clusterState {
	c := &clusterState{
		r:             cfg.Cluster,
		db:            cfg.DB,
		self:          cfg.Cluster.LocalName(),
		log:           log,
		agreeTimeout:  orDefault(cfg.AgreeTimeout, defaultAgreeTimeout),
		donateTimeout: orDefault(cfg.DonateTimeout, defaultDonateTimeout),
		reclaimAfter:  orDefault(cfg.ReclaimAfter, defaultReclaimAfter),
		forgetAfter:   orDefault(cfg.ForgetAfter, defaultForgetAfter),
		now:           cfg.Now,
		sig:           make(chan struct{}),
		stop:          make(chan struct{}),
		absent:        make(map[string]time.Time),
		instMu:        make(map[string]*sync.Mutex),
		members:       make(map[string]bool),
		leading:       make(map[string]bool),
		damaged:       make(map[string]bool),
		forgotten:     make(map[string]bool),
		ledgers:       make(map[string]*ledger),
		refusals:      make(map[string]uint64),

		observeAgreement: cfg.ObserveAgreement,
		observeDonation:  cfg.ObserveDonation,
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c
}

// observe reports the time since start and the outcome *err to fn, if
// set; deferred by the operations the metrics time.
func observe(fn func(time.Duration, error), start time.Time, err *error) {
	if fn != nil {
		fn(time.Since(start), *err)
	}
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// kick wakes every waiter: some record changed.
func (c *clusterState) kick() {
	c.mu.Lock()
	close(c.sig)
	c.sig = make(chan struct{})
	c.mu.Unlock()
}

func (c *clusterState) signal() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sig
}

func (c *clusterState) closed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopped
}

func (c *clusterState) close() {
	c.mu.Lock()
	if !c.stopped {
		c.stopped = true
		close(c.stop)
	}
	c.mu.Unlock()
	c.bg.Wait()
}

// waitUntil polls cond whenever a record changes (and at least every 50 ms,
// as membership changes come without a record) until it holds, the deadline
// passes, or limit (when > 0) has elapsed. It reports whether cond held.
func (c *clusterState) waitUntil(deadline time.Time, limit time.Duration, cond func() bool) bool {
	if limit > 0 {
		if d := time.Now().Add(limit); d.Before(deadline) {
			deadline = d
		}
	}
	for {
		ch := c.signal()
		if cond() {
			return true
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		t := time.NewTimer(min(left, 50*time.Millisecond))
		select {
		case <-ch:
		case <-t.C:
		case <-c.stop:
			t.Stop()
			return false
		}
		t.Stop()
	}
}

// knownSet is every host the cluster knows: current and departed members,
// and every node that ever announced itself to IPAM (records outlive
// memberlist's memory of departed members).
func (c *clusterState) knownSet() map[string]bool {
	out := map[string]bool{c.self: true}
	c.mu.Lock()
	for n := range c.members {
		out[n] = true
	}
	c.mu.Unlock()
	for _, r := range c.r.List(kindHost) {
		if r.Key == r.Owner {
			out[r.Key] = true
		}
	}
	c.dropForgotten(out)
	return out
}

// dropForgotten removes the hosts forgotten by agreement from set.
func (c *clusterState) dropForgotten(set map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for n := range c.forgotten {
		delete(set, n)
	}
}

func (c *clusterState) knownHosts() []string {
	return slices.Sorted(maps.Keys(c.knownSet()))
}

// alive returns the members memberlist considers alive (this node included).
func (c *clusterState) alive() map[string]bool {
	out := map[string]bool{c.self: true}
	c.mu.Lock()
	for n, alive := range c.members {
		if alive && !c.forgotten[n] {
			out[n] = true
		}
	}
	c.mu.Unlock()
	return out
}

// reachability describes a host for messages: "alive", or how long it has
// been absent as seen from here.
func (c *clusterState) reachability(name string, alive map[string]bool) string {
	if alive[name] {
		return "reachable"
	}
	c.mu.Lock()
	since, ok := c.absent[name]
	c.mu.Unlock()
	if ok {
		return "unreachable for " + c.now().Sub(since).Truncate(time.Second).String()
	}
	return "unreachable"
}

// noteMembers updates the absence clock of every known host.
func (c *clusterState) noteMembers() {
	alive := c.alive()
	known := c.knownSet()
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for n := range known {
		if alive[n] {
			delete(c.absent, n)
		} else if _, ok := c.absent[n]; !ok {
			c.absent[n] = now
		}
	}
}

// absentFor reports how long name has been continuously absent (0 if alive).
func (c *clusterState) absentFor(name string) time.Duration {
	c.noteMembers()
	c.mu.Lock()
	defer c.mu.Unlock()
	since, ok := c.absent[name]
	if !ok {
		return 0
	}
	return c.now().Sub(since)
}

// joinCluster announces this host to IPAM's replicated state, subscribes to
// the records it reacts to, and rebuilds the ownership of restored pools from
// the replicated blocks (the bbolt copy is a cache; a block reclaimed while
// this host was down is noticed here).
func (d *Driver) joinCluster() error {
	c := d.cl
	if err := c.r.Put(kindHost, c.self, encodeRec(hostRec{Version: recordVersion})); err != nil {
		return fmt.Errorf("announcing this host to the cluster: %w", err)
	}
	if err := c.republishAcc(); err != nil {
		return err
	}
	if err := c.loadLedgers(); err != nil {
		return err
	}
	d.catchUpForgets() // the known set as this host left it
	d.mu.Lock()
	var subnets []netip.Prefix
	for _, p := range d.pools {
		if d.clusterWide(p.space) {
			p.clustered = true
			subnets = append(subnets, p.prefix)
		}
	}
	d.mu.Unlock()
	// Keys of these kinds name their writer: gossip refuses a record
	// written in another host's name before it is stored. Block records
	// change hands, so the ledger checks them instead (onBlock).
	c.r.RegisterValidator(kindHost, gossip.OwnerIsKey())
	for _, kind := range []string{kindPool, kindWant, kindProp, kindAcc} {
		c.r.RegisterValidator(kind, gossip.OwnerSuffix("/"))
	}
	// A delivery queue of IPAM's own: Paxos answers and donations never
	// wait behind the driver's callbacks (kernel work, fsyncs). IPAM relies
	// on the order within its queue only (records as applied, node events
	// as reported).
	sub := c.r.Consumer("ipam")
	sub.Subscribe(kindProp, c.onProp)
	sub.Subscribe(kindAcc, d.onAcc)
	sub.Subscribe(kindBlock, d.onBlock)
	sub.Subscribe(kindWant, d.onWant)
	sub.OnNodeEvent(func(m gossip.Member, ev gossip.EventType) {
		c.mu.Lock()
		c.members[m.Name] = ev == gossip.EventJoin || ev == gossip.EventUpdate
		back := c.forgotten[m.Name] && ev == gossip.EventJoin
		c.mu.Unlock()
		if back {
			d.log.WithField("peer", m.Name).Error("a host the cluster forgot is back: it counts in no quorum and owns nothing; stop it, move its state directory aside and let it join under a new name")
		}
		c.noteMembers()
		c.kick()
	})
	// Members present before the subscription (events only report changes).
	c.mu.Lock()
	for _, m := range c.r.Members() {
		if _, seen := c.members[m.Name]; !seen && !m.Self {
			c.members[m.Name] = m.State == gossip.StateAlive
		}
	}
	c.mu.Unlock()
	c.noteMembers()
	for _, s := range subnets {
		d.applyInit(s) // publishes the definition too
		d.mu.Lock()
		def := d.poolDefLocked(s)
		d.mu.Unlock()
		d.publish(s, def)
	}
	return nil
}

// checkDefinition refuses a pool whose --ip-range (or gateway, when valid)
// differs from another host's definition of the same subnet. Caller holds d.mu.
func (d *Driver) checkDefinition(subnet, sub netip.Prefix, gw netip.Addr) error {
	prefix := subnetKey(subnet) + "/"
	for _, r := range d.cl.r.List(kindPool) {
		node, ok := strings.CutPrefix(r.Key, prefix)
		if !ok || strings.Contains(node, "/") || node == d.cl.self || node != r.Owner {
			continue
		}
		var def poolDef
		if decodeRec(r, &def) != nil {
			continue
		}
		if def.Range != optPrefix(sub) {
			return failf(ErrConflict, "%s differs from host %s's definition of %s (%s): every host must create the network with the same --subnet and --ip-range",
				describeRange(sub), node, subnet, describeRange(netip.MustParsePrefix(orZeroPrefix(def.Range))))
		}
		if gw.IsValid() && def.Gateway != "" && def.Gateway != gw.String() {
			return failf(ErrConflict, "gateway %s differs from host %s's gateway %s for %s: the gateway is the same on every host; create the network with --gateway %s",
				gw, node, def.Gateway, subnet, def.Gateway)
		}
	}
	return nil
}

func orZeroPrefix(s string) string {
	if _, err := netip.ParsePrefix(s); err != nil {
		return "0.0.0.0/32"
	}
	return s
}

func describeRange(sub netip.Prefix) string {
	if !sub.IsValid() || sub.Bits() == 32 && sub.Addr().IsUnspecified() {
		return "no --ip-range"
	}
	return "--ip-range " + sub.String()
}

// joinPool publishes this host's definition of a new cluster pool and takes
// its blocks if the division is already decided.
func (d *Driver) joinPool(p *pool) {
	d.applyInit(p.prefix)
	d.mu.Lock()
	def := d.poolDefLocked(p.prefix)
	d.mu.Unlock()
	d.publish(p.prefix, def)
}
