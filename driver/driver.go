// Package driver is grapevine's libnetwork NetworkDriver. It owns the decisions
// about networks and endpoints on this host: it validates Docker's requests,
// chooses kernel names, VNIs, MTUs, MACs and host ports, persists everything in
// the bbolt bucket "driver" (Docker never replays its calls after a restart),
// and tells the dataplane what must exist. It never touches the kernel itself.
//
// Kernel objects are named from persisted ids so that Reconcile can recreate
// what is missing and remove what no longer belongs to anything:
//
//	bridge            gvb-<network id[:11]>
//	VXLAN device      gvx-<network id[:11]>
//	veth, host end    gve-<endpoint id[:11]>
//	veth, container   gvc-<endpoint id[:11]>
//
// Remote endpoints (other hosts) are later programmed on a network's VXLAN
// device with the dataplane's SetFDB/SetNeigh verbs; this package already gives
// every network a stable VNI, VXLAN device name and anycast gateway for that.
package driver

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/sirupsen/logrus"
	"go.etcd.io/bbolt"

	"grapevine/driver/dataplane"
)

// Option keys Docker sends.
const (
	optGeneric     = "com.docker.network.generic"
	optInternal    = "com.docker.network.internal"
	optEnableIPv6  = "com.docker.network.enable_ipv6"
	optMTU         = "com.docker.network.driver.mtu"
	optPortMap     = "com.docker.network.portmap"
	optExposed     = "com.docker.network.endpoint.exposedports"
	optMACAddress  = "com.docker.network.endpoint.macaddress"
	defaultVXLANPt = 4789
)

// Config wires a Driver. DB, Dataplane, Underlay and AddressSpaces are required.
type Config struct {
	// DB is the plugin's bbolt database; the driver uses bucket "driver".
	DB *bbolt.DB
	// Dataplane is the only way to the kernel.
	Dataplane dataplane.Dataplane
	// Underlay resolves ADVERTISE: the VTEP address, its link and MTU. Called on
	// CreateNetwork and on every Reconcile, so an address change is picked up.
	Underlay func() (dataplane.Underlay, error)
	// VXLANPort is the UDP port of every VXLAN device; 0 means 4789.
	VXLANPort int
	// Scope is the plugin setting SCOPE, "local" or "global"; "" means local.
	// ConnectivityScope is always global.
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

	mu        sync.Mutex
	networks  map[string]*networkRecord
	endpoints map[string]*endpointRecord
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
	scope := cfg.Scope
	switch scope {
	case "":
		scope = network.LocalScope
	case network.LocalScope, network.GlobalScope:
	default:
		return nil, fmt.Errorf("driver: SCOPE %q is not allowed: use %q or %q", cfg.Scope, network.LocalScope, network.GlobalScope)
	}
	port := cfg.VXLANPort
	if port == 0 {
		port = defaultVXLANPt
	}
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("driver: VXLAN_PORT %d is out of range 1..65535", cfg.VXLANPort)
	}
	log := cfg.Log
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = logrus.NewEntry(l)
	}
	d := &Driver{
		dp:         cfg.Dataplane,
		underlay:   cfg.Underlay,
		store:      store{db: cfg.DB},
		port:       port,
		scope:      scope,
		spaces:     slices.Clone(cfg.AddressSpaces),
		pluginName: cfg.PluginName,
		log:        log,
	}
	if err := d.store.init(); err != nil {
		return nil, fmt.Errorf("driver: %w", err)
	}
	nets, eps, err := d.store.load()
	if err != nil {
		return nil, fmt.Errorf("driver: load persisted state: %w", err)
	}
	// Endpoints whose network is gone cannot be used; drop them (their links are
	// orphans that Reconcile removes).
	for id, e := range eps {
		if _, ok := nets[e.NetworkID]; !ok {
			log.WithFields(logrus.Fields{"endpoint": shortID(id), "network": shortID(e.NetworkID)}).
				Warn("dropping persisted endpoint of a network that no longer exists")
			if err := d.store.deleteEndpoint(id); err != nil {
				return nil, fmt.Errorf("driver: %w", err)
			}
			delete(eps, id)
		}
	}
	d.networks, d.endpoints = nets, eps
	log.WithFields(logrus.Fields{"networks": len(nets), "endpoints": len(eps)}).Info("driver state loaded")
	return d, nil
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
	ID        string `json:"id"`
	Mode      string `json:"mode"`
	Subnet    string `json:"subnet"`
	Gateway   string `json:"gateway"`
	VNI       uint32 `json:"vni"`
	MTU       int    `json:"mtu"`
	Bridge    string `json:"bridge"`
	VXLAN     string `json:"vxlan"`
	Endpoints int    `json:"endpoints"`
	Published int    `json:"published_ports"`
	Internal  bool   `json:"internal"`
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
			Bridge:   bridgeName(n.ID),
			VXLAN:    vxlanName(n.ID),
			Internal: n.Internal,
		}
		for _, e := range d.endpoints {
			if e.NetworkID == n.ID {
				s.Endpoints++
				s.Published += len(e.Bindings)
			}
		}
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
