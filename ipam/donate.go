package ipam

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"grapevine/gossip"
)

// lowWater is the number of free addresses under which a host asks for more
// space in the background, before it runs dry.
func (p *pool) lowWater() int { return max(2, p.capacity()/8) }

// spareLocked is the size of what this host could donate from subnet now
// (see pickDonation). Caller holds d.mu.
func (d *Driver) spareLocked(subnet netip.Prefix, within span) int {
	g, ok := d.pickDonation(subnet, within)
	if !ok {
		return 0
	}
	return g.size()
}

// pickDonation chooses what this host gives to a host short of space in
// within: half of its largest aligned free range (no allocated address)
// inside within; a whole minimum block when that is all it has free and it
// owns more, or uses none of its space. Caller holds d.mu.
func (d *Driver) pickDonation(subnet netip.Prefix, within span) (span, bool) {
	p := d.localPool(subnet)
	if p != nil && p.wanting > 0 {
		return span{}, false // it needs space itself
	}
	var owned ownership
	if p != nil {
		owned = p.owned
	} else {
		bs, ok := d.cl.blocks(subnet)
		if !ok {
			return span{}, false
		}
		owned, _ = ownedBy(bs, d.cl.self)
	}
	free := func(s span) bool {
		if p == nil {
			return true
		}
		for o := uint64(s.lo); o <= uint64(s.hi); o++ {
			if p.allocated(uint32(o)) {
				return false
			}
		}
		return true
	}
	// usable: s holds an address a container could get (not the network,
	// broadcast or gateway address), or giving it helps nobody.
	last := uint32(uint64(1)<<(32-subnet.Bits()) - 1)
	usable := func(s span) bool {
		for o := uint64(s.lo); o <= uint64(s.hi); o++ {
			if r := uint32(o); r != 0 && r != last && (p == nil || !p.reserved(r)) {
				return true
			}
		}
		return false
	}
	var best span
	found := false
	var visit func(s span)
	visit = func(s span) {
		if found && s.size() <= best.size() {
			return
		}
		if free(s) && usable(s) {
			best, found = s, true
			return
		}
		if s.size() >= 2*minBlock {
			h := uint32(s.size() / 2)
			visit(span{s.lo, s.lo + h - 1})
			visit(span{s.lo + h, s.hi})
		}
	}
	total := 0
	for _, r := range owned.ranges {
		total += r.size()
	}
	for _, r := range owned.intersect(within.lo, within.hi) {
		for _, a := range aligned(r) {
			visit(a)
		}
	}
	if !found {
		return span{}, false
	}
	if best.size() >= 2*minBlock {
		h := uint32(best.size() / 2)
		if upper := (span{best.lo + h, best.hi}); usable(upper) {
			return upper, true
		}
		return span{best.lo, best.lo + h - 1}, true
	}
	if total > best.size() || p == nil || p.count == 0 {
		return best, true
	}
	return span{}, false
}

// piece is one block record a donation writes.
type piece struct {
	s         span
	owner     string
	reclaimed bool
}

// donateLocked drops g from this host's allocator and returns the block
// records that give it to host to: first the pieces this host keeps, then
// the piece it gives. The caller writes them without d.mu but with d.own
// held, so no refresh can hand g back meanwhile. Caller holds d.own and d.mu.
func (d *Driver) donateLocked(subnet netip.Prefix, g span, to string) []piece {
	c := d.cl
	bs, ok := c.blocks(subnet)
	if !ok {
		return nil
	}
	if p := d.localPool(subnet); p != nil {
		p.owned.donate(g)
		p.rebuildSpans()
	}
	var keep, give []piece
	for _, b := range bs {
		if b.owner != c.self || b.hi < g.lo || b.lo > g.hi {
			continue
		}
		if b.lo < g.lo {
			keep = append(keep, piece{span{b.lo, g.lo - 1}, c.self, b.reclaimed})
		}
		if b.hi > g.hi {
			keep = append(keep, piece{span{g.hi + 1, b.hi}, c.self, b.reclaimed})
		}
		give = append(give, piece{span{max(b.lo, g.lo), min(b.hi, g.hi)}, to, b.reclaimed})
	}
	return append(keep, give...)
}

