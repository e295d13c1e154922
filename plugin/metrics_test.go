package plugin

import (
	"io"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sirupsen/logrus"

	"grapevine/metrics"
)

func TestParseMetricsAddr(t *testing.T) {
	for v, want := range map[string]string{
		"":                 "", // off
		"off":              "",
		"  off ":           "",
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
