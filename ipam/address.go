package ipam

import (
	"errors"
	"net/netip"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/sirupsen/logrus"
)

// RequestAddress answers IpamDriver.RequestAddress: the gateway (option
// RequestAddressType=com.docker.network.gateway), a specific address (--ip,
// --aux-address) or the next free one in the --ip-range (or subnet) among the
// blocks this host owns. The answer carries the pool's prefix length.
//
// A specific address without the endpoint MAC option is an --aux-address
// (see Capabilities): it is reserved on this host whatever block it lies in,
// so that its owner never hands it out, and needs no agreement among the
// hosts. A container's --ip must lie in a block this host owns.
func (d *Driver) RequestAddress(req *ipam.RequestAddressRequest) (*ipam.RequestAddressResponse, error) {
	if req == nil {
		return nil, failf(ErrInvalid, "empty address request")
	}
	gw := req.Options[requestAddressTypeKey] == gatewayAddressType
	_, endpoint := req.Options[macAddressKey]
	aux := !gw && !endpoint && req.Address != ""
	flag := "--ip"
	switch {
	case gw:
		flag = "--gateway"
	case aux:
		flag = "--aux-address"
	}
	var want netip.Addr
	if req.Address != "" {
		var err error
		if want, err = parseAddr(flag, req.Address); err != nil {
			return nil, err
		}
	}

	d.mu.Lock()
	p := d.pools[req.PoolID]
	if p == nil {
		d.mu.Unlock()
		return nil, failf(ErrUnknownPool, "unknown ipam pool %q: it was released or never created by this plugin; recreate the network", req.PoolID)
	}
	if p.clustered && !gw && !aux {
		// Addresses come only from blocks this host owns: the division
		// of the subnet must be agreed first.
		d.mu.Unlock()
		if err := d.ensureAgreed(p); err != nil {
			return nil, err
		}
		d.mu.Lock()
		if d.pools[req.PoolID] != p {
			d.mu.Unlock()
			return nil, failf(ErrUnknownPool, "ipam pool %q was released while this request waited; recreate the network", req.PoolID)
		}
	}
	var (
		ord   uint32
		fresh bool // this call took the address (false for an idempotent repeat)
		err   error
	)
	switch {
	case gw:
		if p.clustered {
			g := want
			if !g.IsValid() {
				g = p.gateway
				if !g.IsValid() {
					g = ordToAddr(p.prefix.Addr(), 1)
				}
			}
			if err = d.checkDefinition(p.prefix, p.sub, g); err != nil {
				break
			}
		}
		ord, fresh, err = p.takeGateway(want)
	case want.IsValid():
		ord, fresh, err = p.takeStatic(flag, want, aux)
		if errors.Is(err, ErrNotOwned) && p.clustered {
			err = d.notOwned(p, want)
		}
	case p.swarm && p.space == LocalAddressSpace:
		err = failf(ErrUnsupported, "pool %s: with SCOPE=global a Swarm manager chooses every address, and this request named none; create the network on a Swarm manager (with --attachable to run plain containers on it) or use the plugin with SCOPE=local", p.id)
	default:
		ord, err = p.takeNext()
		fresh = true
		if errors.Is(err, ErrExhausted) && p.clustered {
			d.mu.Unlock()
			if err := d.requestSpace(p); err != nil {
				return nil, err
			}
			d.mu.Lock()
			if d.pools[req.PoolID] != p {
				d.mu.Unlock()
				return nil, failf(ErrUnknownPool, "ipam pool %q was released while this request waited; recreate the network", req.PoolID)
			}
			ord, err = p.takeNext()
		}
	}
	if err != nil {
		d.mu.Unlock()
		return nil, err
	}
	var def []byte
	if gw && fresh && p.clustered {
		def = d.poolDefLocked(p.prefix)
	}
	low := p.clustered && !gw && !aux && p.alloc.free < p.lowWater()
	p.used = true
	addr := ordToAddr(p.prefix.Addr(), ord)
	d.mu.Unlock()

	if err := d.persist(p.id, ord); err != nil {
		if fresh {
			d.undoTake(p, ord, gw)
		}
		return nil, err
	}
	if def != nil {
		d.publish(p.prefix, def)
	}
	if low {
		d.askAhead(p)
	}
	log := d.log.WithFields(logrus.Fields{"pool": p.id, "address": addr, "options": req.Options})
	switch {
	case !fresh:
		log.Debug("repeated address request answered with the same address")
	case gw:
		log.Debug("gateway reserved")
	case aux:
		log.Debug("aux address reserved")
	default:
		log.Debug("address allocated")
	}
	return &ipam.RequestAddressResponse{Address: p.cidr(addr)}, nil
}

