package gossip_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"grapevine/gossip"
	"grapevine/gossip/gossiptest"
)

// BenchmarkConvergence measures an in-process cluster of 3, 50, 200 and
// 500 members on gossiptest's in-memory network: how long a record written
// on one member takes to reach ALL members, and how many bytes a member
// sends per second at rest and while records change at 100 per second.
//
// One op is one Put (on a different member each time) followed by the wait
// until every member holds it; run with a fixed count for meaningful
// percentiles, e.g.
//
//	go test -run '^$' -bench Convergence -benchtime 20x ./gossip/
//
// Metrics (per members=N sub-benchmark):
//
//	p50-ms, p99-ms     time from Put until every member holds the record
//	B/member/s         bytes sent per member per second at rest (UDP and
//	                   TCP), over one whole push/pull period (15 s up to 32
//	                   members, 30 s for 50, 60 s for 200, 75 s for 500)
//	                   so that it holds exactly one push/pull per member
//	churn-B/member/s   the same while 100 endpoint-sized records change per
//	                   second on random members (5 s window)
//	form-s             seconds to form the cluster (not a product figure:
//	                   it shows what the simulation cost on this machine)
//
// GVBENCH_SIZES (e.g. "3,50") overrides the sizes, as for bench/'s
// BenchmarkGossipChurn.
//
// Timings: record dissemination runs with the production defaults (gossip
// every 200 ms to 3 members, RetransmitMult 4, push/pull every 15 s scaled
// by memberlist above 32 members, fast path to 32 members). Failure
// detection is slowed above 50 members (ProbeInterval 5 s instead of 1 s,
// ProbeTimeout 2 s instead of 500 ms): here every member shares the same
// two cores, so during formation an ack can wait longer than a real
// network round trip, and a false suspicion sets off a storm of
// suspect/refute broadcasts. Probes carry no records, so this does not
// change p50/p99; it does lower B/member/s above 50 members: a member
// probes 5 times less often, so add about 4/5 of the probe cost seen at
// 50 members (roughly 70 B/member/s) for production probing.
//
// p50 and p99 are nearest-rank over the puts of the last run (testing runs
// N=1 first, then the -benchtime count): p99 over 20 puts is the slowest of
// the 20. gvbench (`make bench`) runs each size in a go test of its own,
// GVBENCH_SIZES=N, with fewer puts at 500 members (-gossip-sizes).
//
// Formation: the cluster doubles at each step (1, 2, 4, 8 … members) up to
// 64, then grows by 50, every new member joining two random existing ones;
// each step waits until every member sees all others alive (nudging
// members that joined at the same moment and missed each other to
// push/pull at once rather than at their next period). Then the
// benchmark waits until the cluster's traffic has settled (memberlist's own
// join announcements, N × N × RetransmitMult × log10(N+1) messages, would
// otherwise crowd the records out of the gossip packets). A size that
// cannot form within its deadline on this machine is skipped, saying so;
// nothing is extrapolated.
func BenchmarkConvergence(b *testing.B) {
	for _, size := range benchSizes(b) {
		var cl *benchCluster
		b.Run(fmt.Sprintf("members=%d", size), func(b *testing.B) {
			if cl == nil { // b.Run calls us more than once (N=1, then N): form once
				cl = formBenchCluster(b, size)
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

func benchSizes(b *testing.B) []int {
	s := os.Getenv("GVBENCH_SIZES")
	if s == "" {
		return []int{3, 50, 200, 500}
	}
	var sizes []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 2 {
			b.Fatalf("GVBENCH_SIZES entry %q is not a member count ≥ 2", f)
		}
		sizes = append(sizes, n)
	}
	return sizes
}

const (
	benchWindow     = 5 * time.Second // churn measurement window
	benchChurnRate  = 100             // record changes per second under churn
	benchPerPutWait = 30 * time.Second
	benchBatch      = 50 // most members joining at once
)

type benchCluster struct {
	size      int
	net       *gossiptest.Net
	names     []string
	nodes     []*gossip.Cluster
	err       error
	formed    time.Duration
	lastStart time.Time // when the last member started

	current atomic.Pointer[string]
	arrived atomic.Int64
	done    chan struct{}
	puts    int

	seen atomic.Int64 // see least

	// measured once, on the first call, and reported by every call
	rest, churn float64
	measured    bool
}

// benchConfig is the configuration of member name in a cluster of size
// (see BenchmarkConvergence for the timings).
func benchConfig(net *gossiptest.Net, name string, size int) gossip.Config {
	cfg := net.Config(name)
	cfg.ProbeInterval, cfg.ProbeTimeout, cfg.SuspicionMult = 0, 0, 0
	cfg.GossipInterval, cfg.GossipNodes, cfg.PushPullInterval, cfg.TCPTimeout = 0, 0, 0, 0
	cfg.ReapInterval = 0
	if size > 50 {
		cfg.ProbeInterval, cfg.ProbeTimeout = 5*time.Second, 2*time.Second
	}
	cfg.JoinBackoffMin, cfg.JoinBackoffMax = 50*time.Millisecond, time.Second
	cfg.LeaveTimeout = 100 * time.Millisecond
	cfg.Peers = nil
	return cfg
}

// formBenchCluster starts size members and waits until they form one
// settled cluster, or records in cl.err why they did not.
func formBenchCluster(b *testing.B, size int) (cl *benchCluster) {
	cl = &benchCluster{size: size, net: gossiptest.NewNet(), done: make(chan struct{}, 1)}
	defer func() {
		if cl.err != nil {
			cl.shutdown()
		}
	}()
	deadline := time.Now().Add(30*time.Second + time.Duration(size)*400*time.Millisecond)
	start := time.Now()
	fail := func(format string, args ...any) *benchCluster {
		cl.err = fmt.Errorf("%d members: "+format, append([]any{size}, args...)...)
		return cl
	}
	logf := func(format string, args ...any) {
		b.Logf(format, args...)
		if testing.Verbose() {
			fmt.Fprintf(os.Stderr, "BenchmarkConvergence/members=%d: "+format+"\n", append([]any{size}, args...)...)
		}
	}
	r := rand.New(rand.NewPCG(uint64(size), 1))
	var lastStart time.Time
	for lo := 0; lo < size; {
		// The cluster doubles at each step (m0 alone, then m1, m2-m3,
		// m4-m7 …) up to 64 members, then grows by 50; every new member
		// joins two random existing ones.
		hi := min(size, lo+min(max(1, lo), benchBatch))
		for i := lo; i < hi; i++ {
			name := fmt.Sprintf("m%d", i)
			cfg := benchConfig(cl.net, name, size)
			switch i {
			case 0:
			case 1:
				cfg.Peers = []string{cl.net.Addr("m0")}
			default:
				a, c := r.IntN(lo), r.IntN(lo-1)
				if c >= a {
					c++
				}
				cfg.Peers = []string{cl.net.Addr(cl.names[a]), cl.net.Addr(cl.names[c])}
			}
			// Not net.Start: its cleanup would stop the cluster after the
			// first of the sub-benchmark's runs; shutdown stops it.
			c, err := gossip.New(cfg)
			if err == nil {
				err = c.Start()
			}
			if err != nil {
				return fail("start %s: %v", name, err)
			}
			cl.names = append(cl.names, name)
			cl.nodes = append(cl.nodes, c)
			lastStart = time.Now()
		}
		// Every member started so far must see all the others before
		// the next step. Members that joined at the same moment may miss
		// each other's announcements until their next push/pull (up to a
		// minute away); after a few seconds the benchmark makes those that
		// still miss someone push/pull with two random members at once.
		for {
			nudge := time.Now().Add(3 * time.Second)
			if deadline.Before(nudge) {
				nudge = deadline
			}
			if pollUntil(nudge, func() bool { return cl.least(hi) == hi }) {
				break
			}
			if time.Now().After(deadline) {
				return fail("the first %d members did not all see each other within %v on this machine (the worst saw %d)",
					hi, time.Since(start).Round(time.Second), cl.seen.Load())
			}
			for _, c := range cl.nodes[:hi] {
				peers := []string{cl.net.Addr(cl.names[r.IntN(hi)]), cl.net.Addr(cl.names[r.IntN(hi)])}
				go func() { // memberlist's locks may stall it: never on the deadline's path
					if c.Stats().Members < hi {
						_ = c.PushPullWith(peers...) // best effort: polled again
					}
				}()
			}
		}
		logf("%d members started, all see each other after %v", hi, time.Since(start).Round(time.Millisecond))
		lo = hi
	}
	// Settle: wait until the cluster's send rate stops falling, i.e. the
	// join announcements have been retransmitted to the end.
	prev := -1.0
	if !pollUntil(deadline, func() bool {
		rate := cl.sendRate(time.Second)
		settled := prev >= 0 && rate > prev*0.8
		prev = rate
		return settled
	}) {
		return fail("formed but traffic did not settle within %v on this machine", time.Since(start).Round(time.Second))
	}
	cl.formed = time.Since(start)
	cl.lastStart = lastStart
	logf("%d members formed and settled in %v", size, cl.formed.Round(time.Millisecond))
	for _, c := range cl.nodes {
		c.Subscribe("bench", func(_, cur *gossip.Record) {
			if k := cl.current.Load(); k != nil && cur.Key == *k && cl.arrived.Add(1) == int64(size) {
				cl.done <- struct{}{}
			}
		})
	}
	return cl
}

// least is the fewest alive members any of the first n members sees; it
// also stores it in cl.seen, for a report after a timed-out poll.
func (cl *benchCluster) least(n int) int {
	least := n
	for _, c := range cl.nodes[:n] {
		least = min(least, c.Stats().Members)
	}
	cl.seen.Store(int64(least))
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

func (cl *benchCluster) sent() uint64 {
	var s uint64
	for _, name := range cl.names {
		s += cl.net.BytesSent(name)
	}
	return s
}

// sendRate is the bytes sent per member per second over window.
func (cl *benchCluster) sendRate(window time.Duration) float64 {
	s0, t0 := cl.sent(), time.Now()
	<-time.After(window) // a measurement window, not a wait for a condition
	return float64(cl.sent()-s0) / float64(cl.size) / time.Since(t0).Seconds()
}

// drain waits until no member has records left to gossip.
func (cl *benchCluster) drain(b *testing.B) {
	gossiptest.Eventually(b, 2*time.Minute, "broadcast queues to drain", func() bool {
		for _, c := range cl.nodes {
			if c.Stats().QueuedBroadcasts != 0 {
				return false
			}
		}
		return true
	})
}

func (cl *benchCluster) measure(b *testing.B) {
	cl.drain(b)
	var lat []time.Duration
	b.ResetTimer()
	for range b.N {
		cl.puts++
		key := fmt.Sprintf("k%d", cl.puts)
		cl.arrived.Store(0)
		cl.current.Store(&key)
		start := time.Now()
		if err := cl.nodes[cl.puts%cl.size].Put("bench", key, []byte("198.18.0.1 02:42:c6:12:00:01")); err != nil {
			b.Fatal(err)
		}
		select {
		case <-cl.done:
		case <-time.After(benchPerPutWait):
			b.Fatalf("only %d of %d members got %s within %v", cl.arrived.Load(), cl.size, key, benchPerPutWait)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	// nearest rank: the value at rank ⌈p·n⌉ (with 20 puts p99 is the slowest)
	pct := func(p float64) float64 {
		i := max(int(math.Ceil(p*float64(len(lat))))-1, 0)
		return float64(lat[i].Microseconds()) / 1000
	}
	if !cl.measured {
		cl.drain(b)
		// At rest includes memberlist's periodic push/pulls. Each member
		// starts them after a random stagger of up to one PushPullInterval
		// and then does one per scaled period; members started together
		// do them in phase, so only a window of one whole period, begun
		// once every stagger is over, holds exactly one per member.
		restWindow := pushPullScale(gossip.DefaultPushPullInterval, cl.size)
		<-time.After(time.Until(cl.lastStart.Add(gossip.DefaultPushPullInterval))) // a protocol period, not a condition to poll
		cl.rest = cl.sendRate(restWindow)
		cl.churn = cl.churnRate(b)
		cl.measured = true
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(cl.rest, "B/member/s")
	b.ReportMetric(cl.churn, "churn-B/member/s")
	b.ReportMetric(cl.formed.Seconds(), "form-s")
}

// pushPullScale is memberlist's push/pull period for n members (its
// unexported pushPullScale): interval up to 32 members, then one more
// interval for every doubling.
func pushPullScale(interval time.Duration, n int) time.Duration {
	if n <= 32 {
		return interval
	}
	return time.Duration(math.Ceil(math.Log2(float64(n))-math.Log2(32))+1) * interval
}

// churnRate writes benchChurnRate endpoint-sized records per second on
// random members for benchWindow and returns the bytes sent per member per
// second meanwhile.
func (cl *benchCluster) churnRate(b *testing.B) float64 {
	r := rand.New(rand.NewPCG(uint64(cl.size), 7))
	tick := time.NewTicker(time.Second / benchChurnRate)
	defer tick.Stop()
	s0, t0 := cl.sent(), time.Now()
	for k := 0; time.Since(t0) < benchWindow; k++ {
		<-tick.C
		c := cl.nodes[r.IntN(cl.size)]
		val := fmt.Sprintf(`{"Version":1,"IP":"198.19.%d.%d","MAC":"02:42:c6:13:%02x:%02x","Host":"%s"}`,
			k/250%256, k%250+2, k/256%256, k%256, c.LocalName())
		if err := c.Put("endpoint", fmt.Sprintf("%s/ep%d", c.LocalName(), k), []byte(val)); err != nil {
			b.Fatal(err)
		}
	}
	return float64(cl.sent()-s0) / float64(cl.size) / time.Since(t0).Seconds()
}

// shutdown stops every member at once, cut off from the network first so
// that their leave announcements do not storm the others.
func (cl *benchCluster) shutdown() {
	for _, name := range cl.names {
		cl.net.Kill(name)
	}
	var wg sync.WaitGroup
	for _, c := range cl.nodes {
		wg.Add(1)
		go func() { defer wg.Done(); _ = c.Shutdown() }()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute): // give up on a starved cluster
	}
}
