package dataplane

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
)

// Host diagnostics for `grapevine doctor`: which iptables backend holds
// Docker's rules, br_netfilter, and which link types the kernel can make.
// All of it reads the host; the feature test makes links only in a private
// namespace that vanishes with them.

// Backends says which iptables backend grapevine writes with and which
// backends hold Docker's chains (DOCKER, DOCKER-USER).
type Backends struct {
	Chosen string   // "nft" or "legacy"
	Docker []string // backends holding Docker's chains; empty: none yet
	// Unreadable names backends whose tables could not be read, with why.
	Unreadable []string
}

// FirewallBackends reads both backends' tables now.
func (k *Kernel) FirewallBackends() Backends {
	k.mu.Lock()
	b := Backends{Chosen: k.xt.mode}
	k.mu.Unlock()
	for _, mode := range []string{backendNFT, backendLegacy} {
		x, err := lookXtables(mode)
		if err != nil {
			continue // not installed: it holds nothing
		}
		sh := tableShape(x)
		switch {
		case sh.err != nil:
			b.Unreadable = append(b.Unreadable, fmt.Sprintf("%s: %v", mode, sh.err))
		case sh.docker:
			b.Docker = append(b.Docker, mode)
		}
	}
	return b
}

// BridgeNF is the state of br_netfilter.
type BridgeNF struct {
	// Loaded: the host namespace has the bridge-nf-call-* switches.
	Loaded bool
	// HostCallsIptables: bridge-nf-call-iptables is 1 in the host namespace.
	HostCallsIptables bool
	// Isolated: networks live in namespaces of their own.
	Isolated bool
	// NotQuiet names the bridges whose namespace still hands bridged frames
	// to netfilter.
	NotQuiet []string
}

// BridgeNetfilter reads br_netfilter's switches in the host namespace and
// in every isolated network's namespace.
func (k *Kernel) BridgeNetfilter() (BridgeNF, error) {
	var out BridgeNF
	v, err := os.ReadFile("/proc/sys/net/bridge/bridge-nf-call-iptables")
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return out, fmt.Errorf("read bridge-nf-call-iptables: %w", err)
	}
	out.Loaded, out.HostCallsIptables = true, strings.TrimSpace(string(v)) == "1"
	k.mu.Lock()
	defer k.mu.Unlock()
	out.Isolated = len(k.nsDirs) > 0
	bridges, err := k.pinned()
	if err != nil {
		return out, err
	}
	for _, b := range bridges {
		s, err := k.openSpace(b)
		if err != nil || s == nil {
			continue
		}
		on := false
		_ = inNetNS(s.fd, func() error {
			v, err := os.ReadFile("/proc/sys/net/bridge/bridge-nf-call-iptables")
			on = err == nil && strings.TrimSpace(string(v)) == "1"
			return nil
		})
		if on {
			out.NotQuiet = append(out.NotQuiet, b)
		}
	}
	return out, nil
}

// Kernel features the doctor tests, by the name it reports.
const (
	FeatureVXLAN     = "vxlan"
	FeatureMacvlan   = "macvlan"
	FeatureVLAN      = "802.1q"
	FeatureWireGuard = "wireguard"
)

// KernelFeatures tries to make one link of each type grapevine uses (the
// kernel loads the module on demand) in a private namespace, and returns
// why each failed (nil: the kernel can).
func (k *Kernel) KernelFeatures() (map[string]error, error) {
	fd, err := newPrivateNetNS()
	if err != nil {
		return nil, fmt.Errorf("kernel features: %w", err)
	}
	defer fd.Close()
	h, err := netlink.NewHandleAt(fd)
	if err != nil {
		return nil, fmt.Errorf("kernel features: netlink handle: %w", err)
	}
	defer h.Close()
	return featuresIn(h), nil
}

// featuresIn makes the test links in h's namespace (a veth pair is the
// parent of the macvlan and VLAN links).
func featuresIn(h *netlink.Handle) map[string]error {
	attrs := func(name string) netlink.LinkAttrs {
		a := netlink.NewLinkAttrs()
		a.Name = name
		return a
	}
	out := map[string]error{}
	out[FeatureVXLAN] = h.LinkAdd(&netlink.Vxlan{LinkAttrs: attrs("tvx"), VxlanId: 1, Port: 4789})
	out[FeatureWireGuard] = h.LinkAdd(&netlink.Wireguard{LinkAttrs: attrs("twg")})
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: attrs("tp0"), PeerName: "tp1"}); err != nil {
		err = fmt.Errorf("no veth to be the parent: %w", err)
		out[FeatureMacvlan], out[FeatureVLAN] = err, err
		return out
	}
	parent, err := h.LinkByName("tp0")
	if err != nil {
		out[FeatureMacvlan], out[FeatureVLAN] = err, err
		return out
	}
	mv := attrs("tmv")
	mv.ParentIndex = parent.Attrs().Index
	out[FeatureMacvlan] = h.LinkAdd(&netlink.Macvlan{LinkAttrs: mv, Mode: netlink.MACVLAN_MODE_BRIDGE})
	vl := attrs("tvl")
	vl.ParentIndex = parent.Attrs().Index
	out[FeatureVLAN] = h.LinkAdd(&netlink.Vlan{LinkAttrs: vl, VlanId: 42})
	return out
}
