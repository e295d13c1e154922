package ipam

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/sirupsen/logrus"
	"go.etcd.io/bbolt"

	"grapevine/gossip"
)

// The ledger of a pool is who owns which of its ranges as THIS host
// accepted it: the decided first division, changed only by block records
// that follow the transfer chain (see doc.go, "Block records"). A block
// record is another host's word and any member may write any key, so the
// replicated records alone cannot say who owns what: a forged record
// replaces the honest one under the same key everywhere (last writer wins).
// The ledger remembers every accepted transfer, so a forgery changes
// nothing, even after the record it replaced is gone. Ledgers live in the
// bucket ipam/ledgers (subnet → JSON).
var ledgersBucket = []byte("ledgers")

// ledgerEntry is one range and its owner.
type ledgerEntry struct {
	Lo        uint32 `json:"lo"`
	Hi        uint32 `json:"hi"`
	Owner     string `json:"owner"`
	Writer    string `json:"writer,omitempty"`  // "" for the first division
	Key       string `json:"key,omitempty"`     // the record that made it so
	Version   uint64 `json:"version,omitempty"` // that record's version
	Reclaimed bool   `json:"reclaimed,omitempty"`
}

// ledger is one pool's ownership. Entries are sorted, disjoint and cover
// the subnet. Applied maps each block record key to the newest version
// applied (or refused as stale), so a record is looked at once.
type ledger struct {
	Version int               `json:"version"`
	Entries []ledgerEntry     `json:"entries"`
	Applied map[string]uint64 `json:"applied"`

	refused map[string]uint64 // key → version already logged as refused
	dirty   bool              // changed since last stored
	gen     uint64            // changes so far
}

// blockCand is one block record of a pool, parsed.
type blockCand struct {
	s         span
	owner     string
	key       string
	writer    string
	version   uint64
	reclaimed bool
}

// Causes of block record refusals, as counted by Refused.
const (
	causeBlockMalformed = "block_malformed"   // key or value is not a block of the pool
	causeBlockNotOwner  = "block_not_owner"   // its writer does not own all it covers
	causeBlockStale     = "block_older_state" // older than the ownership it would change
)

var blockCauseText = map[string]string{
	causeBlockMalformed: "it is not a range of the pool naming an owner",
	causeBlockNotOwner:  "its writer does not hold all of that space by the records this host accepted",
	causeBlockStale:     "it is older than the ownership it would change",
}

func newLedger(div []blockView) *ledger {
	l := &ledger{Version: 1, Applied: map[string]uint64{}, refused: map[string]uint64{}, dirty: true}
	for _, b := range div {
		l.Entries = append(l.Entries, ledgerEntry{Lo: b.lo, Hi: b.hi, Owner: b.owner})
	}
	return l
}

// covered returns whether every entry overlapping s is owned by owner, and
// the newest version among them.
func (l *ledger) covered(s span, owner string) (bool, uint64) {
	all, newest := true, uint64(0)
	for _, e := range l.Entries {
		if e.Hi < s.lo || e.Lo > s.hi {
			continue
		}
		all = all && e.Owner == owner
		newest = max(newest, e.Version)
	}
	return all, newest
}

// paint gives s to c's owner, splitting the entries it overlaps.
func (l *ledger) paint(c blockCand) {
	out := make([]ledgerEntry, 0, len(l.Entries)+2)
	for _, e := range l.Entries {
		if e.Hi < c.s.lo || e.Lo > c.s.hi {
			out = append(out, e)
			continue
		}
		if e.Lo < c.s.lo {
			left := e
			left.Hi = c.s.lo - 1
			out = append(out, left)
		}
		if e.Hi > c.s.hi {
			right := e
			right.Lo = c.s.hi + 1
			out = append(out, right)
		}
	}
	out = append(out, ledgerEntry{Lo: c.s.lo, Hi: c.s.hi, Owner: c.owner, Writer: c.writer, Key: c.key, Version: c.version, Reclaimed: c.reclaimed})
	slices.SortFunc(out, func(a, b ledgerEntry) int { return int(int64(a.Lo) - int64(b.Lo)) })
	l.Entries = out
	l.Applied[c.key] = c.version
	l.dirty = true
	l.gen++
}