// onWant answers a request for space addressed to this host. Runs on the
// gossip worker.
func (d *Driver) onWant(_, rec *gossip.Record) {
	c := d.cl
	defer c.kick()
	if rec == nil || rec.Deleted || c.closed() {
		return
	}
	subnetS, from, ok := splitKey(rec.Key)
	if !ok || from != rec.Owner || from == c.self {
		return
	}
	var w wantRec
	if decodeRec(*rec, &w) != nil || w.Donor != c.self {
		return
	}
	subnet, err := netip.ParsePrefix(subnetS)
	if err != nil {
		return
	}
	within, err := rangeOf(subnet, w.Range)
	if err != nil {
		return
	}
	log := d.log.WithFields(logrus.Fields{"subnet": subnet, "peer": from})
	d.own.Lock()
	defer d.own.Unlock()
	d.mu.Lock()
	if d.answered[rec.Key] >= w.Seq {
		d.mu.Unlock()
		return
	}
	d.answered[rec.Key] = w.Seq
	g, ok := d.pickDonation(subnet, within)
	var pieces []piece
	var id string
	if ok {
		pieces = d.donateLocked(subnet, g, from)
	}
	if p := d.localPool(subnet); p != nil {
		id = p.id
	}
	d.mu.Unlock()
	if ok && id != "" {
		// Persist first: the stored ownership never includes a block whose
		// donation records are out.
		if err := d.persist(id); err != nil {
			log.WithError(err).Error("could not persist a donation; not donating (the block is used here again)")
			pieces = nil
		}
	}
	if !ok {
		log.Info("asked for space but has none free to give")
	} else if pieces != nil {
		for _, pc := range pieces {
			if err := d.cl.putBlock(subnet, pc.s, pc.owner, pc.reclaimed); err != nil {
				log.WithError(err).Error("donation failed half-way; the block stays out of use here until the next change of its records")
				break
			}
		}
		log.WithField("block", ordToAddr(subnet.Addr(), g.lo).String()+"-"+ordToAddr(subnet.Addr(), g.hi).String()).Info("donated a block")
	}
	d.mu.Lock()
	d.refreshLocked(subnet)
	def := d.poolDefLocked(subnet)
	d.mu.Unlock()
	d.cl.saveLedgers()
	d.publish(subnet, def)
}

// poolDefLocked encodes this host's pool definition record (range,
// gateway, spare space) for subnet's local pool; nil without one. Caller
// holds d.mu.
func (d *Driver) poolDefLocked(subnet netip.Prefix) []byte {
	p := d.localPool(subnet)
	if p == nil {
		return nil
	}
	def := poolDef{Version: recordVersion, Range: optPrefix(p.sub), Spare: d.spareLocked(subnet, p.rangeSpan()), Aux: p.auxList(), Served: p.served}
	if p.gateway.IsValid() {
		def.Gateway = p.gateway.String()
	}
	return encodeRec(def)
}

// publish writes a record made by poolDefLocked. Called without d.mu: a
// gossip write takes the shared bbolt DB's lock.
func (d *Driver) publish(subnet netip.Prefix, def []byte) {
	if def == nil {
		return
	}
	if err := d.cl.r.Put(kindPool, subnetKey(subnet)+"/"+d.cl.self, def); err != nil {
		d.log.WithError(err).WithField("subnet", subnet).Warn("could not publish the pool definition")
	}
}

// donorCandidate is one other owner of a pool's blocks.
type donorCandidate struct {
	name      string
	spare     int
	alive     bool
	published bool // spare comes from its definition record (else from its blocks)
}

