package names_test

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"grapevine/gossip"
	"grapevine/gossip/gossiptest"
	"grapevine/names"
)

var (
	subnet = netip.MustParsePrefix("198.19.7.0/24")
	epID   = strings.Repeat("ab", 32)
)

func rec(t *testing.T, key, owner string, e names.Entry) gossip.Record {
	t.Helper()
	v, err := names.Encode(e)
	if err != nil {
		t.Fatalf("Encode(%v): %v", e, err)
	}
	return gossip.Record{Kind: names.Kind, Key: key, Owner: owner, Value: v}
}

func TestDecodeRoundTrip(t *testing.T) {
	addr := netip.MustParseAddr("198.19.7.5")
	r := rec(t, names.Key(subnet, addr, "h1"), "h1", names.Entry{Endpoint: epID, Names: []string{"db", "proj_db_1"}})
	e, err := names.Decode(r)
	if err != nil {
		t.Fatal(err)
	}
	if e.Subnet != subnet || e.Address != addr || e.Host != "h1" || e.Endpoint != epID || !slices.Equal(e.Names, []string{"db", "proj_db_1"}) {
		t.Errorf("Decode = %+v", e)
	}
}

// TestDecodeRefuses: every malformed record is refused, none panics.
func TestDecodeRefuses(t *testing.T) {
	good := `{"v":1,"endpoint":"` + epID + `","names":["db"]}`
	key := "198.19.7.0/24/198.19.7.5/h1"
	for _, c := range []struct {
		name, key, owner, value string
	}{
		{"writer is not the key's host", key, "h2", good},
		{"no host", "198.19.7.0/24/198.19.7.5/", "h1", good},
		{"address outside subnet", "198.19.7.0/24/198.19.8.5/h1", "h1", good},
		{"network address", "198.19.7.0/24/198.19.7.0/h1", "h1", good},
		{"subnet not masked", "198.19.7.1/24/198.19.7.5/h1", "h1", good},
		{"ipv6", "fd00::/64/fd00::5/h1", "h1", good},
		{"not json", key, "h1", `{`},
		{"version", key, "h1", `{"v":2,"endpoint":"` + epID + `","names":["db"]}`},
		{"endpoint id", key, "h1", `{"v":1,"endpoint":"xyz","names":["db"]}`},
		{"no names", key, "h1", `{"v":1,"endpoint":"` + epID + `","names":[]}`},
		{"upper case", key, "h1", `{"v":1,"endpoint":"` + epID + `","names":["DB"]}`},
		{"trailing dot", key, "h1", `{"v":1,"endpoint":"` + epID + `","names":["db."]}`},
		{"empty label", key, "h1", `{"v":1,"endpoint":"` + epID + `","names":["a..b"]}`},
		{"space", key, "h1", `{"v":1,"endpoint":"` + epID + `","names":["a b"]}`},
		{"long label", key, "h1", `{"v":1,"endpoint":"` + epID + `","names":["` + strings.Repeat("a", 64) + `"]}`},
		{"unsorted", key, "h1", `{"v":1,"endpoint":"` + epID + `","names":["b","a"]}`},
		{"repeated", key, "h1", `{"v":1,"endpoint":"` + epID + `","names":["a","a"]}`},
		{"too many", key, "h1", `{"v":1,"endpoint":"` + epID + `","names":["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q"]}`},
		{"oversize", key, "h1", `{"v":1,"endpoint":"` + epID + `","names":["` + strings.Repeat("a", 63) + `"],"pad":"` + strings.Repeat("x", names.MaxValueBytes) + `"}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := names.Decode(gossip.Record{Kind: names.Kind, Key: c.key, Owner: c.owner, Value: []byte(c.value)})
			if err == nil {
				t.Fatalf("Decode accepted %s", c.value)
			}
			if !errors.Is(err, names.ErrBadRecord) && !errors.Is(err, gossip.ErrNotOwner) {
				t.Errorf("error %v is neither ErrBadRecord nor ErrNotOwner", err)
			}
		})
	}
}

func TestCanonical(t *testing.T) {
	got := names.Canonical([]string{"Web.", "db", "web", "a b", "", "db"})
	if !slices.Equal(got, []string{"db", "web"}) {
		t.Errorf("Canonical = %q, want [db web]", got)
	}
}

// node is one gossip host with the names validator, as the plugin sets it up.
func node(t *testing.T, n *gossiptest.Net, name string) *gossip.Cluster {
	t.Helper()
	c := n.Node(t, name, nil)
	c.RegisterValidator(names.Kind, names.Validator(c))
	return c
}

func put(t *testing.T, c gossip.Replicated, kind, key string, v []byte) {
	t.Helper()
	if err := c.Put(kind, key, v); err != nil {
		t.Fatalf("Put %s %s: %v", kind, key, err)
	}
}

func publish(t *testing.T, c gossip.Replicated, addr string, ns ...string) {
	t.Helper()
	a := netip.MustParseAddr(addr)
	put(t, c, "endpoint", subnet.String()+"/"+a.String(), []byte("{}"))
	v, err := names.Encode(names.Entry{Endpoint: epID, Names: ns})
	if err != nil {
		t.Fatal(err)
	}
	put(t, c, names.Kind, names.Key(subnet, a, c.LocalName()), v)
}

func lookup(tb *names.Table, name string) []netip.Addr { return tb.Lookup(subnet, name) }

// TestForgedRecordsChangeNothing: a member writes names for another host's
// endpoint, in another host's name, oversized and malformed; the observer's
// answers stay what the honest host published.
func TestForgedRecordsChangeNothing(t *testing.T) {
	n := gossiptest.NewNet()
	obs := node(t, n, "a")
	holder := node(t, n, "b")
	rogue := n.Node(t, "m", nil) // writes without checking anything
	bare := n.Node(t, "z", nil)  // stores everything: only the checks where names are used protect it
	gossiptest.Eventually(t, 10*time.Second, "4 members", func() bool { return len(obs.Members()) == 4 && len(rogue.Members()) == 4 })
	tb := names.NewTable(obs)

	publish(t, holder, "198.19.7.5", "db")
	gossiptest.Eventually(t, 10*time.Second, "db answers on a", func() bool { return len(lookup(tb, "db")) == 1 })
	gossiptest.Eventually(t, 10*time.Second, "m has b's endpoint", func() bool {
		_, ok := rogue.Get("endpoint", subnet.String()+"/198.19.7.5")
		return ok
	})

	bAddr := netip.MustParseAddr("198.19.7.5")
	forged := func(e names.Entry) []byte { v, _ := names.Encode(e); return v }
	// names for b's endpoint address, in m's own name
	put(t, rogue, names.Kind, names.Key(subnet, bAddr, "m"), forged(names.Entry{Endpoint: epID, Names: []string{"db", "evil"}}))
	// in b's name
	put(t, rogue, names.Kind, names.Key(subnet, bAddr, "b"), forged(names.Entry{Endpoint: epID, Names: []string{"evil"}}))
	// b's record deleted by m
	if err := rogue.Delete(names.Kind, names.Key(subnet, bAddr, "b")); err != nil {
		t.Fatal(err)
	}
	// oversized and malformed, for m's own endpoint
	put(t, rogue, "endpoint", subnet.String()+"/198.19.7.9", []byte("{}"))
	put(t, rogue, names.Kind, names.Key(subnet, netip.MustParseAddr("198.19.7.9"), "m"),
		[]byte(`{"v":1,"endpoint":"`+epID+`","names":["evil"],"pad":"`+strings.Repeat("x", names.MaxValueBytes)+`"}`))
	put(t, rogue, names.Kind, names.Key(subnet, netip.MustParseAddr("198.19.7.10"), "m"),
		[]byte(`{"v":1,"endpoint":"`+epID+`","names":["EVIL","evil"]}`))
	// a valid record of m's, sent last: once a has it, a has seen the rest
	publish(t, rogue, "198.19.7.11", "marker")
	gossiptest.Eventually(t, 10*time.Second, "marker answers on a", func() bool { return len(lookup(tb, "marker")) == 1 })
	time.Sleep(500 * time.Millisecond) // a few push/pull rounds

	bareTable := names.NewTable(bare)
	gossiptest.Eventually(t, 10*time.Second, "marker answers on z", func() bool { return len(lookup(bareTable, "marker")) == 1 })
	for host, tb := range map[string]*names.Table{"a": tb, "z (no validator)": bareTable} {
		if got := lookup(tb, "evil"); len(got) != 0 {
			t.Errorf("%s: forged name evil answers %v", host, got)
		}
	}
	// without the validator m's tombstone of b's record would stick: only
	// the validator keeps db
	if got := lookup(tb, "db"); !slices.Equal(got, []netip.Addr{bAddr}) {
		t.Errorf("db answers %v, want only %s", got, bAddr)
	}
	var refused uint64
	for _, r := range obs.RefusalStats() {
		if r.Peer == "m" {
			refused += r.Count
		}
	}
	if refused == 0 {
		t.Errorf("observer counted no refusal from m: %+v", obs.RefusalStats())
	}
}

// TestNamesFollowHosts: two holders of one alias both answer, in rotating
// order; a name goes with its record and with its host's death; an
// endpoint record of another host disables a names record where it is used.
func TestNamesFollowHosts(t *testing.T) {
	n := gossiptest.NewNet()
	obs := node(t, n, "a")
	b := node(t, n, "b")
	c := node(t, n, "c")
	gossiptest.Eventually(t, 10*time.Second, "3 members", func() bool { return len(obs.Members()) == 3 })
	tb := names.NewTable(obs)
	publish(t, b, "198.19.7.5", "web")
	publish(t, c, "198.19.7.6", "solo", "web")
	gossiptest.Eventually(t, 10*time.Second, "two holders of web", func() bool { return len(lookup(tb, "web")) == 2 })
	first, second := lookup(tb, "web"), lookup(tb, "web")
	if first[0] == second[0] || !slices.Contains(second, first[0]) {
		t.Errorf("order does not rotate: %v then %v", first, second)
	}
	if got := tb.Lookup(netip.MustParsePrefix("198.19.8.0/24"), "web"); len(got) != 0 {
		t.Errorf("web answers on another network: %v", got)
	}

	if err := b.Delete(names.Kind, names.Key(subnet, netip.MustParseAddr("198.19.7.5"), "b")); err != nil {
		t.Fatal(err)
	}
	gossiptest.Eventually(t, 10*time.Second, "b's web gone", func() bool { return len(lookup(tb, "web")) == 1 })

	n.Kill("c")
	gossiptest.Eventually(t, 20*time.Second, "c's names gone with c", func() bool { return len(lookup(tb, "solo")) == 0 })
}

// TestValidatorRefusesAnotherHostsAddress: a names record for an address
// whose endpoint record is another host's is refused on receipt; one whose
// endpoint record has not arrived yet is stored and checked where used.
func TestValidatorRefusesAnotherHostsAddress(t *testing.T) {
	n := gossiptest.NewNet()
	c := n.Node(t, "a", nil)
	put(t, c, "endpoint", subnet.String()+"/198.19.7.5", []byte("{}")) // a's endpoint
	check := names.Validator(c)
	addr := netip.MustParseAddr("198.19.7.5")
	r := rec(t, names.Key(subnet, addr, "m"), "m", names.Entry{Endpoint: epID, Names: []string{"db"}})
	if err := check(r); !errors.Is(err, gossip.ErrNotOwner) {
		t.Errorf("record of m for a's endpoint: err = %v, want ErrNotOwner", err)
	}
	other := rec(t, names.Key(subnet, netip.MustParseAddr("198.19.7.6"), "m"), "m", names.Entry{Endpoint: epID, Names: []string{"db"}})
	if err := check(other); err != nil {
		t.Errorf("record of m for an address with no endpoint record yet: %v", err)
	}
	if err := check(gossip.Record{Kind: names.Kind, Key: names.Key(subnet, addr, "a"), Owner: "m", Deleted: true}); !errors.Is(err, gossip.ErrNotOwner) {
		t.Errorf("tombstone of a's record by m: err = %v, want ErrNotOwner", err)
	}
}
