package dataplane

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// EnsureBridge creates or repairs the bridge: type, MTU, MAC, address, up.
func (k *Kernel) EnsureBridge(spec BridgeSpec) (err error) {
	if spec.Name == "" {
		return errors.New("ensure bridge: empty name in bridge spec")
	}
	if spec.Address.IsValid() && !spec.Address.Addr().Is4() {
		return fmt.Errorf("ensure bridge %q: address %s is not IPv4", spec.Name, spec.Address)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.nsDirs) > 0 {
		return k.ensureIsolatedBridge(spec)
	}

	l, created, err := k.bridgeIn(k.nl, spec.Name, spec.MTU, spec.MAC)
	if created {
		defer k.undoCreate(spec.Name, &err)
	}
	if err != nil {
		return err
	}
	if err := k.holdGateway(l, spec); err != nil {
		return err
	}
	return setProxyARP(spec.Name, spec.ProxyARP)
}

// setProxyARP switches proxy ARP on for the link (in the Kernel's
// namespace) when on, answering without the kernel's random delay; off
// leaves the link as it is (a new link has it off).
func setProxyARP(link string, on bool) error {
	if !on {
		return nil
	}
	if err := writeSysctl("/proc/sys/net/ipv4/neigh/"+link+"/proxy_delay", "0"); err != nil {
		return fmt.Errorf("link %s: proxy ARP delay 0: %w", link, err)
	}
	if err := writeSysctl("/proc/sys/net/ipv4/conf/"+link+"/proxy_arp", "1"); err != nil {
		return fmt.Errorf("link %s: proxy_arp 1: %w", link, err)
	}
	return nil
}

// bridgeIn returns the bridge called name in h's namespace, creating it with
// mtu and mac (nil = the kernel's) when missing; created says so. A link of
// that name of another type yields ErrIncompatibleLink.
func (k *Kernel) bridgeIn(h *netlink.Handle, name string, mtu int, mac net.HardwareAddr) (l netlink.Link, created bool, err error) {
	l, err = linkIn(h, name)
	switch {
	case errors.Is(err, ErrLinkNotFound):
		attrs := netlink.NewLinkAttrs()
		attrs.Name = name
		attrs.MTU = mtu
		attrs.HardwareAddr = mac
		if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
			return nil, false, fmt.Errorf("create bridge %q: %w", name, err)
		}
		k.log.WithField("link", name).Info("created bridge")
		if l, err = linkIn(h, name); err != nil {
			return nil, true, fmt.Errorf("read back new bridge: %w", err)
		}
		return l, true, nil
	case err != nil:
		return nil, false, err
	case l.Type() != "bridge":
		return nil, false, fmt.Errorf("ensure bridge %q: existing link is a %s: %w", name, l.Type(), ErrIncompatibleLink)
	}
	return l, false, nil
}

// holdGateway makes l, in the Kernel's namespace (the bridge itself, or an
// isolated bridge's uplink), carry the network's gateway: the spec's MTU,
// MAC and only address, up.
func (k *Kernel) holdGateway(l netlink.Link, spec BridgeSpec) error {
	if err := k.setMTU(k.nl, l, spec.MTU); err != nil {
		return err
	}
	if err := k.setMAC(k.nl, l, spec.MAC); err != nil {
		return err
	}
	if err := k.setOnlyAddress(k.nl, l, spec.Address); err != nil {
		return err
	}
	return k.setUp(k.nl, l)
}

