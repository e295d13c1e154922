package driver

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"grapevine/driver/dataplane"
)

// Reconcile makes the kernel match the persisted state: each network's mode
// repairs its links and its joined endpoints' (ensure), links with names
// grapevine gives that belong to nothing persisted are deleted, the firewall
// is re-programmed, and with a cluster this host's records are republished
// and the remote endpoint entries repaired (ReconcilePeers). It is best
// effort: it carries on past failures and returns them joined. Called at
// start and periodically.
func (d *Driver) Reconcile() error {
	var errs []error
	u, uerr := d.underlay()
	up := &u
	if uerr != nil {
		up = nil
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	if uerr != nil && d.hasVXLANNetworks() {
		// Only VXLAN devices need the VTEP; macvlan networks do not.
		errs = append(errs, fmt.Errorf("resolve the underlay (ADVERTISE): %w", uerr))
	}
	if uerr == nil {
		d.lastUnderlay = &u
	}
	// the tunnel (and its routing) before the encrypted networks' devices
	errs = append(errs, d.syncTunnel())
	for _, id := range slices.Sorted(maps.Keys(d.networks)) {
		n := d.networks[id]
		errs = append(errs, n.mode().ensure(d, n, up))
	}

	errs = append(errs, d.removeOrphans())
	errs = append(errs, d.removeOrphanVLANs())
	errs = append(errs, d.syncFirewall())
	errs = append(errs, d.publishOwn())
	errs = append(errs, d.reconcilePeers())
	err := errors.Join(errs...)
	if err != nil {
		d.log.WithError(err).Warn("reconcile incomplete")
	}
	return err
}

// removeOrphans deletes links with a name grapevine gives that no persisted
// network or endpoint owns. Caller holds mu.
func (d *Driver) removeOrphans() error {
	want := map[string]bool{}
	for id, n := range d.networks {
		for _, l := range n.mode().links(id) {
			want[l] = true
		}
	}
	if d.hasEncrypted() {
		want[tunnelName] = true
	}
	for id := range d.endpoints {
		want[hostVeth(id)] = true
		want[contVeth(id)] = true
	}
	links, err := d.dp.ListLinks("")
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	var errs []error
	for _, l := range links {
		if want[l] || !dataplane.IsManagedName(l) {
			continue
		}
		if err := d.dp.DeleteLink(l); err != nil {
			errs = append(errs, fmt.Errorf("delete orphan link %s: %w", l, err))
			continue
		}
		d.noteRepair(repairOrphanLinks, 1)
		d.log.WithField("link", l).Info("deleted orphan link")
	}
	return errors.Join(errs...)
}

// removeOrphanVLANs deletes the VLAN links grapevine created that no network
// uses any more (a crash between their record and their network's).
// Caller holds mu.
func (d *Driver) removeOrphanVLANs() error {
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(d.vlans)) {
		errs = append(errs, d.releaseVLAN(name))
	}
	return errors.Join(errs...)
}

// hasVXLANNetworks reports whether any network is an overlay (needs the VTEP).
// Caller holds mu.
func (d *Driver) hasVXLANNetworks() bool {
	for _, n := range d.networks {
		if n.mode().overlay() {
			return true
		}
	}
	return false
}
