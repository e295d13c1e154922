package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"grapevine/gossip"
	"grapevine/gossip/gossiptest"
)

// BenchmarkGossipChurn measures what gossip costs on the wire in an
// in-process cluster (gossiptest's in-memory network, production timing
// defaults): bytes sent per member per second at rest, and while endpoint
// records change at 100 per second (Puts of endpoint-sized values on random
// members). Sizes come from GVBENCH_SIZES (default "50,200,500"). Run with
// -benchtime 1x: one op is the whole measurement.
//
// Metrics: rest-B/member/s and churn-B/member/s.
func BenchmarkGossipChurn(b *testing.B) {
	sizes := []int{50, 200, 500}
	if s := os.Getenv("GVBENCH_SIZES"); s != "" {
		sizes = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 2 {
				b.Fatalf("GVBENCH_SIZES entry %q is not a member count ≥ 2", f)
			}
			sizes = append(sizes, n)
		}
	}
	for _, size := range sizes {
		b.Run(fmt.Sprintf("members=%d", size), func(b *testing.B) {
			for range b.N {
				churn(b, size)
			}
		})
	}
}

const (
	churnWindow = 5 * time.Second // as gossip's BenchmarkConvergence
	churnRate   = 100             // record changes per second
)

func churn(b *testing.B, size int) {
	tn := gossiptest.NewNet()
	var names []string
	var nodes []*gossip.Cluster
	// Stop everyone at once, cut off first so that their leave
	// announcements do not storm the others.
	b.Cleanup(func() {
		for _, n := range names {
			tn.Kill(n)
		}
		var wg sync.WaitGroup
		for _, n := range nodes {
			wg.Add(1)
			go func() { defer wg.Done(); _ = n.Shutdown() }()
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Minute): // give up on a starved cluster
		}
	})
	start := time.Now()
	r := rand.New(rand.NewPCG(uint64(size), 7))
	// Forming a large cluster in one process costs minutes of CPU on a small
	// machine: give it a deadline and skip, saying so, when it is not met.
	deadline := start.Add(30*time.Second + time.Duration(size)*400*time.Millisecond)
	// Formation in steps, as gossip's BenchmarkConvergence does: the cluster
	// doubles up to 64 members, then grows by 50; every new member joins two
	// random existing ones, and each step waits until every member sees all
	// the others alive. (All members joining one at once, as this benchmark
	// did first, is a join storm that a 2-core machine does not get through
	// in minutes at 500.)
	for lo := 0; lo < size; {
		hi := min(size, lo+min(max(1, lo), 50))
		for i := lo; i < hi; i++ {
			name := fmt.Sprintf("m%d", i)
			cfg := tn.Config(name)
			// production timings (zero values are the defaults), quick joins
			cfg.ProbeInterval, cfg.ProbeTimeout, cfg.SuspicionMult = 0, 0, 0
			cfg.GossipInterval, cfg.PushPullInterval, cfg.TCPTimeout = 0, 0, 0
			cfg.JoinBackoffMin, cfg.JoinBackoffMax = 50*time.Millisecond, time.Second
			cfg.Peers = nil
			switch {
			case i == 1:
				cfg.Peers = []string{tn.Addr(names[0])}
			case i > 1:
				a, c := r.IntN(lo), r.IntN(lo-1)
				if c >= a {
					c++
				}
				cfg.Peers = []string{tn.Addr(names[a]), tn.Addr(names[c])}
			}
			// Not tn.Start: its cleanups shut members down one by one,
			// each announcing its leave; the cleanup above stops all at once.
			c, err := gossip.New(cfg)
			if err == nil {
				err = c.Start()
			}
			if err != nil {
				b.Fatalf("start %s: %v", name, err)
			}
			names = append(names, name)
			nodes = append(nodes, c)
		}
		// the worst count seen is kept for the skip message: asking the
		// members again after the deadline can block on memberlist's locks
		var seen atomic.Int64
		if !pollUntil(deadline, func() bool {
			least := leastAlive(nodes)
			seen.Store(int64(least))
			return least == hi
		}) {
			b.Skipf("%d members did not form a cluster within %v on this machine (step to %d members, the worst saw %d)",
				size, deadline.Sub(start).Round(time.Second), hi, seen.Load())
		}
		lo = hi
	}
	b.Logf("%d members formed a cluster in %v", size, time.Since(start).Round(time.Millisecond))

	sent := func() uint64 {
		var s uint64
		for _, n := range names {
			s += tn.BytesSent(n)
		}
		return s
	}
	perMember := func(bytes uint64, d time.Duration) float64 {
		return float64(bytes) / float64(size) / d.Seconds()
	}

	b.ResetTimer()
	// at rest (the join's push/pulls have happened: every member saw all)
	s0, t0 := sent(), time.Now()
	<-time.After(churnWindow) // a measurement window, not a wait for a condition
	rest := perMember(sent()-s0, time.Since(t0))

	// 100 endpoint changes per second on random members
	tick := time.NewTicker(time.Second / churnRate)
	defer tick.Stop()
	s0, t0 = sent(), time.Now()
	for k := 0; time.Since(t0) < churnWindow; k++ {
		<-tick.C
		n := nodes[r.IntN(size)]
		val := fmt.Sprintf(`{"Version":1,"IP":"198.19.%d.%d","MAC":"02:42:c6:13:%02x:%02x","Host":"%s"}`, k/250%256, k%250+2, k/256%256, k%256, n.LocalName())
		if err := n.Put("endpoint", fmt.Sprintf("%s/ep%d", n.LocalName(), k), []byte(val)); err != nil {
			b.Fatal(err)
		}
	}
	loaded := perMember(sent()-s0, time.Since(t0))
	b.StopTimer()
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(rest, "rest-B/member/s")
	b.ReportMetric(loaded, "churn-B/member/s")
}

// leastAlive is the fewest alive members any node sees.
func leastAlive(nodes []*gossip.Cluster) int {
	least := len(nodes)
	for _, n := range nodes {
		least = min(least, n.Stats().Members)
	}
	return least
}

// pollUntil polls cond from its own goroutine (under a join storm
// memberlist's locks can starve a reader for long, and the deadline must
// hold regardless) until it holds (true) or the deadline passes (false).
func pollUntil(deadline time.Time, cond func() bool) bool {
	ok := make(chan struct{})
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for !cond() {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
		close(ok)
	}()
	select {
	case <-ok:
		return true
	case <-time.After(time.Until(deadline)):
		return false
	}
}