// EnsureVXLAN creates or repairs the VXLAN device and enslaves it to its bridge.
func (k *Kernel) EnsureVXLAN(spec VXLANSpec) (err error) {
	if spec.Name == "" {
		return errors.New("ensure vxlan: empty name in vxlan spec")
	}
	if spec.VNI == 0 || spec.VNI > 1<<24-1 {
		return fmt.Errorf("ensure vxlan %q: vni %d outside 1..16777215", spec.Name, spec.VNI)
	}
	if spec.Port <= 0 || spec.Port > 65535 {
		return fmt.Errorf("ensure vxlan %q: udp port %d outside 1..65535", spec.Name, spec.Port)
	}
	if spec.Local.IsValid() && !spec.Local.Is4() {
		return fmt.Errorf("ensure vxlan %q: local vtep address %s is not IPv4", spec.Name, spec.Local)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if s, err := k.openSpace(spec.Master); err != nil {
		return fmt.Errorf("ensure vxlan %q: %w", spec.Name, err)
	} else if s != nil {
		return k.ensureIsolatedVXLAN(s, spec)
	}

	master, err := k.optionalLink(spec.Master)
	if err != nil {
		return fmt.Errorf("ensure vxlan %q: master: %w", spec.Name, err)
	}
	vtepDev := 0
	if spec.Underlay != "" {
		u, err := k.linkByName(spec.Underlay)
		if err != nil {
			return fmt.Errorf("ensure vxlan %q: underlay: %w", spec.Name, err)
		}
		vtepDev = u.Attrs().Index
	}
	log := k.log.WithFields(logrus.Fields{"link": spec.Name, "vni": spec.VNI})

	l, err := k.keptVXLAN(k.nl, spec, vtepDev, log)
	if err != nil {
		return err
	}
	if l == nil {
		if l, err = k.createVXLAN(spec, vtepDev); err != nil {
			return err
		}
		defer k.undoCreate(spec.Name, &err)
		log.Info("created vxlan device")
	}
	return k.finishVXLAN(k.nl, l, master, spec, vtepDev)
}

// keptVXLAN returns the VXLAN device spec names in h's namespace when its
// settings match spec; nil when there is none or it was deleted for
// differing (to be created again).
func (k *Kernel) keptVXLAN(h *netlink.Handle, spec VXLANSpec, vtepDev int, log *logrus.Entry) (netlink.Link, error) {
	l, err := linkIn(h, spec.Name)
	if errors.Is(err, ErrLinkNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	vx, ok := l.(*netlink.Vxlan)
	if !ok {
		return nil, fmt.Errorf("ensure vxlan %q: existing link is a %s: %w", spec.Name, l.Type(), ErrIncompatibleLink)
	}
	why := vxlanMismatch(vx, spec, vtepDev)
	if why == "" {
		return l, nil
	}
	log.WithField("reason", why).Warn("recreating vxlan device whose settings differ")
	if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return nil, fmt.Errorf("delete vxlan %q to recreate it (%s): %w", spec.Name, why, err)
	}
	return nil, nil
}

// finishVXLAN gives the device in h's namespace its MTU and master, removes
// any flooding entry and sets it up.
func (k *Kernel) finishVXLAN(h *netlink.Handle, l, master netlink.Link, spec VXLANSpec, vtepDev int) error {
	if err := k.setMTU(h, l, spec.MTU); err != nil {
		if vtepDev != 0 {
			return fmt.Errorf("%w (bound to %q, the kernel allows at most the underlay mtu minus 50)", err, spec.Underlay)
		}
		return err
	}
	if err := k.setMaster(h, l, master); err != nil {
		return err
	}
	if err := k.removeFloodEntry(h, l); err != nil {
		return err
	}
	return k.setUp(h, l)
}

// undoCreate deletes a link this call created when the call fails, so that a
// failed Ensure leaves nothing half-configured behind.
func (k *Kernel) undoCreate(name string, err *error) {
	if *err == nil {
		return
	}
	if derr := k.deleteLink(name); derr != nil {
		k.log.WithError(derr).WithField("link", name).Warn("could not remove link after a failed setup")
	}
}

// vxlanMismatch says why an existing VXLAN device cannot be kept, or "".
func vxlanMismatch(vx *netlink.Vxlan, spec VXLANSpec, vtepDev int) string {
	var local netip.Addr
	if a, ok := netip.AddrFromSlice(vx.SrcAddr.To4()); ok && !a.IsUnspecified() {
		local = a
	}
	switch {
	case uint32(vx.VxlanId) != spec.VNI:
		return fmt.Sprintf("vni is %d, want %d", vx.VxlanId, spec.VNI)
	case vx.Port != spec.Port:
		return fmt.Sprintf("udp port is %d, want %d", vx.Port, spec.Port)
	case local != spec.Local:
		return fmt.Sprintf("local address is %v, want %v", local, spec.Local)
	case vx.VtepDevIndex != vtepDev:
		return fmt.Sprintf("underlay link index is %d, want %d (%q)", vx.VtepDevIndex, vtepDev, spec.Underlay)
	case vx.Learning:
		return "learning is on"
	case !vx.Proxy:
		return "proxy (local arp answers) is off"
	}
	return ""
}

func (k *Kernel) createVXLAN(spec VXLANSpec, vtepDev int) (netlink.Link, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = spec.Name
	attrs.MTU = spec.MTU
	vx := &netlink.Vxlan{
		LinkAttrs:    attrs,
		VxlanId:      int(spec.VNI),
		Port:         spec.Port,
		VtepDevIndex: vtepDev,
		Learning:     false,
		Proxy:        true,
	}
	if spec.Local.IsValid() {
		vx.SrcAddr = net.IP(spec.Local.AsSlice())
	}
	if err := k.nl.LinkAdd(vx); err != nil {
		if errors.Is(err, unix.EEXIST) {
			// The name was free a moment ago, so EEXIST is the kernel refusing a
			// second device with this VNI on the same UDP port.
			holder := k.vniHolder(spec)
			return nil, fmt.Errorf("create vxlan %q: vni %d on udp port %d is used by %s; choose another vni (-o vni=N): %w",
				spec.Name, spec.VNI, spec.Port, holder, ErrVNIInUse)
		}
		if errors.Is(err, unix.EINVAL) && spec.MTU > 0 && spec.Underlay != "" {
			return nil, fmt.Errorf("create vxlan %q with mtu %d bound to %q (the kernel allows at most the underlay mtu minus 50): %w",
				spec.Name, spec.MTU, spec.Underlay, err)
		}
		return nil, fmt.Errorf("create vxlan %q (vni %d, udp port %d): %w", spec.Name, spec.VNI, spec.Port, err)
	}
	l, err := k.linkByName(spec.Name)
	if err != nil {
		return nil, fmt.Errorf("read back new vxlan: %w", err)
	}
	return l, nil
}

// vniHolder names the VXLAN device that already uses spec's VNI and port, for
// the error message.
func (k *Kernel) vniHolder(spec VXLANSpec) string {
	links, err := k.linkList()
	if err != nil {
		return "another vxlan device"
	}
	for _, l := range links {
		if vx, ok := l.(*netlink.Vxlan); ok && uint32(vx.VxlanId) == spec.VNI && vx.Port == spec.Port {
			return fmt.Sprintf("vxlan device %q", vx.Name)
		}
	}
	return "another vxlan device (possibly Docker's overlay)"
}

// removeFloodEntry deletes an all-zero FDB entry on the VXLAN device: grapevine
// never floods; neighbours are answered locally from static entries.
func (k *Kernel) removeFloodEntry(h *netlink.Handle, l netlink.Link) error {
	entries, err := k.fdbList(h, l)
	if err != nil {
		return err
	}
	zero := make(net.HardwareAddr, 6)
	for _, e := range entries {
		if !bytes.Equal(e.HardwareAddr, zero) {
			continue
		}
		e := e
		if err := h.NeighDel(&e); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete all-zero flooding entry on %q: %w", l.Attrs().Name, err)
		}
		k.log.WithField("link", l.Attrs().Name).Warn("removed all-zero flooding entry from vxlan device")
	}
	return nil
}

