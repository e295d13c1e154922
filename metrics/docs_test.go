package metrics_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"grapevine/metrics"
)

// gathered returns every grapevine family a registry with the state
// collector exports.
func gathered(t *testing.T) map[string]bool {
	t.Helper()
	m := metrics.New()
	if err := m.Register(metrics.NewStateCollector(sources())); err != nil {
		t.Fatal(err)
	}
	m.InitAPI("NetworkDriver.Join")
	m.ObserveAPI("NetworkDriver.Join", 1, nil)
	m.ObserveConvergence(1)
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), metrics.Namespace+"_") {
			out[mf.GetName()] = true
		}
	}
	return out
}

var familyName = regexp.MustCompile(`grapevine_[a-z_]+[a-z]`)

// namesIn lists the grapevine_ names in a file, histogram suffixes removed.
func namesIn(t *testing.T, path string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, n := range familyName.FindAllString(string(b), -1) {
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			if strings.HasSuffix(n, "_seconds"+suffix) {
				n = strings.TrimSuffix(n, suffix)
			}
		}
		out[n] = true
	}
	return out
}

// docs/metrics.md lists every family exported, and it and the Grafana
// dashboard name only families that exist.
func TestDocsAndDashboardMatchFamilies(t *testing.T) {
	have := gathered(t)
	doc := namesIn(t, "../docs/metrics.md")
	for f := range have {
		if !doc[f] {
			t.Errorf("docs/metrics.md does not list %s", f)
		}
	}
	for f := range doc {
		if !have[f] {
			t.Errorf("docs/metrics.md names %s, which is not exported", f)
		}
	}
	dash := namesIn(t, "../docs/grafana-dashboard.json")
	for f := range dash {
		if !have[f] {
			t.Errorf("docs/grafana-dashboard.json queries %s, which is not exported", f)
		}
	}
	for f := range have {
		if !dash[f] {
			t.Errorf("docs/grafana-dashboard.json has no panel for %s", f)
		}
	}
}
