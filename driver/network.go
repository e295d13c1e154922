package driver

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/docker/go-plugins-helpers/network"

	"grapevine/driver/dataplane"
)

// autoVNITries bounds how far an automatic VNI probes past local clashes.
const autoVNITries = 64

// CreateNetwork validates the request, makes the network's links (vxlan: the
// bridge holding the anycast gateway and the VXLAN device; macvlan: see
// createMacvlan), persists the network and programs the firewall. On any
// failure nothing is left behind. A repeat with the same id and subnet repairs
// the kernel objects and succeeds.
func (d *Driver) CreateNetwork(r *network.CreateNetworkRequest) (err error) {
	if r == nil {
		return errors.New("CreateNetwork: empty request")
	}
	if err := checkID("NetworkID", r.NetworkID); err != nil {
		return err
	}
	spec, err := d.parseNetwork(r)
	if err != nil {
		return err
	}
	var u dataplane.Underlay
	if spec.mode == modeVXLAN {
		if u, err = d.underlay(); err != nil {
			return fmt.Errorf("cannot create network: the underlay (plugin setting ADVERTISE) is not usable: %w", err)
		}
		if u.MTU <= 0 {
			u.MTU = 1500
		}
		if err := checkVXLANMTU(spec, u.MTU); err != nil {
			return err
		}
	}
	log := d.netLog(r.NetworkID)

	d.mu.Lock()
	defer d.mu.Unlock()

	if old, ok := d.networks[r.NetworkID]; ok {
		if old.Subnet != spec.subnet || old.Gateway != spec.gateway || old.Mode != spec.mode {
			return fmt.Errorf("network %s already exists on this host with subnet %s gateway %s (mode %s)", shortID(old.ID), old.Subnet, old.Gateway.Addr(), old.Mode)
		}
		log.Debug("CreateNetwork repeated: repairing kernel objects")
		if old.macvlan() {
			if err := d.ensureMacvlanNetwork(old); err != nil {
				return err
			}
		} else if err := d.ensureNetworkLinks(old, u); err != nil {
			return err
		}
		return d.syncFirewall()
	}
	if spec.mode == modeMACVLAN {
		return d.createMacvlan(r.NetworkID, spec)
	}
	if err := d.checkCluster(&spec); err != nil {
		return err
	}
	if err := d.checkNewNetwork(r.NetworkID, spec); err != nil {
		return err
	}
	rec := &networkRecord{
		Version:      recordVersion,
		ID:           r.NetworkID,
		Mode:         spec.mode,
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
		rec.MTU = u.MTU - vxlanOverhead
	}
	if rec.VNIAuto {
		rec.VNI = d.firstFreeAutoVNI(spec.subnet)
	}

	persisted := false
	defer func() {
		if err == nil {
			return
		}
		if persisted {
			d.unpersistNetwork(rec)
		}
		for _, l := range []string{vxlanName(rec.ID), bridgeName(rec.ID)} {
			if derr := d.dp.DeleteLink(l); derr != nil {
				log.WithError(derr).WithField("link", l).Warn("rollback: could not delete link")
			}
		}
	}()

	if err = d.makeNetworkLinks(rec, u); err != nil {
		return err
	}
	if err = d.store.putNetwork(rec); err != nil {
		return err
	}
	persisted = true
	d.networks[rec.ID] = rec
	if err = d.syncFirewall(); err != nil {
		return err
	}
	d.clusterNetworkCreated(rec)
	l := log.WithFields(map[string]any{"subnet": rec.Subnet, "vni": rec.VNI, "mtu": rec.MTU, "internal": rec.Internal})
	if spec.adopted != "" {
		l = l.WithField("vni_from", spec.adopted)
	}
	l.Info("network created")
	return nil
}

// unpersistNetwork undoes the persisting of a network being created: its
// record and its firewall rules. Caller holds mu.
func (d *Driver) unpersistNetwork(rec *networkRecord) {
	log := d.netLog(rec.ID)
	if derr := d.store.deleteNetwork(rec.ID, nil); derr != nil {
		log.WithError(derr).Error("rollback: could not delete the network record")
	}
	delete(d.networks, rec.ID)
	if serr := d.syncFirewall(); serr != nil {
		log.WithError(serr).Warn("rollback: could not restore the firewall rules")
	}
}

