// Package dataplane is the only code in grapevine that touches the kernel: links,
// addresses, neighbour and FDB entries through netlink, and packet-filter rules
// through iptables. The drivers decide what should exist; this package makes the
// kernel match, idempotently, and removes what grapevine made and no longer wants.
//
// Every method is safe to repeat: "already exists" and "not found" are success
// where the end state is the one asked for. Names of kernel objects are chosen by
// the caller (driver) from the ones names.go spells, so that orphans can be found.
package dataplane

import (
	"errors"
	"net"
	"net/netip"
	"time"
)

// Sentinel errors returned (wrapped) by implementations. Callers use errors.Is.
var (
	// ErrVNIInUse: another VXLAN device in this namespace already uses the VNI on
	// the same UDP port (the kernel answers EEXIST for the shared socket).
	ErrVNIInUse = errors.New("vni already in use on this host")
	// ErrLinkNotFound: the named link does not exist.
	ErrLinkNotFound = errors.New("link not found")
	// ErrIncompatibleLink: a link of that name exists with another type; it was
	// not made by grapevine for this purpose and is left alone.
	ErrIncompatibleLink = errors.New("link exists with an incompatible type")
	// ErrNoUnderlay: no address/interface could be chosen for gossip and VTEP.
	ErrNoUnderlay = errors.New("no usable underlay address")
	// ErrVLANUnsupported: the kernel cannot make 802.1q VLAN links
	// (CONFIG_VLAN_8021Q is not set and no 8021q module can be loaded).
	ErrVLANUnsupported = errors.New("this kernel has no 802.1q VLAN support (CONFIG_VLAN_8021Q is not set and the 8021q module is not available)")
)

// BridgeSpec describes a per-network bridge.
type BridgeSpec struct {
	Name    string           // BridgeName(network id)
	MTU     int              // 0 = leave kernel default
	MAC     net.HardwareAddr // stable address, nil = kernel chooses
	Address netip.Prefix     // gateway address with the subnet's prefix length; invalid = none
	// ProxyARP: the link holding the gateway answers ARP for addresses the
	// host routes through another link (an encrypted network's remote
	// endpoints, routed into the tunnel), at once (no proxy delay).
	ProxyARP bool
}

// VXLANSpec describes a per-network VXLAN device enslaved to a bridge.
type VXLANSpec struct {
	Name     string
	VNI      uint32
	Port     int        // UDP destination/listen port
	Local    netip.Addr // local VTEP address; invalid = unset
	Underlay string     // underlay link name to bind to; "" = unbound
	MTU      int
	Master   string // bridge to enslave to
	// Learning off and proxy (local ARP answers) on are always set: no flooding entry.
}

// VethSpec describes an endpoint's veth pair. The host end is enslaved to Master;
// the container end stays in the host namespace for Docker to move.
type VethSpec struct {
	HostName      string
	ContainerName string
	MTU           int
	MAC           net.HardwareAddr // container end's address
	Master        string
	Hairpin       bool // hairpin mode on the bridge port (published-port hairpin)
}

// MacvlanSpec describes a macvlan link in bridge mode: a container's interface
// (left in the host namespace for Docker to move) or a host's shim.
type MacvlanSpec struct {
	Name   string
	Parent string // the lower link, in this namespace
	MTU    int    // 0 = the kernel's default (the parent's)
	MAC    net.HardwareAddr
	// Address, when valid, is made the link's only IPv4 address (a host shim);
	// invalid leaves the addresses alone (a container's interface gets its
	// address from Docker).
	Address netip.Prefix
}

// MaxVLANID is the highest 802.1q VLAN id (0 and 4095 are reserved).
const MaxVLANID = 4094

// VLANSpec describes an 802.1q link Name on Parent with VLAN id ID
// (1..MaxVLANID).
type VLANSpec struct {
	Name   string
	Parent string
	ID     int
}

// LinkInfo describes an existing link for validation (e.g. of a macvlan parent).
type LinkInfo struct {
	Name string
	// Kind is the link type as netlink reports it: "device" for a physical
	// NIC, else "veth", "bridge", "macvlan", "vlan", "bond", "vxlan", "ifb"…
	Kind     string
	MTU      int
	Up       bool
	Loopback bool
	Master   string // the link this one is enslaved to (bridge, bond); "" none
	Parent   string // the lower link of a vlan or macvlan in this namespace; "" none
	VLANID   int    // for Kind "vlan"
	// Addrs are the link's global IPv4 addresses with their prefix length
	// (host bits kept).
	Addrs []netip.Prefix
}

// Route is a host routing-table entry as seen by conflict checks.
type Route struct {
	Dst  netip.Prefix
	Dev  string
	Ours bool // the route's link was made by grapevine
}

