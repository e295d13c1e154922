package main

import (
	"math"
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
