package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"grapevine/driver"
	"grapevine/gossip"
	gvipam "grapevine/ipam"
)

// Sources are the status snapshots the state Collector reads at every
// scrape. A nil field leaves its families out (e.g. before start-up).
type Sources struct {
	// Node is this host's node name: blocks it owns are counted per pool.
	Node string
	// RecordKinds are the record kinds this host's consumers use; records
	// of any other kind (a peer's newer release, or a hostile peer) are
	// counted under kind "other", so the label stays bounded.
	RecordKinds []string

	Members       func() []gossip.Member
	GossipStats   func() gossip.Stats
	GossipRefused func() []gossip.Refusal
	Networks      func() []driver.NetworkStatus
	Programmed    func() map[string]driver.Programmed
	Repairs       func() map[driver.RepairKey]uint64
	DriverRefused func() map[string]uint64
	IPAMRefused   func() map[string]uint64
	Pools         func() []gvipam.PoolStatus
}

// StateCollector turns the snapshots of Sources into metrics at scrape
// time: nothing is counted twice, and nothing is threaded through the code
// that already keeps these numbers.
type StateCollector struct {
	src   Sources
	kinds map[string]bool

	members, records, tombstones, msgs, bytes, refused *prometheus.Desc
	endpoints, unreachable, fdb, neigh, repairs        *prometheus.Desc
	addresses, blocks                                  *prometheus.Desc
}

// NewStateCollector describes every family it can export.
func NewStateCollector(src Sources) *StateCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", name), help, labels, nil)
	}
	c := &StateCollector{src: src, kinds: map[string]bool{}}
	for _, k := range src.RecordKinds {
		c.kinds[k] = true
	}
	c.members = d("gossip_members", "Cluster members as this host sees them, by state (alive includes suspect members; this host included).", "state")
	c.records = d("gossip_records", "Live replicated records held by this host, by kind.", "kind")
	c.tombstones = d("gossip_tombstones", "Deleted records still gossiped so every host hears of the deletion.")
	c.msgs = d("gossip_messages_total", "grapevine gossip messages (record broadcasts, push/pull state windows, fast-path packets) received and handed to memberlist to send, by direction; memberlist's own probes are not counted.", "direction")
	c.bytes = d("gossip_bytes_total", "Bytes of the messages counted by grapevine_gossip_messages_total, before encryption, by direction.", "direction")
	c.refused = d("records_refused_total", "Other hosts' records refused, by layer (gossip: at the boundary, before storing; driver, ipam: where they are used) and cause.", "layer", "cause")
	c.endpoints = d("network_endpoints", "Endpoints of each network, by location (local: on this host; remote: other hosts' endpoints programmed on this host).", "network", "location")
	c.unreachable = d("network_remote_endpoints_unreachable", "Other hosts' endpoints of each network that cannot be programmed (their host is dead, gone or without a VTEP).", "network")
	c.fdb = d("network_fdb_entries", "Forwarding (FDB) entries grapevine programmed on each network's VXLAN device, one per remote MAC.", "network")
	c.neigh = d("network_neighbour_entries", "Neighbour (ARP) entries grapevine programmed on each network's VXLAN device, one per remote endpoint.", "network")
	c.repairs = d("reconcile_repairs_total", "Drift found and fixed by the reconcile loops, by loop and what was repaired.", "loop", "repair")
	c.addresses = d("ipam_addresses", "Addresses of each pool this host may hand out, by state (used: held by endpoints and aux addresses; free: still available in this host's blocks).", "pool", "state")
	c.blocks = d("ipam_blocks_owned", "Blocks of each pool owned by this host.", "pool")
	return c
}

// Describe implements prometheus.Collector.
func (c *StateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.members, c.records, c.tombstones, c.msgs, c.bytes, c.refused,
		c.endpoints, c.unreachable, c.fdb, c.neigh, c.repairs, c.addresses, c.blocks} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *StateCollector) Collect(ch chan<- prometheus.Metric) {
	c.collectGossip(ch)
	c.collectRefused(ch)
	c.collectNetworks(ch)
	c.collectRepairs(ch)
	c.collectPools(ch)
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
}