// donors lists the other owners of p's subnet, best donor first: alive,
// most spare space (as they published it, else what they own in the
// range), then lowest name. Caller holds d.mu.
func (d *Driver) donors(p *pool) []donorCandidate {
	c := d.cl
	bs, _ := c.blocks(p.prefix)
	r := p.rangeSpan()
	alive := c.alive()
	byName := make(map[string]*donorCandidate)
	published := make(map[string]bool)
	for _, b := range bs {
		if b.owner == c.self {
			continue
		}
		dc := byName[b.owner]
		if dc == nil {
			dc = &donorCandidate{name: b.owner, alive: alive[b.owner]}
			if rec, ok := c.r.Get(kindPool, subnetKey(p.prefix)+"/"+b.owner); ok && rec.Owner == b.owner {
				var def poolDef
				if decodeRec(rec, &def) == nil {
					dc.spare, published[b.owner] = def.Spare, true
				}
			}
			byName[b.owner] = dc
		}
		// A host without the pool uses none of its blocks: all is spare
		// but the network, broadcast and gateway addresses.
		dc.published = published[b.owner]
		if !published[b.owner] && b.hi >= r.lo && b.lo <= r.hi {
			lo, hi := max(b.lo, r.lo), min(b.hi, r.hi)
			dc.spare += int(hi-lo) + 1
			for _, o := range []uint32{0, p.size() - 1, addrToOrd(p.prefix, p.gatewayFor(netip.Addr{}))} {
				if lo <= o && o <= hi {
					dc.spare--
				}
			}
		}
	}
	out := make([]donorCandidate, 0, len(byName))
	for _, dc := range byName {
		out = append(out, *dc)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.alive != b.alive {
			return a.alive
		}
		if a.spare != b.spare {
			return a.spare > b.spare
		}
		return a.name < b.name
	})
	return out
}

// requestSpace asks the best donor for space in p's range and waits (at
// most DonateTimeout) until this host has a free address, trying the next
// candidate when one does not answer. Called without d.mu.
func (d *Driver) requestSpace(p *pool) (err error) {
	c := d.cl
	defer observe(c.observeDonation, time.Now(), &err)
	key := subnetKey(p.prefix) + "/" + c.self
	deadline := time.Now().Add(c.donateTimeout)
	hasFree := func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return p.alloc.free > 0
	}
	defer func() {
		if err := c.r.Delete(kindWant, key); err != nil {
			d.log.WithError(err).WithField("pool", p.id).Debug("could not withdraw a request for space")
		}
	}()
	tried := make(map[string]bool)
	settled := false // waited once for block records on their way
	var cands []donorCandidate
	for time.Now().Before(deadline) {
		if hasFree() {
			return nil
		}
		d.mu.Lock()
		cands = d.donors(p)
		d.wantSeq++
		seq := d.wantSeq
		d.mu.Unlock()
		donor := pickDonor(cands, tried)
		if donor == "" {
			if d.refreshNow(p) {
				return nil
			}
			if len(tried) > 0 && !settled {
				settled = true
				if d.awaitDonation(p, deadline) {
					return nil
				}
			}
			if !d.tryReclaim(p, deadline) {
				break
			}
			continue
		}
		tried[donor] = true
		defKey := subnetKey(p.prefix) + "/" + donor
		before, _ := c.r.Get(kindPool, defKey)
		w := wantRec{Version: recordVersion, Donor: donor, Range: p.rangePrefix().String(), Seq: seq}
		if err := c.r.Put(kindWant, key, encodeRec(w)); err != nil {
			return fmt.Errorf("asking %s for space in %s: %w", donor, p.prefix, err)
		}
		d.log.WithFields(logrus.Fields{"pool": p.id, "peer": donor}).Debug("asked for space")
		// The donor answers by donating (this host gets space) or, when it
		// has none, by publishing its definition again.
		answered := func() bool {
			r, _ := c.r.Get(kindPool, defKey)
			return hasFree() || r.Version != before.Version
		}
		if c.waitUntil(deadline, max(c.donateTimeout/3, 100*time.Millisecond), answered) && hasFree() {
			return nil
		}
	}
	if d.refreshNow(p) {
		return nil
	}
	return d.noSpace(p, cands, tried)
}

// donationSettle is how long a host whose donors all say they have
// nothing left waits for block records still on their way before it calls
// the range full: a donor writes the records giving space before its new
// definition, but gossip may deliver them in the other order.
const donationSettle = 500 * time.Millisecond

// awaitDonation waits up to donationSettle (not past deadline) for block
// records giving this host space in p; it reports whether p has a free
// address then. requestSpace waits so once per request. Called without
// d.mu.
func (d *Driver) awaitDonation(p *pool, deadline time.Time) bool {
	return d.cl.waitUntil(deadline, donationSettle, func() bool { return d.refreshNow(p) })
}

