package ipam

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"grapevine/gossip"
)

// minBlock is the smallest block a range is divided into or split down to:
// one address, so that a host gets an address whenever any owner has one
// free, whatever the range size and host count.
const minBlock = 1

// initValue is the value decided by the "init/<subnet>" instance: the pool's
// allocation range and the hosts it is divided among (see divide).
type initValue struct {
	Version int      `json:"version"`
	Range   string   `json:"range,omitempty"` // --ip-range; "" = whole subnet
	Owners  []string `json:"owners"`
}

func initInstance(subnet netip.Prefix) string { return "init/" + subnetKey(subnet) }

// divide is the initial division of a subnet of n addresses: the range r is
// cut into the smallest power of two of equal aligned blocks (at least
// minBlock addresses each) that gives every owner one, assigned round-robin in
// owner order; the rest of the subnet, outside r, is cut into maximal aligned
// blocks and assigned round-robin after them. Deterministic: every node
// computes the same blocks from the same decided value.
func divide(n uint32, r span, owners []string) []blockView {
	if len(owners) == 0 {
		return nil
	}
	rs := uint64(r.hi-r.lo) + 1
	k := uint64(1)
	for k < uint64(len(owners)) {
		k <<= 1
	}
	bs := rs / k
	if bs < minBlock {
		bs = min(uint64(minBlock), rs)
	}
	var out []blockView
	i := 0
	add := func(lo, hi uint64) {
		out = append(out, blockView{span: span{uint32(lo), uint32(hi)}, owner: owners[i%len(owners)]})
		i++
	}
	for lo := uint64(r.lo); lo <= uint64(r.hi); lo += bs {
		add(lo, lo+bs-1)
	}
	var rest []span
	if r.lo > 0 {
		rest = append(rest, aligned(span{0, r.lo - 1})...)
	}
	if r.hi < n-1 {
		rest = append(rest, aligned(span{r.hi + 1, n - 1})...)
	}
	for _, s := range rest {
		add(uint64(s.lo), uint64(s.hi))
	}
	slices.SortFunc(out, func(a, b blockView) int { return int(int64(a.lo) - int64(b.lo)) })
	return out
}

// aligned cuts s into maximal power-of-two blocks aligned to their size.
func aligned(s span) []span {
	var out []span
	lo, hi := uint64(s.lo), uint64(s.hi)
	for lo <= hi {
		size := uint64(1)
		for lo%(size*2) == 0 && lo+size*2-1 <= hi {
			size *= 2
		}
		out = append(out, span{uint32(lo), uint32(lo + size - 1)})
		lo += size
	}
	return out
}

// rangeOf parses a decided or wanted range ("" = whole subnet) of subnet.
func rangeOf(subnet netip.Prefix, r string) (span, error) {
	whole := span{0, uint32(uint64(1)<<(32-subnet.Bits()) - 1)}
	if r == "" {
		return whole, nil
	}
	p, err := netip.ParsePrefix(r)
	if err != nil || !subnet.Contains(p.Addr()) || p.Bits() < subnet.Bits() {
		return span{}, fmt.Errorf("range %q is not inside %s", r, subnet)
	}
	lo := addrToOrd(subnet, p.Addr())
	return span{lo, lo + uint32(uint64(1)<<(32-p.Bits())-1)}, nil
}

// blocks returns the blocks of subnet as this host accepted them: the
// decided initial division, changed by the block records that follow the
// transfer chain (ledger.go). Sorted by first address. ok is false while no
// division is decided.
func (c *clusterState) blocks(subnet netip.Prefix) (out []blockView, ok bool) {
	raw, ok := c.decided(initInstance(subnet))
	if !ok {
		return nil, false
	}
	var v initValue
	if err := json.Unmarshal(raw, &v); err != nil {
		c.log.WithError(err).WithField("subnet", subnet).Error("undecodable pool division; no block is owned")
		return nil, true
	}
	r, err := rangeOf(subnet, v.Range)
	if err != nil {
		c.log.WithError(err).WithField("subnet", subnet).Error("bad range in pool division; no block is owned")
		return nil, true
	}
	n := uint32(uint64(1) << (32 - subnet.Bits()))
	return c.ledgerOf(subnet, divide(n, r, v.Owners)), true
}

