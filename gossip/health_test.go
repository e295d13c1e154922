package gossip_test

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"grapevine/gossip"
	"grapevine/gossip/gossiptest"
)

// A member whose GOSSIP_KEY no longer matches (it switched to a key the
// others lack) is named by address in Health (the doctor's key mismatch
// hint), and members' answered probes are recorded.
func TestHealthNamesUndecryptablePeerAndContacts(t *testing.T) {
	oldKey, newKey := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	net, nodes := startCluster(t, 3, func(i int, cfg *gossip.Config) { cfg.Keys = [][]byte{oldKey} })
	gossiptest.Eventually(t, 20*time.Second, "n0 to record an answered probe of n1", func() bool {
		c, ok := nodes[0].c.Health().Contacts[nodes[1].name]
		return ok && time.Since(c.At) < time.Minute
	})
	if h := nodes[0].c.Health(); len(h.Undecryptable) != 0 {
		t.Fatalf("undecryptable gossip counted while every member shares the key: %v", h.Undecryptable)
	}
	stray := nodes[2]
	for _, step := range []func() error{
		func() error { return stray.c.InstallKey(newKey) },
		func() error { return stray.c.UseKey(newKey) },
		func() error { return stray.c.RemoveKey(oldKey) },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	ap, err := netip.ParseAddrPort(net.Addr(stray.name))
	if err != nil {
		t.Fatal(err)
	}
	gossiptest.Eventually(t, 30*time.Second, "n0 to count undecryptable gossip from n2's address "+ap.Addr().String(), func() bool {
		return nodes[0].c.Health().Undecryptable[ap.Addr().String()] > 0
	})
}
