package dataplane

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The Ensure methods for bridges in isolated namespaces (see kernel_netns.go).
// Links made by a grapevine that kept bridges in the host namespace are
// moved over (veths, so the containers keep their links) or replaced
// (bridge, VXLAN device) as they are ensured.

// ensureIsolatedBridge makes the bridge's namespace, the bridge in it (no
// address) and the uplink veth whose host end holds the gateway address and
// MAC. Caller holds mu.
func (k *Kernel) ensureIsolatedBridge(spec BridgeSpec) (err error) {
	up, in, err := uplinkNames(spec.Name)
	if err != nil {
		return fmt.Errorf("ensure bridge: %w", err)
	}
	log := k.log.WithField("link", spec.Name)
	s, created, err := k.ensureSpace(spec.Name)
	if err != nil {
		return fmt.Errorf("ensure bridge %q: %w", spec.Name, err)
	}
	if created {
		defer func() {
			if err != nil {
				if derr := k.deleteSpace(spec.Name); derr != nil {
					log.WithError(derr).Warn("could not remove namespace after a failed setup")
				}
			}
		}()
	}
	// a bridge of this name in the host namespace predates isolation
	if l, lerr := k.linkByName(spec.Name); lerr == nil {
		if l.Type() != "bridge" {
			return fmt.Errorf("ensure bridge %q: existing link in the host namespace is a %s: %w", spec.Name, l.Type(), ErrIncompatibleLink)
		}
		if err := k.nl.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("remove host-namespace bridge %q replaced by its isolated namespace: %w", spec.Name, err)
		}
		log.Info("replaced host-namespace bridge by an isolated namespace")
	} else if !errors.Is(lerr, ErrLinkNotFound) {
		return lerr
	}

	br, _, err := k.bridgeIn(s.nl, spec.Name, spec.MTU, nil)
	if err != nil {
		return err
	}
	if err := k.setMTU(s.nl, br, spec.MTU); err != nil {
		return err
	}
	if err := k.setOnlyAddress(s.nl, br, netip.Prefix{}); err != nil {
		return err
	}
	if err := k.setUp(s.nl, br); err != nil {
		return err
	}

	host, inner, err := k.ensureUplink(s, spec, up, in)
	if err != nil {
		return err
	}
	if err := k.holdGateway(host, spec); err != nil {
		return err
	}
	if err := setProxyARP(up, spec.ProxyARP); err != nil {
		return err
	}
	if err := k.setMTU(s.nl, inner, spec.MTU); err != nil {
		return err
	}
	if err := k.setMaster(s.nl, inner, br); err != nil {
		return err
	}
	return k.setUp(s.nl, inner)
}

// ensureUplink returns both ends of the bridge's uplink veth, making the pair
// when either end is missing. Caller holds mu.
func (k *Kernel) ensureUplink(s *space, spec BridgeSpec, up, in string) (host, inner netlink.Link, err error) {
	host, err = k.linkByName(up)
	switch {
	case errors.Is(err, ErrLinkNotFound):
	case err != nil:
		return nil, nil, err
	case host.Type() != "veth":
		return nil, nil, fmt.Errorf("ensure uplink %q of bridge %q: existing link is a %s: %w", up, spec.Name, host.Type(), ErrIncompatibleLink)
	default:
		inner, err = linkIn(s.nl, in)
		if err == nil {
			return host, inner, nil
		}
		if !errors.Is(err, ErrLinkNotFound) {
			return nil, nil, err
		}
		// half a pair cannot be repaired: make a new one
		if err := deleteIn(k.nl, up); err != nil {
			return nil, nil, err
		}
	}
	if err := deleteIn(s.nl, in); err != nil {
		return nil, nil, err
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = up
	attrs.MTU = spec.MTU
	attrs.HardwareAddr = spec.MAC
	veth := &netlink.Veth{LinkAttrs: attrs, PeerName: in, PeerNamespace: netlink.NsFd(int(s.fd))}
	if spec.MTU > 0 {
		veth.PeerMTU = uint32(spec.MTU)
	}
	if err := k.nl.LinkAdd(veth); err != nil {
		return nil, nil, fmt.Errorf("create uplink veth %q/%q of bridge %q: %w", up, in, spec.Name, err)
	}
	k.log.WithFields(logrus.Fields{"link": up, "peer": in}).Info("created uplink veth pair")
	if host, err = k.linkByName(up); err != nil {
		return nil, nil, fmt.Errorf("read back new uplink: %w", err)
	}
	if inner, err = linkIn(s.nl, in); err != nil {
		return nil, nil, fmt.Errorf("read back new uplink in the namespace: %w", err)
	}
	return host, inner, nil
}

// ensureIsolatedVXLAN makes the VXLAN device in the host namespace (so its
// UDP socket is the host's), moves it into the bridge's namespace and
// enslaves it there. Caller holds mu.
func (k *Kernel) ensureIsolatedVXLAN(s *space, spec VXLANSpec) (err error) {
	vtepDev := 0
	if spec.Underlay != "" {
		u, err := k.linkByName(spec.Underlay)
		if err != nil {
			return fmt.Errorf("ensure vxlan %q: underlay: %w", spec.Name, err)
		}
		vtepDev = u.Attrs().Index
	}
	master, err := linkIn(s.nl, spec.Master)
	if err != nil {
		return fmt.Errorf("ensure vxlan %q: master: %w", spec.Name, err)
	}
	log := k.log.WithFields(logrus.Fields{"link": spec.Name, "vni": spec.VNI})
	// a device of this name in the host namespace predates isolation
	if l, lerr := k.linkByName(spec.Name); lerr == nil {
		if _, ok := l.(*netlink.Vxlan); !ok {
			return fmt.Errorf("ensure vxlan %q: existing link in the host namespace is a %s: %w", spec.Name, l.Type(), ErrIncompatibleLink)
		}
		if err := k.nl.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("remove host-namespace vxlan %q: %w", spec.Name, err)
		}
	} else if !errors.Is(lerr, ErrLinkNotFound) {
		return lerr
	}

	l, err := k.keptVXLAN(s.nl, spec, vtepDev, log)
	if err != nil {
		return err
	}
	if l == nil {
		hl, err := k.createVXLAN(spec, vtepDev)
		if err != nil {
			return err
		}
		if err := k.nl.LinkSetNsFd(hl, int(s.fd)); err != nil {
			_ = deleteIn(k.nl, spec.Name)
			return fmt.Errorf("move vxlan %q into the namespace of bridge %q: %w", spec.Name, spec.Master, err)
		}
		defer func() {
			if err != nil {
				if derr := deleteIn(s.nl, spec.Name); derr != nil {
					log.WithError(derr).Warn("could not remove vxlan device after a failed setup")
				}
			}
		}()
		if l, err = linkIn(s.nl, spec.Name); err != nil {
			return fmt.Errorf("read back moved vxlan: %w", err)
		}
		log.Info("created vxlan device in the isolated namespace")
	}
	k.where[spec.Name] = s
	return k.finishVXLAN(s.nl, l, master, spec, vtepDev)
}