// checkNewNetwork refuses a network whose names, subnet or explicit VNI clash
// with this host's state. Caller holds mu.
func (d *Driver) checkNewNetwork(id string, spec networkSpec) error {
	for _, n := range d.networks {
		if bridgeName(n.ID) == bridgeName(id) {
			return fmt.Errorf("network id %s starts with the same %d characters as grapevine network %s: its kernel names would collide", id, dataplane.NameIDLen, n.ID)
		}
		if n.Subnet.Overlaps(spec.subnet) {
			if n.macvlan() && spec.mode == modeMACVLAN {
				return fmt.Errorf("subnet %s overlaps grapevine macvlan network %s (subnet %s on parent %s) on this host: one subnet can be used by one macvlan network per host, even on another parent or VLAN; choose another --subnet or remove that network",
					spec.subnet, shortID(n.ID), n.Subnet, parentText(n))
			}
			return fmt.Errorf("subnet %s overlaps grapevine network %s (subnet %s) on this host: choose another --subnet", spec.subnet, shortID(n.ID), n.Subnet)
		}
		if spec.vni != 0 && n.VNI == spec.vni {
			return fmt.Errorf("vni %d is already used by grapevine network %s (subnet %s) on this host: pick another -o vni", spec.vni, shortID(n.ID), n.Subnet)
		}
	}
	if spec.mode == modeMACVLAN {
		return nil // the LAN's subnet is the parent's route: checkParent
	}
	routes, err := d.dp.Routes()
	if err != nil {
		return fmt.Errorf("cannot check subnet %s against the host's routes: %w", spec.subnet, err)
	}
	for _, rt := range routes {
		if !rt.Ours && rt.Dst.Overlaps(spec.subnet) {
			return fmt.Errorf("subnet %s overlaps the host route %s dev %s: choose a --subnet that does not overlap", spec.subnet, rt.Dst, rt.Dev)
		}
	}
	return nil
}

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

// ensureNetworkLinks repairs both links of a persisted network.
func (d *Driver) ensureNetworkLinks(rec *networkRecord, u dataplane.Underlay) error {
	if err := d.dp.EnsureBridge(d.bridgeSpec(rec)); err != nil {
		return fmt.Errorf("network %s: bridge %s: %w", shortID(rec.ID), bridgeName(rec.ID), err)
	}
	if err := d.dp.EnsureVXLAN(d.vxlanSpec(rec, u)); err != nil {
		if errors.Is(err, dataplane.ErrVNIInUse) {
			return fmt.Errorf("network %s: vni %d is now used by another VXLAN device on UDP port %d on this host: %w", shortID(rec.ID), rec.VNI, d.port, err)
		}
		return fmt.Errorf("network %s: vxlan device %s: %w", shortID(rec.ID), vxlanName(rec.ID), err)
	}
	return nil
}

func (d *Driver) bridgeSpec(rec *networkRecord) dataplane.BridgeSpec {
	return dataplane.BridgeSpec{
		Name:    bridgeName(rec.ID),
		MTU:     rec.MTU,
		MAC:     bridgeMAC(rec.ID),
		Address: rec.Gateway,
	}
}

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

// DeleteNetwork removes the network's endpoints' links, its VXLAN device and
// bridge, its records and its firewall rules. An unknown network is success
// (the derived link names are still removed). Link removal failures do not
// keep the record: Reconcile removes such orphans later.
func (d *Driver) DeleteNetwork(r *network.DeleteNetworkRequest) error {
	if r == nil {
		return errors.New("DeleteNetwork: empty request")
	}
	if err := checkID("NetworkID", r.NetworkID); err != nil {
		return err
	}
	log := d.netLog(r.NetworkID)
	d.mu.Lock()
	defer d.mu.Unlock()

	var errs []error
	var epIDs []string
	var eps []*endpointRecord
	for id, e := range d.endpoints {
		if e.NetworkID == r.NetworkID {
			epIDs = append(epIDs, id)
			eps = append(eps, e)
			errs = append(errs, d.deleteEndpointLinks(e))
		}
	}
	links := []string{vxlanName(r.NetworkID), bridgeName(r.NetworkID)}
	if n, ok := d.networks[r.NetworkID]; ok && n.macvlan() {
		links = []string{shimName(n.ID), internalParent(n.ID)}
	} else if !ok {
		links = append(links, shimName(r.NetworkID), internalParent(r.NetworkID))
	}
	for _, l := range links {
		if err := d.dp.DeleteLink(l); err != nil {
			errs = append(errs, fmt.Errorf("delete link %s: %w", l, err))
		}
	}
	if _, ok := d.networks[r.NetworkID]; !ok {
		log.Debug("DeleteNetwork for an unknown network: nothing persisted")
		return errors.Join(errs...)
	}
	if err := d.store.deleteNetwork(r.NetworkID, epIDs); err != nil {
		return errors.Join(append(errs, err)...)
	}
	n := d.networks[r.NetworkID]
	delete(d.networks, r.NetworkID)
	for _, id := range epIDs {
		delete(d.endpoints, id)
	}
	d.clusterNetworkDeleted(n, eps)
	if n.macvlan() {
		errs = append(errs, d.releaseVLAN(n.Parent))
	}
	if err := d.syncFirewall(); err != nil {
		errs = append(errs, err)
	}
	log.WithField("endpoints", len(epIDs)).Info("network deleted")
	return errors.Join(errs...)
}
