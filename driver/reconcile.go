package driver

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"grapevine/driver/dataplane"
)

// Reconcile makes the kernel match the persisted state: it repairs every
// network's bridge and VXLAN device and every joined endpoint's host veth,
// deletes links with grapevine's prefixes that belong to nothing persisted,
// re-programs the firewall, and with a cluster republishes this host's
// records and repairs the remote endpoint entries (ReconcilePeers). It is
// best effort: it carries on past failures and returns them joined. Called at
// start and periodically.
func (d *Driver) Reconcile() error {
	var errs []error
	u, uerr := d.underlay()

	d.mu.Lock()
	defer d.mu.Unlock()
	if uerr != nil && d.hasVXLANNetworks() {
		// Only VXLAN devices need the VTEP; macvlan networks do not.
		errs = append(errs, fmt.Errorf("resolve the underlay (ADVERTISE): %w", uerr))
	}

	netIDs := make([]string, 0, len(d.networks))
	for id := range d.networks {
		netIDs = append(netIDs, id)
	}
	slices.Sort(netIDs)
	bridgeOK := map[string]bool{}
	for _, id := range netIDs {
		n := d.networks[id]
		if n.macvlan() {
			if err := d.ensureMacvlanNetwork(n); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if err := d.dp.EnsureBridge(d.bridgeSpec(n)); err != nil {
			errs = append(errs, fmt.Errorf("network %s: bridge %s: %w", shortID(id), bridgeName(id), err))
			continue
		}
		bridgeOK[id] = true
		if uerr != nil {
			continue // without the VTEP address the VXLAN device cannot be right
		}
		if err := d.dp.EnsureVXLAN(d.vxlanSpec(n, u)); err != nil {
			errs = append(errs, fmt.Errorf("network %s: vxlan device %s (vni %d): %w", shortID(id), vxlanName(id), n.VNI, err))
		}
	}

	epIDs := make([]string, 0, len(d.endpoints))
	for id := range d.endpoints {
		epIDs = append(epIDs, id)
	}
	slices.Sort(epIDs)
	for _, id := range epIDs {
		e := d.endpoints[id]
		if !e.Joined || !bridgeOK[e.NetworkID] {
			continue
		}
		if err := d.dp.EnsureVeth(d.vethSpec(d.networks[e.NetworkID], e)); err != nil {
			errs = append(errs, fmt.Errorf("endpoint %s: veth %s: %w", shortID(id), hostVeth(id), err))
		}
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

// removeOrphans deletes links named with one of grapevine's prefixes that no
// persisted network or endpoint owns. Caller holds mu.
func (d *Driver) removeOrphans() error {
	want := map[string]bool{}
	for id, n := range d.networks {
		if n.macvlan() {
			if n.Parent == "" {
				want[internalParent(id)] = true
			}
			if n.HostAccess.IsValid() {
				want[shimName(id)] = true
			}
			continue
		}
		want[bridgeName(id)] = true
		want[vxlanName(id)] = true
	}
	for id := range d.endpoints {
		want[hostVeth(id)] = true
		want[contVeth(id)] = true
	}
	links, err := d.dp.ListLinks(dataplane.LinkPrefix)
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	var errs []error
	for _, l := range links {
		if want[l] || !hasManagedPrefix(l) {
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

func hasManagedPrefix(name string) bool {
	for _, p := range []string{bridgePrefix, vxlanPrefix, hostVethPrefix, contVethPrefix, internalParentPrefix, shimPrefix} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// removeOrphanVLANs deletes the VLAN links grapevine created that no network
// uses any more (a crash between their record and their network's).
// Caller holds mu.
func (d *Driver) removeOrphanVLANs() error {
	names := make([]string, 0, len(d.vlans))
	for name := range d.vlans {
		names = append(names, name)
	}
	slices.Sort(names)
	var errs []error
	for _, name := range names {
		errs = append(errs, d.releaseVLAN(name))
	}
	return errors.Join(errs...)
}

// hasVXLANNetworks reports whether any network is in vxlan mode. Caller holds
// mu.
func (d *Driver) hasVXLANNetworks() bool {
	for _, n := range d.networks {
		if !n.macvlan() {
			return true
		}
	}
	return false
}
