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
	r, err := parseAddrRequest(req)
	if err != nil {
		return nil, err
	}
	p, err := d.agreedPool(r)
	if err != nil {
		return nil, err
	}
	t, err := d.take(p, r)
	if err != nil {
		return nil, err
	}
	if err := d.commitTake(p, r, t); err != nil {
		return nil, err
	}
	log := d.log.WithFields(logrus.Fields{"pool": p.id, "address": t.addr, "options": req.Options})
	switch {
	case !t.fresh:
		log.Debug("repeated address request answered with the same address")
	case r.kind == reqGateway:
		log.Debug("gateway reserved")
	case r.kind == reqAux:
		log.Debug("aux address reserved")
	default:
		log.Debug("address allocated")
	}
	return &ipam.RequestAddressResponse{Address: p.cidr(t.addr)}, nil
}

// reqKind is which of Docker's three kinds of RequestAddress a request is.
type reqKind int

const (
	reqEndpoint reqKind = iota // a container's address: next free, or its --ip
	reqGateway                 // the gateway (RequestAddressType option)
	reqAux                     // an --aux-address: a specific address without the endpoint MAC
)

// flag is the CLI flag a specific address of this kind came from.
func (k reqKind) flag() string {
	switch k {
	case reqGateway:
		return "--gateway"
	case reqAux:
		return "--aux-address"
	}
	return "--ip"
}

// addrRequest is a RequestAddress parsed once: its kind and the address it
// names (invalid when it names none).
type addrRequest struct {
	poolID string
	kind   reqKind
	want   netip.Addr
	host   bool // this host's own address (HostAddress), an endpoint request
}

func parseAddrRequest(req *ipam.RequestAddressRequest) (addrRequest, error) {
	if req == nil {
		return addrRequest{}, failf(ErrInvalid, "empty address request")
	}
	r := addrRequest{poolID: req.PoolID}
	_, endpoint := req.Options[macAddressKey]
	switch {
	case req.Options[requestAddressTypeKey] == gatewayAddressType:
		r.kind = reqGateway
	case !endpoint && req.Address != "":
		r.kind = reqAux
	}
	if req.Address != "" {
		var err error
		if r.want, err = parseAddr(r.kind.flag(), req.Address); err != nil {
			return addrRequest{}, err
		}
	}
	return r, nil
}

