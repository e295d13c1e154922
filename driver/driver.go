// Package driver is grapevine's libnetwork NetworkDriver. It owns the decisions
// about networks and endpoints on this host: it validates Docker's requests,
// chooses kernel names, VNIs, MTUs, MACs and host ports, persists everything in
// the bbolt bucket "driver" (Docker never replays its calls after a restart),
// and tells the dataplane what must exist. It never touches the kernel itself.
//
// Kernel objects are named from persisted ids (dataplane/names.go spells the
// names) so that Reconcile can recreate what is missing and remove what no
// longer belongs to anything: per network a bridge (gvb-) and a VXLAN device
// (gvx-), per endpoint a veth pair (gve-, gvc-); in macvlan mode (see
// macvlan.go) per endpoint a macvlan child (gvc-), per network an internal
// parent (gvm-, with no -o parent) and a host shim (gvh-, host_access), and
// the VLAN links IF.VLAN that grapevine created.
//
// With a gossip cluster (Config.Cluster) the driver also publishes what this
// host has — a "network" record per subnet ("<subnet>/<node>": mode, VNI,
// gateway, MTU) and an "endpoint" record per endpoint ("<subnet>/<ip>": MAC,
// host) — and programs every other host's endpoints of the networks that exist
// here on the network's VXLAN device: one FDB entry (MAC → the host's VTEP)
// and one permanent neighbour entry (IP → MAC). A subnet keeps one identity
// across hosts: a host refuses to define it with another mode, VNI or
// gateway, and adopts the cluster's VNI when none is given. Entries follow
// records and membership (a dead or departed host's endpoints are removed,
// re-added when it returns) and are repaired periodically in both
// directions (ReconcilePeers). Other hosts' records are checked before they
// are used and a refused one programs nothing (trust.go). See cluster.go and
// peers.go.
package driver

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/sirupsen/logrus"
	"go.etcd.io/bbolt"

	"grapevine/driver/dataplane"
	"grapevine/gossip"
	"grapevine/internal/ratelog"
)

// Option keys Docker sends.
const (
	optGeneric    = "com.docker.network.generic"
	optInternal   = "com.docker.network.internal"
	optEnableIPv6 = "com.docker.network.enable_ipv6"
	optMTU        = "com.docker.network.driver.mtu"
	optPortMap    = "com.docker.network.portmap"
	optExposed    = "com.docker.network.endpoint.exposedports"
	optMACAddress = "com.docker.network.endpoint.macaddress"
)

// Config wires a Driver. DB, Dataplane, Underlay, VXLANPort, Scope and
// AddressSpaces are required. New checks the fields for programming errors
// only: the plugin checks the operator's settings, by their names, before it
// fills them in, and holds their defaults.
type Config struct {
	// DB is the plugin's bbolt database; the driver uses bucket "driver".
	DB *bbolt.DB
	// Dataplane is the only way to the kernel.
	Dataplane dataplane.Dataplane
	// Underlay resolves ADVERTISE: the VTEP address, its link and MTU. Called on
	// CreateNetwork and on every Reconcile, so an address change is picked up.
	Underlay func() (dataplane.Underlay, error)
	// VXLANPort is the UDP port of every VXLAN device (1-65535).
	VXLANPort int
	// Scope is the capability scope answered to Docker, network.LocalScope
	// or network.GlobalScope. ConnectivityScope is always global.
	Scope string
	// AddressSpaces are the IPAM address spaces of grapevine's own IPAM
	// ("grapevine-local", "grapevine-global"). Networks whose pool comes from
	// another IPAM are refused: their addresses would not be unique across hosts.
	AddressSpaces []string
	// PluginName is the plugin's full name:tag, used in error messages that tell
	// operators which --ipam-driver to pass; "" gives a generic wording.
	PluginName string
	// Log receives the driver's log lines; nil discards them.
	Log *logrus.Entry
	// Cluster is the gossip cluster the driver publishes this host's networks
	// and endpoints to and learns the other hosts' from. Nil: a single host,
	// nothing published, no remote endpoints.
	Cluster gossip.Replicated
	// PeerRepair is how often the remote endpoint entries are compared with
	// the kernel and repaired (ReconcilePeers); 0 means 10 s, negative never
	// (Reconcile still does it). Only used with a Cluster.
	PeerRepair time.Duration
	// AddressHoldoff is how long a host's endpoint record for an address
	// another live host's endpoint holds must stay, uncontested, before the
	// address moves to it here (the holder re-announces an address it still
	// has at its next Reconcile); 0 means 2 minutes. Only used with a Cluster.
	AddressHoldoff time.Duration
	// LeftGrace is how long a member that left gracefully keeps its
	// endpoints programmed and its VTEP in the VXLAN ingress filter (see
	// grace.go); 0 means 2 minutes. Only used with a Cluster.
	LeftGrace time.Duration
	// HostAddress, when set, allocates this host's own address in the
	// grapevine IPAM pool of a subnet (address space, subnet): the macvlan
	// host shim of -o host_access=true when no --aux-address gives one. It
	// is called without the driver's lock (it may wait for the cluster),
	// answers repeats with the same address, and the address is freed with
	// the pool. Nil: host_access needs an --aux-address.
	HostAddress func(space string, subnet netip.Prefix) (netip.Addr, error)
	// Forgotten, when set, reports whether the cluster forgot a node by
	// agreement (IPAM's forget): such a member's endpoints are never
	// programmed, its VTEP never accepted and it is no tunnel peer, as if
	// it were dead. Called with the driver's lock held: it must not call
	// back into the driver.
	Forgotten func(node string) bool
	// Tunnel enables encrypted networks (-o encrypted=true); its zero
	// value refuses them.
	Tunnel TunnelConfig
	// ObserveConvergence, when set, is told the lag between another host's
	// endpoint record reaching this host and its entries being programmed
	// (called with the driver's lock held: it must be quick).
	ObserveConvergence func(time.Duration)
}

