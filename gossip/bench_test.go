package gossip

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkConvergence measures, on an in-process cluster over memberlist's
// MockNetwork with the production timing defaults (gossip every 200 ms to 3
// members, probes every second, push/pull every 15 s), how long a record
// written on one member takes to reach ALL members, and how many bytes a
// member sends per second once the cluster is at rest.
//
// One op is one Put followed by the wait until every member holds it; run
// with a fixed count for meaningful percentiles, e.g.
//
//	go test -run '^$' -bench Convergence -benchtime 20x ./gossip/
//
// Metrics: p50-ms and p99-ms (time until all members hold the record),
// B/member/s (bytes sent per member per second at rest, UDP and TCP).
func BenchmarkConvergence(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("members=%d", size), func(b *testing.B) {
			benchConvergence(b, size)
		})
	}
}

func benchConvergence(b *testing.B, size int) {
	formed := time.Now()
	_, nodes := startCluster(b, size, func(i int, cfg *Config) {
		cfg.ProbeInterval, cfg.ProbeTimeout, cfg.SuspicionMult = 0, 0, 0
		cfg.GossipInterval, cfg.PushPullInterval, cfg.TCPTimeout = 0, 0, 0
		cfg.JoinBackoffMin, cfg.JoinBackoffMax = 50*time.Millisecond, time.Second
	})
	b.Logf("%d members formed a cluster in %v", size, time.Since(formed).Round(time.Millisecond))
	// Stop everyone at once (each graceful leave waits for its broadcast).
	b.Cleanup(func() {
		var wg sync.WaitGroup
		for _, n := range nodes {
			wg.Add(1)
			go func() { defer wg.Done(); n.c.Shutdown() }()
		}
		wg.Wait()
	})

	// Every member counts arrivals of the key currently measured.
	var current atomic.Pointer[string]
	var arrived atomic.Int64
	done := make(chan struct{}, 1)
	for _, n := range nodes {
		n.c.Subscribe("bench", func(_, new *Record) {
			if k := current.Load(); k != nil && new.Key == *k && arrived.Add(1) == int64(size) {
				done <- struct{}{}
			}
		})
	}

	const perPutTimeout = 30 * time.Second
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		key := fmt.Sprintf("k%d", i)
		arrived.Store(0)
		current.Store(&key)
		start := time.Now()
		if err := nodes[i%size].c.Put("bench", key, []byte("198.18.0.1 02:42:c6:12:00:01")); err != nil {
			b.Fatal(err)
		}
		select {
		case <-done:
		case <-time.After(perPutTimeout):
			b.Fatalf("only %d of %d members got %s within %v", arrived.Load(), size, key, perPutTimeout)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(0, "ns/op")

	// At rest: let the broadcast queues drain, then count bytes sent.
	waitFor(b, 60*time.Second, "broadcast queues to drain", func() bool {
		for _, n := range nodes {
			if n.c.Stats().QueuedBroadcasts != 0 {
				return false
			}
		}
		return true
	})
	const window = 3 * time.Second
	var before uint64
	for _, n := range nodes {
		before += n.tr.sent.Load()
	}
	measured := time.Now()
	<-time.After(window) // a measurement window, not a wait for a condition
	var after uint64
	for _, n := range nodes {
		after += n.tr.sent.Load()
	}
	b.ReportMetric(float64(after-before)/float64(size)/time.Since(measured).Seconds(), "B/member/s")
}

var benchSizes = []int{50, 200, 500}
