package names

import (
	"net/netip"
	"slices"
	"sort"
	"sync"

	"grapevine/gossip"
)

// Table answers names from the replicated names records. A record counts
// only while its host is a live member and the endpoint record of its
// address is that host's: the check every other host's record gets where it
// is used.
type Table struct {
	c gossip.Replicated

	mu  sync.Mutex
	rot map[string]uint32 // rotation counter per "<subnet> <name>"
}

// NewTable returns a Table over c's records.
func NewTable(c gossip.Replicated) *Table {
	return &Table{c: c, rot: map[string]uint32{}}
}

// Lookup returns the addresses holding name on the network subnet, in an
// order that rotates with every lookup (as Docker's resolver does);
// an empty list when nobody holds it.
func (t *Table) Lookup(subnet netip.Prefix, name string) []netip.Addr {
	live := t.liveHosts()
	var addrs []netip.Addr
	for _, e := range t.entries(subnet, live) {
		if slices.Contains(e.Names, name) {
			addrs = append(addrs, e.Address)
		}
	}
	if len(addrs) < 2 {
		return addrs
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	addrs = slices.Compact(addrs)
	t.mu.Lock()
	k := subnet.String() + " " + name
	n := int(t.rot[k] % uint32(len(addrs)))
	t.rot[k]++
	t.mu.Unlock()
	return append(addrs[n:], addrs[:n]...)
}

// Entries lists the usable records, by subnet then address; subnet invalid
// lists every network's.
func (t *Table) Entries(subnet netip.Prefix) []Entry {
	out := t.entries(subnet, t.liveHosts())
	sort.Slice(out, func(i, j int) bool {
		if c := out[i].Subnet.Addr().Compare(out[j].Subnet.Addr()); c != 0 {
			return c < 0
		}
		return out[i].Address.Less(out[j].Address)
	})
	return out
}

func (t *Table) entries(subnet netip.Prefix, live map[string]bool) []Entry {
	var out []Entry
	for _, r := range t.c.List(Kind) {
		if r.Deleted || !live[r.Owner] {
			continue
		}
		e, err := Decode(r)
		if err != nil || (subnet.IsValid() && e.Subnet != subnet) {
			continue
		}
		ep, ok := t.c.Get(kindEndpoint, endpointKey(e.Subnet, e.Address))
		if !ok || ep.Deleted || ep.Owner != e.Host {
			continue
		}
		out = append(out, e)
	}
	return out
}

func (t *Table) liveHosts() map[string]bool {
	live := map[string]bool{}
	for _, m := range t.c.Members() {
		if m.Self || m.State == gossip.StateAlive {
			live[m.Name] = true
		}
	}
	return live
}
