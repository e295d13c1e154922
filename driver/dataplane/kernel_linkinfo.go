package dataplane

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

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
