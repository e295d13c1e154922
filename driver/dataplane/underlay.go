package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ResolveUnderlay turns ADVERTISE into the address, link and MTU used for gossip
// and as the local VTEP:
//   - "" (or "auto"): the interface of the IPv4 default route; without one, the
//     only interface holding a global IPv4 address, ignoring loopback, bridges,
//     vxlan and macvlan links, bridge ports, docker0 and grapevine's own links.
//     veth links count only when no other interface qualifies (a host that is
//     itself a namespace joined to its LAN by a veth).
//   - an IPv4 address: the link holding it.
//   - an interface name: that link's first global IPv4 address.
func (k *Kernel) ResolveUnderlay(advertise string) (Underlay, error) {
	advertise = strings.TrimSpace(advertise)
	if advertise == "" || strings.EqualFold(advertise, "auto") {
		return k.autoUnderlay()
	}
	if ip, err := netip.ParseAddr(advertise); err == nil {
		return k.underlayByAddr(ip.Unmap())
	}
	return k.underlayByName(advertise)
}

func (k *Kernel) underlayByAddr(ip netip.Addr) (Underlay, error) {
	if !ip.Is4() {
		return Underlay{}, fmt.Errorf("ADVERTISE=%s: only IPv4 underlays are supported; set an IPv4 address or interface: %w", ip, ErrNoUnderlay)
	}
	links, err := k.linkList()
	if err != nil {
		return Underlay{}, err
	}
	for _, l := range links {
		addrs, err := k.globalAddrs(l)
		if err != nil {
			return Underlay{}, err
		}
		if slices.Contains(addrs, ip) {
			return Underlay{Addr: ip, Link: l.Attrs().Name, MTU: l.Attrs().MTU}, nil
		}
	}
	return Underlay{}, fmt.Errorf("ADVERTISE=%s is not a global address of any interface of this host; set it to one of the host's addresses or interfaces: %w", ip, ErrNoUnderlay)
}

func (k *Kernel) underlayByName(name string) (Underlay, error) {
	l, err := k.linkByName(name)
	if errors.Is(err, ErrLinkNotFound) {
		return Underlay{}, fmt.Errorf("ADVERTISE=%s is neither an IP address nor an interface of this host: %w", name, ErrNoUnderlay)
	}
	if err != nil {
		return Underlay{}, err
	}
	addrs, err := k.globalAddrs(l)
	if err != nil {
		return Underlay{}, err
	}
	if len(addrs) == 0 {
		return Underlay{}, fmt.Errorf("ADVERTISE=%s: the interface has no global IPv4 address; give it one or set ADVERTISE to another interface: %w", name, ErrNoUnderlay)
	}
	return Underlay{Addr: addrs[0], Link: name, MTU: l.Attrs().MTU}, nil
}

func (k *Kernel) autoUnderlay() (Underlay, error) {
	links, err := k.linkList()
	if err != nil {
		return Underlay{}, err
	}
	byIndex := make(map[int]netlink.Link, len(links))
	for _, l := range links {
		byIndex[l.Attrs().Index] = l
	}
	if idx, err := k.defaultRouteLink(); err != nil {
		return Underlay{}, err
	} else if l, ok := byIndex[idx]; ok {
		addrs, err := k.globalAddrs(l)
		if err != nil {
			return Underlay{}, err
		}
		if len(addrs) > 0 {
			return Underlay{Addr: addrs[0], Link: l.Attrs().Name, MTU: l.Attrs().MTU}, nil
		}
		k.log.WithField("link", l.Attrs().Name).Warn("the default route's interface has no global IPv4 address; looking for another underlay interface")
	}

	type candidate struct {
		link netlink.Link
		addr netip.Addr
	}
	var preferred, veths []candidate
	for _, l := range links {
		a := l.Attrs()
		if a.Flags&net.FlagUp == 0 || a.Flags&net.FlagLoopback != 0 || a.MasterIndex != 0 ||
			a.Name == "docker0" || IsManagedName(a.Name) {
			continue
		}
		switch l.Type() {
		case "bridge", "vxlan", "macvlan", "macvtap", "ipvlan", "openvswitch":
			continue
		}
		addrs, err := k.globalAddrs(l)
		if err != nil {
			return Underlay{}, err
		}
		if len(addrs) == 0 {
			continue
		}
		c := candidate{l, addrs[0]}
		if l.Type() == "veth" {
			veths = append(veths, c)
		} else {
			preferred = append(preferred, c)
		}
	}
	pool := preferred
	if len(pool) == 0 {
		pool = veths
	}
	if len(pool) == 1 {
		c := pool[0]
		return Underlay{Addr: c.addr, Link: c.link.Attrs().Name, MTU: c.link.Attrs().MTU}, nil
	}
	if len(pool) == 0 {
		return Underlay{}, fmt.Errorf("no default route and no interface with a global IPv4 address; set ADVERTISE to the IP or interface that reaches the other hosts: %w", ErrNoUnderlay)
	}
	names := make([]string, 0, len(pool))
	for _, c := range pool {
		names = append(names, fmt.Sprintf("%s (%s)", c.link.Attrs().Name, c.addr))
	}
	return Underlay{}, fmt.Errorf("no default route and %d interfaces with a global IPv4 address: %s; set ADVERTISE to the one that reaches the other hosts: %w",
		len(pool), strings.Join(names, ", "), ErrNoUnderlay)
}

// defaultRouteLink returns the link index of the preferred IPv4 default route
// in the main table, or 0 when there is none.
func (k *Kernel) defaultRouteLink() (int, error) {
	routes, err := k.mainRoutes()
	if err != nil {
		return 0, fmt.Errorf("finding the default route: %w", err)
	}
	best, bestPrio := 0, -1
	for _, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		idx := r.LinkIndex
		if idx == 0 && len(r.MultiPath) > 0 {
			idx = r.MultiPath[0].LinkIndex
		}
		if idx == 0 {
			continue // blackhole/unreachable default
		}
		if bestPrio < 0 || r.Priority < bestPrio {
			best, bestPrio = idx, r.Priority
		}
	}
	return best, nil
}

// globalAddrs lists the link's IPv4 addresses of global scope, primary first.
func (k *Kernel) globalAddrs(l netlink.Link) ([]netip.Addr, error) {
	addrs, err := k.nl.AddrList(l, unix.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("list ipv4 addresses of %q: %w", l.Attrs().Name, err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		if a.Scope != unix.RT_SCOPE_UNIVERSE {
			continue
		}
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
			out = append(out, ip)
		}
	}
	return out, nil
}
