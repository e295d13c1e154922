package driver

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/sirupsen/logrus"

	"grapevine/driver/dataplane"
)

// VXLAN mode, the default, is an overlay: each network is a bridge on every
// host that has it, holding the anycast gateway, joined to the other hosts'
// bridges by a VXLAN device; each endpoint is a veth pair whose host end is a
// port of the bridge. Other hosts' endpoints are programmed on the VXLAN
// device (peers.go); the host routes, masquerades and publishes ports for the
// containers (rules.go, ports.go).

// autoVNITries bounds how far an automatic VNI probes past local clashes.
const autoVNITries = 64

// vxlanMode is the netMode of VXLAN networks.
type vxlanMode struct{}

func (vxlanMode) name() string  { return modeVXLAN }
func (vxlanMode) overlay() bool { return true }
func (vxlanMode) overhead() int { return vxlanOverhead }

// prepare resolves the underlay (ADVERTISE), whose MTU bounds the network's.
func (m vxlanMode) prepare(d *Driver, spec *networkSpec) error {
	return m.prepareOverlay(d, spec, m.overhead())
}

// prepareOverlay resolves the underlay, whose MTU less overhead bounds the
// network's.
func (vxlanMode) prepareOverlay(d *Driver, spec *networkSpec, overhead int) error {
	u, err := d.underlay()
	if err != nil {
		return fmt.Errorf("cannot create network: the underlay (plugin setting ADVERTISE) is not usable: %w", err)
	}
	if u.MTU <= 0 {
		u.MTU = defaultMTU
	}
	if err := checkVXLANMTU(*spec, u.MTU, overhead); err != nil {
		return err
	}
	spec.underlay = u
	return nil
}

// create chooses the VNI (the cluster's, the one asked for or an automatic
// one) and the MTU, and makes the bridge and the VXLAN device.
func (m vxlanMode) create(d *Driver, id string, spec networkSpec) (newNetwork, error) {
	return d.createOverlay(m, id, spec, m.overhead())
}

// createOverlay creates a network of an overlay mode m whose frames grow by
// overhead on the underlay.
func (d *Driver) createOverlay(m netMode, id string, spec networkSpec, overhead int) (newNetwork, error) {
	if err := d.checkCluster(&spec); err != nil {
		return newNetwork{}, err
	}
	if err := d.checkNewNetwork(id, spec); err != nil {
		return newNetwork{}, err
	}
	if err := d.checkHostRoutes(spec.subnet); err != nil {
		return newNetwork{}, err
	}
	rec := &networkRecord{
		Version:      recordVersion,
		ID:           id,
		Mode:         m.name(),
		Subnet:       spec.subnet,
		Gateway:      spec.gateway,
		AddressSpace: spec.space,
		VNI:          spec.vni,
		VNIAuto:      spec.vni == 0,
		MTU:          spec.mtu,
		Internal:     spec.internal,
		Aux:          auxAddrs(spec),
	}
	if rec.MTU == 0 {
		rec.MTU = spec.underlay.MTU - overhead
	}
	if rec.VNIAuto {
		rec.VNI = d.firstFreeAutoVNI(spec.subnet)
	}
	undo := func() { d.rollbackLinks(id, m.links(id)) }
	if err := d.makeNetworkLinks(rec, spec.underlay); err != nil {
		undo()
		return newNetwork{}, err
	}
	announce := func() {
		l := d.netLog(id).WithFields(logrus.Fields{"mode": rec.Mode, "subnet": rec.Subnet, "vni": rec.VNI, "mtu": rec.MTU, "internal": rec.Internal})
		if spec.adopted != "" {
			l = l.WithField("vni_from", spec.adopted)
		}
		l.Info("network created")
	}
	return newNetwork{rec: rec, undo: undo, announce: announce}, nil
}

