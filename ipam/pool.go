package ipam

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/sirupsen/logrus"
)

// RequestPool answers IpamDriver.RequestPool: it registers the subnet given
// with --subnet (and --ip-range), or chooses one from POOL when none is given.
// In the global address space (and in the local one with SwarmAllocates) an
// identical request returns the same PoolID and takes another reference
// (Swarm managers repeat requests).
func (d *Driver) RequestPool(req *ipam.RequestPoolRequest) (*ipam.RequestPoolResponse, error) {
	if req == nil {
		return nil, failf(ErrInvalid, "empty pool request")
	}
	if req.V6 {
		return nil, failf(ErrUnsupported, "grapevine does not support IPv6 yet: create the network without --ipv6 and without an IPv6 --subnet")
	}
	space := req.AddressSpace
	switch space {
	case "":
		space = LocalAddressSpace
	case LocalAddressSpace, GlobalAddressSpace:
	default:
		return nil, failf(ErrInvalid, "unknown address space %q: grapevine serves %q and %q", space, LocalAddressSpace, GlobalAddressSpace)
	}
	if err := checkPoolOptions(req.Options); err != nil {
		return nil, err
	}
	if req.Pool == "" {
		if req.SubPool != "" {
			return nil, failf(ErrInvalid, "--ip-range %s needs --subnet: pass the subnet that contains it", req.SubPool)
		}
		return d.requestAutoPool(space)
	}
	prefix, err := parseCIDR("--subnet", req.Pool)
	if err != nil {
		return nil, err
	}
	if prefix.Bits() < MinPrefixLen || prefix.Bits() > maxPrefixLen {
		return nil, failf(ErrInvalid, "--subnet %s: a /%d is not allowed; use a prefix length from /%d to /%d", prefix, prefix.Bits(), MinPrefixLen, maxPrefixLen)
	}
	var sub netip.Prefix
	if req.SubPool != "" {
		if sub, err = parseCIDR("--ip-range", req.SubPool); err != nil {
			return nil, err
		}
		if sub.Bits() < prefix.Bits() || !prefix.Contains(sub.Addr()) {
			return nil, failf(ErrInvalid, "--ip-range %s is not inside --subnet %s; choose a range within the subnet", sub, prefix)
		}
	}
	id := makePoolID(space, prefix, sub)
	log := d.log.WithFields(logrus.Fields{"pool": id})

	d.mu.Lock()
	if p := d.pools[id]; p != nil && p.swarm {
		p.refs++
		refs := p.refs
		d.mu.Unlock()
		if err := d.persist(id); err != nil {
			d.dropPoolRef(p)
			return nil, err
		}
		log.WithField("refs", refs).Debug("repeated global pool request")
		return &ipam.RequestPoolResponse{PoolID: id, Pool: prefix.String()}, nil
	}
	for _, o := range d.sortedPools() {
		if o.space == space && o.prefix.Overlaps(prefix) {
			d.mu.Unlock()
			return nil, failf(ErrConflict, "--subnet %s overlaps %s of another grapevine network (pool %s); choose a --subnet that does not overlap it", prefix, o.prefix, o.id)
		}
	}
	if d.clusterWide(space) {
		if err := d.checkDefinition(prefix, sub, netip.Addr{}); err != nil {
			d.mu.Unlock()
			return nil, err
		}
	}
	p := d.addPool(id, space, prefix, sub, false)
	d.mu.Unlock()
	if err := d.persist(id); err != nil {
		d.dropPoolRef(p)
		return nil, err
	}
	if p.clustered {
		d.joinPool(p)
	}
	log.Info("pool registered")
	return &ipam.RequestPoolResponse{PoolID: id, Pool: prefix.String()}, nil
}

