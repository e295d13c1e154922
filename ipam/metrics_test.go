package ipam

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// timings collects what the metrics hooks are told, from any goroutine.
type timings struct {
	mu                  sync.Mutex
	agreeOK, agreeErr   int
	donateOK, donateErr int
	negative            bool
}

func (r *timings) String() string {
	return fmt.Sprintf("agreements ok %d, failed %d; donations ok %d, failed %d; negative durations %v",
		r.agreeOK, r.agreeErr, r.donateOK, r.donateErr, r.negative)
}

func (r *timings) agreement(d time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.negative = r.negative || d < 0
	if err != nil {
		r.agreeErr++
	} else {
		r.agreeOK++
	}
}

func (r *timings) donation(d time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.negative = r.negative || d < 0
	if err != nil {
		r.donateErr++
	} else {
		r.donateOK++
	}
}

// The first division of a pool is timed as an agreement, space given by
// another host as a donation, and a wait no donor can end as a failed one.
func TestMetricsAgreementAndDonationTimed(t *testing.T) {
	var rec timings
	cfg := fastCfg()
	cfg.ObserveAgreement, cfg.ObserveDonation = rec.agreement, rec.donation
	_, nodes := startCluster(t, cfg, "a", "b")
	a, b := nodes[0], nodes[1]
	ids := map[*cnode]string{a: a.pool("198.19.41.0/26", ""), b: b.pool("198.19.41.0/26", "")}
	b.mustAddr(ids[b])
	for i := range 40 { // past a's half of the /26: donations from b
		if _, err := a.addr(ids[a], ""); err != nil {
			t.Fatalf("address %d on a: %v", i, err)
		}
	}
	rec.mu.Lock()
	if rec.agreeOK == 0 || rec.donateOK == 0 || rec.donateErr != 0 || rec.negative {
		t.Errorf("after donations: %+v; want ≥1 agreement and ≥1 donation, all ok and none negative", rec.String())
	}
	rec.mu.Unlock()

	var err error
	for range 64 {
		if _, err = a.addr(ids[a], ""); err != nil {
			break
		}
	}
	if err == nil {
		t.Fatal("the pool never ran out")
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.donateErr == 0 {
		t.Errorf("exhausted pool: %+v; want the last wait for a donation timed as failed", rec.String())
	}
}