// FDBEntry is one forwarding entry grapevine may have written on a VXLAN
// device: either the device's own entry (MAC → remote VTEP, "self") or the
// bridge's static entry for MAC behind the device's port ("master").
type FDBEntry struct {
	MAC net.HardwareAddr
	// VTEP is the remote tunnel endpoint of a self entry; invalid for a master
	// entry.
	VTEP netip.Addr
	// Master marks the bridge's static entry (no VTEP).
	Master bool
}

// NeighEntry is one IPv4 neighbour entry on a device.
type NeighEntry struct {
	IP  netip.Addr
	MAC net.HardwareAddr
	// Permanent is true for entries written as permanent (grapevine's); other
	// states are entries the kernel resolved itself.
	Permanent bool
}

// Underlay is the resolved address/interface for gossip and VTEP traffic.
type Underlay struct {
	Addr netip.Addr
	Link string
	MTU  int
}

// Proto is an IP protocol number as Docker sends it (6 tcp, 17 udp, 132 sctp).
type Proto uint8

// Protocol numbers.
const (
	TCP  Proto = 6
	UDP  Proto = 17
	SCTP Proto = 132
)

func (p Proto) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	case SCTP:
		return "sctp"
	}
	return "unknown"
}

// NetworkRules is the firewall decision for one network on this host.
type NetworkRules struct {
	NetworkID string       // full id; rules carry a comment naming it
	Bridge    string       // the network's bridge
	Subnet    netip.Prefix // the overlay subnet
	Internal  bool         // no traffic in or out of the subnet through the host
	// Masquerade egress traffic from Subnet leaving through any other interface.
	// Never true together with Internal.
	Masquerade bool
	// Tunnel, when set, is the encryption tunnel's link: traffic from
	// Subnet to Subnet is forwarded between it and the bridge (both ways,
	// Internal or not) and never masqueraded.
	Tunnel string
}

// PortRule is one published port: HostIP:HostPort (all host addresses when HostIP
// is invalid) is forwarded to ContainerIP:ContainerPort.
type PortRule struct {
	NetworkID     string
	EndpointID    string
	Bridge        string
	Proto         Proto
	HostIP        netip.Addr
	HostPort      uint16
	ContainerIP   netip.Addr
	ContainerPort uint16
}

// Firewall is the complete desired rule set of grapevine on this host.
type Firewall struct {
	Networks []NetworkRules
	Ports    []PortRule
	// Shims are host interfaces of grapevine's macvlan networks (host
	// access): container networks the bridges of Networks are isolated from,
	// as they are from Docker's own bridges (which the Kernel reads from
	// Docker's isolation chains itself).
	Shims []string
	// VXLAN is the ingress filter of the VXLAN port (zero: none).
	VXLAN VXLANIngress
}

