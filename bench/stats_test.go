package main

import (
	"errors"
	"io"
	"math"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"grapevine/driver"
	"grapevine/plugin"
)

var nan = math.NaN()

func TestMedianEvenCountIsMeanOfMiddle(t *testing.T) {
	tests := []struct {
		name string
		vals []float64
		want float64
	}{
		{"odd", []float64{5, 1, 3}, 3},
		// the lower middle (2) would flatter a lower-is-better figure, the
		// upper (3) a higher-is-better one
		{"even", []float64{4, 1, 3, 2}, 2.5},
		{"misses left out", []float64{nan, 10, 20, nan}, 15},
		{"one", []float64{7}, 7},
	}
	for _, tc := range tests {
		if got := median(tc.vals); got != tc.want {
			t.Errorf("%s: median(%v) = %v, want %v", tc.name, tc.vals, got, tc.want)
		}
		s := sample{vals: tc.vals}
		if got := s.median(); got != tc.want {
			t.Errorf("%s: sample median = %v, want %v", tc.name, got, tc.want)
		}
	}
	if !math.IsNaN(median(nil)) || !math.IsNaN(median([]float64{nan})) {
		t.Error("median of nothing is not NaN")
	}
	// nearest-rank quantiles leave the misses out too
	if got := quantile([]float64{nan, 1, 2, 3, nan}, 0.99); got != 3 {
		t.Errorf("p99 with misses = %v, want 3", got)
	}
}

func TestPairedRatioPairsByRound(t *testing.T) {
	tests := []struct {
		name  string
		a, b  []float64
		want  float64
		pairs int
	}{
		// drift between rounds cancels: every round's ratio is 0.5
		{"paired", []float64{5, 10, 20}, []float64{10, 20, 40}, 0.5, 3},
		// a missed round on each side: only the first was measured by both
		// (paired by position after dropping misses, 10/20 and 100/50
		// would give 1.25)
		{"misses on both sides", []float64{10, nan, 100}, []float64{20, 50, nan}, 0.5, 1},
		// an even number of pairs: the mean of the two middle ratios
		{"even pairs", []float64{1, 3}, []float64{2, 3}, 0.75, 2},
		// a round with a zero anchor pairs nothing
		{"zero in anchor", []float64{1, 2, 3}, []float64{0, 4, 8}, (0.5 + 0.375) / 2, 2},
		// not one entry per round each: ratio of the medians
		{"unequal", []float64{5, 10}, []float64{10, 20, 40}, 7.5 / 20, 0},
	}
	for _, tc := range tests {
		a, b := &sample{vals: tc.a}, &sample{vals: tc.b}
		got, n := pairedRatio(a, b)
		if math.Abs(got-tc.want) > 1e-9 || n != tc.pairs {
			t.Errorf("%s: pairedRatio = %v over %d rounds, want %v over %d", tc.name, got, n, tc.want, tc.pairs)
		}
	}
}

func TestCellAndRatioReportMisses(t *testing.T) {
	s := sample{vals: []float64{1, nan, 3, 4}}
	if got, want := s.cell("%.1f"), "3.0 (1.0–4.0) [1 of 4 rounds failed]"; got != want {
		t.Errorf("cell = %q, want %q", got, want)
	}
	all := sample{vals: []float64{nan, nan}}
	if all.ok() || all.cell("%.1f") != "n/a (every round failed)" {
		t.Errorf("every round failed: ok %v, cell %q", all.ok(), all.cell("%.1f"))
	}
	anchor := sample{vals: []float64{2, 2, nan, 8}}
	if got, want := ratio(&s, &anchor), "0.50 (2 of 4 rounds)"; got != want {
		t.Errorf("ratio = %q, want %q", got, want)
	}
	disjoint := sample{vals: []float64{nan, 1, nan, nan}}
	if got := ratio(&s, &disjoint); got != "n/a (no round measured both)" {
		t.Errorf("ratio of disjoint rounds = %q", got)
	}
}

func TestFailedRoundsAreMisses(t *testing.T) {
	var s sample
	record := addIperf(&s)
	if err := record(2, nil); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("iperf3: connection refused")
	if err := record(0, boom); !errors.Is(err, boom) {
		t.Fatalf("error not passed on: %v", err)
	}
	if err := record(4, nil); err != nil {
		t.Fatal(err)
	}
	if len(s.vals) != 3 || s.misses() != 1 || !math.IsNaN(s.vals[1]) || last(s) != "4.0" {
		t.Fatalf("after ok, failed, ok: %v (misses %d)", s.vals, s.misses())
	}

	// latency: every path gets one entry per round, a miss when its
	// socket failed or it had none
	good, broken, absent := &path{name: "good"}, &path{name: "broken"}, &path{name: "absent"}
	paths := []*path{good, broken, absent}
	recordLatency(paths, []*rrSocket{
		{p: good, rtts: []float64{10, 30, 20, 40}},
		{p: broken, rtts: []float64{5, 6}, failed: true},
	})
	recordLatency(paths, []*rrSocket{{p: good, rtts: []float64{50}}, {p: broken, rtts: []float64{7}}, {p: absent, rtts: []float64{9}}})
	for _, tc := range []struct {
		p        *path
		p50, p99 []float64
	}{
		{good, []float64{25, 50}, []float64{40, 50}},
		{broken, []float64{nan, 7}, []float64{nan, 7}},
		{absent, []float64{nan, 9}, []float64{nan, 9}},
	} {
		if !sameVals(tc.p.rttP50.vals, tc.p50) || !sameVals(tc.p.rttP99.vals, tc.p99) {
			t.Errorf("%s: p50 %v p99 %v, want %v %v", tc.p.name, tc.p.rttP50.vals, tc.p.rttP99.vals, tc.p50, tc.p99)
		}
	}
}

