package metrics_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"grapevine/driver"
	"grapevine/gossip"
	gvipam "grapevine/ipam"
	"grapevine/metrics"
)

const netA = "aaaaaaaaaaaa0123456789aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

// sources is one host's snapshots: three members (one dead), records of
// two known kinds, one VXLAN network with two local and three remote
// endpoints, and one pool of a cluster divided among two hosts.
func sources() metrics.Sources {
	return metrics.Sources{
		Node:        "h1",
		RecordKinds: []string{"endpoint", "network"},
		Members: func() []gossip.Member {
			return []gossip.Member{
				{Name: "h1", State: gossip.StateAlive, Self: true},
				{Name: "h2", State: gossip.StateAlive, Addr: netip.MustParseAddrPort("198.18.0.2:7947")},
				{Name: "h3", State: gossip.StateDead},
			}
		},
		GossipStats: func() gossip.Stats {
			return gossip.Stats{
				StoreStats: gossip.StoreStats{Tombstones: 1, RecordsByKind: map[string]int{"endpoint": 5, "network": 2}},
				MessagesIn: 10, BytesIn: 1000, MessagesOut: 7, BytesOut: 700,
			}
		},
		GossipRefused: func() []gossip.Refusal {
			return []gossip.Refusal{{Peer: "h2", Cause: gossip.CauseNotOwner, Count: 2}, {Peer: "h3", Cause: gossip.CauseNotOwner, Count: 3}}
		},
		Networks: func() []driver.NetworkStatus {
			return []driver.NetworkStatus{{ID: netA, Mode: "vxlan", Endpoints: 2, RemoteEndpoints: 3, RemoteUnreachable: 1}}
		},
		Programmed: func() map[string]driver.Programmed { return map[string]driver.Programmed{netA: {FDB: 2, Neigh: 3}} },
		Repairs: func() map[driver.RepairKey]uint64 {
			return map[driver.RepairKey]uint64{{Loop: "peers", Repair: "fdb_set"}: 4}
		},
		DriverRefused: func() map[string]uint64 { return map[string]uint64{"foreign-host": 1} },
		IPAMRefused:   func() map[string]uint64 { return nil },
		Pools: func() []gvipam.PoolStatus {
			return []gvipam.PoolStatus{{PoolID: "grapevine-local/198.18.4.0/24", Allocated: 3, Free: 60, Blocks: []gvipam.BlockStatus{
				{Owner: "h1"}, {Owner: "h2"}, {Owner: "h1"},
			}}}
		},
	}
}

func TestStateCollectorFamilies(t *testing.T) {
	want := `
# HELP grapevine_gossip_members Cluster members as this host sees them, by state (alive includes suspect members; this host included).
# TYPE grapevine_gossip_members gauge
grapevine_gossip_members{state="alive"} 2
grapevine_gossip_members{state="dead"} 1
grapevine_gossip_members{state="left"} 0
# HELP grapevine_gossip_records Live replicated records held by this host, by kind.
# TYPE grapevine_gossip_records gauge
grapevine_gossip_records{kind="endpoint"} 5
grapevine_gossip_records{kind="network"} 2
# HELP grapevine_gossip_messages_total grapevine gossip messages (record broadcasts, push/pull state windows, fast-path packets) received and handed to memberlist to send, by direction; memberlist's own probes are not counted.
# TYPE grapevine_gossip_messages_total counter
grapevine_gossip_messages_total{direction="in"} 10
grapevine_gossip_messages_total{direction="out"} 7
# HELP grapevine_records_refused_total Other hosts' records refused, by layer (gossip: at the boundary, before storing; driver, ipam: where they are used) and cause.
# TYPE grapevine_records_refused_total counter
grapevine_records_refused_total{cause="bad-record",layer="gossip"} 0
grapevine_records_refused_total{cause="foreign-host",layer="driver"} 1
grapevine_records_refused_total{cause="impersonation",layer="gossip"} 0
grapevine_records_refused_total{cause="malformed",layer="gossip"} 0
grapevine_records_refused_total{cause="not-owner",layer="gossip"} 5
grapevine_records_refused_total{cause="validator",layer="gossip"} 0
grapevine_records_refused_total{cause="version",layer="gossip"} 0
grapevine_records_refused_total{cause="writer-cap",layer="gossip"} 0
# HELP grapevine_network_endpoints Endpoints of each network, by location (local: on this host; remote: other hosts' endpoints programmed on this host).
# TYPE grapevine_network_endpoints gauge
grapevine_network_endpoints{location="local",network="aaaaaaaaaaaa"} 2
grapevine_network_endpoints{location="remote",network="aaaaaaaaaaaa"} 3
# HELP grapevine_network_fdb_entries Forwarding (FDB) entries grapevine programmed on each network's VXLAN device, one per remote MAC.
# TYPE grapevine_network_fdb_entries gauge
grapevine_network_fdb_entries{network="aaaaaaaaaaaa"} 2
# HELP grapevine_network_neighbour_entries Neighbour (ARP) entries grapevine programmed on each network's VXLAN device, one per remote endpoint.
# TYPE grapevine_network_neighbour_entries gauge
grapevine_network_neighbour_entries{network="aaaaaaaaaaaa"} 3
# HELP grapevine_reconcile_repairs_total Drift found and fixed by the reconcile loops, by loop and what was repaired.
# TYPE grapevine_reconcile_repairs_total counter
grapevine_reconcile_repairs_total{loop="peers",repair="fdb_set"} 4
# HELP grapevine_ipam_addresses Addresses of each pool this host may hand out, by state (used: held by endpoints and aux addresses; free: still available in this host's blocks).
# TYPE grapevine_ipam_addresses gauge
grapevine_ipam_addresses{pool="grapevine-local/198.18.4.0/24",state="free"} 60
grapevine_ipam_addresses{pool="grapevine-local/198.18.4.0/24",state="used"} 3
# HELP grapevine_ipam_blocks_owned Blocks of each pool owned by this host.
# TYPE grapevine_ipam_blocks_owned gauge
grapevine_ipam_blocks_owned{pool="grapevine-local/198.18.4.0/24"} 2
`
	c := metrics.NewStateCollector(sources())
	names := []string{"grapevine_gossip_members", "grapevine_gossip_records", "grapevine_gossip_messages_total",
		"grapevine_records_refused_total", "grapevine_network_endpoints", "grapevine_network_fdb_entries",
		"grapevine_network_neighbour_entries", "grapevine_reconcile_repairs_total", "grapevine_ipam_addresses", "grapevine_ipam_blocks_owned"}
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
}

