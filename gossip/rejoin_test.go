package gossip_test

import (
	"bytes"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"grapevine/gossip"
	"grapevine/gossip/gossiptest"
)

// sees reports whether n's Members lists exactly the members of alive as
// alive and every other name of all as dead or left.
func sees(n *node, alive []string, all []*node) bool {
	got := map[string]gossip.MemberState{}
	for _, m := range n.c.Members() {
		got[m.Name] = m.State
	}
	for _, o := range all {
		st, ok := got[o.name]
		if slices.Contains(alive, o.name) != (ok && st == gossip.StateAlive) {
			return false
		}
	}
	return true
}

// TestPartitionHeal splits a cluster into groups, writes records on every
// side, heals, and checks that the groups merge again and every record
// reaches every member. Periodic push/pull is pushed out to 10 minutes, so
// records written during the partition can only cross by the rejoin rounds
// and the push/pulls triggered by members coming back. "long" partitions
// outlast memberlist's gossip to the dead, after which memberlist alone
// would never contact the other group again.
func TestPartitionHeal(t *testing.T) {
	for _, tc := range []struct {
		name   string
		groups [][]string
		long   bool
		// preload records of 100 bytes each written before the
		// partition, with a push/pull budget of 8 KiB: the state then
		// spans several push/pull windows.
		preload int
	}{
		{"lone node | pair, short", [][]string{{"n0"}, {"n1", "n2"}}, false, 0},
		{"pair | pair, short", [][]string{{"n0", "n1"}, {"n2", "n3"}}, false, 0},
		{"pair | pair, long", [][]string{{"n0", "n1"}, {"n2", "n3"}}, true, 0},
		{"three | three, long", [][]string{{"n0", "n1", "n2"}, {"n3", "n4", "n5"}}, true, 0},
		{"pair | pair, long, state of 3 windows", [][]string{{"n0", "n1"}, {"n2", "n3"}}, true, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const deadGossip = 500 * time.Millisecond
			size := 0
			for _, g := range tc.groups {
				size += len(g)
			}
			net, nodes := startCluster(t, size, func(_ int, cfg *gossip.Config) {
				cfg.PushPullInterval = 10 * time.Minute
				if tc.long {
					cfg.GossipToTheDeadTime = deadGossip
				}
				if tc.preload > 0 {
					cfg.PushPullBudget = 8 << 10
				}
			})
			for i := range tc.preload {
				key := fmt.Sprintf("198.18.%d.%d", i/256, i%256)
				if err := nodes[i%size].c.Put("preload", key, bytes.Repeat([]byte("p"), 70)); err != nil {
					t.Fatal(err)
				}
			}
			gossiptest.Eventually(t, 20*time.Second, "preloaded records everywhere", func() bool {
				for _, n := range nodes {
					if len(n.c.List("preload")) != tc.preload {
						return false
					}
				}
				return true
			})
			byName := map[string]*node{}
			for _, n := range nodes {
				byName[n.name] = n
			}

			// Members is read all along, while node events change it
			// (the race detector checks it is safe).
			stopReading := make(chan struct{})
			var readers sync.WaitGroup
			readers.Add(1)
			go func() {
				defer readers.Done()
				for {
					select {
					case <-stopReading:
						return
					default:
					}
					for _, n := range nodes {
						_ = n.c.Members()
						_ = n.c.LocalAddr()
					}
				}
			}()
			defer func() { close(stopReading); readers.Wait() }()

			net.Partition(tc.groups...)
			gossiptest.Eventually(t, 30*time.Second, "each group to see the others dead", func() bool {
				for _, g := range tc.groups {
					for _, name := range g {
						if !sees(byName[name], g, nodes) {
							return false
						}
					}
				}
				return true
			})
			deadAt := time.Now()

			// Writes on every side; the first member of each group also
			// writes one shared key, so the sides conflict.
			var want []gossip.Record
			for _, n := range nodes {
				if err := n.c.Put("partition", n.name, []byte("written during the partition")); err != nil {
					t.Fatal(err)
				}
				r, _ := n.c.Get("partition", n.name)
				want = append(want, r)
			}
			for _, g := range tc.groups {
				if err := byName[g[0]].c.Put("partition", "shared", []byte(g[0])); err != nil {
					t.Fatal(err)
				}
			}
			// Let every queued broadcast be spent on the unreachable side,
			// so that nothing but a push/pull can carry the writes across.
			gossiptest.Eventually(t, 10*time.Second, "broadcast queues to drain", func() bool {
				for _, n := range nodes {
					if n.c.Stats().QueuedBroadcasts != 0 {
						return false
					}
				}
				return true
			})
			if tc.long {
				// The partition must outlast memberlist's gossip to the
				// dead (and the probe round that then forgets them); the
				// condition is the time itself.
				gossiptest.Eventually(t, 30*time.Second, "the partition to outlast gossip to the dead", func() bool {
					return time.Since(deadAt) > 4*deadGossip
				})
			}
			other := tc.groups[1][0]
			if _, ok := byName[tc.groups[0][0]].c.Get("partition", other); ok {
				t.Fatalf("%s's record crossed the partition", other)
			}
			before := map[string]gossip.Stats{}
			for _, n := range nodes {
				before[n.name] = n.c.Stats()
			}

			net.Heal()
			healed := time.Now()
			var merged time.Duration
			gossiptest.Eventually(t, 20*time.Second, "one cluster with every member alive everywhere", func() bool {
				for _, n := range nodes {
					if n.c.Stats().Members != size || !sees(n, names(nodes), nodes) {
						return false
					}
				}
				merged = time.Since(healed)
				return true
			})
			var shared gossip.Record
			gossiptest.Eventually(t, 20*time.Second, "every record on every member", func() bool {
				for _, r := range want {
					if !allHave(nodes, r) {
						return false
					}
				}
				first, ok := nodes[0].c.Get("partition", "shared")
				if !ok {
					return false
				}
				for _, n := range nodes[1:] {
					if r, ok := n.c.Get("partition", "shared"); !ok || !gossip.SameVersion(&r, &first) {
						return false
					}
				}
				shared = first
				return true
			})
			delivered := time.Since(healed)
			var rejoins, triggered uint64
			for _, n := range nodes {
				st := n.c.Stats()
				rejoins += st.RejoinAttempts - before[n.name].RejoinAttempts
				triggered += st.TriggeredPushPulls - before[n.name].TriggeredPushPulls
			}
			t.Logf("partitioned %v after every side saw the other dead; after heal: one cluster in %v, every record on all %d members in %v (push/pull interval 10m); rejoin attempts %d, triggered push/pulls %d; shared key won by %s",
				healed.Sub(deadAt).Round(time.Millisecond), merged.Round(time.Millisecond), size,
				delivered.Round(time.Millisecond), rejoins, triggered, shared.Owner)
			if rejoins+triggered == 0 {
				t.Error("the partition healed without a rejoin or a triggered push/pull")
			}
		})
	}
}