func (c *StateCollector) collectGossip(ch chan<- prometheus.Metric) {
	if c.src.Members != nil {
		byState := map[string]int{}
		for _, s := range []gossip.MemberState{gossip.StateAlive, gossip.StateDead, gossip.StateLeft} {
			byState[s.String()] = 0
		}
		for _, m := range c.src.Members() {
			byState[m.State.String()]++
		}
		for s, n := range byState {
			gauge(ch, c.members, float64(n), s)
		}
	}
	if c.src.GossipStats == nil {
		return
	}
	st := c.src.GossipStats()
	byKind := map[string]int{}
	for _, k := range c.src.RecordKinds {
		byKind[k] = 0
	}
	for k, n := range st.RecordsByKind {
		if !c.kinds[k] {
			k = "other"
		}
		byKind[k] += n
	}
	for k, n := range byKind {
		gauge(ch, c.records, float64(n), k)
	}
	gauge(ch, c.tombstones, float64(st.Tombstones))
	counter(ch, c.msgs, float64(st.MessagesIn), "in")
	counter(ch, c.msgs, float64(st.MessagesOut), "out")
	counter(ch, c.bytes, float64(st.BytesIn), "in")
	counter(ch, c.bytes, float64(st.BytesOut), "out")
}

// gossipCauses are the causes gossip counts, exported at zero until seen.
var gossipCauses = []gossip.RefusalCause{gossip.CauseMalformed, gossip.CauseBadRecord, gossip.CauseVersion,
	gossip.CauseNotOwner, gossip.CauseImpersonation, gossip.CauseWriterCap, gossip.CauseValidator}

// collectRefused sums gossip's per-(peer, cause) counts by cause: the
// peer names are chosen by the sender, so they are not labels.
func (c *StateCollector) collectRefused(ch chan<- prometheus.Metric) {
	if c.src.GossipRefused != nil {
		byCause := map[string]uint64{}
		for _, cause := range gossipCauses {
			byCause[string(cause)] = 0
		}
		for _, r := range c.src.GossipRefused() {
			byCause[string(r.Cause)] += r.Count
		}
		for cause, n := range byCause {
			counter(ch, c.refused, float64(n), "gossip", cause)
		}
	}
	for layer, f := range map[string]func() map[string]uint64{"driver": c.src.DriverRefused, "ipam": c.src.IPAMRefused} {
		if f == nil {
			continue
		}
		for cause, n := range f() {
			counter(ch, c.refused, float64(n), layer, cause)
		}
	}
}

func (c *StateCollector) collectNetworks(ch chan<- prometheus.Metric) {
	if c.src.Networks == nil {
		return
	}
	var prog map[string]driver.Programmed
	if c.src.Programmed != nil {
		prog = c.src.Programmed()
	}
	for _, n := range c.src.Networks() {
		id := ShortID(n.ID)
		gauge(ch, c.endpoints, float64(n.Endpoints), id, "local")
		gauge(ch, c.endpoints, float64(n.RemoteEndpoints), id, "remote")
		gauge(ch, c.unreachable, float64(n.RemoteUnreachable), id)
		if n.Mode == "macvlan" {
			continue // no VXLAN device: nothing is programmed
		}
		p := prog[n.ID]
		gauge(ch, c.fdb, float64(p.FDB), id)
		gauge(ch, c.neigh, float64(p.Neigh), id)
	}
}

func (c *StateCollector) collectRepairs(ch chan<- prometheus.Metric) {
	if c.src.Repairs == nil {
		return
	}
	for k, n := range c.src.Repairs() {
		counter(ch, c.repairs, float64(n), k.Loop, k.Repair)
	}
}

func (c *StateCollector) collectPools(ch chan<- prometheus.Metric) {
	if c.src.Pools == nil {
		return
	}
	for _, p := range c.src.Pools() {
		gauge(ch, c.addresses, float64(p.Allocated), p.PoolID, "used")
		gauge(ch, c.addresses, float64(p.Free), p.PoolID, "free")
		gauge(ch, c.blocks, float64(ownedBlocks(p, c.src.Node)), p.PoolID)
	}
}

// ownedBlocks counts the blocks of p this host owns: from the cluster's
// division when there is one, else the ranges it owns (a single-host or
// per-host pool is one block owned whole).
func ownedBlocks(p gvipam.PoolStatus, node string) int {
	if len(p.Blocks) == 0 {
		return len(p.Owned)
	}
	n := 0
	for _, b := range p.Blocks {
		if b.Owner == node {
			n++
		}
	}
	return n
}

// ShortID is the 12-character network ID Docker shows.
func ShortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