// ensureIsolatedVeth makes the endpoint's pair with its bridge end in the
// bridge's namespace and its container end in the host namespace, for Docker
// to move. A bridge end found in the host namespace (made before isolation)
// is moved over, so the container keeps its link. Caller holds mu.
func (k *Kernel) ensureIsolatedVeth(s *space, spec VethSpec) (err error) {
	master, err := linkIn(s.nl, spec.Master)
	if err != nil {
		return fmt.Errorf("ensure veth %q: master: %w", spec.HostName, err)
	}
	log := k.log.WithFields(logrus.Fields{"link": spec.HostName, "peer": spec.ContainerName})
	l, err := linkIn(s.nl, spec.HostName)
	switch {
	case errors.Is(err, ErrLinkNotFound):
		if l, err = k.isolateVeth(s, spec); err != nil {
			return err
		}
		if l == nil {
			if l, err = k.createIsolatedVeth(s, spec); err != nil {
				return err
			}
			defer func() {
				if err != nil {
					if derr := deleteIn(s.nl, spec.HostName); derr != nil {
						log.WithError(derr).Warn("could not remove veth after a failed setup")
					}
				}
			}()
		}
	case err != nil:
		return err
	case l.Type() != "veth":
		return fmt.Errorf("ensure veth %q: existing link is a %s: %w", spec.HostName, l.Type(), ErrIncompatibleLink)
	}
	k.where[spec.HostName] = s

	peer, err := k.linkByName(spec.ContainerName)
	switch {
	case errors.Is(err, ErrLinkNotFound):
		peer = nil // moved into its container
	case err != nil:
		return err
	case peer.Type() != "veth":
		return fmt.Errorf("ensure veth %q: link %q is not its peer: %w", spec.HostName, spec.ContainerName, ErrIncompatibleLink)
	}
	return k.finishVeth(s.nl, l, peer, master, spec)
}

// isolateVeth moves a bridge end left in the host namespace into s and
// returns it; nil when there is none. Caller holds mu.
func (k *Kernel) isolateVeth(s *space, spec VethSpec) (netlink.Link, error) {
	hl, err := k.linkByName(spec.HostName)
	if errors.Is(err, ErrLinkNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if hl.Type() != "veth" {
		return nil, fmt.Errorf("ensure veth %q: existing link in the host namespace is a %s: %w", spec.HostName, hl.Type(), ErrIncompatibleLink)
	}
	if err := k.nl.LinkSetNsFd(hl, int(s.fd)); err != nil {
		return nil, fmt.Errorf("move veth %q into the namespace of bridge %q: %w", spec.HostName, spec.Master, err)
	}
	k.log.WithField("link", spec.HostName).Info("moved endpoint veth into its network's isolated namespace")
	l, err := linkIn(s.nl, spec.HostName)
	if err != nil {
		return nil, fmt.Errorf("read back moved veth: %w", err)
	}
	return l, nil
}

// createIsolatedVeth makes the pair in one request: the container end in
// the host namespace, the bridge end in s. Caller holds mu.
func (k *Kernel) createIsolatedVeth(s *space, spec VethSpec) (netlink.Link, error) {
	if _, err := k.linkByName(spec.ContainerName); err == nil {
		return nil, fmt.Errorf("create veth %q: container end name %q is taken by another link: %w",
			spec.HostName, spec.ContainerName, ErrIncompatibleLink)
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = spec.ContainerName
	attrs.MTU = spec.MTU
	attrs.HardwareAddr = spec.MAC
	veth := &netlink.Veth{LinkAttrs: attrs, PeerName: spec.HostName, PeerNamespace: netlink.NsFd(int(s.fd))}
	if spec.MTU > 0 {
		veth.PeerMTU = uint32(spec.MTU)
	}
	if err := k.nl.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("create veth pair %q/%q: %w", spec.HostName, spec.ContainerName, err)
	}
	k.log.WithFields(logrus.Fields{"link": spec.HostName, "peer": spec.ContainerName}).Info("created veth pair")
	l, err := linkIn(s.nl, spec.HostName)
	if err != nil {
		return nil, fmt.Errorf("read back new veth: %w", err)
	}
	return l, nil
}