// ownedBy returns the ranges name owns in bs, and of them those reclaimed.
func ownedBy(bs []blockView, name string) (owned, reclaimed ownership) {
	for _, b := range bs {
		if b.owner == name {
			owned.grant(b.span)
			if b.reclaimed {
				reclaimed.grant(b.span)
			}
		}
	}
	return owned, reclaimed
}

// putBlock writes the record of one block; only its owner (or a decided
// reclaim) may call it.
func (c *clusterState) putBlock(subnet netip.Prefix, s span, owner string, reclaimed bool) error {
	base := subnet.Addr()
	key := subnetKey(subnet) + "/" + ordToAddr(base, s.lo).String()
	rec := blockRec{Version: recordVersion, Last: ordToAddr(base, s.hi).String(), Owner: owner, Reclaimed: reclaimed}
	if err := c.r.Put(kindBlock, key, encodeRec(rec)); err != nil {
		return fmt.Errorf("writing block %s-%s of %s: %w", ordToAddr(base, s.lo), ordToAddr(base, s.hi), subnet, err)
	}
	return nil
}

// localPool returns the local-space pool of subnet, if this host has one.
// Caller holds d.mu.
func (d *Driver) localPool(subnet netip.Prefix) *pool {
	for _, p := range d.pools {
		if p.clustered && p.prefix == subnet {
			return p
		}
	}
	return nil
}

// ensureAgreed makes sure the first division of p's subnet is decided,
// running Paxos when needed, and applies it. Called without d.mu.
func (d *Driver) ensureAgreed(p *pool) error {
	c := d.cl
	d.mu.Lock()
	agreed := p.agreed
	d.mu.Unlock()
	if agreed {
		return nil
	}
	inst := initInstance(p.prefix)
	if _, ok := c.decided(inst); !ok {
		if c.r.HasPeers() && !c.r.Joined() && !c.aloneByAgreement() {
			return failf(ErrNotOwned, "this host has not yet reached any of its PEERS (check PEERS, GOSSIP_PORT, GOSSIP_KEY and firewalls); it cannot claim addresses in %s until it has", p.prefix)
		}
		rng := optPrefix(p.sub)
		mine := func() (json.RawMessage, error) {
			alive := c.alive()
			var owners []string
			for _, n := range c.knownHosts() {
				_, ipamHost := c.r.Get(kindHost, n)
				if alive[n] && (ipamHost || n == c.self) {
					owners = append(owners, n)
				}
			}
			return json.Marshal(initValue{Version: recordVersion, Range: rng, Owners: owners})
		}
		if _, err := c.propose(inst, time.Now().Add(c.agreeTimeout), mine); err != nil {
			return failf(ErrNotOwned, "the hosts could not agree on how to divide %s among them: %v; retry when more hosts are reachable", p.prefix, err)
		}
	}
	d.applyInit(p.prefix)
	return nil
}

// applyInit writes the records of the blocks this host got in the initial
// division (owners write their own blocks) and refreshes its ownership.
func (d *Driver) applyInit(subnet netip.Prefix) {
	c := d.cl
	bs, ok := c.blocks(subnet)
	if !ok {
		return
	}
	d.own.Lock()
	defer d.own.Unlock()
	for _, b := range bs {
		if b.owner == c.self && b.key == "" {
			if err := c.putBlock(subnet, b.span, c.self, false); err != nil {
				d.log.WithError(err).WithField("subnet", subnet).Warn("could not publish an owned block; retrying later")
			}
		}
	}
	d.mu.Lock()
	d.refreshLocked(subnet)
	def := d.poolDefLocked(subnet)
	d.mu.Unlock()
	c.saveLedgers()
	d.publish(subnet, def)
}

