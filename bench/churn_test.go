package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
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
	churnWindow = 3 * time.Second
	churnRate   = 100 // record changes per second
)

func churn(b *testing.B, size int) {
	tn := gossiptest.NewNet()
	names := make([]string, size)
	cfgs := make([]gossip.Config, size)
	for i := range names {
		names[i] = fmt.Sprintf("m%d", i)
		cfgs[i] = tn.Config(names[i])
	}
	nodes := make([]*gossip.Cluster, size)
	start := time.Now()
	r := rand.New(rand.NewPCG(uint64(size), 7))
	for i := range cfgs {
		cfg := cfgs[i]
		// production timings (zero values are the defaults), quick joins
		cfg.ProbeInterval, cfg.ProbeTimeout, cfg.SuspicionMult = 0, 0, 0
		cfg.GossipInterval, cfg.PushPullInterval, cfg.TCPTimeout = 0, 0, 0
		cfg.JoinBackoffMin, cfg.JoinBackoffMax = 50*time.Millisecond, time.Second
		cfg.Peers = nil
		if i > 0 {
			// a random earlier member (Config listed all earlier ones)
			cfg.Peers = []string{cfgs[i].Peers[r.IntN(len(cfgs[i].Peers))]}
		}
		nodes[i] = tn.Start(b, cfg)
	}
	// Stop everyone at once (runs before gossiptest's own, sequential cleanups).
	b.Cleanup(func() {
		var wg sync.WaitGroup
		for _, n := range nodes {
			wg.Add(1)
			go func() { defer wg.Done(); _ = n.Shutdown() }()
		}
		wg.Wait()
	})
	// Forming a large cluster in one process costs minutes of CPU on a small
	// machine: give it a deadline and skip, saying so, when it is not met.
	// The poll runs in its own goroutine so that the deadline holds even when
	// memberlist's locks starve readers during the join storm.
	deadline := 45*time.Second + time.Duration(size)*150*time.Millisecond
	formed := make(chan struct{})
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			all := true
			for _, n := range nodes {
				alive := 0
				for _, m := range n.Members() {
					if m.State == gossip.StateAlive {
						alive++
					}
				}
				if alive != size {
					all = false
					break
				}
			}
			if all {
				close(formed)
				return
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	select {
	case <-formed:
	case <-time.After(deadline):
		b.Skipf("%d members did not form a cluster within %v on this machine", size, deadline)
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
