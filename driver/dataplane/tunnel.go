package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// The encryption tunnel: one WireGuard interface per host carries the
// traffic of every encrypted network as routed IP packets. Each peer's
// addresses (its containers on encrypted networks) are its allowed IPs and
// have a /32 route each into the interface; the routes go with the
// interface, so without it those addresses fall back to the bridges' own
// subnet routes and nothing leaves in clear text. WireGuard accepts from a
// peer only its allowed IPs, so clear text cannot be injected either.

// Tunnel modes, as TunnelStatus reports them.
const (
	TunnelKernel    = "kernel"    // the kernel's WireGuard, configured over netlink
	TunnelUserspace = "userspace" // wireguard-go over TUN inside the plugin
)

// Policy routing that earlier versions (VXLAN inside the tunnel) set up for
// the encrypted VXLAN port: rules at these priorities, for UDP, and a table
// routing into the tunnel. The tunnel removes what it finds of them.
const (
	legacyRulePriority = 100
	legacyDropPriority = 101
	legacyTable        = 0x6776
)

// KeyLen is the length of WireGuard keys.
const KeyLen = 32

// Key is a WireGuard (Curve25519) key.
type Key [KeyLen]byte

// IsZero reports whether k is the zero key (none).
func (k Key) IsZero() bool { return k == Key{} }

// TunnelSpec is the host's WireGuard interface as the driver wants it.
type TunnelSpec struct {
	Name       string // TunnelName()
	PrivateKey Key
	ListenPort int // WireGuard's UDP port
	// MTU of the interface: the underlay's minus WireGuard's overhead.
	MTU   int
	Peers []TunnelPeer
}

// TunnelPeer is another host at the end of the tunnel.
type TunnelPeer struct {
	PublicKey Key
	// Endpoint is where its WireGuard listens (its VTEP and port).
	Endpoint netip.AddrPort
	// VTEP is its underlay address (the endpoint's), which names it.
	VTEP netip.Addr
	// Addrs are its containers' addresses on the encrypted networks: its
	// allowed IPs (each /32: the only inner sources accepted from it) and
	// the destinations routed to it (a /32 route each via the link).
	Addrs []netip.Addr
}

// TunnelStatus is the tunnel as the kernel (or wireguard-go) reports it.
type TunnelStatus struct {
	Mode       string // TunnelKernel or TunnelUserspace
	Name       string
	PublicKey  Key
	ListenPort int
	Peers      []TunnelPeerStatus
}

// TunnelPeerStatus is one peer of the tunnel.
type TunnelPeerStatus struct {
	PublicKey     Key
	Endpoint      netip.AddrPort
	VTEP          netip.Addr
	LastHandshake time.Time // zero: none yet
	RxBytes       uint64
	TxBytes       uint64
}

// ErrNoTunnel: neither kernel WireGuard nor a TUN device is available.
var ErrNoTunnel = errors.New("no WireGuard on this host: the kernel has no wireguard module and /dev/net/tun is missing")

// validateTunnel refuses a spec the tunnel cannot be made from.
func validateTunnel(s TunnelSpec) error {
	switch {
	case !ifaceName.MatchString(s.Name):
		return fmt.Errorf("tunnel: link name %q is not a valid interface name", s.Name)
	case s.PrivateKey.IsZero():
		return fmt.Errorf("tunnel %s: no private key", s.Name)
	case s.ListenPort < 1 || s.ListenPort > 65535:
		return fmt.Errorf("tunnel %s: listen port %d outside 1..65535", s.Name, s.ListenPort)
	case s.MTU < 1280 || s.MTU > maxMTU:
		return fmt.Errorf("tunnel %s: mtu %d outside 1280..%d", s.Name, s.MTU, maxMTU)
	}
	seen := map[Key]bool{}
	owner := map[netip.Addr]netip.Addr{}
	for _, p := range s.Peers {
		switch {
		case p.PublicKey.IsZero() || seen[p.PublicKey]:
			return fmt.Errorf("tunnel %s: peer %v has no public key or shares one with another peer", s.Name, p.VTEP)
		case !p.VTEP.Is4() || !p.Endpoint.Addr().Is4() || p.Endpoint.Port() == 0:
			return fmt.Errorf("tunnel %s: peer vtep %v or endpoint %v is not an IPv4 address (and port)", s.Name, p.VTEP, p.Endpoint)
		}
		seen[p.PublicKey] = true
		for _, a := range p.Addrs {
			if o, dup := owner[a]; dup || !a.Is4() {
				return fmt.Errorf("tunnel %s: peer %v: address %v is not IPv4 or is also peer %v's", s.Name, p.VTEP, a, o)
			}
			owner[a] = p.VTEP
		}
	}
	return nil
}

// maxMTU is the largest MTU a tunnel interface is given.
const maxMTU = 65535

// sortedPeers is s.Peers in VTEP order, each peer's addresses sorted, for
// comparing specs.
func sortedPeers(peers []TunnelPeer) []TunnelPeer {
	out := slices.Clone(peers)
	for i := range out {
		out[i].Addrs = slices.SortedFunc(slices.Values(out[i].Addrs), netip.Addr.Compare)
	}
	slices.SortFunc(out, func(a, b TunnelPeer) int { return a.VTEP.Compare(b.VTEP) })
	return out
}

// samePeer reports whether two peers (addresses sorted) are configured alike.
func samePeer(a, b TunnelPeer) bool {
	return a.PublicKey == b.PublicKey && a.Endpoint == b.Endpoint && a.VTEP == b.VTEP && slices.Equal(a.Addrs, b.Addrs)
}

// sameTunnel reports whether two specs configure the same tunnel.
func sameTunnel(a, b TunnelSpec) bool {
	return a.Name == b.Name && a.PrivateKey == b.PrivateKey && a.ListenPort == b.ListenPort &&
		a.MTU == b.MTU && slices.EqualFunc(sortedPeers(a.Peers), sortedPeers(b.Peers), samePeer)
}

// tunnelAddrs is every peer address of s: the /32 routes into the link.
func tunnelAddrs(s TunnelSpec) []netip.Addr {
	var out []netip.Addr
	for _, p := range s.Peers {
		out = append(out, p.Addrs...)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}
