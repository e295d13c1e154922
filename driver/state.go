package driver

import (
	"crypto/sha256"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"slices"

	"grapevine/driver/dataplane"
)

// recordVersion is the schema version written into every persisted record.
const recordVersion = 1

// Modes of a network.
const (
	modeVXLAN   = "vxlan"
	modeMACVLAN = "macvlan"
)

// VXLAN numbers: valid range, and the range automatic VNIs are hashed into
// (Docker's Swarm overlay allocates from 4096 up, far below).
const (
	maxVNI        = 1<<24 - 1
	autoVNIBase   = 1 << 23
	autoVNISpan   = 1 << 23
	vxlanOverhead = 50 // outer Ethernet + IPv4 + UDP + VXLAN headers
)

// VXLANOverhead is what VXLAN adds to a container's packet on the underlay.
const VXLANOverhead = vxlanOverhead

// UnderlayOverhead is what a network of the given mode (NetworkStatus.Mode)
// adds to a container's packet on the underlay; false for an unknown mode
// or one that puts containers on the underlay itself (macvlan).
func UnderlayOverhead(mode string) (int, bool) {
	m, ok := modeNamed(mode)
	if !ok || m.overhead() == 0 {
		return 0, false
	}
	return m.overhead(), true
}

// ProbeVNI is the VNI of `grapevine doctor`'s probe device on every host:
// below the automatic range, and refused as -o vni.
const ProbeVNI = autoVNIBase - 1

// networkRecord is a network as persisted in bucket "driver/networks".
type networkRecord struct {
	Version      int          `json:"version"`
	ID           string       `json:"id"`
	Mode         string       `json:"mode"`
	Subnet       netip.Prefix `json:"subnet"`
	Gateway      netip.Prefix `json:"gateway"` // gateway address with the subnet's length
	AddressSpace string       `json:"address_space"`
	VNI          uint32       `json:"vni"`
	VNIAuto      bool         `json:"vni_auto"`
	MTU          int          `json:"mtu"`
	Internal     bool         `json:"internal"`

	// macvlan mode only.
	//
	// ParentOption is -o parent as given ("" = none: an internal-only
	// network on this host). Parent is the link it resolved to on this host
	// when the network was created (an interface name, the interface holding
	// an address in a CIDR, or a VLAN link name.VLAN); "" for none.
	ParentOption string `json:"parent_option,omitempty"`
	Parent       string `json:"parent,omitempty"`
	// HostAccess is this host's shim address (-o host_access=true with
	// --aux-address host=IP or host-<node>=IP, or allocated by the IPAM
	// when HostAuto); invalid = no host access.
	HostAccess netip.Addr `json:"host_access,omitzero"`
	HostAuto   bool       `json:"host_auto,omitempty"`
	// Aux are the --aux-address values inside the subnet: never an
	// endpoint's address on any host.
	Aux []netip.Addr `json:"aux,omitempty"`
}

// parentLink is the link a macvlan network's children are made on.
func (n *networkRecord) parentLink() string {
	if n.Parent != "" {
		return n.Parent
	}
	return internalParent(n.ID)
}

// external reports whether a macvlan network's containers get the LAN's
// router as their gateway: they have a parent and the network is not
// --internal.
func (n *networkRecord) external() bool { return n.Parent != "" && !n.Internal }

// vlanRecord is a VLAN link grapevine created (as -o parent=IF.VLAN of a
// macvlan network), persisted in bucket "driver/vlans" by link name. Only
// links grapevine created are recorded, and only those are ever deleted: with
// the last network whose Parent they are.
type vlanRecord struct {
	Version int    `json:"version"`
	Name    string `json:"name"`
	Parent  string `json:"parent"`
	ID      int    `json:"id"`
}

// portBinding is one published port. HostIP invalid = all host addresses.
// HostPortEnd > HostPort asks for the first free port of a range; in a chosen
// binding HostPort is the port in use.
type portBinding struct {
	Proto       dataplane.Proto `json:"proto"`
	Port        uint16          `json:"port"`
	HostIP      netip.Addr      `json:"host_ip"`
	HostPort    uint16          `json:"host_port"`
	HostPortEnd uint16          `json:"host_port_end"`
}