// Dataplane is the seam between decisions (driver) and syscalls. Implementations:
// Kernel (netlink + iptables in the current namespace) and Fake (records calls).
type Dataplane interface {
	// EnsureBridge creates or repairs the bridge: type, MTU, MAC, address, up.
	EnsureBridge(BridgeSpec) error
	// EnsureVXLAN creates or repairs the VXLAN device (recreating it if its VNI,
	// port or local address differ) and enslaves it to its bridge, up.
	// Returns an error wrapping ErrVNIInUse when the kernel refuses the VNI.
	EnsureVXLAN(VXLANSpec) error
	// EnsureVeth creates the pair if missing and repairs MTU, MAC, master, up.
	// If the container end is gone (moved into a container), only the host end is
	// repaired.
	EnsureVeth(VethSpec) error
	// DeleteLink removes a link by name; a missing link is success.
	DeleteLink(name string) error
	// ListLinks names the links in this namespace whose name starts with prefix.
	ListLinks(prefix string) ([]string, error)

	// EnsureMacvlan creates or repairs a bridge-mode macvlan link on its
	// parent (recreating it if its parent or mode differ): MTU, MAC, address
	// (when given), up. A missing parent yields an error wrapping
	// ErrLinkNotFound; a link of that name of another type ErrIncompatibleLink.
	EnsureMacvlan(MacvlanSpec) error
	// EnsureStandalone creates or repairs a link with no wire behind it, to be
	// the parent of macvlan links that only talk to each other: a dummy link,
	// or an ifb link on kernels without dummy (carrier always on; a bridge
	// without ports loses its carrier). MTU (0 = default), up. A link of that
	// name of another type yields ErrIncompatibleLink.
	EnsureStandalone(name string, mtu int) error
	// EnsureVLAN creates the 802.1q link if missing and sets it up. An
	// existing link of that name that is not VLAN ID on Parent yields
	// ErrIncompatibleLink; a kernel without 802.1q ErrVLANUnsupported.
	EnsureVLAN(VLANSpec) error
	// LinkInfo describes the named link, or returns an error wrapping
	// ErrLinkNotFound.
	LinkInfo(name string) (LinkInfo, error)
	// LinkInfos describes every link of this namespace.
	LinkInfos() ([]LinkInfo, error)
	// SetRoute writes (replace semantics) a link-scope route of the main table
	// to dst through dev, with preferred source src when valid.
	SetRoute(dst netip.Prefix, dev string, src netip.Addr) error
	// DelRoute removes the main-table route to dst through dev; missing is
	// success.
	DelRoute(dst netip.Prefix, dev string) error

	// SetFDB points MAC at a remote VTEP on the VXLAN device (replace semantics),
	// and adds the matching static bridge entry so unknown unicast is not flooded.
	SetFDB(vxlan string, mac net.HardwareAddr, vtep netip.Addr) error
	// DelFDB removes both entries; missing entries are success.
	DelFDB(vxlan string, mac net.HardwareAddr) error
	// SetNeigh writes a permanent neighbour entry IP → MAC on the device.
	SetNeigh(dev string, ip netip.Addr, mac net.HardwareAddr) error
	// DelNeigh removes the neighbour entry; missing is success.
	DelNeigh(dev string, ip netip.Addr) error
	// ListFDB lists the unicast entries of the VXLAN device that grapevine could
	// have written: its self entries (MAC → VTEP; multicast MACs excluded, an
	// all-zero one included so repair removes it) and the bridge's static
	// entries behind its port. Entries the
	// kernel makes for the device's own address are left out. A missing device
	// yields an error wrapping ErrLinkNotFound.
	ListFDB(vxlan string) ([]FDBEntry, error)
	// ListNeigh lists the IPv4 neighbour entries with a link-layer address on
	// the device (proxy entries excluded). A missing device yields an error
	// wrapping ErrLinkNotFound.
	ListNeigh(dev string) ([]NeighEntry, error)

	// Routes lists IPv4 routes of the main table with a non-zero prefix length.
	Routes() ([]Route, error)
	// ResolveUnderlay turns ADVERTISE ("" = auto, an IP, or an interface name)
	// into an address, its link and MTU. Auto uses the default route's interface,
	// else the only interface with a global IPv4 address, else ErrNoUnderlay.
	ResolveUnderlay(advertise string) (Underlay, error)

	// SyncFirewall makes grapevine's chains hold exactly the rules for fw, adding
	// what is missing and removing what grapevine no longer wants. Jumps from the
	// built-in chains are ensured.
	SyncFirewall(fw Firewall) error
	// PortInUse reports whether hostIP:port/proto is already taken on this host by
	// something other than grapevine (a listening socket, Docker's own DNAT),
	// with a short description of the holder.
	PortInUse(proto Proto, hostIP netip.Addr, port uint16) (bool, string, error)
	// RemoveFirewall deletes all of grapevine's chains and jumps, and the set
	// of the VXLAN ingress filter.
	RemoveFirewall() error
	// SetVXLANPeers makes the VXLAN ingress filter accept frames from exactly
	// in.Peers (or at least them, when in.Partial). It only changes the member
	// set (cheap, no iptables run), and does nothing while SyncFirewall has no
	// filter in place.
	SetVXLANPeers(in VXLANIngress) error
	// VXLANDrops counts the VXLAN frames the ingress filter dropped.
	VXLANDrops() (uint64, error)

	// EnsureTunnel creates or repairs the host's WireGuard interface
	// (tunnel.go): kernel WireGuard where the kernel has it, else
	// wireguard-go over TUN (ErrNoTunnel when neither); its key, port and
	// peers; and a /32 route into it per peer address, no other.
	EnsureTunnel(spec TunnelSpec) error
	// DeleteTunnel stops the tunnel and removes its link (and routes); none
	// is success.
	DeleteTunnel(name string) error
	// TunnelStatus reports the running tunnel (false: none runs).
	TunnelStatus() (TunnelStatus, bool, error)
	// EnsureProbe creates or repairs the doctor's probe device (a VXLAN
	// device with its own VNI in a private namespace, kernel_probe.go) and
	// makes it reach and answer exactly the peers named.
	EnsureProbe(ProbeSpec) error
	// RemoveProbe removes the probe device; missing is success.
	RemoveProbe() error
	// Probe sends one echo of size bytes (the IPv4 packet, Don't Fragment)
	// through the probe device to peer's and waits up to timeout for the
	// answer: the round trip, or an error wrapping ErrProbeLost (no answer)
	// or ErrNoProbe (no probe device).
	Probe(peer netip.Addr, size int, timeout time.Duration) (time.Duration, error)
}