// Driver implements the NetworkDriver calls. All methods are safe for
// concurrent use; one mutex serialises state changes together with the kernel
// calls and the durable writes that belong to them.
type Driver struct {
	dp         dataplane.Dataplane
	underlay   func() (dataplane.Underlay, error)
	store      store
	port       int
	scope      string
	spaces     []string
	pluginName string
	log        *logrus.Entry
	// hostAddr allocates host shim addresses (Config.HostAddress).
	hostAddr func(space string, subnet netip.Prefix) (netip.Addr, error)
	// forgotten reports nodes the cluster forgot (Config.Forgotten).
	forgotten func(node string) bool

	// node and hostname name this host in --aux-address host-<name>=IP
	// (host_access): the cluster's node name (node, "" without a cluster)
	// and the host name.
	node, hostname string

	// tunnel is Config.Tunnel; lastUnderlay the underlay the last
	// Reconcile resolved (nil: none yet), for the tunnel's MTU. Guarded by mu.
	tunnel       TunnelConfig
	lastUnderlay *dataplane.Underlay

	mu        sync.Mutex
	networks  map[string]*networkRecord
	endpoints map[string]*endpointRecord
	vlans     map[string]*vlanRecord // VLAN links grapevine created, by name

	// Cluster state (all nil without a Cluster). peers is guarded by mu.
	cluster   gossip.Replicated
	self      string
	holdoff   time.Duration
	left      *leftPeers
	peers     *peerState
	wake      chan struct{}
	probeKick chan struct{} // the probe device failed for a reason that passes: retry soon
	// sandboxKick signals SandboxChanges (buffered, one pending signal).
	sandboxKick chan struct{}
	stop        chan struct{}
	done        chan struct{}
	closeOnce   sync.Once

	// For metrics, guarded by mu: drift fixed by the reconcile loops, and
	// where the convergence lag goes.
	repairs    map[RepairKey]uint64
	observeLag func(time.Duration)
	peerLog    *ratelog.Limiter // repeated failures to program a peer's endpoints

	// filterSynced: the last firewall sync succeeded, so the VXLAN ingress
	// filter is in place when a VXLAN network exists (the probe device's
	// precondition). Guarded by mu.
	filterSynced bool
}

// New checks cfg, creates the bucket if needed and loads the persisted networks
// and endpoints. It does not touch the kernel: call Reconcile for that.
func New(cfg Config) (*Driver, error) {
	if cfg.DB == nil {
		return nil, errors.New("driver: Config.DB is nil")
	}
	if cfg.Dataplane == nil {
		return nil, errors.New("driver: Config.Dataplane is nil")
	}
	if cfg.Underlay == nil {
		return nil, errors.New("driver: Config.Underlay is nil")
	}
	if len(cfg.AddressSpaces) == 0 {
		return nil, errors.New("driver: Config.AddressSpaces is empty: list grapevine's IPAM address spaces")
	}
	if cfg.Scope != network.LocalScope && cfg.Scope != network.GlobalScope {
		return nil, fmt.Errorf("driver: Config.Scope %q is not a scope: want %q or %q", cfg.Scope, network.LocalScope, network.GlobalScope)
	}
	if cfg.VXLANPort < 1 || cfg.VXLANPort > 65535 {
		return nil, fmt.Errorf("driver: Config.VXLANPort %d is not a port: want 1-65535", cfg.VXLANPort)
	}
	log := cfg.Log
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = logrus.NewEntry(l)
	}
	d := &Driver{
		dp:          cfg.Dataplane,
		underlay:    cfg.Underlay,
		store:       store{db: cfg.DB},
		port:        cfg.VXLANPort,
		tunnel:      cfg.Tunnel,
		scope:       cfg.Scope,
		spaces:      slices.Clone(cfg.AddressSpaces),
		pluginName:  cfg.PluginName,
		log:         log,
		hostAddr:    cfg.HostAddress,
		forgotten:   cfg.Forgotten,
		observeLag:  cfg.ObserveConvergence,
		peerLog:     ratelog.New(peerLogInterval, peerLogKeys, nil),
		sandboxKick: make(chan struct{}, 1),
	}
	if err := d.loadState(); err != nil {
		return nil, err
	}
	if c, ok := cfg.Cluster.(*gossip.Cluster); ok && c == nil {
		cfg.Cluster = nil // a nil *Cluster in the interface means no cluster
	}
	if cfg.Cluster != nil {
		d.node = cfg.Cluster.LocalName()
	}
	if h, err := os.Hostname(); err == nil {
		d.hostname = h
	}
	if cfg.Cluster != nil {
		d.holdoff = cfg.AddressHoldoff
		if d.holdoff <= 0 {
			d.holdoff = defaultAddressHoldoff
		}
		d.left = newLeftPeers(cfg.LeftGrace)
		d.startCluster(cfg.Cluster, cfg.PeerRepair)
	}
	return d, nil
}

