package dataplane

import (
	"errors"
	"fmt"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

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
	if spec.ID < 1 || spec.ID > MaxVLANID {
		return fmt.Errorf("ensure vlan %q: vlan id %d outside 1..%d", spec.Name, spec.ID, MaxVLANID)
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
