package ipam

import (
	"encoding/json"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// reclaimValue is the value decided by a "reclaim/<subnet>/<dead>/<n>"
// instance: the blocks of Dead (by first address) that To takes over.
type reclaimValue struct {
	Version int      `json:"version"`
	Dead    string   `json:"dead"`
	To      string   `json:"to"`
	Blocks  []string `json:"blocks"`
}

// parseReclaim splits a reclaim instance into subnet and dead host.
func parseReclaim(inst string) (netip.Prefix, string, bool) {
	rest, ok := strings.CutPrefix(inst, "reclaim/")
	if !ok {
		return netip.Prefix{}, "", false
	}
	rest, _, ok = splitKey(rest) // drop the generation
	if !ok {
		return netip.Prefix{}, "", false
	}
	subnet, dead, ok := splitKey(rest)
	if !ok {
		return netip.Prefix{}, "", false
	}
	p, err := netip.ParsePrefix(subnet)
	if err != nil {
		return netip.Prefix{}, "", false
	}
	return p, dead, true
}

// vote is the acceptor's consent to an instance: always for a first
// division; for a reclaim only when the dead host has been continuously
// absent for ReclaimAfter as seen from this host too; for a forget only
// when it is the next one after those this host learned (its value is
// checked at the accept phase, agreesToForget).
func (c *clusterState) voteFor(inst string) bool {
	if n, ok := parseForget(inst); ok {
		return n <= c.forgetGen()+1
	}
	_, dead, ok := parseReclaim(inst)
	if !ok {
		return strings.HasPrefix(inst, "init/")
	}
	return dead != c.self && c.absentFor(dead) >= c.reclaimAfter
}

// tryReclaim reclaims the blocks of one owner of p's subnet absent for
// longer than ReclaimAfter, with the agreement of a majority of all known
// hosts. It reports whether space may have been gained. Called without d.mu.
func (d *Driver) tryReclaim(p *pool, deadline time.Time) bool {
	c := d.cl
	bs, ok := c.blocks(p.prefix)
	if !ok {
		return false
	}
	byOwner := make(map[string][]string)
	for _, b := range bs {
		if b.owner != c.self {
			byOwner[b.owner] = append(byOwner[b.owner], ordToAddr(p.prefix.Addr(), b.lo).String())
		}
	}
	var dead []string
	for n := range byOwner {
		if c.absentFor(n) >= c.reclaimAfter {
			dead = append(dead, n)
		}
	}
	sort.Strings(dead)
	for _, x := range dead {
		base := "reclaim/" + subnetKey(p.prefix) + "/" + x + "/"
		gen := 1
		for {
			if _, ok := c.decided(base + itoa(gen)); !ok {
				break
			}
			gen++
		}
		inst := base + itoa(gen)
		val := reclaimValue{Version: recordVersion, Dead: x, To: c.self, Blocks: byOwner[x]}
		v, err := c.propose(inst, deadline, func() (json.RawMessage, error) { return json.Marshal(val) })
		if err != nil {
			d.log.WithError(err).WithFields(logrus.Fields{"pool": p.id, "peer": x}).Warn("could not agree to reclaim the blocks of an absent host")
			continue
		}
		d.applyReclaim(inst, v)
		return true
	}
	return false
}

// applyReclaim acts on a decided reclaim: its beneficiary writes the block
// records (the one exception to owner-only writes), and every host refreshes
// its view, so a returning dead host notices its loss.
func (d *Driver) applyReclaim(inst string, raw json.RawMessage) {
	c := d.cl
	subnet, _, ok := parseReclaim(inst)
	if !ok {
		return
	}
	var v reclaimValue
	if json.Unmarshal(raw, &v) != nil {
		return
	}
	bs, ok := c.blocks(subnet)
	if !ok {
		return
	}
	d.own.Lock()
	defer d.own.Unlock()
	if v.To == c.self {
		for _, first := range v.Blocks {
			a, err := netip.ParseAddr(first)
			if err != nil || !subnet.Contains(a) {
				continue
			}
			lo := addrToOrd(subnet, a)
			for _, b := range bs {
				if b.lo == lo && b.owner == v.Dead {
					if err := c.putBlock(subnet, b.span, c.self, true); err != nil {
						d.log.WithError(err).WithField("subnet", subnet).Error("could not take over a reclaimed block")
					}
				}
			}
		}
		d.log.WithFields(logrus.Fields{"subnet": subnet, "peer": v.Dead, "blocks": len(v.Blocks)}).
			Warn("reclaimed the blocks of a host absent for longer than ReclaimAfter, with the agreement of a majority")
	}
	d.mu.Lock()
	d.refreshLocked(subnet)
	d.mu.Unlock()
	c.saveLedgers()
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