// loadState creates the bucket if needed and loads the persisted networks,
// endpoints and VLAN links. Endpoints whose network is gone are dropped.
func (d *Driver) loadState() error {
	if err := d.store.init(); err != nil {
		return fmt.Errorf("driver: %w", err)
	}
	nets, eps, err := d.store.load()
	if err != nil {
		return fmt.Errorf("driver: load persisted state: %w", err)
	}
	// Endpoints whose network is gone cannot be used; drop them (their links are
	// orphans that Reconcile removes).
	for id, e := range eps {
		if _, ok := nets[e.NetworkID]; !ok {
			d.log.WithFields(logrus.Fields{"endpoint": shortID(id), "network": shortID(e.NetworkID)}).
				Warn("dropping persisted endpoint of a network that no longer exists")
			if err := d.store.deleteEndpoint(id); err != nil {
				return fmt.Errorf("driver: %w", err)
			}
			delete(eps, id)
		}
	}
	vlans, err := d.store.loadVLANs()
	if err != nil {
		return fmt.Errorf("driver: load persisted state: %w", err)
	}
	d.networks, d.endpoints, d.vlans = nets, eps, vlans
	d.log.WithFields(logrus.Fields{"networks": len(nets), "endpoints": len(eps), "vlans": len(vlans)}).Info("driver state loaded")
	return nil
}

// startCluster publishes this host's records, withdraws stale ones, follows
// the cluster's records and members and starts the peer worker.
func (d *Driver) startCluster(c gossip.Replicated, repair time.Duration) {
	d.cluster = c
	d.self = c.LocalName()
	d.peers = newPeerState()
	d.wake = make(chan struct{}, 1)
	d.probeKick = make(chan struct{}, 1)
	d.stop = make(chan struct{})
	d.done = make(chan struct{})
	if repair == 0 {
		repair = defaultPeerRepair
	}
	// Events first, then the snapshot: nothing is missed, and a duplicate
	// event carries the same state.
	c.OnNodeEvent(d.onNodeEvent)
	d.mu.Lock()
	for _, m := range c.Members() {
		if !m.Self {
			d.peers.members[m.Name] = m
			d.warnPort(m)
		}
	}
	if err := d.publishOwn(); err != nil {
		d.log.WithError(err).Warn("publishing this host's networks and endpoints failed; reconcile retries")
	}
	d.mu.Unlock()
	// A network record's key names its writer ("<subnet>/<node>"): gossip
	// refuses one written in another host's name before it is stored.
	// Endpoint keys name an address, not a writer: onEndpointRecord checks
	// who may write them.
	c.RegisterValidator(kindNetwork, gossip.OwnerSuffix("/"))
	// Subscribe replays every live record, then follows changes.
	c.Subscribe(kindNetwork, d.onNetworkRecord)
	c.Subscribe(kindEndpoint, d.onEndpointRecord)
	go d.peerLoop(repair)
	d.log.WithField("node", d.self).Info("driver follows the gossip cluster")
}

// GetCapabilities reports the configured scope; connectivity is always global
// (endpoints of one network on different hosts reach each other).
func (d *Driver) GetCapabilities() (*network.CapabilitiesResponse, error) {
	return &network.CapabilitiesResponse{Scope: d.scope, ConnectivityScope: network.GlobalScope}, nil
}

