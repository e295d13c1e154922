package driver

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/docker/go-plugins-helpers/network"

	"grapevine/driver/dataplane"
)

// CreateEndpoint records an endpoint: the address Docker's IPAM call gave it, a
// MAC (Docker's, or one derived from the address), the kernel names of its veth
// pair and the ports it asks to publish. Nothing is made in the kernel until
// Join. A repeat with the same id, network and address returns the same answer.
func (d *Driver) CreateEndpoint(r *network.CreateEndpointRequest) (*network.CreateEndpointResponse, error) {
	if r == nil {
		return nil, errors.New("CreateEndpoint: empty request")
	}
	if err := checkID("NetworkID", r.NetworkID); err != nil {
		return nil, err
	}
	if err := checkID("EndpointID", r.EndpointID); err != nil {
		return nil, err
	}
	addr, mac, err := endpointInterface(r.Interface)
	if err != nil {
		return nil, err
	}
	generated := r.Interface.MacAddress == ""
	requested, err := portMapOption(r.Options)
	if err != nil {
		return nil, err
	}
	exposed, err := exposedOption(r.Options)
	if err != nil {
		return nil, err
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	n, ok := d.networks[r.NetworkID]
	if !ok {
		return nil, fmt.Errorf("network %s is not known to grapevine on this host: remove and recreate the network", shortID(r.NetworkID))
	}
	addr = netip.PrefixFrom(addr.Addr(), n.Subnet.Bits())
	if err := checkEndpointAddr(n, addr.Addr()); err != nil {
		return nil, err
	}
	resp := &network.CreateEndpointResponse{}
	if generated {
		resp.Interface = &network.EndpointInterface{MacAddress: mac.String()}
	}
	if old, ok := d.endpoints[r.EndpointID]; ok {
		if old.NetworkID != r.NetworkID || old.Address != addr || old.MAC != mac.String() {
			return nil, fmt.Errorf("endpoint %s already exists on network %s with address %s", shortID(old.ID), shortID(old.NetworkID), old.Address)
		}
		return resp, nil
	}
	for _, e := range d.endpoints {
		if hostVeth(e.ID) == hostVeth(r.EndpointID) {
			return nil, fmt.Errorf("endpoint id %s starts with the same %d characters as endpoint %s: its kernel names would collide", r.EndpointID, dataplane.NameIDLen, e.ID)
		}
		if e.NetworkID == r.NetworkID && e.Address.Addr() == addr.Addr() {
			return nil, fmt.Errorf("endpoint address %s is already used by endpoint %s on this network", addr.Addr(), shortID(e.ID))
		}
	}
	rec := &endpointRecord{
		Version:       recordVersion,
		ID:            r.EndpointID,
		NetworkID:     r.NetworkID,
		Address:       addr,
		MAC:           mac.String(),
		MACGenerated:  generated,
		HostVeth:      hostVeth(r.EndpointID),
		ContainerVeth: contVeth(r.EndpointID),
		Requested:     requested,
		Exposed:       exposed,
	}
	if !n.mode().overlay() {
		rec.HostVeth = "" // the container's link is not a veth on a bridge: no host end
	}
	if err := d.store.putEndpoint(rec); err != nil {
		return nil, err
	}
	d.endpoints[rec.ID] = rec
	d.clusterEndpointCreated(n, rec)
	d.epLog(rec.NetworkID, rec.ID).WithFields(map[string]any{"address": rec.Address, "mac": rec.MAC}).Debug("endpoint created")
	return resp, nil
}

// endpointInterface reads the endpoint's IPv4 address and its MAC: Docker's
// (--mac-address), or one derived from the address when Docker gave none.
func endpointInterface(i *network.EndpointInterface) (netip.Prefix, net.HardwareAddr, error) {
	if i == nil || i.Address == "" {
		return netip.Prefix{}, nil, errors.New("endpoint has no IPv4 address: grapevine needs Docker to allocate it through IPAM (Interface.Address)")
	}
	if i.AddressIPv6 != "" {
		return netip.Prefix{}, nil, fmt.Errorf("endpoint IPv6 address %s: IPv6 is not supported by grapevine yet", i.AddressIPv6)
	}
	addr, err := netip.ParsePrefix(i.Address)
	if err != nil || !addr.Addr().Is4() {
		return netip.Prefix{}, nil, fmt.Errorf("endpoint address %q is not an IPv4 address in CIDR form", i.Address)
	}
	if i.MacAddress == "" {
		return addr, macFromIPv4(addr.Addr()), nil
	}
	mac, err := net.ParseMAC(i.MacAddress)
	if err != nil || len(mac) != 6 || mac[0]&1 != 0 {
		return netip.Prefix{}, nil, fmt.Errorf("endpoint MAC address %q is not a unicast Ethernet address (--mac-address)", i.MacAddress)
	}
	return addr, mac, nil
}

// checkEndpointAddr refuses an endpoint address outside the network's
// subnet or one the network uses itself.
func checkEndpointAddr(n *networkRecord, a netip.Addr) error {
	switch {
	case !n.Subnet.Contains(a):
		return fmt.Errorf("endpoint address %s is outside the network's subnet %s", a, n.Subnet)
	case a == n.Gateway.Addr():
		return fmt.Errorf("endpoint address %s is the network's gateway: choose another --ip", a)
	case n.HostAccess.IsValid() && a == n.HostAccess:
		return fmt.Errorf("endpoint address %s is this host's host_access (shim) address: choose another --ip", a)
	}
	return nil
}

// DeleteEndpoint removes the endpoint's links, its record and its published
// ports. An unknown endpoint is success; Docker only logs errors from here, so
// everything is attempted and a failed link removal is left to Reconcile.
func (d *Driver) DeleteEndpoint(r *network.DeleteEndpointRequest) error {
	if r == nil {
		return errors.New("DeleteEndpoint: empty request")
	}
	if err := checkID("EndpointID", r.EndpointID); err != nil {
		return err
	}
	log := d.epLog(r.NetworkID, r.EndpointID)
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.endpoints[r.EndpointID]
	if !ok {
		log.Debug("DeleteEndpoint for an unknown endpoint")
		return d.deleteEndpointLinks(&endpointRecord{ID: r.EndpointID})
	}
	errs := []error{d.deleteEndpointLinks(e)}
	if n := d.networks[e.NetworkID]; n != nil {
		// Leave removes it; DeleteEndpoint without Leave must too.
		errs = append(errs, d.dropShimRoute(n, e))
	}
	if err := d.store.deleteEndpoint(e.ID); err != nil {
		return errors.Join(append(errs, err)...)
	}
	delete(d.endpoints, e.ID)
	d.clusterEndpointDeleted(d.networks[e.NetworkID], e)
	if err := d.syncFirewall(); err != nil {
		errs = append(errs, err)
	}
	log.Debug("endpoint deleted")
	return errors.Join(errs...)
}

// deleteEndpointLinks removes both ends of an endpoint's veth pair, by name.
func (d *Driver) deleteEndpointLinks(e *endpointRecord) error {
	var errs []error
	for _, l := range []string{hostVeth(e.ID), contVeth(e.ID)} {
		if err := d.dp.DeleteLink(l); err != nil {
			errs = append(errs, fmt.Errorf("delete link %s: %w", l, err))
		}
	}
	return errors.Join(errs...)
}

// EndpointInfo reports the endpoint's published ports (with the host ports
// actually chosen) and its MAC address.
func (d *Driver) EndpointInfo(r *network.InfoRequest) (map[string]any, error) {
	if r == nil {
		return nil, errors.New("EndpointOperInfo: empty request")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.endpoints[r.EndpointID]
	if !ok {
		return nil, fmt.Errorf("endpoint %s is not known to grapevine on this host", shortID(r.EndpointID))
	}
	pm := make([]dockerPortBinding, 0, len(e.Bindings))
	for _, b := range e.Bindings {
		pm = append(pm, toDocker(b, e.Address.Addr()))
	}
	info := map[string]any{
		optPortMap:    pm,
		optMACAddress: e.MAC,
	}
	if len(e.Exposed) > 0 {
		ex := make([]dockerTransportPort, 0, len(e.Exposed))
		for _, t := range e.Exposed {
			ex = append(ex, dockerTransportPort{Proto: uint8(t.Proto), Port: t.Port})
		}
		info[optExposed] = ex
	}
	return info, nil
}