// pickDonor is the host to ask next: the best one with spare space not
// asked yet, else the best one with spare space again, else one whose
// published definition says it has none but that was not asked (the
// record may be older than its last change). "" when nobody is left.
func pickDonor(cands []donorCandidate, tried map[string]bool) string {
	again := ""
	for _, dc := range cands {
		if dc.alive && dc.spare > 0 {
			if !tried[dc.name] {
				return dc.name
			}
			if again == "" {
				again = dc.name
			}
		}
	}
	if again != "" {
		return again
	}
	for _, dc := range cands {
		if dc.alive && dc.published && !tried[dc.name] {
			return dc.name
		}
	}
	return ""
}

// noSpace explains why requestSpace got nothing: plainly "full" when every
// other owner is reachable and has no free address (asked, or known from
// the block records), else each owner with its reachability and spare space.
func (d *Driver) noSpace(p *pool, cands []donorCandidate, tried map[string]bool) error {
	c := d.cl
	full := true
	holders := []string{c.self}
	for _, dc := range cands {
		full = full && dc.alive && dc.spare == 0 && (tried[dc.name] || !dc.published)
		holders = append(holders, dc.name)
	}
	if full {
		slices.Sort(holders)
		return failf(ErrExhausted, "no free address left in %s: the range is full (every address is in use on %s, all reachable); remove a container or recreate the network with a larger --subnet/--ip-range",
			p.rangeName(), strings.Join(holders, ", "))
	}
	alive := c.alive()
	var owners []string
	for _, dc := range cands {
		owners = append(owners, fmt.Sprintf("%s (%s, %d spare)", dc.name, c.reachability(dc.name, alive), dc.spare))
	}
	list := "none"
	if len(owners) > 0 {
		list = strings.Join(owners, ", ")
	}
	return failf(ErrExhausted, "no free address left in the blocks of %s this host owns, and no other host donated space within %v; owners of the other blocks: %s; free addresses on those hosts or use a larger --subnet/--ip-range",
		p.rangeName(), c.donateTimeout, list)
}

// rangePrefix is the --ip-range, or the subnet.
func (p *pool) rangePrefix() netip.Prefix {
	if p.sub.IsValid() {
		return p.sub
	}
	return p.prefix
}

// askAhead asks for space in the background once p runs low.
func (d *Driver) askAhead(p *pool) {
	d.mu.Lock()
	if p.asking || p.alloc.free >= p.lowWater() {
		d.mu.Unlock()
		return
	}
	p.asking = true
	d.mu.Unlock()
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		err := d.requestSpaceAhead(p)
		d.mu.Lock()
		p.asking = false
		d.mu.Unlock()
		if err != nil {
			d.log.WithError(err).WithField("pool", p.id).Debug("asking ahead for space failed")
		}
	}()
}

// requestSpaceAhead asks once, like requestSpace, but is satisfied by any
// growth of this host's free space.
func (d *Driver) requestSpaceAhead(p *pool) (err error) {
	c := d.cl
	defer observe(c.observeDonation, time.Now(), &err)
	d.mu.Lock()
	start := p.alloc.free
	cands := d.donors(p)
	d.wantSeq++
	seq := d.wantSeq
	d.mu.Unlock()
	donor := ""
	for _, dc := range cands {
		if dc.alive && dc.spare > 0 {
			donor = dc.name
			break
		}
	}
	if donor == "" {
		return fmt.Errorf("no reachable host has spare space in %s", p.prefix)
	}
	key := subnetKey(p.prefix) + "/" + c.self
	w := wantRec{Version: recordVersion, Donor: donor, Range: p.rangePrefix().String(), Seq: seq}
	if err := c.r.Put(kindWant, key, encodeRec(w)); err != nil {
		return err
	}
	defer func() { _ = c.r.Delete(kindWant, key) }()
	grew := c.waitUntil(time.Now().Add(c.donateTimeout), 0, func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return p.alloc.free > start
	})
	if !grew {
		return fmt.Errorf("%s did not donate within %v", donor, c.donateTimeout)
	}
	return nil
}

// refreshNow applies the block records to p at once (their callbacks may
// still be queued) and reports whether p has a free address.
func (d *Driver) refreshNow(p *pool) bool {
	d.own.Lock()
	defer d.own.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.refreshLocked(p.prefix)
	return p.alloc.free > 0
}