// refreshLocked recomputes the ownership of the local pool of subnet from
// the replicated blocks, noticing blocks taken away by a reclaim. Caller
// holds d.mu.
func (d *Driver) refreshLocked(subnet netip.Prefix) {
	p := d.localPool(subnet)
	if p == nil {
		return
	}
	c := d.cl
	bs, ok := c.blocks(subnet)
	if !ok {
		return
	}
	p.agreed = true
	owned, reclaimed := ownedBy(bs, c.self)
	// Ranges this host held and no longer holds, where a block record written
	// by another host gives them to someone else: the cluster reclaimed them
	// (this host's own donations are written by itself).
	gone := p.owned
	for _, s := range owned.ranges {
		gone.donate(s)
	}
	for _, g := range gone.ranges {
		for _, b := range bs {
			if b.owner == c.self || b.writer == "" || b.writer == c.self || b.hi < g.lo || b.lo > g.hi {
				continue
			}
			lo, hi := max(b.lo, g.lo), min(b.hi, g.hi)
			r := ordToAddr(p.prefix.Addr(), lo).String() + "-" + ordToAddr(p.prefix.Addr(), hi).String()
			if slices.Contains(p.lost, r) {
				continue
			}
			p.lost = append(p.lost, r)
			n := 0
			for o := uint64(lo); o <= uint64(hi); o++ {
				if p.allocated(uint32(o)) {
					n++
				}
			}
			d.log.WithFields(logrus.Fields{"pool": p.id, "block": r, "new_owner": b.owner, "reclaimed_by": b.writer, "addresses_in_use": n}).
				Error("blocks of this host were reclaimed by the cluster while it was away; it will not allocate from them again (addresses still in use there may be duplicated: move those containers)")
		}
	}
	p.owned, p.reclaimed = owned, reclaimed
	p.rebuildSpans()
}

// onBlock reacts to block records: a grant to this host, a donation it
// made, or a reclaim. Runs on the gossip worker.
func (d *Driver) onBlock(_, rec *gossip.Record) {
	c := d.cl
	defer c.kick()
	if rec == nil || c.closed() {
		return
	}
	subnet, _, ok := splitKey(rec.Key)
	if !ok {
		return
	}
	s, err := netip.ParsePrefix(subnet)
	if err != nil {
		return
	}
	d.own.Lock()
	d.mu.Lock()
	d.refreshLocked(s)
	d.mu.Unlock()
	d.own.Unlock()
	c.saveLedgers()
}

// onAcc reacts to acceptor records: wakes proposers and spreads decisions.
func (d *Driver) onAcc(_, rec *gossip.Record) {
	c := d.cl
	defer c.kick()
	if rec == nil || rec.Deleted || c.closed() || rec.Owner == c.self {
		return
	}
	inst, _, ok := splitKey(rec.Key)
	if !ok {
		return
	}
	if _, forget := parseForget(inst); forget {
		d.catchUpForgets() // in order: each is counted in the set the ones before left
		return
	}
	// Any acceptor record may complete the evidence of a decision; a
	// record merely saying "decided" is not enough (see decision).
	b, v, ok := c.decision(inst)
	if !ok {
		return
	}
	if _, err := c.learn(inst, b, v); err != nil {
		d.log.WithError(err).WithField("instance", inst).Warn("could not record a learned decision")
	}
	d.applyDecision(inst, v)
}

// applyDecision acts on a decided instance.
func (d *Driver) applyDecision(inst string, v json.RawMessage) {
	switch {
	case strings.HasPrefix(inst, "init/"):
		s, err := netip.ParsePrefix(strings.TrimPrefix(inst, "init/"))
		if err == nil {
			d.applyInit(s)
		}
	case strings.HasPrefix(inst, "reclaim/"):
		d.applyReclaim(inst, v)
	}
}

// notOwned explains a --ip in a block of another host. Caller holds d.mu.
func (d *Driver) notOwned(p *pool, a netip.Addr) error {
	bs, _ := d.cl.blocks(p.prefix)
	ord := addrToOrd(p.prefix, a)
	for _, b := range bs {
		if b.lo <= ord && ord <= b.hi {
			return failf(ErrNotOwned, "--ip %s lies in block %s-%s of %s, owned by host %s; run the container on %s, choose an address in a block this host owns (grapevine status lists them), or omit --ip",
				a, ordToAddr(p.prefix.Addr(), b.lo), ordToAddr(p.prefix.Addr(), b.hi), p.prefix, b.owner, b.owner)
		}
	}
	return failf(ErrNotOwned, "--ip %s lies in no block of %s this host owns; choose an address in a block this host owns (grapevine status lists them), or omit --ip", a, p.prefix)
}
