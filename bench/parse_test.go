package main

import (
	"math"
	"strings"
	"testing"
)

func TestParseBench(t *testing.T) {
	out := `goos: linux
BenchmarkConvergence/members=50-2   	      20	       362.3 B/member/s	       598.0 p50-ms	       805.4 p99-ms
--- SKIP: BenchmarkConvergence/members=500-2
    bench_test.go:44: 500 members did not form a cluster within 2m10s
BenchmarkGossipChurn/members=50
    churn_test.go:123: 50 members did not form a cluster within 52.5s on this machine
--- SKIP: BenchmarkGossipChurn/members=50
BenchmarkAllocatorSlash16-2   	12345	  95.1 ns/op	 10500000 allocs/s	 0 B/op
PASS`
	m, skipped := parseBench(out)
	tests := []struct {
		key  string
		want float64
	}{
		{"BenchmarkConvergence/members=50 p50-ms", 598},
		{"BenchmarkConvergence/members=50 p99-ms", 805.4},
		{"BenchmarkConvergence/members=50 B/member/s", 362.3},
		{"BenchmarkAllocatorSlash16 allocs/s", 10500000},
		{"BenchmarkAllocatorSlash16 ns/op", 95.1},
	}
	for _, tc := range tests {
		if got, ok := m[tc.key]; !ok || got != tc.want {
			t.Errorf("%s = %v (present %v), want %v", tc.key, got, ok, tc.want)
		}
	}
	if got := skipped["BenchmarkConvergence/members=500"]; got != "500 members did not form a cluster within 2m10s" {
		t.Errorf("skip reason = %q", got)
	}
	if got := skipped["BenchmarkGossipChurn/members=50"]; got != "50 members did not form a cluster within 52.5s on this machine" {
		t.Errorf("verbose skip reason = %q", got)
	}
	var s sample
	benchResult{m, skipped}.fill(&s, nil, "BenchmarkConvergence/members=500", "p99-ms")
	if s.ok() || s.na == "" {
		t.Errorf("skipped benchmark filled a figure: %+v", s)
	}
}

func TestQuantileAndVerdict(t *testing.T) {
	vals := []float64{5, 1, 4, 2, 3}
	for _, tc := range []struct{ q, want float64 }{{0.5, 3}, {0.99, 5}, {0, 1}, {1, 5}} {
		if got := quantile(vals, tc.q); got != tc.want {
			t.Errorf("quantile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if !math.IsNaN(quantile(nil, 0.5)) {
		t.Error("quantile of nothing is not NaN")
	}
	for _, tc := range []struct {
		got, want float64
		lower     bool
		prefix    string
	}{
		{0.97, 0.95, false, "met"},
		{0.90, 0.95, false, "**missed**"},
		{90, 100, true, "met"},
		{120, 100, true, "**missed**"},
	} {
		if v := verdict(tc.got, tc.want, tc.lower); len(v) < len(tc.prefix) || v[:len(tc.prefix)] != tc.prefix {
			t.Errorf("verdict(%v, %v, %v) = %q, want prefix %q", tc.got, tc.want, tc.lower, v, tc.prefix)
		}
	}
}

func TestParseSelections(t *testing.T) {
	for _, tc := range []struct {
		parts, paths string
		wantParts    []string
		wantPaths    []string
		harness      bool
		bad          bool
	}{
		{"all", "all", allParts, []string{"underlay", "kvx", "kvxdocker", "overlay", "gv", "gvenc", "dmacvlan", "gmacvlan"}, true, false},
		{"go", "all", []string{"go"}, nil, false, false},
		{"socket, go", "gv,Docker overlay", []string{"socket", "go"}, []string{"gv", "overlay"}, true, false},
		{"convergence", "GV,kernel vxlan (hand-programmed)", []string{"convergence"}, []string{"gv", "kvx"}, true, false},
		{"dataplan", "all", nil, nil, false, true},
		{"go", "vxlan", nil, nil, false, true},
	} {
		parts, err1 := parseParts(tc.parts)
		paths, err2 := parsePaths(tc.paths)
		if tc.bad {
			if err1 == nil && err2 == nil {
				t.Errorf("-parts %q -paths %q: no error", tc.parts, tc.paths)
			}
			continue
		}
		if err1 != nil || err2 != nil {
			t.Errorf("-parts %q -paths %q: %v %v", tc.parts, tc.paths, err1, err2)
			continue
		}
		if len(parts) != len(tc.wantParts) {
			t.Errorf("-parts %q = %v, want %v", tc.parts, parts, tc.wantParts)
		}
		for _, p := range tc.wantParts {
			if !parts[p] {
				t.Errorf("-parts %q lacks %s", tc.parts, p)
			}
		}
		for _, p := range tc.wantPaths {
			if !paths[p] {
				t.Errorf("-paths %q lacks %s", tc.paths, p)
			}
		}
		if tc.wantPaths != nil && len(paths) != len(tc.wantPaths) {
			t.Errorf("-paths %q = %v, want %v", tc.paths, paths, tc.wantPaths)
		}
		if got := (config{parts: parts}).needsHarness(); got != tc.harness {
			t.Errorf("-parts %q needs a harness = %v, want %v", tc.parts, got, tc.harness)
		}
	}
	if gs, err := parseGossipSizes("50=20x,500=5x"); err != nil || len(gs) != 2 || gs[1] != (gossipSize{500, "5x"}) {
		t.Errorf("parseGossipSizes = %v, %v", gs, err)
	}
	for _, bad := range []string{"500", "500=5s", "1=5x", "50=0x"} {
		if _, err := parseGossipSizes(bad); err == nil {
			t.Errorf("parseGossipSizes(%q) gave no error", bad)
		}
	}
}

func TestPartialReportLeavesOutWhatDidNotRun(t *testing.T) {
	parts, _ := parseParts("socket")
	paths, _ := parsePaths("all")
	b := &bench{cfg: config{parts: parts, paths: paths, command: "gvbench run -parts socket"}}
	row := rssRow{endpoints: 5000}
	for _, m := range []*memSample{&row.owner, &row.peer} {
		m.rss.add(30)
		m.anon.add(18)
		m.file.add(12)
		m.shmem.add(0)
	}
	b.rss = []rssRow{row}
	out := b.report()
	for _, absent := range []string{"## Data plane", "## Convergence", "docker run -d", "## Scale", "convergence p99", "TCP 1 stream", "n/a"} {
		if strings.Contains(out, absent) {
			t.Errorf("report of a socket-only run shows %q:\n%s", absent, out)
		}
	}
	for _, present := range []string{"## Plugin RSS", "plugin RSS ≤ 40 MB with 5,000 endpoints (owner h1)", "A partial run: parts socket."} {
		if !strings.Contains(out, present) {
			t.Errorf("report of a socket-only run lacks %q:\n%s", present, out)
		}
	}
}