// checkHostRoutes refuses a subnet that overlaps a route of this host that
// is not grapevine's: the bridge's gateway would capture its traffic.
func (d *Driver) checkHostRoutes(subnet netip.Prefix) error {
	routes, err := d.dp.Routes()
	if err != nil {
		return fmt.Errorf("cannot check subnet %s against the host's routes: %w", subnet, err)
	}
	for _, rt := range routes {
		if !rt.Ours && rt.Dst.Overlaps(subnet) {
			return fmt.Errorf("subnet %s overlaps the host route %s dev %s: choose a --subnet that does not overlap", subnet, rt.Dst, rt.Dev)
		}
	}
	return nil
}

// ensure repairs the bridge, the VXLAN device (unless the underlay is
// unknown: without the VTEP address it cannot be right) and the host ends
// of the joined endpoints' veths (only on a bridge that is there).
func (vxlanMode) ensure(d *Driver, n *networkRecord, u *dataplane.Underlay) error {
	if err := d.dp.EnsureBridge(d.bridgeSpec(n)); err != nil {
		return fmt.Errorf("network %s: bridge %s: %w", shortID(n.ID), bridgeName(n.ID), err)
	}
	var errs []error
	if u != nil {
		errs = append(errs, d.ensureVXLAN(n, *u))
	}
	for _, e := range d.joinedEndpoints(n.ID) {
		if err := d.dp.EnsureVeth(d.vethSpec(n, e)); err != nil {
			errs = append(errs, fmt.Errorf("endpoint %s: veth %s: %w", shortID(e.ID), hostVeth(e.ID), err))
		}
	}
	return errors.Join(errs...)
}

func (vxlanMode) links(networkID string) []string {
	return []string{vxlanName(networkID), bridgeName(networkID)}
}

// join makes the endpoint's veth pair: the host end on the network's bridge
// (hairpin on, for published-port hairpin), the container end in the host
// namespace for Docker to move. Docker does not set the MTU, so both ends
// get the network's. The gateway is returned for non-internal networks
// only, so that Docker programs external connectivity through this network.
func (vxlanMode) join(d *Driver, n *networkRecord, e *endpointRecord) (*network.JoinResponse, error) {
	log := d.epLog(n.ID, e.ID)
	if err := d.dp.EnsureVeth(d.vethSpec(n, e)); err != nil {
		return nil, fmt.Errorf("create veth %s for endpoint %s: %w", hostVeth(e.ID), shortID(e.ID), err)
	}
	if err := d.setJoined(e, true); err != nil {
		if derr := d.dp.DeleteLink(hostVeth(e.ID)); derr != nil {
			log.WithError(derr).Warn("rollback: could not delete veth")
		}
		return nil, err
	}
	resp := &network.JoinResponse{
		InterfaceName: network.InterfaceName{SrcName: contVeth(e.ID), DstPrefix: containerIfPrefix},
	}
	if !n.Internal {
		resp.Gateway = n.Gateway.Addr().String()
	}
	log.Debug("endpoint joined")
	return resp, nil
}

// leave removes the endpoint's veth pair (deleting the host end removes the
// container end wherever it is).
func (vxlanMode) leave(d *Driver, _ *networkRecord, e *endpointRecord) error {
	if err := d.dp.DeleteLink(hostVeth(e.ID)); err != nil {
		return fmt.Errorf("delete link %s: %w", hostVeth(e.ID), err)
	}
	return nil
}

// firewall isolates, routes and (unless internal) masquerades the bridge.
func (vxlanMode) firewall(_ *Driver, n *networkRecord, fw *dataplane.Firewall) {
	fw.Networks = append(fw.Networks, dataplane.NetworkRules{
		NetworkID:  n.ID,
		Bridge:     bridgeName(n.ID),
		Subnet:     n.Subnet,
		Internal:   n.Internal,
		Masquerade: !n.Internal,
	})
}

func (vxlanMode) status(n *networkRecord, s *NetworkStatus) {
	s.Bridge, s.VXLAN = bridgeName(n.ID), vxlanName(n.ID)
}

func (vxlanMode) deleted(*Driver, *networkRecord) error { return nil }

