package gossip

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkConvergence measures, on an in-process cluster over the
// in-memory test network with the production timing defaults (gossip every
// 200 ms to 3 members, probes every second, push/pull every 15 s), how long
// a record written on one member takes to reach ALL members, and how many
// bytes a member sends per second once the cluster is at rest.
//
// One op is one Put followed by the wait until every member holds it; run
// with a fixed count for meaningful percentiles, e.g.
//
//	go test -run '^$' -bench Convergence -benchtime 20x ./gossip/
//
// Metrics: p50-ms and p99-ms (time until all members hold the record),
// B/member/s (bytes sent per member per second at rest, UDP and TCP).
//
// Every member runs in this one process: forming the 500-member cluster
// costs minutes of CPU on a small machine (memberlist's join storm), so
// each size gets a formation deadline and is skipped, saying so, when the
// machine cannot form it in time.
func BenchmarkConvergence(b *testing.B) {
	for _, size := range []int{50, 200, 500} {
		var cl *benchCluster
		b.Run(fmt.Sprintf("members=%d", size), func(b *testing.B) {
			if cl == nil { // b.Run may call us more than once: form once
				cl = formBenchCluster(size, 30*time.Second+time.Duration(size)*300*time.Millisecond)
			}
			if cl.err != nil {
				b.Skip(cl.err)
			}
			cl.measure(b)
		})
		if cl != nil {
			cl.shutdown()
		}
	}
}

type benchCluster struct {
	size    int
	nodes   []*testNode
	err     error
	current atomic.Pointer[string]
	arrived atomic.Int64
	done    chan struct{}
	puts    int
}

// formBenchCluster starts size members, each joining the first,
// and waits until all see everyone alive or the deadline passes.
func formBenchCluster(size int, deadline time.Duration) *benchCluster {
	cl := &benchCluster{size: size, done: make(chan struct{}, 1)}
	tn := newTestNet()
	trs := make([]*testTransport, size)
	for i := range trs {
		trs[i] = tn.addTransport(fmt.Sprintf("n%d", i))
	}
	for i, tr := range trs {
		cfg := Config{
			NodeName: tr.name, Transport: tr, Log: testLog(tr.name),
			JoinBackoffMin: 50 * time.Millisecond, JoinBackoffMax: time.Second,
			LeaveTimeout: 500 * time.Millisecond,
		}
		if i > 0 {
			cfg.Peers = []string{trs[0].addr}
		}
		c, err := New(cfg)
		if err == nil {
			err = c.Start()
		}
		if err != nil {
			cl.err = err
			return cl
		}
		cl.nodes = append(cl.nodes, &testNode{name: tr.name, tr: tr, cfg: cfg, c: c})
	}
	// Poll from a goroutine: under a join storm memberlist's node lock can
	// starve readers for a long time, and the deadline must hold regardless.
	formed := make(chan int, 1)
	stop := make(chan struct{})
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			least := size
			for _, n := range cl.nodes {
				least = min(least, n.c.numNodes())
			}
			if least == size {
				formed <- least
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
		close(stop)
		cl.err = fmt.Errorf("%d members did not form a cluster within %v on this machine", size, deadline)
		return cl
	}
	for _, n := range cl.nodes {
		n.c.Subscribe("bench", func(_, new *Record) {
			if k := cl.current.Load(); k != nil && new.Key == *k && cl.arrived.Add(1) == int64(size) {
				cl.done <- struct{}{}
			}
		})
	}
	return cl
}

func (cl *benchCluster) measure(b *testing.B) {
	const perPutTimeout = 30 * time.Second
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cl.puts++
		key := fmt.Sprintf("k%d", cl.puts)
		cl.arrived.Store(0)
		cl.current.Store(&key)
		start := time.Now()
		if err := cl.nodes[cl.puts%cl.size].c.Put("bench", key, []byte("198.18.0.1 02:42:c6:12:00:01")); err != nil {
			b.Fatal(err)
		}
		select {
		case <-cl.done:
		case <-time.After(perPutTimeout):
			b.Fatalf("only %d of %d members got %s within %v", cl.arrived.Load(), cl.size, key, perPutTimeout)
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
		for _, n := range cl.nodes {
			if n.c.Stats().QueuedBroadcasts != 0 {
				return false
			}
		}
		return true
	})
	const window = 3 * time.Second
	sent := func() (s uint64) {
		for _, n := range cl.nodes {
			s += n.tr.sent.Load()
		}
		return s
	}
	before, measured := sent(), time.Now()
	<-time.After(window) // a measurement window, not a wait for a condition
	b.ReportMetric(float64(sent()-before)/float64(cl.size)/time.Since(measured).Seconds(), "B/member/s")
}

// shutdown stops every member at once (each graceful leave waits for its
// broadcast, so one by one would take minutes).
func (cl *benchCluster) shutdown() {
	var wg sync.WaitGroup
	for _, n := range cl.nodes {
		wg.Add(1)
		go func() { defer wg.Done(); n.c.Shutdown() }()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute): // give up on a starved cluster
	}
}
