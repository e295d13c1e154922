package driver

import "net/netip"

// NameNetworks lists this host's networks by id with their subnets: the
// networks whose containers' names are published and answered across hosts.
// Every mode is listed: the names tap answers in the container's own
// namespace, so a macvlan network's names work too (its queries never pass
// through this host's namespace, so the host's redirect does not see them).
func (d *Driver) NameNetworks() map[string]netip.Prefix {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]netip.Prefix, len(d.networks))
	for _, n := range d.networks {
		out[n.ID] = n.Subnet
	}
	return out
}
