package gossip

import (
	"fmt"
	"testing"
	"time"
)

func TestRejoinSetBoundedOldestFailureForgotten(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name  string
		ops   func(s *rejoinSet)
		want  []string
		limit int
	}{
		{"under the limit", func(s *rejoinSet) {
			s.add("a", "100.64.0.1:7947", t0)
			s.add("b", "100.64.0.2:7947", t0.Add(time.Second))
		}, []string{"a", "b"}, 3},
		{"oldest failure evicted", func(s *rejoinSet) {
			s.add("b", "100.64.0.2:7947", t0.Add(time.Second))
			s.add("a", "100.64.0.1:7947", t0)
			s.add("c", "100.64.0.3:7947", t0.Add(2*time.Second))
			s.add("d", "100.64.0.4:7947", t0.Add(3*time.Second))
		}, []string{"b", "c", "d"}, 3},
		{"failing again refreshes without evicting", func(s *rejoinSet) {
			s.add("a", "100.64.0.1:7947", t0)
			s.add("b", "100.64.0.2:7947", t0.Add(time.Second))
			s.add("a", "100.64.0.9:7947", t0.Add(2*time.Second))
			s.add("c", "100.64.0.3:7947", t0.Add(3*time.Second))
		}, []string{"a", "c"}, 2},
		{"removed on return or graceful leave", func(s *rejoinSet) {
			s.add("a", "100.64.0.1:7947", t0)
			s.add("b", "100.64.0.2:7947", t0)
			s.remove("a")
		}, []string{"b"}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newRejoinSet(tt.limit)
			tt.ops(&s)
			if len(s.targets) != len(tt.want) {
				t.Fatalf("remembers %v, want %v", s.targets, tt.want)
			}
			for _, n := range tt.want {
				if !s.has(n) {
					t.Errorf("forgot %s: %v", n, s.targets)
				}
			}
		})
	}
	// The production bound holds whatever the number of failures.
	s := newRejoinSet(maxRejoinTargets)
	for i := range 3 * maxRejoinTargets {
		s.add(fmt.Sprintf("n%d", i), fmt.Sprintf("100.64.%d.%d:7947", i/256, i%256), t0.Add(time.Duration(i)*time.Second))
	}
	if len(s.targets) != maxRejoinTargets || !s.has(fmt.Sprintf("n%d", 3*maxRejoinTargets-1)) || s.has("n0") {
		t.Errorf("remembers %d failures (want %d, newest kept, oldest forgotten)", len(s.targets), maxRejoinTargets)
	}
}