// transportPort is an exposed (not necessarily published) container port.
type transportPort struct {
	Proto dataplane.Proto `json:"proto"`
	Port  uint16          `json:"port"`
}

// endpointRecord is an endpoint as persisted in bucket "driver/endpoints".
type endpointRecord struct {
	Version       int             `json:"version"`
	ID            string          `json:"id"`
	NetworkID     string          `json:"network_id"`
	Address       netip.Prefix    `json:"address"`
	MAC           string          `json:"mac"`
	MACGenerated  bool            `json:"mac_generated"`
	HostVeth      string          `json:"host_veth"`
	ContainerVeth string          `json:"container_veth"`
	Joined        bool            `json:"joined"`
	SandboxKey    string          `json:"sandbox_key,omitempty"` // Join's, while joined (names tap)
	Requested     []portBinding   `json:"requested,omitempty"`   // portmap from CreateEndpoint
	Exposed       []transportPort `json:"exposed,omitempty"`
	Programmed    bool            `json:"programmed"`         // ProgramExternalConnectivity succeeded
	Bindings      []portBinding   `json:"bindings,omitempty"` // programmed, host ports chosen
}

// linkMAC is the MAC of the endpoint's link. Persisted MACs were validated
// when the endpoint was created; one that no longer parses is derived from
// the address rather than failing.
func (e *endpointRecord) linkMAC() net.HardwareAddr {
	if m, err := parseHWAddr(e.MAC); err == nil {
		return m.hw()
	}
	return macFromIPv4(e.Address.Addr())
}

func (e *endpointRecord) clone() *endpointRecord {
	c := *e
	c.Requested = slices.Clone(e.Requested)
	c.Exposed = slices.Clone(e.Exposed)
	c.Bindings = slices.Clone(e.Bindings)
	return &c
}

// shortID is the part of an id that link names keep, for messages and logs.
func shortID(id string) string { return dataplane.ShortID(id) }

// Link names, spelled by the dataplane (names.go).
func bridgeName(networkID string) string     { return dataplane.BridgeName(networkID) }
func vxlanName(networkID string) string      { return dataplane.VXLANName(networkID) }
func hostVeth(endpointID string) string      { return dataplane.HostVethName(endpointID) }
func contVeth(endpointID string) string      { return dataplane.ContainerLinkName(endpointID) }
func internalParent(networkID string) string { return dataplane.InternalParentName(networkID) }
func shimName(networkID string) string       { return dataplane.ShimName(networkID) }

// checkID accepts Docker ids: non-empty, at most 128 characters of [0-9A-Za-z_.-],
// so that link names made from them are valid.
func checkID(field, id string) error {
	if id == "" {
		return fmt.Errorf("%s is empty", field)
	}
	if len(id) > 128 {
		return fmt.Errorf("%s is longer than 128 characters", field)
	}
	for _, c := range id {
		ok := c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == '.' || c == '-'
		if !ok {
			return fmt.Errorf("%s %q contains %q: only letters, digits, '_', '.' and '-' are allowed", field, id, c)
		}
	}
	return nil
}

// bridgeMAC derives a stable, locally administered unicast MAC from the network id.
func bridgeMAC(networkID string) net.HardwareAddr {
	h := sha256.Sum256([]byte("grapevine-bridge:" + networkID))
	m := net.HardwareAddr(slices.Clone(h[:6]))
	m[0] = m[0]&0xfc | 0x02
	return m
}

// macFromIPv4 returns 02:42:a:b:c:d for IPv4 address a.b.c.d, as Docker does.
func macFromIPv4(a netip.Addr) net.HardwareAddr {
	b := a.As4()
	return net.HardwareAddr{0x02, 0x42, b[0], b[1], b[2], b[3]}
}

// autoVNI is the first candidate VNI of a subnet: a hash into
// [autoVNIBase, autoVNIBase+autoVNISpan), the same on every host.
func autoVNI(subnet netip.Prefix) uint32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(subnet.Masked().String()))
	return autoVNIBase + h.Sum32()%autoVNISpan
}

// nextAutoVNI probes forward inside the automatic range, wrapping around.
func nextAutoVNI(v uint32) uint32 {
	return autoVNIBase + (v-autoVNIBase+1)%autoVNISpan
}
