package driver

import (
	"errors"
	"fmt"

	"github.com/docker/go-plugins-helpers/network"

	"grapevine/driver/dataplane"
)

// CreateNetwork validates the request, has the network's mode make its links
// (vxlan.go, macvlan.go), persists the network and programs the firewall. On
// any failure nothing is left behind. A repeat with the same id and subnet
// repairs the kernel objects and succeeds.
func (d *Driver) CreateNetwork(r *network.CreateNetworkRequest) error {
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
	if err := spec.mode.prepare(d, &spec); err != nil {
		return err
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	if old, ok := d.networks[r.NetworkID]; ok {
		return d.repeatNetwork(old, spec)
	}
	nn, err := spec.mode.create(d, r.NetworkID, spec)
	if err != nil {
		return err
	}
	return d.addNetwork(nn)
}

// repeatNetwork answers a CreateNetwork for a network this host has: the
// same definition repairs its kernel objects, another is refused. Caller
// holds mu.
func (d *Driver) repeatNetwork(old *networkRecord, spec networkSpec) error {
	if old.Subnet != spec.subnet || old.Gateway != spec.gateway || old.Mode != spec.mode.name() {
		return fmt.Errorf("network %s already exists on this host with subnet %s gateway %s (mode %s)", shortID(old.ID), old.Subnet, old.Gateway.Addr(), old.Mode)
	}
	d.netLog(old.ID).Debug("CreateNetwork repeated: repairing kernel objects")
	if err := old.mode().ensure(d, old, &spec.underlay); err != nil {
		return err
	}
	return d.syncFirewall()
}

// addNetwork persists a network whose links its mode made, programs the
// firewall and publishes it; on failure it undoes all of it. Caller holds mu.
func (d *Driver) addNetwork(nn newNetwork) (err error) {
	rec := nn.rec
	persisted := false
	defer func() {
		if err == nil {
			return
		}
		if persisted {
			d.unpersistNetwork(rec)
		}
		nn.undo()
	}()
	if err = d.store.putNetwork(rec); err != nil {
		return err
	}
	persisted = true
	d.networks[rec.ID] = rec
	if err = d.syncFirewall(); err != nil {
		return err
	}
	d.clusterNetworkCreated(rec)
	nn.announce()
	return nil
}

// rollbackLinks deletes links a failed creation made, logging what stays.
func (d *Driver) rollbackLinks(networkID string, links []string) {
	for _, l := range links {
		if err := d.dp.DeleteLink(l); err != nil {
			d.netLog(networkID).WithError(err).WithField("link", l).Warn("rollback: could not delete link")
		}
	}
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
// with this host's networks. Caller holds mu.
func (d *Driver) checkNewNetwork(id string, spec networkSpec) error {
	for _, n := range d.networks {
		if bridgeName(n.ID) == bridgeName(id) {
			return fmt.Errorf("network id %s starts with the same %d characters as grapevine network %s: its kernel names would collide", id, dataplane.NameIDLen, n.ID)
		}
		if n.Subnet.Overlaps(spec.subnet) {
			if !n.mode().overlay() && !spec.mode.overlay() {
				return fmt.Errorf("subnet %s overlaps grapevine macvlan network %s (subnet %s on parent %s) on this host: one subnet can be used by one macvlan network per host, even on another parent or VLAN; choose another --subnet or remove that network",
					spec.subnet, shortID(n.ID), n.Subnet, parentText(n))
			}
			return fmt.Errorf("subnet %s overlaps grapevine network %s (subnet %s) on this host: choose another --subnet", spec.subnet, shortID(n.ID), n.Subnet)
		}
		if spec.vni != 0 && n.VNI == spec.vni {
			return fmt.Errorf("vni %d is already used by grapevine network %s (subnet %s) on this host: pick another -o vni", spec.vni, shortID(n.ID), n.Subnet)
		}
	}
	return nil
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
	var links []string
	if n, ok := d.networks[r.NetworkID]; ok {
		links = n.mode().links(n.ID)
	} else {
		for _, m := range modes() {
			links = append(links, m.links(r.NetworkID)...)
		}
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
	errs = append(errs, n.mode().deleted(d, n))
	if err := d.syncFirewall(); err != nil {
		errs = append(errs, err)
	}
	log.WithField("endpoints", len(epIDs)).Info("network deleted")
	return errors.Join(errs...)
}
