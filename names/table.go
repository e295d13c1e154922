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
//
// Lookups read an index of the decoded records by network and name, kept
// by a subscription to the names records, rather than listing and decoding
// every record per query: a query then costs the few entries that hold its
// name, and none for a name nobody holds (every upstream name). A record
// enters the index when the gossip layer hands it to subscribers, moments
// after it is stored; a new Table learns the records present when it is
// made the same way.
type Table struct {
	c gossip.Replicated

	mu     sync.Mutex
	rot    map[nameKey]uint32          // rotation counter per network and name
	byKey  map[string]Entry            // decoded live records by gossip key
	byName map[nameKey]map[string]bool // network and name → keys of the records holding it
}

// nameKey is one name on one network.
type nameKey struct {
	subnet netip.Prefix
	name   string
}

// NewTable returns a Table over c's records. It subscribes to them for c's
// lifetime: make one per cluster.
func NewTable(c gossip.Replicated) *Table {
	t := &Table{c: c, rot: map[nameKey]uint32{}, byKey: map[string]Entry{}, byName: map[nameKey]map[string]bool{}}
	c.Subscribe(Kind, t.update)
	return t
}

// update follows one change of a names record: the key's previous entry
// leaves the index, the current one enters it when it decodes.
func (t *Table) update(_, cur *gossip.Record) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.byKey[cur.Key]; ok {
		delete(t.byKey, cur.Key)
		for _, n := range old.Names {
			k := nameKey{old.Subnet, n}
			delete(t.byName[k], cur.Key)
			if len(t.byName[k]) == 0 {
				delete(t.byName, k)
				delete(t.rot, k)
			}
		}
	}
	if cur.Deleted {
		return
	}
	e, err := Decode(*cur)
	if err != nil {
		return
	}
	t.byKey[cur.Key] = e
	for _, n := range e.Names {
		k := nameKey{e.Subnet, n}
		if t.byName[k] == nil {
			t.byName[k] = map[string]bool{}
		}
		t.byName[k][cur.Key] = true
	}
}

// Lookup returns the addresses holding name on the network subnet, in an
// order that rotates with every lookup (as Docker's resolver does);
// an empty list when nobody holds it.
func (t *Table) Lookup(subnet netip.Prefix, name string) []netip.Addr {
	k := nameKey{subnet, name}
	t.mu.Lock()
	var holders []Entry
	for key := range t.byName[k] {
		if e, ok := t.byKey[key]; ok {
			holders = append(holders, e)
		}
	}
	t.mu.Unlock()
	if len(holders) == 0 {
		return nil
	}
	live := t.liveHosts()
	var addrs []netip.Addr
	for _, e := range holders {
		if live[e.Host] && t.endpointOf(e) {
			addrs = append(addrs, e.Address)
		}
	}
	if len(addrs) < 2 {
		return addrs
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	addrs = slices.Compact(addrs)
	t.mu.Lock()
	n := int(t.rot[k] % uint32(len(addrs)))
	t.rot[k]++
	t.mu.Unlock()
	return append(addrs[n:], addrs[:n]...)
}

// endpointOf reports whether the endpoint record of e's address exists and
// is e's host's.
func (t *Table) endpointOf(e Entry) bool {
	ep, ok := t.c.Get(kindEndpoint, endpointKey(e.Subnet, e.Address))
	return ok && !ep.Deleted && ep.Owner == e.Host
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
		if !t.endpointOf(e) {
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
