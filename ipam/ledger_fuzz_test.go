package ipam

import (
	"fmt"
	"net/netip"
	"testing"

	"grapevine/gossip"
)

// FuzzBlockRecord decodes arbitrary block records of one pool: never a
// panic, and an accepted one is a range of the pool, written by someone,
// naming an owner.
func FuzzBlockRecord(f *testing.F) {
	f.Add("198.19.33.0/24/198.19.33.64", "b", []byte(`{"version":1,"last":"198.19.33.127","owner":"c"}`))
	f.Add("198.19.33.0/24/198.19.33.64", "rogue", []byte(`{"version":1,"last":"198.19.33.63","owner":"rogue"}`))
	f.Add("198.19.33.0/24/198.19.34.0", "a", []byte(`{"version":1,"last":"198.19.34.9","owner":"a","reclaimed":true}`))
	f.Add("198.19.33.0/24/198.19.33.0", "a", []byte(`{"last":"198.19.33.255"}`))
	subnet := netip.MustParsePrefix("198.19.33.0/24")
	f.Fuzz(func(t *testing.T, key, writer string, value []byte) {
		cd, ok := parseBlockRecord(subnet, &gossip.Record{Kind: kindBlock, Key: key, Owner: writer, Value: value, Version: 7})
		if !ok {
			return
		}
		switch {
		case cd.s.lo > cd.s.hi || cd.s.hi > 255:
			t.Fatalf("span %+v accepted in a /24", cd.s)
		case cd.owner == "" || cd.writer != writer || cd.key != key || cd.version != 7:
			t.Fatalf("record parsed as %+v", cd)
		}
	})
}

// FuzzLedger applies arbitrary block records (first, size, writer, owner,
// version from each 4 bytes of ops) to the ledger of a /26 divided among
// a, b and c, as settle does: only records whose writer owns all they cover
// and that are newer than it change anything. The entries always stay
// sorted, disjoint and covering the pool, and an address changes owner only
// by a record its owner wrote.
func FuzzLedger(f *testing.F) {
	f.Add([]byte{32, 4, 1, 0, 48, 4, 0, 2, 0, 6, 2, 2})
	f.Add([]byte{0, 6, 3, 3, 16, 2, 3, 3, 16, 4, 0, 3})
	f.Add([]byte{63, 1, 2, 0, 0, 0, 0, 0, 200, 255, 255, 255})
	names := []string{"a", "b", "c", "rogue"}
	f.Fuzz(func(t *testing.T, ops []byte) {
		const n = 64
		l := newLedger(divide(n, span{0, n - 1}, names[:3]))
		owner := func(o uint32) string {
			for _, e := range l.Entries {
				if e.Lo <= o && o <= e.Hi {
					return e.Owner
				}
			}
			t.Fatalf("address %d in no entry: %+v", o, l.Entries)
			return ""
		}
		version := uint64(0)
		for i := 0; i+4 <= len(ops) && i < 400; i += 4 {
			lo := uint32(ops[i]) % n
			hi := min(lo+uint32(1)<<(ops[i+1]%7)-1, n-1)
			cd := blockCand{s: span{lo, hi}, writer: names[ops[i+2]%4], owner: names[ops[i+3]%4], key: fmt.Sprint(lo)}
			version += uint64(ops[i+3]%3) + uint64(ops[i+2]%2) // ties and repeats included
			cd.version = version
			before := make([]string, n)
			for o := range uint32(n) {
				before[o] = owner(o)
			}
			owns, newest := l.covered(cd.s, cd.writer)
			if owns && cd.version > newest {
				l.paint(cd)
			}
			next := uint32(0)
			for _, e := range l.Entries {
				if e.Lo != next || e.Hi < e.Lo {
					t.Fatalf("entries not sorted, disjoint and covering: %+v", l.Entries)
				}
				next = e.Hi + 1
			}
			if next != n {
				t.Fatalf("entries end at %d: %+v", next, l.Entries)
			}
			for o := range uint32(n) {
				if now := owner(o); now != before[o] && cd.writer != before[o] {
					t.Fatalf("address %d went from %s to %s by a record of %s", o, before[o], now, cd.writer)
				}
			}
		}
	})
}