// ReleaseAddress answers IpamDriver.ReleaseAddress. Releasing the gateway frees
// its reservation. Unknown pools and addresses not held are not an error.
func (d *Driver) ReleaseAddress(req *ipam.ReleaseAddressRequest) error {
	if req == nil {
		return failf(ErrInvalid, "empty address release request")
	}
	a, err := parseAddr("address", req.Address)
	if err != nil {
		return err
	}
	log := d.log.WithFields(logrus.Fields{"pool": req.PoolID, "address": a})
	d.mu.Lock()
	p := d.pools[req.PoolID]
	if p == nil || !p.prefix.Contains(a) {
		d.mu.Unlock()
		log.Debug("release of an address of an unknown pool ignored")
		return nil
	}
	ord := addrToOrd(p.prefix, a)
	wasGateway := p.gateway == a
	switch {
	case wasGateway:
		p.gateway = netip.Addr{}
		p.alloc.release(ord)
	case p.allocated(ord):
		p.alloc.release(ord)
		p.count--
	default:
		d.mu.Unlock()
		log.Debug("release of an address not held ignored")
		return nil
	}
	d.mu.Unlock()
	if err := d.persist(p.id, ord); err != nil {
		d.mu.Lock()
		if d.pools[p.id] == p && p.alloc.claim(ord) { // keep memory equal to the store
			if wasGateway {
				p.gateway = a
			} else {
				p.count++
			}
		}
		d.mu.Unlock()
		return err
	}
	log.Debug("address released")
	return nil
}

// undoTake gives back an address whose allocation could not be persisted.
func (d *Driver) undoTake(p *pool, ord uint32, gw bool) {
	d.mu.Lock()
	if d.pools[p.id] == p {
		switch {
		case gw && p.gateway == ordToAddr(p.prefix.Addr(), ord):
			p.gateway = netip.Addr{}
			p.alloc.release(ord)
		case !gw && p.allocated(ord):
			p.alloc.release(ord)
			p.count--
		}
	}
	d.mu.Unlock()
	// A concurrent commit may have stored the address meanwhile; re-sync it.
	if err := d.persist(p.id, ord); err != nil {
		d.log.WithError(err).WithField("pool", p.id).Warn("could not re-sync address after a failed allocation; it stays reserved until restart")
	}
}

// checkHost validates that a lies in the pool and is neither the network nor
// the broadcast address. flag names the CLI flag in messages.
func (p *pool) checkHost(flag string, a netip.Addr) (uint32, error) {
	if !p.prefix.Contains(a) {
		return 0, failf(ErrInvalid, "%s %s is outside the network's subnet %s; choose an address inside it", flag, a, p.prefix)
	}
	ord := addrToOrd(p.prefix, a)
	switch ord {
	case 0:
		return 0, failf(ErrInvalid, "%s %s is the network address of %s; choose a host address", flag, a, p.prefix)
	case p.size() - 1:
		return 0, failf(ErrInvalid, "%s %s is the broadcast address of %s; choose a host address", flag, a, p.prefix)
	}
	return ord, nil
}

