package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// addrSetType is the type of grapevine's ipsets: IPv4 addresses.
const addrSetType = "hash:ip"

// ensureAddrSet returns the ipset name, created (hash:ip, inet) when
// missing; a set of that name of another type is refused, naming the fix.
// Caller holds mu.
func (k *Kernel) ensureAddrSet(name string) (*netlink.IPSetResult, error) {
	set, err := k.nl.IpsetList(name)
	if isNoSet(err) {
		if err := k.nl.IpsetCreate(name, addrSetType, netlink.IpsetCreateOptions{Family: unix.NFPROTO_IPV4}); err != nil {
			return nil, fmt.Errorf("create ipset %s (%s): %w", name, addrSetType, err)
		}
		k.log.WithField("set", name).Info("created ipset")
		set, err = k.nl.IpsetList(name)
	}
	if err != nil {
		return nil, fmt.Errorf("read ipset %s: %w", name, err)
	}
	if set.TypeName != addrSetType || set.Family != unix.NFPROTO_IPV4 {
		return nil, fmt.Errorf("ipset %s exists with type %s family %d, not %s inet: it is not grapevine's; destroy it (ipset destroy %s) and grapevine recreates it",
			name, set.TypeName, set.Family, addrSetType, name)
	}
	return set, nil
}

// fillAddrSet adds the addresses of want that set lacks and, unless
// keepOthers, deletes the others; it returns what it added and deleted.
// Caller holds mu.
func (k *Kernel) fillAddrSet(set *netlink.IPSetResult, want []netip.Addr, keepOthers bool) (added, deleted []netip.Addr, err error) {
	have := map[netip.Addr]bool{}
	for _, e := range set.Entries {
		if a, ok := netip.AddrFromSlice(e.IP); ok {
			have[a.Unmap()] = true
		}
	}
	var errs []error
	for _, a := range want {
		if have[a] {
			delete(have, a)
			continue
		}
		if err := k.nl.IpsetAdd(set.SetName, &netlink.IPSetEntry{IP: a.AsSlice(), Replace: true}); err != nil {
			errs = append(errs, fmt.Errorf("add %s to ipset %s: %w", a, set.SetName, err))
			continue
		}
		added = append(added, a)
	}
	if keepOthers {
		return added, nil, errors.Join(errs...)
	}
	stale := make([]netip.Addr, 0, len(have))
	for a := range have {
		stale = append(stale, a)
	}
	slices.SortFunc(stale, netip.Addr.Compare)
	for _, a := range stale {
		if err := k.nl.IpsetDel(set.SetName, &netlink.IPSetEntry{IP: a.AsSlice()}); err != nil && !isNoSet(err) {
			errs = append(errs, fmt.Errorf("delete %s from ipset %s: %w", a, set.SetName, err))
			continue
		}
		deleted = append(deleted, a)
	}
	return added, deleted, errors.Join(errs...)
}

// destroyAddrSet removes the set; a missing set is success. The rules that
// refer to it must be gone first. Caller holds mu.
func (k *Kernel) destroyAddrSet(name string) error {
	err := k.nl.IpsetDestroy(name)
	if err == nil {
		k.log.WithField("set", name).Info("removed ipset")
	}
	if err == nil || isNoSet(err) {
		return nil
	}
	return fmt.Errorf("destroy ipset %s (does a rule outside grapevine still use it?): %w", name, err)
}