// ReleasePool answers IpamDriver.ReleasePool. Unknown pools are not an error.
func (d *Driver) ReleasePool(req *ipam.ReleasePoolRequest) error {
	if req == nil {
		return failf(ErrInvalid, "empty pool release request")
	}
	id := req.PoolID
	log := d.log.WithField("pool", id)
	d.mu.Lock()
	p := d.pools[id]
	if p == nil {
		d.mu.Unlock()
		log.Debug("release of unknown pool ignored")
		return nil
	}
	p.refs--
	refs := p.refs
	gone := refs <= 0
	if gone {
		delete(d.pools, id)
		if p.auto && !p.used {
			// Docker took an automatic answer back unused: it overlapped a
			// host route in Docker's eyes. Offer it only as a last resort.
			d.refused[p.prefix] = true
		}
	}
	d.mu.Unlock()
	if err := d.persist(id); err != nil {
		d.mu.Lock()
		p.refs++
		if gone && d.pools[id] == nil {
			d.pools[id] = p
			delete(d.refused, p.prefix)
		}
		d.mu.Unlock()
		return err
	}
	if gone && p.clustered {
		if err := d.cl.r.Delete(kindPool, subnetKey(p.prefix)+"/"+d.cl.self); err != nil {
			log.WithError(err).Warn("could not withdraw the pool definition from the cluster")
		}
	}
	if gone {
		log.Info("pool released")
	} else {
		log.WithField("refs", refs).Debug("pool reference released")
	}
	return nil
}

// addPool creates and registers a pool: owned wholly by this host without a
// cluster (or when a Swarm manager chooses its addresses), owning nothing yet
// in cluster mode until the division of the subnet is agreed. Caller holds d.mu.
func (d *Driver) addPool(id, space string, prefix, sub netip.Prefix, auto bool) *pool {
	n := uint32(1) << (32 - prefix.Bits())
	p := newPool(id, space, prefix, sub, newOwnership(span{0, n - 1}))
	p.gen = rand.Uint64()
	p.auto = auto
	p.swarm = d.swarmChooses(space)
	if d.clusterWide(space) {
		// Cluster-wide pool: nothing is owned until the division is agreed.
		p.clustered = true
		p.owned = ownership{}
		p.rebuildSpans()
	}
	d.pools[id] = p
	return p
}

// swarmChooses reports whether a Swarm manager chooses the addresses of
// pools of space on this host.
func (d *Driver) swarmChooses(space string) bool {
	return space == GlobalAddressSpace || d.swarm
}

// clusterWide reports whether pools of space are divided among the hosts of
// the cluster.
func (d *Driver) clusterWide(space string) bool {
	return d.cl != nil && space == LocalAddressSpace && !d.swarm
}

// dropPoolRef undoes one reference taken by RequestPool after persisting failed.
func (d *Driver) dropPoolRef(p *pool) {
	d.mu.Lock()
	p.refs--
	if p.refs <= 0 && d.pools[p.id] == p {
		delete(d.pools, p.id)
	}
	d.mu.Unlock()
}

// sortedPools lists pools by PoolID, for deterministic messages. Caller holds d.mu.
func (d *Driver) sortedPools() []*pool {
	out := make([]*pool, 0, len(d.pools))
	for _, p := range d.pools {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *pool) int { return strings.Compare(a.id, b.id) })
	return out
}

// checkPoolOptions refuses --ipam-opt keys grapevine does not know. Keys set
// by Docker itself (com.docker.*) pass.
func checkPoolOptions(opts map[string]string) error {
	keys := make([]string, 0, len(opts))
	for k := range opts {
		if !strings.HasPrefix(k, dockerOptionPrefix) {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	slices.Sort(keys)
	return failf(ErrInvalid, "unknown --ipam-opt %q: grapevine takes no IPAM options (only com.docker.* keys are accepted); remove it", keys[0])
}

// parseCIDR parses an IPv4 network given with flag (--subnet, --ip-range).
func parseCIDR(flag, s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, failf(ErrInvalid, "invalid %s %q: want an IPv4 CIDR such as 198.19.10.0/24", flag, s)
	}
	if !p.Addr().Is4() {
		return netip.Prefix{}, failf(ErrUnsupported, "%s %s is not IPv4: grapevine supports IPv4 only for now", flag, s)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, failf(ErrInvalid, "%s %s has host bits set: use %s", flag, s, m)
	}
	return p, nil
}

// parseAddr parses an IPv4 address (optionally with a prefix length) given with flag.
func parseAddr(flag, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		p, perr := netip.ParsePrefix(s)
		if perr != nil {
			return netip.Addr{}, failf(ErrInvalid, "invalid %s %q: want an IPv4 address such as 198.19.10.5", flag, s)
		}
		a = p.Addr()
	}
	if !a.Is4() {
		return netip.Addr{}, failf(ErrUnsupported, "%s %s is not IPv4: grapevine supports IPv4 only for now", flag, s)
	}
	return a, nil
}
