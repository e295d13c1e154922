package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Highest 802.1q VLAN id (0 and 4095 are reserved).
const maxVLANID = 4094

// EnsureMacvlan creates or repairs a bridge-mode macvlan link on its parent.
func (k *Kernel) EnsureMacvlan(spec MacvlanSpec) (err error) {
	if spec.Name == "" || spec.Parent == "" {
		return fmt.Errorf("ensure macvlan: name %q and parent %q must both be set", spec.Name, spec.Parent)
	}
	if spec.Address.IsValid() && !spec.Address.Addr().Is4() {
		return fmt.Errorf("ensure macvlan %q: address %s is not IPv4", spec.Name, spec.Address)
	}
	k.mu.Lock()
	defer k.mu.Unlock()

	parent, err := k.linkByName(spec.Parent)
	if err != nil {
		return fmt.Errorf("ensure macvlan %q: parent: %w", spec.Name, err)
	}
	log := k.log.WithFields(logrus.Fields{"link": spec.Name, "parent": spec.Parent})
	l, err := k.linkByName(spec.Name)
	switch {
	case errors.Is(err, ErrLinkNotFound):
		l = nil
	case err != nil:
		return err
	default:
		mv, ok := l.(*netlink.Macvlan)
		if !ok || l.Type() != "macvlan" {
			return fmt.Errorf("ensure macvlan %q: existing link is a %s: %w", spec.Name, l.Type(), ErrIncompatibleLink)
		}
		if mv.ParentIndex != parent.Attrs().Index || mv.Mode != netlink.MACVLAN_MODE_BRIDGE {
			log.Warn("recreating macvlan link whose parent or mode differ")
			if err := k.nl.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
				return fmt.Errorf("delete macvlan %q to recreate it on %q: %w", spec.Name, spec.Parent, err)
			}
			l = nil
		}
	}
	if l == nil {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = spec.Name
		attrs.MTU = spec.MTU
		attrs.HardwareAddr = spec.MAC
		attrs.ParentIndex = parent.Attrs().Index
		if err := k.nl.LinkAdd(&netlink.Macvlan{LinkAttrs: attrs, Mode: netlink.MACVLAN_MODE_BRIDGE}); err != nil {
			if errors.Is(err, unix.EINVAL) && spec.MTU > parent.Attrs().MTU {
				return fmt.Errorf("create macvlan %q on %q with mtu %d (at most the parent's mtu %d): %w", spec.Name, spec.Parent, spec.MTU, parent.Attrs().MTU, err)
			}
			return fmt.Errorf("create macvlan %q on %q: %w", spec.Name, spec.Parent, err)
		}
		defer k.undoCreate(spec.Name, &err)
		log.Debug("created macvlan link")
		if l, err = k.linkByName(spec.Name); err != nil {
			return fmt.Errorf("read back new macvlan: %w", err)
		}
	}
	if err := k.setMTU(k.nl, l, spec.MTU); err != nil {
		return err
	}
	if err := k.setMAC(k.nl, l, spec.MAC); err != nil {
		return err
	}
	if spec.Address.IsValid() {
		if err := k.setOnlyAddress(k.nl, l, spec.Address); err != nil {
			return err
		}
	}
	return k.setUp(k.nl, l)
}

// EnsureVLAN creates the 802.1q link if missing and sets it up.
func (k *Kernel) EnsureVLAN(spec VLANSpec) (err error) {
	if spec.Name == "" || spec.Parent == "" {
		return fmt.Errorf("ensure vlan: name %q and parent %q must both be set", spec.Name, spec.Parent)
	}
	if spec.ID < 1 || spec.ID > maxVLANID {
		return fmt.Errorf("ensure vlan %q: vlan id %d outside 1..%d", spec.Name, spec.ID, maxVLANID)
	}
	k.mu.Lock()
	defer k.mu.Unlock()

	parent, err := k.linkByName(spec.Parent)
	if err != nil {
		return fmt.Errorf("ensure vlan %q: parent: %w", spec.Name, err)
	}
	l, err := k.linkByName(spec.Name)
	switch {
	case errors.Is(err, ErrLinkNotFound):
		attrs := netlink.NewLinkAttrs()
		attrs.Name = spec.Name
		attrs.ParentIndex = parent.Attrs().Index
		if err := k.nl.LinkAdd(&netlink.Vlan{LinkAttrs: attrs, VlanId: spec.ID}); err != nil {
			if errors.Is(err, unix.EOPNOTSUPP) {
				return fmt.Errorf("create vlan %q (id %d on %q): %w", spec.Name, spec.ID, spec.Parent, ErrVLANUnsupported)
			}
			return fmt.Errorf("create vlan %q (id %d on %q): %w", spec.Name, spec.ID, spec.Parent, err)
		}
		defer k.undoCreate(spec.Name, &err)
		k.log.WithFields(logrus.Fields{"link": spec.Name, "parent": spec.Parent, "vlan": spec.ID}).Info("created vlan link")
		if l, err = k.linkByName(spec.Name); err != nil {
			return fmt.Errorf("read back new vlan: %w", err)
		}
	case err != nil:
		return err
	default:
		v, ok := l.(*netlink.Vlan)
		if !ok || v.VlanId != spec.ID || v.ParentIndex != parent.Attrs().Index {
			return fmt.Errorf("ensure vlan %q: the existing link is not vlan %d on %q: %w", spec.Name, spec.ID, spec.Parent, ErrIncompatibleLink)
		}
	}
	return k.setUp(k.nl, l)
}

