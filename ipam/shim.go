package ipam

import (
	"net/netip"

	"github.com/sirupsen/logrus"
)

// Host addresses: a macvlan network with -o host_access=true and no
// --aux-address for this host gives the host a shim on the LAN, and its
// address comes from here. It is allocated like a container's (the next
// free address of the --ip-range among the blocks this host owns, asking
// another host for space when none is free), so the cluster's one-owner
// rule keeps it distinct from every other host's shim and container. The
// pool remembers it (stored with the pool), answers repeats and restarts
// with the same address, never releases it on a ReleaseAddress (Docker
// does not know it), and drops it with the pool when Docker releases the
// pool after deleting the network.

// HostAddress returns this host's own address in its pool of subnet in
// address space space: the one it holds, or a newly allocated one. The
// network driver calls it while Docker creates the network, after
// RequestPool and before any endpoint. Called without d.mu; it may wait
// for the first division of the subnet and for a donation, each bounded
// by its timeout.
func (d *Driver) HostAddress(space string, subnet netip.Prefix) (netip.Addr, error) {
	p, err := d.hostPool(space, subnet)
	if err != nil {
		return netip.Addr{}, err
	}
	r := addrRequest{poolID: p.id, kind: reqEndpoint, host: true}
	if p, err = d.agreedPool(r); err != nil {
		return netip.Addr{}, err
	}
	t, err := d.take(p, r)
	if err != nil {
		return netip.Addr{}, err
	}
	if err := d.commitTake(p, r, t); err != nil {
		return netip.Addr{}, err
	}
	log := d.log.WithFields(logrus.Fields{"pool": p.id, "address": t.addr})
	if t.fresh {
		log.Info("host shim address allocated")
	} else {
		log.Debug("host shim address requested again")
	}
	return t.addr, nil
}

// hostPool finds the pool of subnet that a host address comes from.
func (d *Driver) hostPool(space string, subnet netip.Prefix) (*pool, error) {
	if space == "" {
		space = LocalAddressSpace
	}
	if !subnet.IsValid() || !subnet.Addr().Is4() || subnet != subnet.Masked() {
		return nil, failf(ErrInvalid, "host address: %s is not an IPv4 subnet", subnet)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.sortedPools() {
		if p.space != space || p.prefix != subnet {
			continue
		}
		if p.swarm {
			return nil, failf(ErrUnsupported, "pool %s: a Swarm manager chooses every address of this network, so grapevine cannot pick the host's own; give it with --aux-address host-<hostname>=IP", p.id)
		}
		return p, nil
	}
	return nil, failf(ErrUnknownPool, "no grapevine IPAM pool for %s in address space %s: create the network with --ipam-driver grapevine", subnet, space)
}

// takeHostLocked answers a host address request from the address p holds
// (not fresh), or takes the next free one and remembers it. Caller holds d.mu.
func (d *Driver) takeHostLocked(p *pool, r addrRequest) (ord uint32, fresh bool, err error) {
	if p.host.IsValid() {
		return addrToOrd(p.prefix, p.host), false, nil
	}
	if ord, fresh, err = d.takeEndpointLocked(p, r); err != nil {
		return 0, false, err
	}
	p.host = ordToAddr(p.prefix.Addr(), ord)
	return ord, fresh, nil
}

// restoreHost sets p's host address from its stored form ("" = none); it
// must be an address p holds.
func (p *pool) restoreHost(s string) error {
	if s == "" {
		return nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !p.prefix.Contains(a) || !p.allocated(addrToOrd(p.prefix, a)) || p.aux[a] {
		return failf(ErrInvalid, "stored host address %q is not an address the pool holds for this host", s)
	}
	p.host = a
	return nil
}
