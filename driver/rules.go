package driver

import (
	"cmp"
	"fmt"
	"slices"

	"grapevine/driver/dataplane"
)

// desiredFirewall computes the complete rule set from all persisted networks and
// endpoints; the firewall is never changed incrementally. Caller holds mu.
func (d *Driver) desiredFirewall() dataplane.Firewall {
	var fw dataplane.Firewall
	for _, n := range d.networks {
		if n.macvlan() {
			// on the LAN: no NAT, no forwarding through the host; a host
			// shim is isolated from the bridges like any other network
			if n.HostAccess.IsValid() {
				fw.Shims = append(fw.Shims, shimName(n.ID))
			}
			continue
		}
		fw.Networks = append(fw.Networks, dataplane.NetworkRules{
			NetworkID:  n.ID,
			Bridge:     bridgeName(n.ID),
			Subnet:     n.Subnet,
			Internal:   n.Internal,
			Masquerade: !n.Internal,
		})
	}
	for _, e := range d.endpoints {
		n, ok := d.networks[e.NetworkID]
		if !ok || n.Internal || n.macvlan() {
			continue
		}
		for _, b := range e.Bindings {
			fw.Ports = append(fw.Ports, dataplane.PortRule{
				NetworkID:     e.NetworkID,
				EndpointID:    e.ID,
				Bridge:        bridgeName(e.NetworkID),
				Proto:         b.Proto,
				HostIP:        b.HostIP,
				HostPort:      b.HostPort,
				ContainerIP:   e.Address.Addr(),
				ContainerPort: b.Port,
			})
		}
	}
	slices.Sort(fw.Shims)
	slices.SortFunc(fw.Networks, func(a, b dataplane.NetworkRules) int { return cmp.Compare(a.NetworkID, b.NetworkID) })
	slices.SortFunc(fw.Ports, func(a, b dataplane.PortRule) int {
		return cmp.Or(
			cmp.Compare(a.NetworkID, b.NetworkID),
			cmp.Compare(a.EndpointID, b.EndpointID),
			cmp.Compare(a.Proto, b.Proto),
			cmp.Compare(a.HostPort, b.HostPort),
			a.HostIP.Compare(b.HostIP),
		)
	})
	return fw
}

// syncFirewall hands the desired rule set to the dataplane. Caller holds mu.
func (d *Driver) syncFirewall() error {
	if err := d.dp.SyncFirewall(d.desiredFirewall()); err != nil {
		return fmt.Errorf("program firewall rules: %w", err)
	}
	return nil
}