// fdbList dumps the bridge-family neighbour (FDB) entries of one link.
func (k *Kernel) fdbList(h *netlink.Handle, l netlink.Link) ([]netlink.Neigh, error) {
	var err error
	for range dumpRetries {
		var entries []netlink.Neigh
		entries, err = h.NeighList(l.Attrs().Index, unix.AF_BRIDGE)
		if err == nil {
			return entries, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return nil, fmt.Errorf("list fdb entries of %q: %w", l.Attrs().Name, err)
}

// EnsureVeth creates the pair if missing and repairs MTU, MAC, master, up.
func (k *Kernel) EnsureVeth(spec VethSpec) (err error) {
	if spec.HostName == "" || spec.ContainerName == "" {
		return fmt.Errorf("ensure veth: host name %q and container name %q must both be set", spec.HostName, spec.ContainerName)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if s, err := k.openSpace(spec.Master); err != nil {
		return fmt.Errorf("ensure veth %q: %w", spec.HostName, err)
	} else if s != nil {
		return k.ensureIsolatedVeth(s, spec)
	}

	master, err := k.optionalLink(spec.Master)
	if err != nil {
		return fmt.Errorf("ensure veth %q: master: %w", spec.HostName, err)
	}

	host, err := k.linkByName(spec.HostName)
	switch {
	case errors.Is(err, ErrLinkNotFound):
		if host, err = k.createVeth(spec); err != nil {
			return err
		}
		defer k.undoCreate(spec.HostName, &err)
	case err != nil:
		return err
	case host.Type() != "veth":
		return fmt.Errorf("ensure veth %q: existing link is a %s: %w", spec.HostName, host.Type(), ErrIncompatibleLink)
	}

	peer, err := k.vethPeer(host, spec.ContainerName)
	if err != nil {
		return err
	}
	return k.finishVeth(k.nl, host, peer, master, spec)
}

// finishVeth repairs a pair: the container end (nil once moved into its
// container; always in the Kernel's namespace) gets MTU and MAC, the bridge
// end in h's namespace MTU, master, hairpin and up.
func (k *Kernel) finishVeth(h *netlink.Handle, host, peer, master netlink.Link, spec VethSpec) error {
	if peer != nil {
		if err := k.setMTU(k.nl, peer, spec.MTU); err != nil {
			return err
		}
		if err := k.setMAC(k.nl, peer, spec.MAC); err != nil {
			return err
		}
	}
	if err := k.setMTU(h, host, spec.MTU); err != nil {
		return err
	}
	if err := k.setMaster(h, host, master); err != nil {
		return err
	}
	if master != nil {
		if err := k.setHairpin(h, host, spec.Hairpin); err != nil {
			return err
		}
	}
	return k.setUp(h, host)
}

func (k *Kernel) createVeth(spec VethSpec) (netlink.Link, error) {
	if _, err := k.linkByName(spec.ContainerName); err == nil {
		return nil, fmt.Errorf("create veth %q: container end name %q is taken by another link: %w",
			spec.HostName, spec.ContainerName, ErrIncompatibleLink)
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = spec.HostName
	attrs.MTU = spec.MTU
	veth := &netlink.Veth{
		LinkAttrs:        attrs,
		PeerName:         spec.ContainerName,
		PeerHardwareAddr: spec.MAC,
	}
	if spec.MTU > 0 {
		veth.PeerMTU = uint32(spec.MTU)
	}
	if err := k.nl.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("create veth pair %q/%q: %w", spec.HostName, spec.ContainerName, err)
	}
	k.log.WithFields(logrus.Fields{"link": spec.HostName, "peer": spec.ContainerName}).Info("created veth pair")
	l, err := k.linkByName(spec.HostName)
	if err != nil {
		return nil, fmt.Errorf("read back new veth: %w", err)
	}
	return l, nil
}

// vethPeer returns the container end when it is still in this namespace, nil
// when it has been moved away, or ErrIncompatibleLink when a link of that name
// exists but is not host's peer.
func (k *Kernel) vethPeer(host netlink.Link, name string) (netlink.Link, error) {
	peer, err := k.linkByName(name)
	if errors.Is(err, ErrLinkNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	ha := host.Attrs()
	if peer.Type() != "veth" || ha.NetNsID >= 0 || ha.ParentIndex != peer.Attrs().Index {
		return nil, fmt.Errorf("ensure veth %q: link %q is not its peer: %w", ha.Name, name, ErrIncompatibleLink)
	}
	return peer, nil
}

func (k *Kernel) setMTU(h *netlink.Handle, l netlink.Link, mtu int) error {
	if mtu <= 0 || l.Attrs().MTU == mtu {
		return nil
	}
	if err := h.LinkSetMTU(l, mtu); err != nil {
		return fmt.Errorf("set mtu %d on %q: %w", mtu, l.Attrs().Name, err)
	}
	return nil
}

func (k *Kernel) setMAC(h *netlink.Handle, l netlink.Link, mac net.HardwareAddr) error {
	if len(mac) == 0 || bytes.Equal(l.Attrs().HardwareAddr, mac) {
		return nil
	}
	if err := h.LinkSetHardwareAddr(l, mac); err != nil {
		return fmt.Errorf("set mac %s on %q: %w", mac, l.Attrs().Name, err)
	}
	return nil
}

func (k *Kernel) setMaster(h *netlink.Handle, l netlink.Link, master netlink.Link) error {
	if master == nil || l.Attrs().MasterIndex == master.Attrs().Index {
		return nil
	}
	if err := h.LinkSetMasterByIndex(l, master.Attrs().Index); err != nil {
		return fmt.Errorf("enslave %q to %q: %w", l.Attrs().Name, master.Attrs().Name, err)
	}
	return nil
}

func (k *Kernel) setHairpin(h *netlink.Handle, l netlink.Link, on bool) error {
	pi, err := h.LinkGetProtinfo(l)
	if err == nil && pi.Hairpin == on {
		return nil
	}
	if err := h.LinkSetHairpin(l, on); err != nil {
		return fmt.Errorf("set hairpin %t on bridge port %q: %w", on, l.Attrs().Name, err)
	}
	return nil
}

func (k *Kernel) setUp(h *netlink.Handle, l netlink.Link) error {
	if l.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %q up: %w", l.Attrs().Name, err)
	}
	return nil
}

// setOnlyAddress makes want the only IPv4 address of l (none when invalid).
func (k *Kernel) setOnlyAddress(h *netlink.Handle, l netlink.Link, want netip.Prefix) error {
	name := l.Attrs().Name
	addrs, err := h.AddrList(l, unix.AF_INET)
	if err != nil {
		return fmt.Errorf("list ipv4 addresses of %q: %w", name, err)
	}
	have := false
	for _, a := range addrs {
		p, ok := addrPrefix(a)
		if ok && want.IsValid() && p == want {
			have = true
			continue
		}
		a := a
		if err := h.AddrDel(l, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove address %s from %q: %w", a.IPNet, name, err)
		}
		k.log.WithFields(logrus.Fields{"link": name, "address": a.IPNet.String()}).Info("removed foreign address from bridge")
	}
	if have || !want.IsValid() {
		return nil
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{
		IP:   net.IP(want.Addr().AsSlice()),
		Mask: net.CIDRMask(want.Bits(), 32),
	}}
	if err := h.AddrReplace(l, addr); err != nil {
		return fmt.Errorf("set address %s on %q: %w", want, name, err)
	}
	return nil
}

// addrPrefix converts a netlink IPv4 address to a prefix keeping host bits.
func addrPrefix(a netlink.Addr) (netip.Prefix, bool) {
	if a.IPNet == nil {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(a.IP.To4())
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := a.Mask.Size()
	if bits != 32 {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(ip, ones), true
}

// optionalLink looks up the named link; an empty name is no link (nil, nil).
func (k *Kernel) optionalLink(name string) (netlink.Link, error) {
	if name == "" {
		return nil, nil
	}
	return k.linkByName(name)
}
