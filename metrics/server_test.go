package metrics_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"grapevine/metrics"
)

func TestListenServesMetricsOnly(t *testing.T) {
	m := metrics.New()
	if err := m.Register(metrics.NewStateCollector(sources())); err != nil {
		t.Fatal(err)
	}
	srv, err := metrics.Listen("127.0.0.1:0", m.Registry(), logrus.NewEntry(logrus.New()))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	base := "http://" + srv.Addr().String()

	resp, err := http.Get(base + metrics.Path)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", metrics.Path, resp.Status)
	}
	for _, want := range []string{`grapevine_gossip_members{state="alive"} 2`, "go_goroutines", "process_open_fds"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("scrape lacks %q", want)
		}
	}

	for _, path := range []string{"/", "/debug/pprof/", "/metrics/../status"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %s, want 404: only /metrics is served", path, resp.Status)
		}
	}
}

// A busy address is an error at Listen, so the plugin can say so.
func TestListenBusyAddress(t *testing.T) {
	m := metrics.New()
	first, err := metrics.Listen("127.0.0.1:0", m.Registry(), logrus.NewEntry(logrus.New()))
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if second, err := metrics.Listen(first.Addr().String(), m.Registry(), logrus.NewEntry(logrus.New())); err == nil {
		second.Close()
		t.Fatal("a second listener on the same address started")
	}
}