// firstFreeAutoVNI returns the subnet's automatic VNI, probed forward past VNIs
// used by this host's other grapevine networks. Caller holds mu.
func (d *Driver) firstFreeAutoVNI(subnet netip.Prefix) uint32 {
	v := autoVNI(subnet)
	for range autoVNITries {
		if _, _, clash := d.clusterVNIUser(v, subnet); !d.vniUsed(v) && !clash {
			return v
		}
		v = nextAutoVNI(v)
	}
	return v
}

func (d *Driver) vniUsed(v uint32) bool {
	for _, n := range d.networks {
		if n.VNI == v {
			return true
		}
	}
	return false
}

// makeNetworkLinks creates the bridge and VXLAN device of a new network. An
// automatic VNI the kernel refuses (another VXLAN device holds it) is probed
// forward; rec.VNI is updated to the one that worked.
func (d *Driver) makeNetworkLinks(rec *networkRecord, u dataplane.Underlay) error {
	if err := d.dp.EnsureBridge(d.bridgeSpec(rec)); err != nil {
		return fmt.Errorf("create bridge %s: %w", bridgeName(rec.ID), err)
	}
	if rec.Mode == modeEncrypted {
		return nil // routed through the tunnel: no VXLAN device
	}
	for try := 0; ; try++ {
		err := d.dp.EnsureVXLAN(d.vxlanSpec(rec, u))
		if err == nil {
			return nil
		}
		if !errors.Is(err, dataplane.ErrVNIInUse) {
			return fmt.Errorf("create vxlan device %s: %w", vxlanName(rec.ID), err)
		}
		if !rec.VNIAuto || try >= autoVNITries {
			return fmt.Errorf("vni %d is already used by another VXLAN device on UDP port %d on this host (Docker's overlay allocates 4096 and up); pick another -o vni: %w", rec.VNI, d.port, err)
		}
		next := nextAutoVNI(rec.VNI)
		for d.vniUsed(next) {
			next = nextAutoVNI(next)
		}
		d.netLog(rec.ID).WithField("vni", rec.VNI).Debug("automatic vni taken on this host, probing the next one")
		rec.VNI = next
	}
}

// ensureVXLAN repairs a persisted network's VXLAN device. A VNI another
// device took is reported by the dataplane, with the port and the holder.
func (d *Driver) ensureVXLAN(rec *networkRecord, u dataplane.Underlay) error {
	if err := d.dp.EnsureVXLAN(d.vxlanSpec(rec, u)); err != nil {
		return fmt.Errorf("network %s: vxlan device %s (vni %d): %w", shortID(rec.ID), vxlanName(rec.ID), rec.VNI, err)
	}
	return nil
}

func (d *Driver) bridgeSpec(rec *networkRecord) dataplane.BridgeSpec {
	return dataplane.BridgeSpec{
		Name:    bridgeName(rec.ID),
		MTU:     rec.MTU,
		MAC:     bridgeMAC(rec.ID),
		Address: rec.Gateway,
		// an encrypted network's remote endpoints are routed into the
		// tunnel: the bridge answers ARP for them
		ProxyARP: rec.Mode == modeEncrypted,
	}
}

// vxlanSpec is a network's VXLAN device.
func (d *Driver) vxlanSpec(rec *networkRecord, u dataplane.Underlay) dataplane.VXLANSpec {
	return dataplane.VXLANSpec{
		Name:     vxlanName(rec.ID),
		VNI:      rec.VNI,
		Port:     d.port,
		Local:    u.Addr,
		Underlay: u.Link,
		MTU:      rec.MTU,
		Master:   bridgeName(rec.ID),
	}
}

func (d *Driver) vethSpec(n *networkRecord, e *endpointRecord) dataplane.VethSpec {
	return dataplane.VethSpec{
		HostName:      hostVeth(e.ID),
		ContainerName: contVeth(e.ID),
		MTU:           n.MTU,
		MAC:           e.linkMAC(),
		Master:        bridgeName(n.ID),
		Hairpin:       true,
	}
}
