package dataplane

import (
	"fmt"
	"regexp"
)

// Link names. Every link grapevine makes is named "gv", a letter for its
// kind, "-" and the first NameIDLen characters of the Docker id it belongs
// to, so that the name fits IFNAMSIZ (15), can be derived again from
// persisted state alone, and is told apart from every other link exactly
// (IsManagedName):
//
//	bridge              gvb-<network id>
//	VXLAN device        gvx-<network id>
//	veth, host end      gve-<endpoint id>
//	veth or macvlan,
//	  container end     gvc-<endpoint id>
//	internal parent     gvm-<network id>   macvlan network without a parent
//	host shim           gvh-<network id>   macvlan host_access
//	uplink, host end    gvu-<network id>   isolated bridges (kernel_netns.go)
//	uplink, bridge end  gvi-<network id>
//	encryption tunnel   gvt-wireguard      one per host (tunnel.go)
//
// The driver chooses which links exist; this file alone spells their names.
//
// One more link is not named after a Docker id and never lives in the host
// namespace: the probe device ProbeName, alone in the private namespace of
// `grapevine doctor`'s VXLAN probe (kernel_probe.go). Its name is not a
// managed one, so no orphan sweep of the host namespace can meet it.

// ProbeName names the VXLAN device of the doctor's probe, in its own
// namespace.
const ProbeName = "gvprobe"

// NameIDLen is how many characters of a Docker id a link name keeps.
const NameIDLen = 11

// linkKind is the letter after "gv" that says what a link is.
type linkKind string

const (
	kindBridge         linkKind = "b"
	kindVXLAN          linkKind = "x"
	kindHostVeth       linkKind = "e"
	kindContainerEnd   linkKind = "c"
	kindInternalParent linkKind = "m"
	kindShim           linkKind = "h"
	kindUplinkHost     linkKind = "u"
	kindUplinkInner    linkKind = "i"
	kindTunnel         linkKind = "t"
)

// allKinds lists every kind's letter.
const allKinds = kindBridge + kindVXLAN + kindHostVeth + kindContainerEnd + kindInternalParent + kindShim + kindUplinkHost + kindUplinkInner + kindTunnel

// managedName matches exactly the names linkName makes.
var managedName = regexp.MustCompile(fmt.Sprintf(`^gv([%s])-[0-9A-Za-z_.-]{1,%d}$`, allKinds, NameIDLen))

// ShortID is the part of a Docker id that link names keep: its first
// NameIDLen characters.
func ShortID(id string) string {
	if len(id) > NameIDLen {
		return id[:NameIDLen]
	}
	return id
}

func linkName(k linkKind, id string) string { return "gv" + string(k) + "-" + ShortID(id) }

// BridgeName names a network's bridge.
func BridgeName(networkID string) string { return linkName(kindBridge, networkID) }

// VXLANName names a network's VXLAN device.
func VXLANName(networkID string) string { return linkName(kindVXLAN, networkID) }

// HostVethName names the host end of an endpoint's veth pair.
func HostVethName(endpointID string) string { return linkName(kindHostVeth, endpointID) }

// ContainerLinkName names an endpoint's link that Docker moves into the
// container: the container end of its veth pair, or its macvlan child.
func ContainerLinkName(endpointID string) string { return linkName(kindContainerEnd, endpointID) }

// InternalParentName names the standalone parent of a macvlan network
// created without -o parent.
func InternalParentName(networkID string) string { return linkName(kindInternalParent, networkID) }

// ShimName names a macvlan network's host shim (host_access).
func ShimName(networkID string) string { return linkName(kindShim, networkID) }

// TunnelName names the host's WireGuard interface, which every encrypted
// network shares.
func TunnelName() string { return linkName(kindTunnel, "wireguard") }

// IsManagedName reports whether name is one grapevine gives its links, of
// any kind. Other links, even ones starting with "gv", are never grapevine's.
func IsManagedName(name string) bool { return managedName.MatchString(name) }

// isBridgeName reports whether name is one BridgeName gives.
func isBridgeName(name string) bool {
	m := managedName.FindStringSubmatch(name)
	return m != nil && linkKind(m[1]) == kindBridge
}

// uplinkNames returns the host-side and bridge-side names of a bridge's
// uplink veth: the bridge's id under the uplink kinds.
func uplinkNames(bridge string) (host, inner string, err error) {
	if !isBridgeName(bridge) {
		return "", "", fmt.Errorf("bridge name %q is not one grapevine gives (gvb- and 1 to %d of [0-9A-Za-z_.-]): cannot derive its uplink's names", bridge, NameIDLen)
	}
	id := bridge[len(linkName(kindBridge, "")):]
	return linkName(kindUplinkHost, id), linkName(kindUplinkInner, id), nil
}
