// Package metrics exposes grapevine's Prometheus metrics: it owns the
// registry, the few histograms and counters that events feed (API calls,
// agreements, donations, convergence lag), a Collector that reads the
// gossip, driver and IPAM status snapshots at scrape time, and the HTTP
// listener that serves /metrics. It holds no package-level state: the
// plugin makes one Metrics and hands its observer methods to the packages
// that time events.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Namespace prefixes every family grapevine exports.
const Namespace = "grapevine"

// Outcome label values of the latency histograms.
const (
	OutcomeOK    = "ok"
	OutcomeError = "error"
)

// Metrics is the registry and the families fed by events.
type Metrics struct {
	reg         *prometheus.Registry
	apiDuration *prometheus.HistogramVec
	apiErrors   *prometheus.CounterVec
	agreement   *prometheus.HistogramVec
	donation    *prometheus.HistogramVec
	convergence prometheus.Histogram
}

// New makes a registry holding the Go runtime and process collectors and
// grapevine's event-fed families. Add the state Collector with Register.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		apiDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: "api", Name: "request_duration_seconds",
			Help:    "Time to answer one Docker plugin API call (NetworkDriver.*, IpamDriver.*, Grapevine.Status), by method, errors included.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"method"}),
		apiErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "api", Name: "request_errors_total",
			Help: "Docker plugin API calls answered with an error, by method.",
		}, []string{"method"}),
		agreement: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: "ipam", Name: "agreement_duration_seconds",
			Help:    "Time of one IPAM agreement (Paxos instance: a pool's first division or a reclaim) proposed by this host, by outcome.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}, []string{"outcome"}),
		donation: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: "ipam", Name: "donation_duration_seconds",
			Help:    "Time from this host asking another host for address space (ahead, when its free addresses ran low, or while an address request waited) to the space arriving, by outcome.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}, []string{"outcome"}),
		convergence: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "convergence_lag_seconds",
			Help:    "Time from another host's endpoint record reaching this host's replicated state to its FDB and neighbour entries being programmed here (see docs/metrics.md for what it leaves out).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 14),
		}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.apiDuration, m.apiErrors, m.agreement, m.donation, m.convergence,
	)
	// Series exist from the start, at zero, so a dashboard tells "never
	// happened" from "not exported".
	for _, o := range []string{OutcomeOK, OutcomeError} {
		m.agreement.WithLabelValues(o)
		m.donation.WithLabelValues(o)
	}
	return m
}

// InitAPI creates the error counters of methods at zero.
func (m *Metrics) InitAPI(methods ...string) {
	for _, method := range methods {
		m.apiErrors.WithLabelValues(method)
	}
}

// Registry is what the listener serves.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Register adds a Collector (e.g. the state Collector) to the registry.
func (m *Metrics) Register(c prometheus.Collector) error { return m.reg.Register(c) }

// The Observe methods do nothing on a nil *Metrics (metrics off, tests).

// ObserveAPI records one plugin API call; method is the route without its
// leading slash (a fixed set, so the label stays bounded).
func (m *Metrics) ObserveAPI(method string, took time.Duration, err error) {
	if m == nil {
		return
	}
	m.apiDuration.WithLabelValues(method).Observe(took.Seconds())
	if err != nil {
		m.apiErrors.WithLabelValues(method).Inc()
	}
}

// ObserveAgreement records one agreement proposed by this host.
func (m *Metrics) ObserveAgreement(took time.Duration, err error) {
	if m == nil {
		return
	}
	m.agreement.WithLabelValues(outcome(err)).Observe(took.Seconds())
}

// ObserveDonation records one wait for donated space.
func (m *Metrics) ObserveDonation(took time.Duration, err error) {
	if m == nil {
		return
	}
	m.donation.WithLabelValues(outcome(err)).Observe(took.Seconds())
}

// ObserveConvergence records the lag of one remote endpoint's programming.
func (m *Metrics) ObserveConvergence(took time.Duration) {
	if m == nil {
		return
	}
	m.convergence.Observe(max(took, 0).Seconds())
}

func outcome(err error) string {
	if err != nil {
		return OutcomeError
	}
	return OutcomeOK
}
