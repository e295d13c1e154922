//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// metricsURL is where every host's plugin serves its metrics by default:
// the loopback of the host's network namespace, which the plugin shares.
const metricsURL = "http://127.0.0.1:9947/metrics"

// scrape fetches and parses host's metrics from inside its namespace.
func scrape(host string) (map[string]*dto.MetricFamily, error) {
	out, stderr, err := inHost(host, "curl", "-sSf", "--max-time", "10", metricsURL)
	if err != nil {
		return nil, fmt.Errorf("scraping %s on %s: %v: %s", metricsURL, host, err, stderr)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(out))
	if err != nil {
		return nil, fmt.Errorf("parsing the scrape of %s: %w", host, err)
	}
	return mfs, nil
}

// sample is the value of family's series whose labels include want
// (name=value pairs); histograms give their sample count. ok is false when
// the family or the series is absent.
func sample(mfs map[string]*dto.MetricFamily, family string, want ...string) (float64, bool) {
	mf := mfs[family]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(want); i += 2 {
			if labels[want[i]] != want[i+1] {
				continue next
			}
		}
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue(), true
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue(), true
		case m.GetHistogram() != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// TestMetricsScrape: on a 3-host cluster with one /26 network, one container
// on each host, then, on the host that owns the fewest addresses, one more
// container than it has free addresses (so it must ask the others for
// space): every host's scrape carries every family with values that match
// what was started; and the listener is on loopback only.
func TestMetricsScrape(t *testing.T) {
	needHosts(t, 3)
	hosts := clusterHosts()[:3]
	for _, h := range hosts {
		waitMembers(t, 30*time.Second, h, clusterHosts())
	}
	const nw, subnet = "metr", "198.19.61.0/26"
	pool := "grapevine-local/" + subnet
	netIDs := map[string]string{}
	for _, h := range hosts {
		netIDs[h] = createNetwork(t, h, nw, "--subnet", subnet)
	}
	local := map[string]int{}
	var cs []ctr
	start := func(h string) {
		cs = append(cs, startCtr(t, h, nw, fmt.Sprintf("%s-%s-%d", nw, h, local[h])))
		local[h]++
	}
	for _, h := range hosts {
		start(h)
	}
	// The host with the fewest free addresses, per its own metrics.
	full, fewest := "", 1e9
	for _, h := range hosts {
		mfs, err := scrape(h)
		if err != nil {
			t.Fatal(err)
		}
		free, ok := sample(mfs, "grapevine_ipam_addresses", "pool", pool, "state", "free")
		if !ok {
			t.Fatalf("%s: no grapevine_ipam_addresses for %s", h, pool)
		}
		if free < fewest {
			full, fewest = h, free
		}
	}
	t.Logf("%s has %v free addresses: %v more containers there need donated space", full, fewest, fewest+1)
	for range int(fewest) + 1 {
		start(full)
	}
	distinct(t, cs)
	fullMesh(t, 60*time.Second, cs)

	agreements := 0.0
	for _, h := range hosts {
		t.Run(h, func(t *testing.T) {
			checkHostMetrics(t, h, netIDs[h][:12], pool, local[h], len(cs)-local[h])
			mfs, err := scrape(h)
			if err != nil {
				t.Fatal(err)
			}
			n, _ := sample(mfs, "grapevine_ipam_agreement_duration_seconds", "outcome", "ok")
			agreements += n
			if h == full {
				if n, _ := sample(mfs, "grapevine_ipam_donation_duration_seconds", "outcome", "ok"); n < 1 {
					t.Errorf("%s ran more containers than it had free addresses but timed no donation", h)
				}
			}
		})
	}
	if agreements < 1 {
		t.Errorf("no host timed the agreement that divided %s", subnet)
	}

	t.Run("loopback only", func(t *testing.T) {
		out, _, err := inLAN("curl", "-sS", "--max-time", "5", fmt.Sprintf("http://%s:9947/metrics", hostAddr(full)))
		if err == nil {
			t.Fatalf("the LAN scraped %s's metrics at its underlay address:\n%.200s", full, out)
		}
	})
}

// checkHostMetrics asserts every family on one host's scrape. Remote
// entries converge after the pings, so the scrape is retried for a while.
func checkHostMetrics(t *testing.T, h, netID, pool string, local, remote int) {
	t.Helper()
	var (
		problems   []string
		lastScrape map[string]*dto.MetricFamily
	)
	check := func(family string, ok func(v float64) bool, want string, labels ...string) {
		v, present := sample(lastScrape, family, labels...)
		if !present {
			problems = append(problems, fmt.Sprintf("%s%v absent", family, labels))
		} else if !ok(v) {
			problems = append(problems, fmt.Sprintf("%s%v = %v, want %s", family, labels, v, want))
		}
	}
	eq := func(n int) func(float64) bool { return func(v float64) bool { return v == float64(n) } }
	atLeast := func(n int) func(float64) bool { return func(v float64) bool { return v >= float64(n) } }
	eventuallyOr(t, 30*time.Second, "plausible metrics on "+h, func() error {
		mfs, err := scrape(h)
		if err != nil {
			return err
		}
		lastScrape, problems = mfs, nil
		check("grapevine_gossip_members", eq(3), "3", "state", "alive")
		check("grapevine_gossip_messages_total", atLeast(1), "≥ 1", "direction", "in")
		check("grapevine_gossip_messages_total", atLeast(1), "≥ 1", "direction", "out")
		check("grapevine_gossip_bytes_total", atLeast(100), "≥ 100", "direction", "in")
		check("grapevine_gossip_bytes_total", atLeast(100), "≥ 100", "direction", "out")
		check("grapevine_gossip_records", atLeast(local+remote), fmt.Sprintf("≥ %d", local+remote), "kind", "endpoint")
		check("grapevine_gossip_records", atLeast(3), "≥ 3", "kind", "network")
		check("grapevine_gossip_tombstones", atLeast(0), "≥ 0")
		check("grapevine_records_refused_total", atLeast(0), "≥ 0", "layer", "gossip", "cause", "impersonation")
		check("grapevine_network_endpoints", eq(local), fmt.Sprint(local), "network", netID, "location", "local")
		check("grapevine_network_endpoints", eq(remote), fmt.Sprint(remote), "network", netID, "location", "remote")
		check("grapevine_network_remote_endpoints_unreachable", eq(0), "0", "network", netID)
		check("grapevine_network_fdb_entries", eq(remote), fmt.Sprint(remote), "network", netID)
		check("grapevine_network_neighbour_entries", eq(remote), fmt.Sprint(remote), "network", netID)
		check("grapevine_reconcile_repairs_total", atLeast(0), "≥ 0", "loop", "peers", "repair", "fdb_set")
		check("grapevine_ipam_addresses", atLeast(local), fmt.Sprintf("≥ %d", local), "pool", pool, "state", "used")
		check("grapevine_ipam_addresses", atLeast(0), "≥ 0", "pool", pool, "state", "free")
		check("grapevine_ipam_blocks_owned", atLeast(1), "≥ 1", "pool", pool)
		check("grapevine_ipam_agreement_duration_seconds", atLeast(0), "≥ 0", "outcome", "ok")
		check("grapevine_ipam_donation_duration_seconds", atLeast(0), "≥ 0", "outcome", "ok")
		check("grapevine_api_request_duration_seconds", atLeast(local), fmt.Sprintf("≥ %d", local), "method", "NetworkDriver.Join")
		check("grapevine_api_request_errors_total", atLeast(0), "≥ 0", "method", "NetworkDriver.Join")
		check("grapevine_convergence_lag_seconds", atLeast(remote), fmt.Sprintf("≥ %d", remote))
		if len(problems) > 0 {
			return fmt.Errorf("%s", strings.Join(problems, "\n"))
		}
		return nil
	}, func() string { return "" })
	if lag := lastScrape["grapevine_convergence_lag_seconds"]; lag != nil {
		hist := lag.GetMetric()[0].GetHistogram()
		if mean := hist.GetSampleSum() / float64(hist.GetSampleCount()); mean > 30 {
			t.Errorf("%s: mean convergence lag %.1fs, want well under 30s", h, mean)
		}
	}
}
