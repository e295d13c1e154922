package ipam

import (
	"testing"
	"time"

	"grapevine/gossip"
)

// TestClusterAllocatesWhileDriverStalled: host b's other gossip consumer
// (the driver, whose callbacks wait on kernel work) is stuck in a callback
// for 10 s, while host a agrees on a new pool's division with b, allocates
// every address of its own blocks and then gets more by a donation from b.
// Each allocation takes well under 1 s: IPAM's Paxos answers and donations
// on b run on IPAM's own delivery queue, not behind the stalled callback.
func TestClusterAllocatesWhileDriverStalled(t *testing.T) {
	_, nodes := startCluster(t, fastCfg(), "a", "b")
	a, b := nodes[0], nodes[1]

	// Stall b's default delivery queue, where the driver subscribes.
	release, entered := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(release) })
	b.gc.Subscribe("driver-stall", func(_, cur *gossip.Record) {
		close(entered)
		select {
		case <-release:
		case <-time.After(10 * time.Second):
		}
	})
	if err := b.gc.Put("driver-stall", "b", []byte("x")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the stalling callback never ran")
	}

	// A /28 split between a and b: a runs out of its half and needs b.
	id := a.pool("198.19.40.0/28", "")
	for i := range 13 { // 16 less network, broadcast and gateway
		start := time.Now()
		ip, err := a.addr(id, "")
		if err != nil {
			t.Fatalf("allocation %d on a while b's driver is stalled: %v", i+1, err)
		}
		if took := time.Since(start); took > time.Second {
			t.Fatalf("allocation %d (%s) took %v while b's driver was stalled; want < 1s", i+1, ip, took)
		}
	}
	// The first division gave a half of the 16 addresses: 13 addresses
	// include at least five that b donated.
	if got := len(a.allocations(id)); got != 13 {
		t.Fatalf("a holds %d addresses, want 13", got)
	}
}