// A peer that writes records of made-up kinds and signs refused records
// with thousands of names must not add a label value per kind or name.
func TestStateCollectorHostileLabelsBounded(t *testing.T) {
	src := sources()
	src.GossipStats = func() gossip.Stats {
		byKind := map[string]int{"endpoint": 1}
		for i := range 1000 {
			byKind[fmt.Sprintf("junk-%d", i)] = 1
		}
		return gossip.Stats{StoreStats: gossip.StoreStats{RecordsByKind: byKind}}
	}
	src.GossipRefused = func() []gossip.Refusal {
		var out []gossip.Refusal
		for i := range 1000 {
			out = append(out, gossip.Refusal{Peer: fmt.Sprintf("forger-%d", i), Cause: gossip.CauseImpersonation, Count: 1})
		}
		return out
	}
	c := metrics.NewStateCollector(src)
	if n := testutil.CollectAndCount(c, "grapevine_gossip_records"); n != 3 {
		t.Errorf("grapevine_gossip_records has %d series, want 3 (endpoint, network, other)", n)
	}
	want := `
# HELP grapevine_gossip_records Live replicated records held by this host, by kind.
# TYPE grapevine_gossip_records gauge
grapevine_gossip_records{kind="endpoint"} 1
grapevine_gossip_records{kind="network"} 0
grapevine_gossip_records{kind="other"} 1000
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "grapevine_gossip_records"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(c, "grapevine_records_refused_total"); n != 8 {
		t.Errorf("grapevine_records_refused_total has %d series, want 8 (gossip's 7 causes, driver foreign-host)", n)
	}
}

// Without a cluster division, a pool this host owns whole is one block.
func TestStateCollectorSingleHostPool(t *testing.T) {
	src := metrics.Sources{Pools: func() []gvipam.PoolStatus {
		return []gvipam.PoolStatus{{PoolID: "grapevine-local/198.18.5.0/24", Owned: []string{"198.18.5.1-198.18.5.254"}}}
	}}
	want := `
# HELP grapevine_ipam_blocks_owned Blocks of each pool owned by this host.
# TYPE grapevine_ipam_blocks_owned gauge
grapevine_ipam_blocks_owned{pool="grapevine-local/198.18.5.0/24"} 1
`
	if err := testutil.CollectAndCompare(metrics.NewStateCollector(src), strings.NewReader(want), "grapevine_ipam_blocks_owned"); err != nil {
		t.Fatal(err)
	}
}

// Every family follows Prometheus's naming conventions (promlint).
func TestFamiliesLint(t *testing.T) {
	m := metrics.New()
	if err := m.Register(metrics.NewStateCollector(sources())); err != nil {
		t.Fatal(err)
	}
	m.ObserveAPI("NetworkDriver.Join", 1, nil)
	m.ObserveAgreement(1, nil)
	m.ObserveDonation(1, nil)
	m.ObserveConvergence(1)
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var ours []string
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), metrics.Namespace+"_") {
			ours = append(ours, mf.GetName())
		}
	}
	if len(ours) < 17 {
		t.Errorf("gathered %d grapevine families, want at least 17: %v", len(ours), ours)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, metrics.Namespace+"_") {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
}

// An API call that failed is counted as an error of its method only.
func TestObserveAPIErrors(t *testing.T) {
	m := metrics.New()
	m.ObserveAPI("IpamDriver.RequestAddress", 2e6, fmt.Errorf("pool full"))
	m.ObserveAPI("IpamDriver.RequestAddress", 1e6, nil)
	m.ObserveAPI("NetworkDriver.Join", 1e6, nil)
	want := `
# HELP grapevine_api_request_errors_total Docker plugin API calls answered with an error, by method.
# TYPE grapevine_api_request_errors_total counter
grapevine_api_request_errors_total{method="IpamDriver.RequestAddress"} 1
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "grapevine_api_request_errors_total"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(m.Registry(), "grapevine_api_request_duration_seconds"); err != nil || n != 2 {
		t.Errorf("duration series = %d (%v), want 2 (one per method)", n, err)
	}
	var nilMetrics *metrics.Metrics
	nilMetrics.ObserveAPI("x", 1, nil) // metrics off: a no-op, not a panic
}

var _ prometheus.Collector = (*metrics.StateCollector)(nil)
