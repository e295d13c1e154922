package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

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

// mainRoutes dumps the IPv4 routes of the main table, retrying a dump the
// kernel interrupted because the table changed meanwhile.
func (k *Kernel) mainRoutes() ([]netlink.Route, error) {
	var (
		routes []netlink.Route
		err    error
	)
	filter := &netlink.Route{Table: unix.RT_TABLE_MAIN}
	for range dumpRetries {
		routes, err = k.nl.RouteListFiltered(unix.AF_INET, filter, netlink.RT_FILTER_TABLE)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("list ipv4 routes of the main table: %w", err)
	}
	return routes, nil
}

// Routes lists IPv4 routes of the main table with a non-zero prefix length.
func (k *Kernel) Routes() ([]Route, error) {
	routes, err := k.mainRoutes()
	if err != nil {
		return nil, err
	}
	links, err := k.linkList()
	if err != nil {
		return nil, err
	}
	names := make(map[int]string, len(links))
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	var out []Route
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		if ones == 0 {
			continue
		}
		addr, ok := netip.AddrFromSlice(r.Dst.IP.To4())
		if !ok {
			continue
		}
		dev := names[r.LinkIndex]
		out = append(out, Route{
			Dst:  netip.PrefixFrom(addr, ones).Masked(),
			Dev:  dev,
			Ours: IsManagedName(dev),
		})
	}
	return out, nil
}