// takeGateway reserves the gateway: want (--gateway) or the first host address
// of the subnet. Repeats return the same gateway. Caller holds d.mu.
func (p *pool) takeGateway(want netip.Addr) (ord uint32, fresh bool, err error) {
	if !want.IsValid() {
		if p.gateway.IsValid() {
			return addrToOrd(p.prefix, p.gateway), false, nil
		}
		want = ordToAddr(p.prefix.Addr(), 1)
		if p.allocated(1) {
			return 0, false, failf(ErrConflict, "the default gateway %s (first address of %s) is already in use by an endpoint; pass --gateway", want, p.prefix)
		}
	}
	ord, err = p.checkHost("--gateway", want)
	if err != nil {
		return 0, false, err
	}
	if p.gateway.IsValid() {
		if p.gateway == want {
			return ord, false, nil
		}
		return 0, false, failf(ErrConflict, "--gateway %s: this network already has gateway %s", want, p.gateway)
	}
	if !p.alloc.claim(ord) {
		return 0, false, failf(ErrConflict, "--gateway %s is already in use by an endpoint of this network; choose another --gateway", want)
	}
	p.gateway = want
	return ord, true, nil
}

// takeStatic takes a specific address: a container's --ip, or with anyBlock
// an --aux-address, which is reserved whoever owns its block. flag names the
// CLI flag in messages. When a Swarm manager chooses the addresses a repeat
// of a held address is accepted (a manager that is also a worker repeats
// requests); otherwise it is a conflict. Caller holds d.mu.
func (p *pool) takeStatic(flag string, want netip.Addr, anyBlock bool) (ord uint32, fresh bool, err error) {
	ord, err = p.checkHost(flag, want)
	if err != nil {
		return 0, false, err
	}
	if g, ok := p.gatewayOrd(); ok && g == ord {
		return 0, false, failf(ErrConflict, "%s %s is the network's gateway; choose another %s", flag, want, flag)
	}
	if !anyBlock && !p.swarm && !p.owned.contains(ord) {
		return 0, false, failf(ErrNotOwned, "%s %s lies in a block of %s owned by another host; choose an address this host owns or omit %s", flag, want, p.prefix, flag)
	}
	if p.allocated(ord) {
		if p.swarm {
			return ord, false, nil
		}
		return 0, false, failf(ErrConflict, "%s %s is already in use on this network (by an endpoint or an --aux-address); choose another %s", flag, want, flag)
	}
	p.alloc.claim(ord)
	p.count++
	return ord, true, nil
}

// takeNext allocates the next free address of the range. Caller holds d.mu.
func (p *pool) takeNext() (uint32, error) {
	ord, ok := uint32(0), false
	if len(p.reclaimed.ranges) > 0 {
		// Space reclaimed from a dead host is handed out only after
		// never-used space: its old owner may come back with it in use.
		fresh := p.owned
		for _, r := range p.reclaimed.ranges {
			fresh.donate(r)
		}
		rs := p.rangeSpan()
		p.alloc.setSpans(fresh.intersect(rs.lo, rs.hi))
		ord, ok = p.alloc.next()
		p.rebuildSpans()
	}
	if !ok {
		ord, ok = p.alloc.next()
	}
	if !ok {
		return 0, p.exhausted()
	}
	p.count++
	return ord, nil
}

// exhausted explains why no address is left, with counts.
func (p *pool) exhausted() error {
	if len(p.owned.ranges) == 0 {
		return failf(ErrExhausted, "this host owns no block of %s yet, so it cannot hand out addresses; check that it has joined its PEERS", p.prefix)
	}
	capacity := p.capacity()
	gw := 0
	if g, ok := p.gatewayOrd(); ok && p.alloc.inSpans(g) {
		gw = 1
	}
	return failf(ErrExhausted, "no free address left in %s: %d assignable addresses, %d in use by endpoints and %d by the gateway; remove an endpoint or recreate the network with a larger --subnet or --ip-range",
		p.rangeName(), capacity, capacity-gw-p.alloc.free, gw)
}
