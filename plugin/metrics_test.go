package plugin

import (
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/sirupsen/logrus"

	"grapevine/internal/nstest"
	"grapevine/metrics"
)

func TestParseMetricsAddr(t *testing.T) {
	for v, want := range map[string]string{
		"":                 DefaultMetricsAddr, // blank: the default, as for every setting
		"off":              "",
		"  off ":           "", //nolint:gocritic // surrounding spaces are what this case tests
		"[::1]:9100":       "[::1]:9100",
		"198.18.0.1:9947":  "198.18.0.1:9947", // beyond loopback: the operator said so
		"0.0.0.0:9947":     "0.0.0.0:9947",
		DefaultMetricsAddr: DefaultMetricsAddr,
	} {
		s, err := ParseSettings(envOf(map[string]string{envMetricsAddr: v}))
		if err != nil {
			t.Errorf("%s=%q: %v", envMetricsAddr, v, err)
			continue
		}
		got := ""
		if s.MetricsAddr.IsValid() {
			got = s.MetricsAddr.String()
		}
		if got != want {
			t.Errorf("%s=%q: address %q, want %q", envMetricsAddr, v, got, want)
		}
	}
}

// Values an operator might mistype, or that would make the listener
// resolve names or pick a port, are refused with the fix.
func TestParseMetricsAddrRefused(t *testing.T) {
	for _, v := range []string{"9947", ":9947", "localhost:9947", "metrics.example:9947", "127.0.0.1", "127.0.0.1:0",
		"127.0.0.1:65536", "127.0.0.1:-1", "[fe80::1%eth0]:9947", "http://127.0.0.1:9947", "127.0.0.1:9947/metrics", "on"} {
		s, err := ParseSettings(envOf(map[string]string{envMetricsAddr: v}))
		if err == nil {
			t.Errorf("%s=%q accepted as %v", envMetricsAddr, v, s.MetricsAddr)
			continue
		}
		if !strings.Contains(err.Error(), envMetricsAddr) || !strings.Contains(err.Error(), "docker plugin set") {
			t.Errorf("%s=%q: error %q does not name the setting and its fix", envMetricsAddr, v, err)
		}
		if s.MetricsAddr.IsValid() {
			t.Errorf("%s=%q: refused but the listener address is set to %v", envMetricsAddr, v, s.MetricsAddr)
		}
	}
}

// Every call the server answers is timed by method, and the failed ones
// are counted as errors of their method.
func TestServerObservesCalls(t *testing.T) {
	log := logrus.New()
	log.SetOutput(io.Discard)
	m := metrics.New()
	s := NewServer(logrus.NewEntry(log))
	s.observe = m.ObserveAPI
	s.SetBackend(&fakeNet{}, fakeIPAM{}, func() any { return map[string]string{"host": "h1"} }, nil)
	ts := serveTest(t, s)

	post(t, ts, "/NetworkDriver.GetCapabilities", "")
	post(t, ts, "/NetworkDriver.CreateNetwork", "{not json")
	post(t, ts, "/NetworkDriver.CreateNetwork", "[]")

	want := `
# HELP grapevine_api_request_errors_total Docker plugin API calls answered with an error, by method.
# TYPE grapevine_api_request_errors_total counter
grapevine_api_request_errors_total{method="NetworkDriver.CreateNetwork"} 2
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "grapevine_api_request_errors_total"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(m.Registry(), "grapevine_api_request_duration_seconds"); err != nil || n != 2 {
		t.Errorf("duration series = %d (%v), want 2 (GetCapabilities, CreateNetwork)", n, err)
	}
}

// The whole process in a namespace of its own serves its metrics on the
// loopback address METRICS_ADDR names: the state collector is registered
// once start-up succeeds, and the API calls already answered are counted.
func TestServeMetrics(t *testing.T) {
	if !nstest.InOwnProcess(t) {
		return
	}
	underlay(t)
	dir := t.TempDir()
	opts := Options{Socket: filepath.Join(dir, "run", "gv.sock"), StateDir: filepath.Join(dir, "state"), ReconcileEvery: time.Minute}
	status, _ := serving(t, opts, map[string]string{envAdvertise: "ul0", envPool: "198.19.128.0/17", envMetricsAddr: DefaultMetricsAddr})
	status()
	c := newSocketClient(t, opts.Socket)
	var pool struct{ PoolID, Pool string }
	c.call("/IpamDriver.RequestPool", map[string]any{"AddressSpace": "grapevine-local"}, &pool)

	resp, err := http.Get("http://" + DefaultMetricsAddr + metrics.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	value := func(family string, label, want string) float64 {
		for _, m := range mfs[family].GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == want {
					if h := m.GetHistogram(); h != nil {
						return float64(h.GetSampleCount())
					}
					return m.GetGauge().GetValue()
				}
			}
		}
		t.Errorf("no %s{%s=%q} in the scrape", family, label, want)
		return -1
	}
	if v := value("grapevine_gossip_members", "state", "alive"); v != 1 {
		t.Errorf("members alive = %v, want 1 (this host)", v)
	}
	if v := value("grapevine_api_request_duration_seconds", "method", "Grapevine.Status"); v < 1 {
		t.Errorf("status calls timed = %v, want ≥ 1", v)
	}
	if v := value("grapevine_ipam_addresses", "pool", "grapevine-local/"+pool.Pool); v < 0 {
		t.Errorf("pool %s absent", pool.Pool)
	}
}