func (l *ledger) views() []blockView {
	out := make([]blockView, 0, len(l.Entries))
	for _, e := range l.Entries {
		out = append(out, blockView{span: span{e.Lo, e.Hi}, owner: e.Owner, key: e.Key, writer: e.Writer, reclaimed: e.Reclaimed})
	}
	return out
}

// blockRecords parses the block records of subnet. Records that are not a
// block of it are reported as malformed.
func (c *clusterState) blockRecords(subnet netip.Prefix) (cands []blockCand, bad []gossip.Record) {
	prefix := subnetKey(subnet) + "/"
	for _, rec := range c.r.List(kindBlock) {
		if !strings.HasPrefix(rec.Key, prefix) {
			continue
		}
		if cd, ok := parseBlockRecord(subnet, &rec); ok {
			cands = append(cands, cd)
		} else {
			bad = append(bad, rec)
		}
	}
	slices.SortFunc(cands, func(a, b blockCand) int {
		if a.version != b.version {
			if a.version < b.version {
				return -1
			}
			return 1
		}
		return strings.Compare(a.writer, b.writer)
	})
	return cands, bad
}

// settle applies the block records not yet applied to l, oldest first,
// each only if it follows the transfer chain (its writer owns all it
// covers, and it is newer than what it changes, or it carries out a decided
// reclaim). trust applies every record as it is: the first time a host
// builds the ledger of a pool whose division was decided before it kept
// one. Caller holds c.ledMu.
func (c *clusterState) settle(subnet netip.Prefix, l *ledger, trust bool) {
	cands, bad := c.blockRecords(subnet)
	for _, rec := range bad {
		c.refuseBlock(l, subnet, rec.Key, rec.Owner, rec.Version, causeBlockMalformed)
	}
	var pending []blockCand
	for _, cd := range cands {
		if v, ok := l.Applied[cd.key]; !ok || cd.version > v {
			pending = append(pending, cd)
		}
	}
	for progress := true; progress && len(pending) > 0; {
		progress = false
		rest := pending[:0]
		for _, cd := range pending {
			if cause := c.checkBlock(subnet, l, cd); trust || cause == "" {
				if l.refused[cd.key] == cd.version {
					c.log.WithFields(logrus.Fields{"subnet": subnet, "key": cd.key, "peer": cd.writer}).Info("accepted a block record refused earlier: the record it follows arrived")
				}
				l.paint(cd)
				progress = true
			} else {
				rest = append(rest, cd)
			}
		}
		pending = rest
	}
	for _, cd := range pending {
		c.refuseBlock(l, subnet, cd.key, cd.writer, cd.version, c.checkBlock(subnet, l, cd))
	}
}

// checkBlock returns why cd cannot be applied to l now ("" if it can).
func (c *clusterState) checkBlock(subnet netip.Prefix, l *ledger, cd blockCand) string {
	owns, newest := l.covered(cd.s, cd.writer)
	switch {
	case owns && cd.version > newest:
		return ""
	case owns:
		return causeBlockStale
	case cd.reclaimed && (c.reclaimAllows(subnet, l, cd) || c.forgetAllows(l, cd)):
		return ""
	}
	return causeBlockNotOwner
}

// reclaimAllows reports whether cd is the beneficiary of a decided reclaim
// taking over a block of the dead host that owns all of cd.
func (c *clusterState) reclaimAllows(subnet netip.Prefix, l *ledger, cd blockCand) bool {
	prefix := "reclaim/" + subnetKey(subnet) + "/"
	first := ordToAddr(subnet.Addr(), cd.s.lo).String()
	seen := map[string]bool{}
	for _, r := range c.r.List(kindAcc) {
		inst, _, ok := splitKey(r.Key)
		if !ok || !strings.HasPrefix(inst, prefix) || seen[inst] {
			continue
		}
		seen[inst] = true
		raw, ok := c.decided(inst)
		var v reclaimValue
		if !ok || json.Unmarshal(raw, &v) != nil || v.To != cd.writer || !slices.Contains(v.Blocks, first) {
			continue
		}
		if owned, newest := l.covered(cd.s, v.Dead); owned && cd.version > newest {
			return true
		}
	}
	return false
}