func names(nodes []*node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.name)
	}
	return out
}

// TestGracefulLeaverNotRejoined checks that rejoin rounds contact members
// that failed but never members that left gracefully.
func TestGracefulLeaverNotRejoined(t *testing.T) {
	// The leaver gets the production leave timeout: with the harness's
	// 200 ms, a loaded machine can drop its leave announcement (the dead
	// message that follows supersedes the queued update), and peers then
	// rightly report a failure instead of a leave.
	net, nodes := startCluster(t, 4, func(i int, cfg *gossip.Config) {
		if i == 2 {
			cfg.LeaveTimeout = gossip.DefaultLeaveTimeout
		}
	})
	left, failed := nodes[2], nodes[3]
	left.stop(t, net) // graceful: announces its leave
	net.Kill("n3")    // abrupt: a failure
	remaining := nodes[:2]
	gossiptest.Eventually(t, 30*time.Second, "n2 left and n3 dead on n0 and n1", func() bool {
		for _, n := range remaining {
			st := map[string]gossip.MemberState{}
			for _, m := range n.c.Members() {
				st[m.Name] = m.State
			}
			if st[left.name] != gossip.StateLeft || st[failed.name] != gossip.StateDead {
				return false
			}
		}
		return true
	})
	leftDials, failedDials := net.Dials(left.name), net.Dials(failed.name)
	// Several rejoin rounds (every 500 ms here) must try the failed member.
	gossiptest.Eventually(t, 30*time.Second, "rejoin rounds to contact the failed member", func() bool {
		return net.Dials(failed.name) >= failedDials+6
	})
	if got := net.Dials(left.name); got != leftDials {
		t.Errorf("the gracefully left member was contacted %d times since it left", got-leftDials)
	}
	var attempts uint64
	for _, n := range remaining {
		attempts += n.c.Stats().RejoinAttempts
	}
	t.Logf("rejoin attempts by n0 and n1: %d; dials to the failed member since it died: %d, to the left one: %d",
		attempts, net.Dials(failed.name)-failedDials, net.Dials(left.name)-leftDials)
}