// AllocateNetwork is called on a Swarm manager (SCOPE=global). The VNI is
// derived from the subnet on every host, so there is nothing to allocate.
func (d *Driver) AllocateNetwork(r *network.AllocateNetworkRequest) (*network.AllocateNetworkResponse, error) {
	if r != nil {
		d.log.WithField("network", shortID(r.NetworkID)).Debug("AllocateNetwork: nothing to allocate")
	}
	return &network.AllocateNetworkResponse{Options: map[string]string{}}, nil
}

// FreeNetwork is the manager-side counterpart of AllocateNetwork.
func (d *Driver) FreeNetwork(r *network.FreeNetworkRequest) error {
	if r != nil {
		d.log.WithField("network", shortID(r.NetworkID)).Debug("FreeNetwork: nothing to free")
	}
	return nil
}

// DiscoverNew is informational; peers are found through gossip instead.
func (d *Driver) DiscoverNew(n *network.DiscoveryNotification) error {
	if n != nil {
		d.log.WithField("type", n.DiscoveryType).Debug("DiscoverNew ignored")
	}
	return nil
}

// DiscoverDelete is informational; peers are found through gossip instead.
func (d *Driver) DiscoverDelete(n *network.DiscoveryNotification) error {
	if n != nil {
		d.log.WithField("type", n.DiscoveryType).Debug("DiscoverDelete ignored")
	}
	return nil
}

// NetworkStatus describes one network for `grapevine status`.
type NetworkStatus struct {
	ID      string `json:"id"`
	Mode    string `json:"mode"`
	Subnet  string `json:"subnet"`
	Gateway string `json:"gateway"`
	VNI     uint32 `json:"vni"`
	MTU     int    `json:"mtu"`
	Bridge  string `json:"bridge"`
	VXLAN   string `json:"vxlan"`
	// Tunnel is the WireGuard interface of an encrypted network.
	Tunnel    string `json:"tunnel,omitempty"`
	Endpoints int    `json:"endpoints"`
	Published int    `json:"published_ports"`
	Internal  bool   `json:"internal"`
	// RemoteEndpoints counts other hosts' endpoints programmed on this host;
	// RemoteUnreachable those whose host is dead, gone or without a VTEP.
	RemoteEndpoints   int `json:"remote_endpoints"`
	RemoteUnreachable int `json:"remote_unreachable,omitempty"`
	// RemoteHosts counts other hosts' endpoints by host name.
	RemoteHosts map[string]int `json:"remote_hosts,omitempty"`
	// Conflict describes other hosts that define the subnet differently.
	Conflict string `json:"conflict,omitempty"`

	// macvlan mode: ParentOption is -o parent as given, Parent the link it
	// is on this host ("" with no parent), HostAccess the host's shim address
	// (HostAccessAllocated: the IPAM chose it, no --aux-address gave it),
	// HostShims every host's shim address by node name, this host's
	// included, as the hosts publish them, and Reach says where the
	// containers can go.
	ParentOption        string            `json:"parent_option,omitempty"`
	Parent              string            `json:"parent,omitempty"`
	HostAccess          string            `json:"host_access,omitempty"`
	HostAccessAllocated bool              `json:"host_access_allocated,omitempty"`
	HostShims           map[string]string `json:"host_shims,omitempty"`
	Reach               string            `json:"reach,omitempty"`
}

// reachText describes where a macvlan network's containers can go.
func reachText(n *networkRecord) string {
	switch {
	case n.Parent == "":
		return "internal only: no parent interface, containers reach only each other on this host (no LAN, no other hosts, no external access)"
	case n.Internal:
		return fmt.Sprintf("LAN of %s without a gateway (--internal)", n.Parent)
	}
	return fmt.Sprintf("LAN of %s, gateway %s", n.Parent, n.Gateway.Addr())
}

// Status lists the networks of this host, sorted by id.
func (d *Driver) Status() []NetworkStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]NetworkStatus, 0, len(d.networks))
	for _, n := range d.networks {
		s := NetworkStatus{
			ID:       n.ID,
			Mode:     n.Mode,
			Subnet:   n.Subnet.String(),
			Gateway:  n.Gateway.Addr().String(),
			VNI:      n.VNI,
			MTU:      n.MTU,
			Internal: n.Internal,
		}
		n.mode().status(n, &s)
		for _, e := range d.endpoints {
			if e.NetworkID == n.ID {
				s.Endpoints++
				s.Published += len(e.Bindings)
			}
		}
		s.RemoteEndpoints, s.RemoteUnreachable, s.RemoteHosts = d.peerCounts(n)
		s.Conflict = d.conflictOf(n)
		s.HostShims = d.hostShims(n)
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b NetworkStatus) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

func (d *Driver) netLog(id string) *logrus.Entry {
	return d.log.WithField("network", shortID(id))
}

func (d *Driver) epLog(netID, epID string) *logrus.Entry {
	return d.log.WithFields(logrus.Fields{"network": shortID(netID), "endpoint": shortID(epID)})
}
