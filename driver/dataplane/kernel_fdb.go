package dataplane

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// SetFDB points mac at the remote VTEP on the VXLAN device and adds the matching
// static entry in the bridge, the equivalent of
//
//	bridge fdb replace MAC dev VX dst VTEP self permanent
//	bridge fdb replace MAC dev VX master static
//
// The second entry (only when VX has a master) keeps the bridge from flooding
// unknown unicast for mac to every port.
func (k *Kernel) SetFDB(vxlan string, mac net.HardwareAddr, vtep netip.Addr) error {
	if len(mac) != 6 {
		return fmt.Errorf("set fdb entry on %q: mac %q is not a 6-byte ethernet address", vxlan, mac)
	}
	if !vtep.Is4() {
		return fmt.Errorf("set fdb entry %s on %q: vtep address %v is not IPv4", mac, vxlan, vtep)
	}
	k.mu.Lock()
	defer k.mu.Unlock()

	l, err := k.linkByName(vxlan)
	if err != nil {
		return fmt.Errorf("set fdb entry %s: %w", mac, err)
	}
	self := &netlink.Neigh{
		LinkIndex:    l.Attrs().Index,
		Family:       unix.AF_BRIDGE,
		Flags:        netlink.NTF_SELF,
		State:        netlink.NUD_PERMANENT,
		IP:           net.IP(vtep.AsSlice()),
		HardwareAddr: mac,
	}
	if err := k.nl.NeighSet(self); err != nil {
		return fmt.Errorf("set fdb entry %s dst %s on %q: %w", mac, vtep, vxlan, err)
	}
	if l.Attrs().MasterIndex == 0 {
		return nil
	}
	if err := k.nl.NeighSet(masterFDB(l, mac)); err != nil {
		return fmt.Errorf("set static bridge fdb entry %s on port %q: %w", mac, vxlan, err)
	}
	return nil
}

// masterFDB is the bridge's static entry for mac behind port l.
func masterFDB(l netlink.Link, mac net.HardwareAddr) *netlink.Neigh {
	return &netlink.Neigh{
		LinkIndex:    l.Attrs().Index,
		Family:       unix.AF_BRIDGE,
		Flags:        netlink.NTF_MASTER,
		State:        netlink.NUD_NOARP, // "static" in bridge(8)
		HardwareAddr: mac,
	}
}

// DelFDB removes both entries; missing entries (or a missing device) are success.
func (k *Kernel) DelFDB(vxlan string, mac net.HardwareAddr) error {
	if len(mac) != 6 {
		return fmt.Errorf("delete fdb entry on %q: mac %q is not a 6-byte ethernet address", vxlan, mac)
	}
	k.mu.Lock()
	defer k.mu.Unlock()

	l, err := k.linkByName(vxlan)
	if errors.Is(err, ErrLinkNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete fdb entry %s: %w", mac, err)
	}
	if l.Attrs().MasterIndex != 0 {
		if err := k.nl.NeighDel(masterFDB(l, mac)); err != nil && !isMissing(err) {
			return fmt.Errorf("delete static bridge fdb entry %s on port %q: %w", mac, vxlan, err)
		}
	}
	// The VXLAN driver rejects a delete without a destination address, so
	// delete each remote the device holds for mac by its address.
	entries, err := k.fdbList(l)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Flags&netlink.NTF_SELF == 0 || !bytes.Equal(e.HardwareAddr, mac) {
			continue
		}
		self := &netlink.Neigh{
			LinkIndex:    l.Attrs().Index,
			Family:       unix.AF_BRIDGE,
			Flags:        netlink.NTF_SELF,
			IP:           e.IP,
			HardwareAddr: mac,
		}
		if err := k.nl.NeighDel(self); err != nil && !isMissing(err) {
			return fmt.Errorf("delete fdb entry %s dst %s on %q: %w", mac, e.IP, vxlan, err)
		}
	}
	return nil
}

// SetNeigh writes a permanent neighbour entry ip → mac on the device, the
// equivalent of `ip neigh replace IP lladdr MAC dev DEV nud permanent`.
func (k *Kernel) SetNeigh(dev string, ip netip.Addr, mac net.HardwareAddr) error {
	if !ip.Is4() {
		return fmt.Errorf("set neighbour on %q: address %v is not IPv4", dev, ip)
	}
	if len(mac) != 6 {
		return fmt.Errorf("set neighbour %s on %q: mac %q is not a 6-byte ethernet address", ip, dev, mac)
	}
	k.mu.Lock()
	defer k.mu.Unlock()

	l, err := k.linkByName(dev)
	if err != nil {
		return fmt.Errorf("set neighbour %s: %w", ip, err)
	}
	n := &netlink.Neigh{
		LinkIndex:    l.Attrs().Index,
		Family:       unix.AF_INET,
		State:        netlink.NUD_PERMANENT,
		IP:           net.IP(ip.AsSlice()),
		HardwareAddr: mac,
	}
	if err := k.nl.NeighSet(n); err != nil {
		return fmt.Errorf("set neighbour %s lladdr %s on %q: %w", ip, mac, dev, err)
	}
	return nil
}

// DelNeigh removes the neighbour entry; a missing entry or device is success.
func (k *Kernel) DelNeigh(dev string, ip netip.Addr) error {
	if !ip.Is4() {
		return fmt.Errorf("delete neighbour on %q: address %v is not IPv4", dev, ip)
	}
	k.mu.Lock()
	defer k.mu.Unlock()

	l, err := k.linkByName(dev)
	if errors.Is(err, ErrLinkNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete neighbour %s: %w", ip, err)
	}
	n := &netlink.Neigh{
		LinkIndex: l.Attrs().Index,
		Family:    unix.AF_INET,
		IP:        net.IP(ip.AsSlice()),
	}
	if err := k.nl.NeighDel(n); err != nil && !isMissing(err) {
		return fmt.Errorf("delete neighbour %s on %q: %w", ip, dev, err)
	}
	return nil
}

// isMissing reports the errors the kernel gives for deleting an absent entry.
func isMissing(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ESRCH)
}