// refuseBlock logs and counts a refused block record, once per version.
func (c *clusterState) refuseBlock(l *ledger, subnet netip.Prefix, key, writer string, version uint64, cause string) {
	if l.refused[key] == version {
		return
	}
	l.refused[key] = version
	c.refusals[cause]++
	c.log.WithFields(logrus.Fields{"subnet": subnet, "key": key, "peer": writer, "cause": cause}).
		Warn("refused a block record: " + blockCauseText[cause] + "; nothing changes here")
}

// parseBlockRecord reads a block record of subnet: keyed by its first
// address, ending at or after it inside the subnet, naming an owner.
func parseBlockRecord(subnet netip.Prefix, rec *gossip.Record) (blockCand, bool) {
	firstText, ok := strings.CutPrefix(rec.Key, subnetKey(subnet)+"/")
	if !ok || rec.Deleted || rec.Owner == "" {
		return blockCand{}, false
	}
	first, err := netip.ParseAddr(firstText)
	var b blockRec
	if err != nil || !subnet.Contains(first) || decodeRec(*rec, &b) != nil {
		return blockCand{}, false
	}
	last, err := netip.ParseAddr(b.Last)
	if err != nil || !subnet.Contains(last) || last.Less(first) || b.Owner == "" {
		return blockCand{}, false
	}
	return blockCand{
		s:     span{addrToOrd(subnet, first), addrToOrd(subnet, last)},
		owner: b.Owner, key: rec.Key, writer: rec.Owner, version: rec.Version, reclaimed: b.Reclaimed,
	}, true
}

// ledgerOf returns the blocks of subnet from its ledger, built from the
// first division div when there is none yet, after applying the block
// records that arrived since.
func (c *clusterState) ledgerOf(subnet netip.Prefix, div []blockView) []blockView {
	c.ledMu.Lock()
	defer c.ledMu.Unlock()
	k := subnetKey(subnet)
	l := c.ledgers[k]
	trust := false
	if l == nil {
		l, trust = newLedger(div), true
		c.ledgers[k] = l
	}
	c.settle(subnet, l, trust)
	return l.views()
}

// loadLedgers reads the stored ledgers.
func (c *clusterState) loadLedgers() error {
	c.ledMu.Lock()
	defer c.ledMu.Unlock()
	return c.db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket(rootBucket).Bucket(ledgersBucket)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var l ledger
			if err := json.Unmarshal(v, &l); err != nil {
				return fmt.Errorf("ledger of %s in bucket ipam/ledgers: %w", k, err)
			}
			if l.Applied == nil {
				l.Applied = map[string]uint64{}
			}
			l.refused = map[string]uint64{}
			c.ledgers[string(k)] = &l
			return nil
		})
	})
}

// saveLedgers stores the ledgers changed since the last call. Called
// without d.mu; the bbolt write happens without c.ledMu (a commit holding
// bbolt's lock may wait for d.mu, whose holder may wait for c.ledMu).
func (c *clusterState) saveLedgers() {
	c.ledMu.Lock()
	changed := map[string][]byte{}
	gens := map[string]uint64{}
	for k, l := range c.ledgers {
		if l.dirty {
			if raw, err := json.Marshal(l); err == nil {
				changed[k], gens[k] = raw, l.gen
			}
		}
	}
	c.ledMu.Unlock()
	if len(changed) == 0 {
		return
	}
	err := c.db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.Bucket(rootBucket).CreateBucketIfNotExists(ledgersBucket)
		if err != nil {
			return err
		}
		for k, raw := range changed {
			if err := b.Put([]byte(k), raw); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		c.log.WithError(err).Warn("could not store the block ledgers in bucket ipam/ledgers; they are stored again at the next change")
		return
	}
	c.ledMu.Lock()
	for k, gen := range gens {
		if l := c.ledgers[k]; l != nil && l.gen == gen {
			l.dirty = false
		}
	}
	c.ledMu.Unlock()
}

// Refused counts the block records refused so far, by cause (nil without
// a cluster or refusals).
func (d *Driver) Refused() map[string]uint64 {
	if d.cl == nil {
		return nil
	}
	d.cl.ledMu.Lock()
	defer d.cl.ledMu.Unlock()
	if len(d.cl.refusals) == 0 {
		return nil
	}
	return maps.Clone(d.cl.refusals)
}
