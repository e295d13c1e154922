package ipam

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

// ownership is the set of address ranges of one pool that THIS host owns and
// may allocate from. A pool is cluster-wide, each host allocates only
// from blocks it owns, and ownership changes only by the owner's own action.
//
// This is the seam for the gossip layer. Today (no cluster) a host owns the
// whole pool: newOwnership(wholePool). Later the cluster code decides the first
// ownership of a pool by agreement and then calls grant (a peer donated a range
// to us) or donate (we give a range away; only ranges with no allocated address
// may be donated, which the Driver checks before calling it). Ranges are kept
// as ordinals relative to the pool's network address, sorted and disjoint.
type ownership struct {
	ranges []span
}

func newOwnership(ranges ...span) ownership {
	var o ownership
	for _, r := range ranges {
		o.grant(r)
	}
	return o
}

// contains reports whether ord lies in an owned range.
func (o *ownership) contains(ord uint32) bool {
	k := sort.Search(len(o.ranges), func(i int) bool { return o.ranges[i].hi >= ord })
	return k < len(o.ranges) && o.ranges[k].lo <= ord
}

// grant adds r to the owned ranges, merging neighbours.
func (o *ownership) grant(r span) {
	if r.lo > r.hi {
		return
	}
	out := make([]span, 0, len(o.ranges)+1)
	for _, s := range o.ranges {
		switch {
		case uint64(s.hi)+1 < uint64(r.lo): // wholly before, not adjacent
			out = append(out, s)
		case uint64(r.hi)+1 < uint64(s.lo): // wholly after, not adjacent
			out = append(out, s)
		default: // overlaps or touches: absorb into r
			r.lo, r.hi = min(r.lo, s.lo), max(r.hi, s.hi)
		}
	}
	out = append(out, r)
	sort.Slice(out, func(i, j int) bool { return out[i].lo < out[j].lo })
	o.ranges = out
}

// donate removes r from the owned ranges.
func (o *ownership) donate(r span) {
	if r.lo > r.hi {
		return
	}
	out := make([]span, 0, len(o.ranges)+1)
	for _, s := range o.ranges {
		if s.hi < r.lo || s.lo > r.hi {
			out = append(out, s)
			continue
		}
		if s.lo < r.lo {
			out = append(out, span{s.lo, r.lo - 1})
		}
		if s.hi > r.hi {
			out = append(out, span{r.hi + 1, s.hi})
		}
	}
	o.ranges = out
}

// intersect returns the owned ranges clipped to [lo, hi].
func (o *ownership) intersect(lo, hi uint32) []span {
	var out []span
	for _, s := range o.ranges {
		if s.hi < lo || s.lo > hi {
			continue
		}
		out = append(out, span{max(s.lo, lo), min(s.hi, hi)})
	}
	return out
}

// format renders the ranges as "first-last" address strings of the pool.
func (o *ownership) format(base netip.Addr) []string {
	out := make([]string, 0, len(o.ranges))
	for _, s := range o.ranges {
		out = append(out, ordToAddr(base, s.lo).String()+"-"+ordToAddr(base, s.hi).String())
	}
	return out
}

// parseOwnership reads ranges written by format; every address must lie in pool.
func parseOwnership(pool netip.Prefix, ranges []string) (ownership, error) {
	var o ownership
	for _, r := range ranges {
		first, last, ok := strings.Cut(r, "-")
		if !ok {
			return ownership{}, fmt.Errorf("owned range %q: want first-last", r)
		}
		a, err := netip.ParseAddr(first)
		if err != nil {
			return ownership{}, fmt.Errorf("owned range %q: %w", r, err)
		}
		b, err := netip.ParseAddr(last)
		if err != nil {
			return ownership{}, fmt.Errorf("owned range %q: %w", r, err)
		}
		if !pool.Contains(a) || !pool.Contains(b) || b.Less(a) {
			return ownership{}, fmt.Errorf("owned range %q is not an ordered range inside %s", r, pool)
		}
		o.grant(span{addrToOrd(pool, a), addrToOrd(pool, b)})
	}
	return o, nil
}