// LinkInfo describes the named link.
func (k *Kernel) LinkInfo(name string) (LinkInfo, error) {
	l, err := k.linkByName(name)
	if err != nil {
		return LinkInfo{}, err
	}
	addrs, err := k.nl.AddrList(l, unix.AF_INET)
	if err != nil {
		return LinkInfo{}, fmt.Errorf("list ipv4 addresses of %q: %w", name, err)
	}
	names := map[int]string{}
	for _, idx := range []int{l.Attrs().MasterIndex, l.Attrs().ParentIndex} {
		if idx == 0 {
			continue
		}
		if o, err := k.nl.LinkByIndex(idx); err == nil {
			names[idx] = o.Attrs().Name
		}
	}
	return linkInfo(l, names, addrs), nil
}

// LinkInfos describes every link of this namespace.
func (k *Kernel) LinkInfos() ([]LinkInfo, error) {
	links, err := k.linkList()
	if err != nil {
		return nil, err
	}
	var addrs []netlink.Addr
	for range dumpRetries {
		addrs, err = k.nl.AddrList(nil, unix.AF_INET)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("list ipv4 addresses: %w", err)
	}
	byLink := map[int][]netlink.Addr{}
	for _, a := range addrs {
		byLink[a.LinkIndex] = append(byLink[a.LinkIndex], a)
	}
	names := make(map[int]string, len(links))
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	out := make([]LinkInfo, 0, len(links))
	for _, l := range links {
		out = append(out, linkInfo(l, names, byLink[l.Attrs().Index]))
	}
	return out, nil
}

func linkInfo(l netlink.Link, names map[int]string, addrs []netlink.Addr) LinkInfo {
	a := l.Attrs()
	li := LinkInfo{
		Name:     a.Name,
		Kind:     l.Type(),
		MTU:      a.MTU,
		Up:       a.Flags&net.FlagUp != 0,
		Loopback: a.Flags&net.FlagLoopback != 0,
		Master:   names[a.MasterIndex],
	}
	switch v := l.(type) {
	case *netlink.Vlan:
		li.VLANID = v.VlanId
		li.Parent = names[a.ParentIndex]
	case *netlink.Macvlan, *netlink.Macvtap, *netlink.IPVlan:
		li.Parent = names[a.ParentIndex]
	}
	for _, ad := range addrs {
		if ad.Scope != unix.RT_SCOPE_UNIVERSE {
			continue
		}
		if p, ok := addrPrefix(ad); ok {
			li.Addrs = append(li.Addrs, p)
		}
	}
	return li
}

// SetRoute writes a link-scope route to dst through dev (replace semantics).
func (k *Kernel) SetRoute(dst netip.Prefix, dev string, src netip.Addr) error {
	if !dst.IsValid() || !dst.Addr().Is4() {
		return fmt.Errorf("set route: destination %v is not an IPv4 prefix", dst)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	l, err := k.linkByName(dev)
	if err != nil {
		return fmt.Errorf("set route to %s: %w", dst, err)
	}
	r := &netlink.Route{
		LinkIndex: l.Attrs().Index,
		Dst:       prefixNet(dst.Masked()),
		Scope:     netlink.SCOPE_LINK,
		Table:     unix.RT_TABLE_MAIN,
	}
	if src.IsValid() {
		r.Src = net.IP(src.AsSlice())
	}
	if err := k.nl.RouteReplace(r); err != nil {
		return fmt.Errorf("set route %s dev %s: %w", dst, dev, err)
	}
	return nil
}

// DelRoute removes the main-table route to dst through dev; missing is success.
func (k *Kernel) DelRoute(dst netip.Prefix, dev string) error {
	if !dst.IsValid() || !dst.Addr().Is4() {
		return fmt.Errorf("delete route: destination %v is not an IPv4 prefix", dst)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	l, err := k.linkByName(dev)
	if errors.Is(err, ErrLinkNotFound) {
		return nil // the route went with its link
	}
	if err != nil {
		return fmt.Errorf("delete route to %s: %w", dst, err)
	}
	// Scope "nowhere" matches a route of any scope, as `ip route del` does.
	r := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: prefixNet(dst.Masked()), Table: unix.RT_TABLE_MAIN, Scope: netlink.SCOPE_NOWHERE}
	if err := k.nl.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete route %s dev %s: %w", dst, dev, err)
	}
	return nil
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), 32)}
}

// EnsureStandalone creates or repairs a dummy (else ifb) link, up.
func (k *Kernel) EnsureStandalone(name string, mtu int) (err error) {
	if name == "" {
		return errors.New("ensure standalone link: empty name")
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	l, err := k.linkByName(name)
	switch {
	case errors.Is(err, ErrLinkNotFound):
		attrs := netlink.NewLinkAttrs()
		attrs.Name = name
		attrs.MTU = mtu
		err = k.nl.LinkAdd(&netlink.Dummy{LinkAttrs: attrs})
		if errors.Is(err, unix.EOPNOTSUPP) {
			err = k.nl.LinkAdd(&netlink.Ifb{LinkAttrs: attrs})
		}
		if err != nil {
			return fmt.Errorf("create standalone link %q (dummy or ifb): %w", name, err)
		}
		defer k.undoCreate(name, &err)
		if l, err = k.linkByName(name); err != nil {
			return fmt.Errorf("read back new link: %w", err)
		}
		k.log.WithFields(logrus.Fields{"link": name, "type": l.Type()}).Debug("created standalone link")
	case err != nil:
		return err
	case l.Type() != "dummy" && l.Type() != "ifb":
		return fmt.Errorf("ensure standalone link %q: existing link is a %s: %w", name, l.Type(), ErrIncompatibleLink)
	}
	if err := k.setMTU(k.nl, l, mtu); err != nil {
		return err
	}
	return k.setUp(k.nl, l)
}
