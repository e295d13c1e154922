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

	h, l, err := k.locate(vxlan)
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
	if err := h.NeighSet(self); err != nil {
		return fmt.Errorf("set fdb entry %s dst %s on %q: %w", mac, vtep, vxlan, err)
	}
	if l.Attrs().MasterIndex == 0 {
		return nil
	}
	if err := h.NeighSet(masterFDB(l, mac)); err != nil {
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

	h, l, err := k.locate(vxlan)
	if errors.Is(err, ErrLinkNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete fdb entry %s: %w", mac, err)
	}
	if l.Attrs().MasterIndex != 0 {
		if err := h.NeighDel(masterFDB(l, mac)); err != nil && !isMissing(err) {
			return fmt.Errorf("delete static bridge fdb entry %s on port %q: %w", mac, vxlan, err)
		}
	}
	// The VXLAN driver rejects a delete without a destination address; the
	// IPv4 "any" address removes the entry with all its remotes in one request
	// (no dump per delete: removing thousands of entries stays linear).
	anyDst := &netlink.Neigh{
		LinkIndex:    l.Attrs().Index,
		Family:       unix.AF_BRIDGE,
		Flags:        netlink.NTF_SELF,
		IP:           net.IPv4zero.To4(),
		HardwareAddr: mac,
	}
	err = h.NeighDel(anyDst)
	if err == nil || isMissing(err) {
		return nil
	}
	k.log.WithError(err).WithField("link", vxlan).Debug("fdb delete by any address refused; deleting each remote")
	// Otherwise delete each remote the device holds for mac by its address.
	entries, err := k.fdbList(h, l)
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
		if err := h.NeighDel(self); err != nil && !isMissing(err) {
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

	h, l, err := k.locate(dev)
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
	if err := h.NeighSet(n); err != nil {
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

	h, l, err := k.locate(dev)
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
	if err := h.NeighDel(n); err != nil && !isMissing(err) {
		return fmt.Errorf("delete neighbour %s on %q: %w", ip, dev, err)
	}
	return nil
}

// ListFDB lists the self entries (MAC → VTEP) and the bridge's static entries
// of the VXLAN device, leaving out the kernel's own entries: the port's local
// address (permanent master entries), learned entries and multicast
// addresses. An all-zero self entry (a flooding destination) is listed:
// grapevine's devices flood nothing and it never writes one, so one that
// exists is foreign and repair must see it to remove it.
func (k *Kernel) ListFDB(vxlan string) ([]FDBEntry, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	h, l, err := k.locate(vxlan)
	if err != nil {
		return nil, fmt.Errorf("list fdb entries: %w", err)
	}
	entries, err := k.fdbList(h, l)
	if err != nil {
		return nil, err
	}
	out := make([]FDBEntry, 0, len(entries))
	for _, e := range entries {
		if len(e.HardwareAddr) != 6 || e.HardwareAddr[0]&1 != 0 {
			continue
		}
		switch {
		case e.Flags&netlink.NTF_SELF != 0:
			vtep, ok := netip.AddrFromSlice(e.IP)
			if !ok {
				continue // a self entry without a destination is not one of ours
			}
			out = append(out, FDBEntry{MAC: bytes.Clone(e.HardwareAddr), VTEP: vtep.Unmap()})
		case e.State == netlink.NUD_NOARP && !isZeroMAC(e.HardwareAddr):
			// A static bridge entry behind this port (the kernel reports it
			// with NTF_MASTER or with the bridge as master).
			out = append(out, FDBEntry{MAC: bytes.Clone(e.HardwareAddr), Master: true})
		}
	}
	return out, nil
}

func isZeroMAC(m net.HardwareAddr) bool {
	for _, b := range m {
		if b != 0 {
			return false
		}
	}
	return true
}

// ListNeigh lists the IPv4 neighbour entries with a link-layer address on the
// device; proxy entries are left out.
func (k *Kernel) ListNeigh(dev string) ([]NeighEntry, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	h, l, err := k.locate(dev)
	if err != nil {
		return nil, fmt.Errorf("list neighbours: %w", err)
	}
	var entries []netlink.Neigh
	for range dumpRetries {
		entries, err = h.NeighList(l.Attrs().Index, unix.AF_INET)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("list neighbours of %q: %w", dev, err)
	}
	out := make([]NeighEntry, 0, len(entries))
	for _, e := range entries {
		if e.Flags&netlink.NTF_PROXY != 0 || len(e.HardwareAddr) != 6 {
			continue
		}
		ip, ok := netip.AddrFromSlice(e.IP)
		if !ok || !ip.Unmap().Is4() {
			continue
		}
		out = append(out, NeighEntry{IP: ip.Unmap(), MAC: bytes.Clone(e.HardwareAddr), Permanent: e.State&netlink.NUD_PERMANENT != 0})
	}
	return out, nil
}

// isMissing reports the errors the kernel gives for deleting an absent entry.
func isMissing(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ESRCH)
}
