package plugin

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/sirupsen/logrus"

	"grapevine/driver"
	gvipam "grapevine/ipam"
	"grapevine/metrics"
)

// envMetricsAddr moves or turns off the Prometheus listener.
const envMetricsAddr = "METRICS_ADDR"

// DefaultMetricsAddr is the listener config.json declares: the host's
// loopback (the plugin shares the host's network namespace).
const DefaultMetricsAddr = "127.0.0.1:9947"

// parseMetricsAddr reads METRICS_ADDR: "off" turns the listener off, ""
// means the default (DefaultMetricsAddr, as for every setting left blank);
// otherwise an IP literal and a port. An address beyond loopback is
// allowed, since only an operator can set it, and warned about at start.
func (s *Settings) parseMetricsAddr(getenv func(string) string) error {
	v := strings.TrimSpace(getenv(envMetricsAddr))
	if v == "" {
		v = DefaultMetricsAddr
	}
	if v == "off" {
		return nil
	}
	bad := func(why string) error {
		return fmt.Errorf("setting %s=%q is invalid: %s; want IP:port such as %s, or off (fix with `docker plugin set <plugin> %s=…` while the plugin is disabled)",
			envMetricsAddr, v, why, DefaultMetricsAddr, envMetricsAddr)
	}
	ap, err := netip.ParseAddrPort(v)
	switch {
	case err != nil:
		return bad("not an IP address and port (host names are not resolved)")
	case ap.Addr().Zone() != "":
		return bad("an IPv6 zone is not allowed")
	case ap.Port() == 0:
		return bad("port 0 is not allowed")
	}
	s.MetricsAddr = ap
	return nil
}

// startMetrics opens the metrics listener when METRICS_ADDR asks for one;
// a busy or unusable address is logged, never fatal: metrics are not worth
// refusing Docker's requests for.
func startMetrics(m *metrics.Metrics, s Settings, log *logrus.Entry) *metrics.Server {
	if !s.MetricsAddr.IsValid() {
		log.Infof("%s is off: no Prometheus metrics", envMetricsAddr)
		return nil
	}
	if !s.MetricsAddr.Addr().IsLoopback() {
		log.Warnf("%s=%s: metrics are served beyond this host's loopback; anyone who reaches that address sees this host's members, networks and pools", envMetricsAddr, s.MetricsAddr)
	}
	srv, err := metrics.Listen(s.MetricsAddr.String(), m.Registry(), log)
	if err != nil {
		log.WithError(err).Errorf("no Prometheus metrics; free the port or choose another with %s", envMetricsAddr)
		return nil
	}
	log.WithField("address", srv.Addr().String()).Info("serving Prometheus metrics at /metrics")
	return srv
}

// metricSources are the snapshots the state collector reads from a
// running process.
func (p *process) metricSources() metrics.Sources {
	return metrics.Sources{
		Node:          p.node,
		RecordKinds:   recordKinds(),
		Members:       p.cluster.Members,
		GossipStats:   p.cluster.Stats,
		GossipRefused: p.cluster.RefusalStats,
		Networks:      p.driver.Status,
		Programmed:    p.driver.Programmed,
		Repairs:       p.driver.Repairs,
		DriverRefused: p.driver.Refused,
		IPAMRefused:   p.ipam.Refused,
		Pools:         p.ipam.Status,
	}
}

// recordKinds are the record kinds of every consumer in this release.
func recordKinds() []string {
	return append(append(driver.RecordKinds(), gvipam.RecordKinds()...), kindInstance)
}