// sameVals compares two rounds' figures, a miss matching a miss.
func sameVals(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] && !(math.IsNaN(a[i]) && math.IsNaN(b[i])) {
			return false
		}
	}
	return true
}

func TestDistinctAddrs(t *testing.T) {
	const subnet = "100.80.0.0/16"
	if err := distinctAddrs(subnet, []string{"100.80.0.2/16", "100.80.0.3/16", "100.80.1.0/16"}); err != nil {
		t.Fatalf("distinct answers refused: %v", err)
	}
	for _, tc := range []struct {
		addrs []string
		want  string
	}{
		{[]string{"100.80.0.2/16", "100.80.0.3/16", "100.80.0.2/16"}, "100.80.0.2 handed out twice (answers 1 and 3)"},
		{[]string{"100.80.0.2/16", "100.81.0.2/16"}, "answer 2 100.81.0.2/16 lies outside the pool 100.80.0.0/16"},
		{[]string{"100.80.0.2/16", ""}, `answer 2 "" is not an address`},
	} {
		err := distinctAddrs(subnet, tc.addrs)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want %q", tc.addrs, err, tc.want)
		}
	}
}

// statusPlugin serves a real plugin.Server on a unix socket whose status
// reports, on its n-th call, remote(n) endpoints of network "net1"; it
// counts the calls.
func statusPlugin(t *testing.T, remote func(n int) int) (*pluginClient, *atomic.Int32) {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	srv := plugin.NewServer(logrus.NewEntry(log))
	calls := new(atomic.Int32)
	srv.SetBackend(nil, nil, func() any {
		n := int(calls.Add(1))
		return plugin.Status{Node: "h2", Networks: []driver.NetworkStatus{
			{ID: "other", RemoteEndpoints: 99},
			{ID: "net1", RemoteEndpoints: remote(n)},
		}}
	}, nil)
	sock := filepath.Join(t.TempDir(), "gv.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { ln.Close() })
	return newPluginClient(sock), calls
}

func TestWaitRemotePollsUntilThePeerHoldsEveryEndpoint(t *testing.T) {
	// gossip delivers the endpoints over several polls
	c, calls := statusPlugin(t, func(n int) int { return min(n*2, 6) })
	if _, err := c.waitRemote("net1", 6, 10*time.Millisecond, 10*time.Second); err != nil {
		t.Fatalf("waitRemote: %v", err)
	}
	if n := calls.Load(); n != 3 {
		t.Fatalf("waitRemote returned after %d status calls, want 3 (2, 4, then all 6 endpoints)", n)
	}

	stuck, _ := statusPlugin(t, func(int) int { return 2 })
	_, err := stuck.waitRemote("net1", 5, 10*time.Millisecond, 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "holds 2 of 5 remote endpoints of network net1 after 100ms") {
		t.Fatalf("a peer that never catches up: %v", err)
	}
	_, err = stuck.waitRemote("net9", 5, 10*time.Millisecond, 50*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "network net9 is not in the status") {
		t.Fatalf("a network the peer lacks: %v", err)
	}
}

func TestDataplaneReportShowsMissesAndMeasuredHosts(t *testing.T) {
	parts, _ := parseParts("dataplane")
	paths, _ := parsePaths("kvx,gv")
	b := &bench{cfg: config{parts: parts, paths: paths, rounds: 4, seconds: 3, rrCount: 5000, command: "gvbench run -parts dataplane"},
		hosts: []host{{name: "h1"}, {name: "h2"}}, load: "1.00 2.00 3.00",
		brNetfilter: "net.bridge.bridge-nf-call-iptables, read in each host's namespace: 1 on every host"}
	kv := &path{name: pathName("kvx")}
	gv := &path{name: pathName("gv"), anchor: pathName("kvx")}
	for i, v := range []float64{10, 10, 12, 10} {
		kv.tcp1.add(v)
		kv.tcp4.add(v)
		kv.udp.add(v)
		kv.rttP50.add(20)
		kv.rttP99.add(40)
		if i == 1 {
			gv.tcp1.miss() // iperf3 failed on grapevine in round 2
		} else {
			gv.tcp1.add(v * 0.9)
		}
		gv.tcp4.add(v)
		gv.udp.add(v)
		gv.rttP50.add([]float64{20, 23, 20, 23}[i])
		gv.rttP99.add(40)
	}
	b.paths = []*path{kv, gv}
	out := b.report()
	for _, want := range []string{
		"(net.bridge.bridge-nf-call-iptables, read in each host's namespace: 1 on every host)",
		"| grapevine vxlan | 9.00 (9.00–10.80) [1 of 4 rounds failed] |",
		"0.90 (3 of 4 rounds) / 1.00 / 1.00 / 1.07",
		// RTT p50 ratios 1, 1.15, 1, 1.15: the median is their mean, 1.075,
		// a miss; the lower middle, 1.00, would report the target met
		"| grapevine vxlan RTT p50 ≤ 1.05 × kernel VXLAN | 1.07 × | **missed** by 2 % |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	for _, bad := range []string{"%!", "br_netfilter on", "busy cores"} {
		if strings.Contains(out, bad) {
			t.Errorf("report shows %q:\n%s", bad, out)
		}
	}
}
