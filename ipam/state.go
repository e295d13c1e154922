package ipam

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
)

// pool is the in-memory state of one requested pool. Guarded by Driver.mu.
type pool struct {
	id      string
	gen     uint64 // distinguishes this instance from an earlier pool with the same id
	space   string
	prefix  netip.Prefix
	sub     netip.Prefix // --ip-range; invalid when none
	gateway netip.Addr   // invalid until the gateway is requested
	refs    int          // global space: identical requests share the pool
	auto    bool         // chosen by auto-selection (no --subnet)
	used    bool         // an address was requested at least once
	owned   ownership    // the blocks this host may allocate from
	alloc   *allocator   // bit per host offset; network and broadcast always set
	count   int          // addresses handed out (gateway excluded)
	// swarm: a Swarm manager chooses the addresses (global address space,
	// or local space with Config.SwarmAllocates). The pool is owned whole,
	// identical pool requests share it and address requests may repeat.
	swarm bool

	// Cluster mode (local address space with a Cluster): owned follows the
	// replicated block records.
	clustered bool
	reclaimed ownership // owned blocks taken over from a dead host: used last
	lost      []string  // "first-last" ranges reclaimed from this host while it was away
	asking    bool      // a background request for space is in flight
	wanting   int       // requests waiting for space: nothing is donated meanwhile
	agreed    bool      // the division of the subnet is decided and applied
	// aux holds the --aux-address reservations, compared with the other
	// hosts' lists (aux.go); nil for a pool restored from a store written
	// before they were recorded (its list is unknown and never compared).
	aux map[netip.Addr]bool
	// served: an endpoint asked for an address, so Docker finished
	// creating the network here and its aux list is complete.
	served bool
	// host is this host's own address (its macvlan shim, HostAddress),
	// counted and stored like an endpoint's; invalid when none.
	host netip.Addr
}

func newPool(id, space string, prefix, sub netip.Prefix, owned ownership) *pool {
	n := uint32(1) << (32 - prefix.Bits())
	p := &pool{id: id, space: space, prefix: prefix, sub: sub, refs: 1, owned: owned, alloc: newAllocator(n), aux: map[netip.Addr]bool{}}
	p.alloc.bits.set(0)     // network address
	p.alloc.bits.set(n - 1) // broadcast address
	p.rebuildSpans()
	return p
}

// size is the number of addresses in the pool.
func (p *pool) size() uint32 { return p.alloc.bits.n }

// rangeSpan is the --ip-range (or the whole pool) as ordinals.
func (p *pool) rangeSpan() span {
	if !p.sub.IsValid() {
		return span{0, p.size() - 1}
	}
	lo := addrToOrd(p.prefix, p.sub.Addr())
	return span{lo, lo + uint32(uint64(1)<<(32-p.sub.Bits())-1)}
}

// rebuildSpans recomputes where dynamic allocation may happen: the owned
// blocks inside the --ip-range. Call after ownership changes.
func (p *pool) rebuildSpans() {
	r := p.rangeSpan()
	p.alloc.setSpans(p.owned.intersect(r.lo, r.hi))
}

// gatewayOrd returns the gateway's ordinal, ok false when there is none.
func (p *pool) gatewayOrd() (uint32, bool) {
	if !p.gateway.IsValid() {
		return 0, false
	}
	return addrToOrd(p.prefix, p.gateway), true
}

// reserved reports whether ord is the network, broadcast or gateway address.
func (p *pool) reserved(ord uint32) bool {
	if ord == 0 || ord == p.size()-1 {
		return true
	}
	g, ok := p.gatewayOrd()
	return ok && g == ord
}

// allocated reports whether ord was handed out to an endpoint (or aux address).
func (p *pool) allocated(ord uint32) bool {
	return p.alloc.bits.test(ord) && !p.reserved(ord)
}

// capacity is the number of addresses dynamic allocation may ever hand out
// here (gateway included if it lies in the range).
func (p *pool) capacity() int {
	c := p.alloc.capacity()
	for _, o := range []uint32{0, p.size() - 1} {
		if p.alloc.inSpans(o) {
			c--
		}
	}
	return c
}

// rangeName describes where dynamic allocation happens, for messages.
func (p *pool) rangeName() string {
	if p.sub.IsValid() {
		return fmt.Sprintf("--ip-range %s of %s", p.sub, p.prefix)
	}
	return p.prefix.String()
}

// cidr formats an address of the pool with the pool's prefix length.
func (p *pool) cidr(a netip.Addr) string {
	return netip.PrefixFrom(a, p.prefix.Bits()).String()
}

func addrToOrd(prefix netip.Prefix, a netip.Addr) uint32 {
	b, x := prefix.Addr().As4(), a.As4()
	return binary.BigEndian.Uint32(x[:]) - binary.BigEndian.Uint32(b[:])
}

func ordToAddr(base netip.Addr, ord uint32) netip.Addr {
	b := base.As4()
	var x [4]byte
	binary.BigEndian.PutUint32(x[:], binary.BigEndian.Uint32(b[:])+ord)
	return netip.AddrFrom4(x)
}

// makePoolID builds the stable PoolID "space/pool[/subpool]", e.g.
// "grapevine-local/198.19.10.0/24/198.19.10.128/25".
func makePoolID(space string, prefix, sub netip.Prefix) string {
	id := space + "/" + prefix.String()
	if sub.IsValid() {
		id += "/" + sub.String()
	}
	return id
}

// parsePoolID splits a PoolID made by makePoolID.
func parsePoolID(id string) (space string, prefix, sub netip.Prefix, err error) {
	parts := strings.Split(id, "/")
	if len(parts) != 3 && len(parts) != 5 {
		return "", netip.Prefix{}, netip.Prefix{}, failf(ErrInvalid, "pool id %q: want address-space/subnet[/ip-range]", id)
	}
	space = parts[0]
	if space != LocalAddressSpace && space != GlobalAddressSpace {
		return "", netip.Prefix{}, netip.Prefix{}, failf(ErrInvalid, "pool id %q: unknown address space %q", id, space)
	}
	prefix, err = netip.ParsePrefix(parts[1] + "/" + parts[2])
	if err != nil {
		return "", netip.Prefix{}, netip.Prefix{}, failf(ErrInvalid, "pool id %q: %w", id, err)
	}
	if len(parts) == 5 {
		sub, err = netip.ParsePrefix(parts[3] + "/" + parts[4])
		if err != nil {
			return "", netip.Prefix{}, netip.Prefix{}, failf(ErrInvalid, "pool id %q: %w", id, err)
		}
	}
	if makePoolID(space, prefix, sub) != id {
		return "", netip.Prefix{}, netip.Prefix{}, failf(ErrInvalid, "pool id %q is not in canonical form", id)
	}
	return space, prefix, sub, nil
}
