package driver

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/docker/go-plugins-helpers/network"

	"grapevine/driver/dataplane"
)

// User options (-o k=v on `docker network create`).
const (
	userMode       = "mode"
	userVNI        = "vni"
	userParent     = "parent"
	userHostAccess = "host_access"
)

// allowedUserOptions lists every -o key grapevine understands, for messages.
var allowedUserOptions = []string{userMode, userVNI, optMTU, userParent, userHostAccess, userEncrypted}

// networkSpec is a validated CreateNetwork request.
type networkSpec struct {
	mode     netMode
	vni      uint32 // 0 = automatic
	mtu      int    // 0 = vxlan: underlay MTU - 50; macvlan: the parent's; -1 invalid
	mtuText  string // -o com.docker.network.driver.mtu as given
	internal bool
	subnet   netip.Prefix
	gateway  netip.Prefix
	space    string
	adopted  string             // the host whose definition gave vni (checkCluster)
	underlay dataplane.Underlay // vxlan: resolved by prepare

	// macvlan mode
	parentOpt  string            // -o parent as given; "" = internal-only
	hostAccess bool              // -o host_access=true
	hostIP     netip.Addr        // the shim address: from aux, or allocated (hostAuto)
	hostAuto   bool              // hostIP was allocated by the IPAM
	aux        map[string]string // --aux-address name → address text
}

// Largest MTU accepted before the parent's is known (macvlan mode).
const maxLinkMTU = 65535

// parseNetwork validates everything in a CreateNetwork request that does not
// depend on host state. The MTU is checked against the underlay (vxlan) or
// the parent (macvlan) later.
func (d *Driver) parseNetwork(r *network.CreateNetworkRequest) (networkSpec, error) {
	var s networkSpec
	opts, err := genericOptions(r.Options)
	if err != nil {
		return s, err
	}
	for k := range opts {
		if !slices.Contains(allowedUserOptions, k) {
			return s, fmt.Errorf("unknown option -o %s: grapevine allows %s", k, strings.Join(allowedUserOptions, ", "))
		}
	}
	s.mode = vxlanMode{}
	if v, ok := opts[userMode]; ok {
		if s.mode, ok = modeNamed(v); !ok || v == modeEncrypted {
			return s, fmt.Errorf("-o mode=%q is not allowed: use vxlan (the default) or macvlan (and -o %s=true for an encrypted vxlan network)", v, userEncrypted)
		}
	}
	if err := parseEncrypted(opts, &s); err != nil {
		return s, err
	}
	if _, lan := s.mode.(macvlanMode); lan {
		if _, ok := opts[userVNI]; ok {
			return s, fmt.Errorf("-o vni is only allowed with -o mode=vxlan: a macvlan network has no VXLAN device")
		}
		s.parentOpt = strings.TrimSpace(opts[userParent])
		if v, ok := opts[userParent]; ok && s.parentOpt == "" {
			return s, fmt.Errorf("-o parent=%q is empty: give an interface name (eth0), a VLAN subinterface (eth0.30) or the LAN's CIDR, or leave -o parent out for an internal-only network", v)
		}
		if v, ok := opts[userHostAccess]; ok {
			b, err := strconv.ParseBool(strings.TrimSpace(v))
			if err != nil {
				return s, fmt.Errorf("-o %s=%q is not a boolean: use true or false", userHostAccess, v)
			}
			s.hostAccess = b
		}
	} else {
		for _, k := range []string{userParent, userHostAccess} {
			if _, ok := opts[k]; ok {
				return s, fmt.Errorf("-o %s is only allowed with -o mode=macvlan", k)
			}
		}
	}
	if v, ok := opts[userVNI]; ok {
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
		if err != nil || n < 1 || n > maxVNI {
			return s, fmt.Errorf("-o vni=%q is not allowed: use a number from 1 to %d, or leave it out for an automatic one", v, maxVNI)
		}
		if n == ProbeVNI {
			return s, fmt.Errorf("-o vni=%d is reserved for grapevine's own probe (grapevine doctor): use another number from 1 to %d, or leave it out for an automatic one", n, maxVNI)
		}
		s.vni = uint32(n)
	}
	if v, ok := opts[optMTU]; ok {
		s.mtuText = v
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 68 || n > maxLinkMTU {
			n = -1 // refused by checkVXLANMTU / checkMacvlanMTU, which know the limit
		}
		s.mtu = n
	}
	if s.internal, err = boolOption(r.Options, optInternal); err != nil {
		return s, err
	}
	ipv6, err := boolOption(r.Options, optEnableIPv6)
	if err != nil {
		return s, err
	}
	if ipv6 || len(r.IPv6Data) > 0 {
		return s, fmt.Errorf("--ipv6 is not supported by grapevine yet: create the network without --ipv6")
	}
	return s, d.parseIPv4Data(r.IPv4Data, &s)
}

// checkVXLANMTU bounds an overlay network's MTU option by the underlay's
// less the overhead of its headers.
func checkVXLANMTU(s networkSpec, underlayMTU, overhead int) error {
	maxMTU := underlayMTU - overhead
	if s.mtu < 0 || s.mtu > maxMTU {
		return fmt.Errorf("-o %s=%q is not allowed: use a number from 68 to %d (the underlay MTU %d minus %d bytes of VXLAN (and WireGuard) headers)", optMTU, s.mtuText, maxMTU, underlayMTU, overhead)
	}
	return nil
}

