package ipam

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
)

// Aux lists across hosts: every host must create a network with the same
// --aux-address list, because an aux address is reserved only on the hosts
// that list it and its block's owner would otherwise hand it to a
// container. Each host publishes its list in its pool definition. A host
// refuses endpoint addresses while another host lists an aux address it
// lacks (so it never hands one out), and refuses an aux address that a host
// which has finished creating the network (Served) does not list (so a
// late, different creation fails at once instead of stopping the others).

// auxList is p's --aux-address list, sorted; nil when it is unknown.
// Caller holds d.mu.
func (p *pool) auxList() []string {
	if p.aux == nil {
		return nil
	}
	out := make([]string, 0, len(p.aux))
	for _, a := range slices.SortedFunc(maps.Keys(p.aux), netip.Addr.Compare) {
		out = append(out, a.String())
	}
	return out
}

// restoreAux rebuilds p's aux list from its stored form (null: unknown).
// Every entry must be an address p holds.
func (p *pool) restoreAux(list []string) error {
	if list == nil {
		p.aux = nil
		return nil
	}
	for _, s := range list {
		a, err := netip.ParseAddr(s)
		if err != nil || !p.prefix.Contains(a) || !p.allocated(addrToOrd(p.prefix, a)) {
			return failf(ErrInvalid, "stored --aux-address %q is not an address the pool holds", s)
		}
		p.aux[a] = true
	}
	return nil
}

// otherAuxLists returns the other hosts' published aux lists of p's subnet
// by host name, sorted by name, with whether each host has served an
// endpoint; hosts whose list is unknown are left out. Caller holds d.mu.
func (d *Driver) otherAuxLists(p *pool) (hosts []string, lists map[string]map[netip.Addr]bool, served map[string]bool) {
	prefix := subnetKey(p.prefix) + "/"
	lists, served = map[string]map[netip.Addr]bool{}, map[string]bool{}
	for _, r := range d.cl.r.List(kindPool) {
		node, ok := strings.CutPrefix(r.Key, prefix)
		if !ok || strings.Contains(node, "/") || node == d.cl.self || node != r.Owner {
			continue
		}
		var def poolDef
		if decodeRec(r, &def) != nil || def.Aux == nil {
			continue
		}
		set := map[netip.Addr]bool{}
		for _, s := range def.Aux {
			if a, err := netip.ParseAddr(s); err == nil && p.prefix.Contains(a) {
				set[a] = true
			}
		}
		hosts = append(hosts, node)
		lists[node], served[node] = set, def.Served
	}
	slices.Sort(hosts)
	return hosts, lists, served
}

// checkAuxForEndpoint refuses to hand out addresses while another host
// lists an aux address this host's network lacks. Caller holds d.mu.
func (d *Driver) checkAuxForEndpoint(p *pool) error {
	if p.aux == nil {
		return nil
	}
	hosts, lists, _ := d.otherAuxLists(p)
	for _, h := range hosts {
		for _, a := range slices.SortedFunc(maps.Keys(lists[h]), netip.Addr.Compare) {
			if !p.aux[a] {
				return failf(ErrConflict, "host %s created network %s with --aux-address %s, which this host's network lacks, so this host could hand it to a container: every host must create the network with the same --aux-address list; recreate it here with the same list (or fix it on %s)",
					h, p.prefix, a, h)
			}
		}
	}
	return nil
}

// checkAuxExtra refuses an aux address that a host which has finished
// creating the network does not list. Caller holds d.mu.
func (d *Driver) checkAuxExtra(p *pool, a netip.Addr) error {
	if p.aux == nil {
		return nil
	}
	hosts, lists, served := d.otherAuxLists(p)
	for _, h := range hosts {
		if served[h] && !lists[h][a] {
			return failf(ErrConflict, "--aux-address %s: host %s created network %s without it, and its owner there could hand it to a container: every host must create the network with the same --aux-address list; create it here with %s's list (or fix it on %s)",
				a, h, p.prefix, h, h)
		}
	}
	return nil
}
