package driver

import "net/netip"

// NameNetworks lists this host's VXLAN networks by id with their subnets:
// the networks whose containers' names are published and answered across
// hosts (a macvlan network's traffic never passes through this host's
// namespace, so its queries cannot be redirected).
func (d *Driver) NameNetworks() map[string]netip.Prefix {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]netip.Prefix, len(d.networks))
	for _, n := range d.networks {
		if n.mode().overlay() {
			out[n.ID] = n.Subnet
		}
	}
	return out
}