// checkMacvlanMTU bounds a macvlan network's MTU option by the parent's
// (parent "" is the internal parent, bounded by the largest link MTU).
func checkMacvlanMTU(s networkSpec, parent string, parentMTU int) error {
	switch {
	case parent == "" && s.mtu < 0:
		return fmt.Errorf("-o %s=%q is not allowed: use a number from 68 to %d", optMTU, s.mtuText, maxLinkMTU)
	case parent != "" && (s.mtu < 0 || s.mtu > parentMTU):
		return fmt.Errorf("-o %s=%q is not allowed: use a number from 68 to %d (the MTU of the parent %s)", optMTU, s.mtuText, parentMTU, parent)
	}
	return nil
}

func (d *Driver) parseIPv4Data(data []*network.IPAMData, s *networkSpec) error {
	if len(data) != 1 || data[0] == nil {
		return fmt.Errorf("grapevine networks need exactly one IPv4 subnet, got %d: pass one --subnet (or none for an automatic one)", len(data))
	}
	ipd := data[0]
	if !slices.Contains(d.spaces, ipd.AddressSpace) {
		name := d.pluginName
		if name == "" {
			name = "<grapevine plugin name>"
		}
		return fmt.Errorf("grapevine networks need grapevine's IPAM (address space %q is not one of %s): add --ipam-driver %s (addresses must be unique across hosts)",
			ipd.AddressSpace, strings.Join(d.spaces, ", "), name)
	}
	s.space = ipd.AddressSpace
	pool, err := netip.ParsePrefix(ipd.Pool)
	if err != nil || !pool.Addr().Is4() {
		return fmt.Errorf("IPv4 pool %q is not an IPv4 subnet in CIDR form", ipd.Pool)
	}
	pool = pool.Masked()
	if pool.Bits() > 30 {
		return fmt.Errorf("subnet %s is too small: use a /30 or larger", pool)
	}
	s.subnet = pool
	if ipd.Gateway == "" {
		return fmt.Errorf("subnet %s has no gateway: the IPAM driver must return one", pool)
	}
	var gw netip.Addr
	if strings.Contains(ipd.Gateway, "/") {
		p, err := netip.ParsePrefix(ipd.Gateway)
		if err != nil {
			return fmt.Errorf("gateway %q is not an IPv4 address in CIDR form", ipd.Gateway)
		}
		gw = p.Addr()
	} else if gw, err = netip.ParseAddr(ipd.Gateway); err != nil {
		return fmt.Errorf("gateway %q is not an IPv4 address", ipd.Gateway)
	}
	if !gw.Is4() || !pool.Contains(gw) || gw == pool.Addr() || gw == lastAddr(pool) {
		return fmt.Errorf("gateway %s is not a host address of subnet %s: pass a --gateway inside the subnet", gw, pool)
	}
	s.gateway = netip.PrefixFrom(gw, pool.Bits())
	if len(ipd.AuxAddresses) > 0 {
		s.aux = map[string]string{}
		for k, v := range ipd.AuxAddresses {
			text, ok := v.(string)
			if !ok {
				return fmt.Errorf("--aux-address %s has a %T value: expected an address string", k, v)
			}
			s.aux[k] = text
		}
	}
	return nil
}

// lastAddr is the broadcast address of an IPv4 prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// genericOptions extracts the -o options. Docker sends a JSON object of strings;
// anything else is refused with the offending key.
func genericOptions(opts map[string]any) (map[string]string, error) {
	out := map[string]string{}
	raw, ok := opts[optGeneric]
	if !ok || raw == nil {
		return out, nil
	}
	switch m := raw.(type) {
	case map[string]string:
		maps.Copy(out, m)
	case map[string]any:
		for k, v := range m {
			s, ok := v.(string)
			if !ok {
				return nil, fmt.Errorf("option -o %s has a %T value: options must be strings", k, v)
			}
			out[k] = s
		}
	default:
		return nil, fmt.Errorf("%s is a %T: expected an object of string options", optGeneric, raw)
	}
	return out, nil
}

// boolOption reads a top-level boolean option (Docker sends JSON booleans;
// strings "true"/"false" are accepted too). Missing is false.
func boolOption(opts map[string]any, key string) (bool, error) {
	v, ok := opts[key]
	if !ok || v == nil {
		return false, nil
	}
	switch b := v.(type) {
	case bool:
		return b, nil
	case string:
		p, err := strconv.ParseBool(b)
		if err != nil {
			return false, fmt.Errorf("option %s=%q is not a boolean", key, b)
		}
		return p, nil
	}
	return false, fmt.Errorf("option %s is a %T, expected a boolean", key, v)
}

// parseEncrypted reads -o encrypted: true makes a vxlan network encrypted;
// macvlan networks, which have no tunnel, refuse it.
func parseEncrypted(opts map[string]string, s *networkSpec) error {
	v, ok := opts[userEncrypted]
	if !ok {
		return nil
	}
	on, err := strconv.ParseBool(strings.TrimSpace(v))
	if err != nil {
		return fmt.Errorf("-o %s=%q is not a boolean: use true or false", userEncrypted, v)
	}
	if _, lan := s.mode.(macvlanMode); lan && on {
		return fmt.Errorf("-o %s=true is only allowed with -o mode=vxlan (the default): a macvlan network's frames go straight onto the LAN, with no tunnel", userEncrypted)
	}
	if on {
		s.mode = encryptedMode{}
	}
	return nil
}