// agreedPool returns the request's pool; for a container's address in a
// cluster pool, once the division of the subnet is agreed (addresses come
// only from blocks this host owns).
func (d *Driver) agreedPool(r addrRequest) (*pool, error) {
	d.mu.Lock()
	p := d.pools[r.poolID]
	d.mu.Unlock()
	if p == nil {
		return nil, failf(ErrUnknownPool, "unknown ipam pool %q: it was released or never created by this plugin; recreate the network", r.poolID)
	}
	if p.clustered && r.kind == reqEndpoint {
		if err := d.cl.errSelfForgotten(); err != nil {
			return nil, err
		}
		if err := d.ensureAgreed(p); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// taken is an address this host took for a request, and what is left to do
// once its allocation is durable.
type taken struct {
	addr  netip.Addr
	ord   uint32
	fresh bool   // this call took it (false for an idempotent repeat)
	def   []byte // this host's pool definition to publish (a fresh cluster gateway)
	low   bool   // the pool is under its low-water mark: ask for space ahead
}

// take takes the address; a cluster pool out of free addresses asks another
// host for space and tries once more. Called without d.mu.
func (d *Driver) take(p *pool, r addrRequest) (taken, error) {
	t, err := d.tryTake(p, r)
	if !errors.Is(err, ErrExhausted) || !p.clustered || r.kind != reqEndpoint || r.want.IsValid() {
		return t, err
	}
	// While this request waits for space and takes it, this host donates
	// nothing from p: a donation it just got is not given on at once.
	d.mu.Lock()
	p.wanting++
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		p.wanting--
		d.mu.Unlock()
	}()
	if err := d.requestSpace(p); err != nil {
		return taken{}, err
	}
	return d.tryTake(p, r)
}

// tryTake takes the address under d.mu, if p is still registered.
func (d *Driver) tryTake(p *pool, r addrRequest) (taken, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.pools[r.poolID] != p {
		return taken{}, failf(ErrUnknownPool, "ipam pool %q was released while this request waited; recreate the network", r.poolID)
	}
	ord, fresh, err := d.takeLocked(p, r)
	if err != nil {
		return taken{}, err
	}
	t := taken{addr: ordToAddr(p.prefix.Addr(), ord), ord: ord, fresh: fresh}
	newlyServed := r.kind == reqEndpoint && !p.served
	p.served = p.served || r.kind == reqEndpoint
	if p.clustered && (fresh && r.kind != reqEndpoint || newlyServed) {
		t.def = d.poolDefLocked(p.prefix) // the gateway, the aux list or Served changed
	}
	t.low = p.clustered && r.kind == reqEndpoint && p.alloc.free < p.lowWater()
	p.used = true
	return t, nil
}

// takeLocked takes the gateway, a specific address or the next free one.
// Caller holds d.mu.
func (d *Driver) takeLocked(p *pool, r addrRequest) (ord uint32, fresh bool, err error) {
	switch {
	case r.kind == reqGateway:
		if p.clustered {
			if err := d.checkDefinition(p.prefix, p.sub, p.gatewayFor(r.want)); err != nil {
				return 0, false, err
			}
		}
		return p.takeGateway(r.want)
	case r.kind == reqAux:
		if p.clustered {
			if err := d.checkAuxExtra(p, r.want); err != nil {
				return 0, false, err
			}
		}
		ord, fresh, err = p.takeStatic(r.kind.flag(), r.want, true)
		if err == nil && fresh && p.aux != nil {
			p.aux[r.want] = true
		}
		return ord, fresh, err
	case r.host:
		return d.takeHostLocked(p, r)
	}
	return d.takeEndpointLocked(p, r)
}

// takeEndpointLocked takes a container's --ip or the next free address.
// Caller holds d.mu.
func (d *Driver) takeEndpointLocked(p *pool, r addrRequest) (ord uint32, fresh bool, err error) {
	if p.clustered {
		if err := d.checkAuxForEndpoint(p); err != nil {
			return 0, false, err
		}
	}
	if r.want.IsValid() {
		ord, fresh, err = p.takeStatic(r.kind.flag(), r.want, false)
		if errors.Is(err, ErrNotOwned) && p.clustered {
			err = d.notOwned(p, r.want)
		}
		return ord, fresh, err
	}
	if p.swarm && p.space == LocalAddressSpace {
		return 0, false, failf(ErrUnsupported, "pool %s: with SCOPE=global a Swarm manager chooses every address, and this request named none; create the network on a Swarm manager (with --attachable to run plain containers on it) or use the plugin with SCOPE=local", p.id)
	}
	ord, err = p.takeNext()
	return ord, true, err
}

// gatewayFor is the gateway a request for want would reserve: want, the
// gateway held, or the first host address. Caller holds d.mu.
func (p *pool) gatewayFor(want netip.Addr) netip.Addr {
	switch {
	case want.IsValid():
		return want
	case p.gateway.IsValid():
		return p.gateway
	}
	return ordToAddr(p.prefix.Addr(), 1)
}

// commitTake makes a taken address durable (giving it back if that fails),
// then publishes the definition and asks for space ahead when due.
func (d *Driver) commitTake(p *pool, r addrRequest, t taken) error {
	if err := d.persist(p.id, t.ord); err != nil {
		if t.fresh {
			d.undoTake(p, t.ord, r.kind == reqGateway)
		}
		return err
	}
	if t.def != nil {
		d.publish(p.prefix, t.def)
	}
	if t.low {
		d.askAhead(p)
	}
	return nil
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
	wasGateway, wasAux := p.gateway == a, p.aux[a]
	switch {
	case p.host == a:
		// Docker never had it: it goes with the pool.
		d.mu.Unlock()
		log.Warn("release of this host's shim address ignored: it is held until the network's pool is released")
		return nil
	case wasGateway:
		p.gateway = netip.Addr{}
		p.alloc.release(ord)
	case p.allocated(ord):
		p.alloc.release(ord)
		p.count--
		delete(p.aux, a)
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
			if wasAux && p.aux != nil {
				p.aux[a] = true
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
			delete(p.aux, ordToAddr(p.prefix.Addr(), ord))
			if p.host == ordToAddr(p.prefix.Addr(), ord) {
				p.host = netip.Addr{}
			}
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
