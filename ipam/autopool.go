package ipam

import (
	"fmt"
	"net/netip"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/sirupsen/logrus"
)

// requestAutoPool chooses the first DefaultPrefixLen subnet of POOL that
// overlaps no pool of either address space and no host route. Docker asks
// again when the answer overlaps a host route in its own eyes, keeping the
// refused pool until it is done; subnets it released unused earlier are
// offered only when nothing else is left, and never twice in a row.
func (d *Driver) requestAutoPool(space string) (*ipam.RequestPoolResponse, error) {
	routes := make(map[netip.Prefix]string) // candidates with a host route, this call
	for {
		d.mu.Lock()
		cand, ok := d.pickAuto(routes)
		d.mu.Unlock()
		if !ok {
			return nil, d.autoExhausted(routes)
		}
		if d.routeConf != nil {
			desc, err := d.routeConf(cand)
			if err != nil {
				return nil, fmt.Errorf("checking host routes for subnet %s of POOL %s: %w", cand, d.defPool, err)
			}
			if desc != "" {
				d.log.WithFields(logrus.Fields{"subnet": cand, "route": desc}).Debug("skipping subnet that overlaps a host route")
				routes[cand] = desc
				continue
			}
		}
		id := makePoolID(space, cand, netip.Prefix{})
		d.mu.Lock()
		if d.overlapsAny(cand) { // taken while we checked routes
			d.mu.Unlock()
			continue
		}
		if d.clusterWide(space) {
			if err := d.checkDefinition(cand, netip.Prefix{}, netip.Addr{}); err != nil {
				routes[cand] = "another host's definition of the same subnet"
				d.mu.Unlock()
				continue
			}
		}
		p := d.addPool(id, space, cand, netip.Prefix{}, true)
		d.lastAuto = cand
		wasRefused := d.refused[cand]
		delete(d.refused, cand)
		d.mu.Unlock()
		if err := d.persist(id); err != nil {
			d.dropPoolRef(p)
			if wasRefused {
				d.mu.Lock()
				d.refused[cand] = true
				d.mu.Unlock()
			}
			return nil, err
		}
		if p.clustered {
			d.joinPool(p)
		}
		d.log.WithField("pool", id).Info("pool chosen from POOL")
		return &ipam.RequestPoolResponse{PoolID: id, Pool: cand.String()}, nil
	}
}

// pickAuto returns the first free candidate: first among those Docker has not
// refused, then among refused ones except the latest answer. Caller holds d.mu.
func (d *Driver) pickAuto(skip map[netip.Prefix]string) (netip.Prefix, bool) {
	for _, allowRefused := range []bool{false, true} {
		for c := range d.candidates() {
			if _, bad := skip[c]; bad || d.overlapsAny(c) {
				continue
			}
			if d.refused[c] && (!allowRefused || c == d.lastAuto) {
				continue
			}
			return c, true
		}
	}
	return netip.Prefix{}, false
}

// candidates yields the DefaultPrefixLen subnets of POOL in address order.
func (d *Driver) candidates() func(yield func(netip.Prefix) bool) {
	return func(yield func(netip.Prefix) bool) {
		n := uint64(1) << (d.defLen - d.defPool.Bits())
		step := uint32(1) << (32 - d.defLen)
		for i := range n {
			c := netip.PrefixFrom(ordToAddr(d.defPool.Addr(), uint32(i)*step), d.defLen)
			if !yield(c) {
				return
			}
		}
	}
}

// overlapsAny reports whether c overlaps a pool of either space. Caller holds d.mu.
func (d *Driver) overlapsAny(c netip.Prefix) bool {
	for _, p := range d.pools {
		if p.prefix.Overlaps(c) {
			return true
		}
	}
	return false
}

// autoExhausted builds the error for a POOL with no subnet left.
func (d *Driver) autoExhausted(routes map[netip.Prefix]string) error {
	why := "every one overlaps another grapevine network"
	for c := range d.candidates() {
		if desc, ok := routes[c]; ok {
			why += fmt.Sprintf(" or a host route (e.g. %s overlaps %s)", c, desc)
			break
		}
	}
	return failf(ErrExhausted, "no free /%d left in POOL %s: %s; pass --subnet to choose one, or set a larger POOL (docker plugin set)",
		d.defLen, d.defPool, why)
}
