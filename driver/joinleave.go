package driver

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/docker/go-plugins-helpers/network"

	"grapevine/driver/dataplane"
)

// containerIfPrefix is the name prefix Docker gives the interface inside the
// container (eth0, eth1, …).
const containerIfPrefix = "eth"

// Join makes the endpoint's veth pair: the host end on the network's bridge
// (hairpin on, for published-port hairpin), the container end in the host
// namespace for Docker to move. Docker does not set the MTU, so both ends get
// the network's. The gateway is returned for non-internal networks only, so
// that Docker programs external connectivity through this network.
func (d *Driver) Join(r *network.JoinRequest) (resp *network.JoinResponse, err error) {
	if r == nil {
		return nil, errors.New("Join: empty request")
	}
	log := d.epLog(r.NetworkID, r.EndpointID)
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.endpoints[r.EndpointID]
	if !ok {
		return nil, fmt.Errorf("endpoint %s is not known to grapevine on this host", shortID(r.EndpointID))
	}
	n, ok := d.networks[e.NetworkID]
	if !ok || e.NetworkID != r.NetworkID {
		return nil, fmt.Errorf("endpoint %s does not belong to network %s", shortID(e.ID), shortID(r.NetworkID))
	}
	if n.macvlan() {
		return d.joinMacvlan(n, e)
	}
	if err := d.dp.EnsureVeth(d.vethSpec(n, e)); err != nil {
		return nil, fmt.Errorf("create veth %s for endpoint %s: %w", hostVeth(e.ID), shortID(e.ID), err)
	}
	if !e.Joined {
		ne := e.clone()
		ne.Joined = true
		if err := d.store.putEndpoint(ne); err != nil {
			if derr := d.dp.DeleteLink(hostVeth(e.ID)); derr != nil {
				log.WithError(derr).Warn("rollback: could not delete veth")
			}
			return nil, err
		}
		d.endpoints[ne.ID] = ne
	}
	resp = &network.JoinResponse{
		InterfaceName: network.InterfaceName{SrcName: contVeth(e.ID), DstPrefix: containerIfPrefix},
	}
	if !n.Internal {
		resp.Gateway = n.Gateway.Addr().String()
	}
	log.Debug("endpoint joined")
	return resp, nil
}

func (d *Driver) vethSpec(n *networkRecord, e *endpointRecord) dataplane.VethSpec {
	mac, err := net.ParseMAC(e.MAC)
	if err != nil { // persisted MACs were validated; derive one rather than fail
		mac = macFromIPv4(e.Address.Addr())
	}
	return dataplane.VethSpec{
		HostName:      hostVeth(e.ID),
		ContainerName: contVeth(e.ID),
		MTU:           n.MTU,
		MAC:           mac,
		Master:        bridgeName(n.ID),
		Hairpin:       true,
	}
}

// Leave removes the endpoint's veth pair (deleting the host end removes the
// container end wherever it is). Unknown endpoints and repeats are success.
func (d *Driver) Leave(r *network.LeaveRequest) error {
	if r == nil {
		return errors.New("Leave: empty request")
	}
	if err := checkID("EndpointID", r.EndpointID); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	e, ok := d.endpoints[r.EndpointID]
	if n := d.networkOfEndpoint(e); n != nil && n.macvlan() {
		errs = append(errs, d.leaveMacvlan(n, e))
	} else if err := d.dp.DeleteLink(hostVeth(r.EndpointID)); err != nil {
		errs = append(errs, fmt.Errorf("delete link %s: %w", hostVeth(r.EndpointID), err))
	}
	if ok && e.Joined {
		ne := e.clone()
		ne.Joined = false
		if err := d.store.putEndpoint(ne); err != nil {
			errs = append(errs, err)
		} else {
			d.endpoints[ne.ID] = ne
		}
	}
	d.epLog(r.NetworkID, r.EndpointID).Debug("endpoint left")
	return errors.Join(errs...)
}

// networkOfEndpoint returns e's network, nil for a nil or orphaned e. Caller
// holds mu.
func (d *Driver) networkOfEndpoint(e *endpointRecord) *networkRecord {
	if e == nil {
		return nil
	}
	return d.networks[e.NetworkID]
}

// joinMacvlan makes the endpoint's macvlan child on the network's parent, in
// the host namespace for Docker to move, and with host_access the /32 route
// to it through the host's shim. The LAN's router is returned as gateway
// when the network has a parent and is not --internal; a network without a
// parent disables Docker's gateway service so no docker_gwbridge gives it a
// way out. Caller holds mu.
func (d *Driver) joinMacvlan(n *networkRecord, e *endpointRecord) (resp *network.JoinResponse, err error) {
	log := d.epLog(n.ID, e.ID)
	mac, perr := net.ParseMAC(e.MAC)
	if perr != nil {
		mac = macFromIPv4(e.Address.Addr())
	}
	child := contVeth(e.ID)
	spec := dataplane.MacvlanSpec{Name: child, Parent: n.parentLink(), MTU: n.MTU, MAC: mac}
	if err := d.dp.EnsureMacvlan(spec); err != nil {
		if errors.Is(err, dataplane.ErrLinkNotFound) {
			return nil, fmt.Errorf("endpoint %s: the parent %s of network %s is missing on this host (restore it, or recreate the network): %w", shortID(e.ID), n.parentLink(), shortID(n.ID), err)
		}
		return nil, fmt.Errorf("create macvlan %s for endpoint %s: %w", child, shortID(e.ID), err)
	}
	route := netip.PrefixFrom(e.Address.Addr(), 32)
	defer func() {
		if err == nil {
			return
		}
		if n.HostAccess.IsValid() {
			if derr := d.dp.DelRoute(route, shimName(n.ID)); derr != nil {
				log.WithError(derr).Warn("rollback: could not delete the host route")
			}
		}
		if derr := d.dp.DeleteLink(child); derr != nil {
			log.WithError(derr).Warn("rollback: could not delete the macvlan link")
		}
	}()
	if n.HostAccess.IsValid() {
		if err := d.dp.SetRoute(route, shimName(n.ID), n.HostAccess); err != nil {
			return nil, fmt.Errorf("endpoint %s: host access route %s dev %s: %w", shortID(e.ID), route, shimName(n.ID), err)
		}
	}
	if !e.Joined {
		ne := e.clone()
		ne.Joined = true
		if err := d.store.putEndpoint(ne); err != nil {
			return nil, err
		}
		d.endpoints[ne.ID] = ne
	}
	resp = &network.JoinResponse{
		InterfaceName: network.InterfaceName{SrcName: child, DstPrefix: containerIfPrefix},
	}
	switch {
	case n.external():
		resp.Gateway = n.Gateway.Addr().String()
	case !n.Internal:
		resp.DisableGatewayService = true
	}
	log.Debug("endpoint joined")
	return resp, nil
}

// leaveMacvlan removes the endpoint's host route and its macvlan child if it
// is in the host namespace (Docker moves it back after Leave; DeleteEndpoint
// removes it then). Caller holds mu.
func (d *Driver) leaveMacvlan(n *networkRecord, e *endpointRecord) error {
	var errs []error
	if n.HostAccess.IsValid() {
		if err := d.dp.DelRoute(netip.PrefixFrom(e.Address.Addr(), 32), shimName(n.ID)); err != nil {
			errs = append(errs, fmt.Errorf("delete host access route of %s: %w", e.Address.Addr(), err))
		}
	}
	if err := d.dp.DeleteLink(contVeth(e.ID)); err != nil {
		errs = append(errs, fmt.Errorf("delete link %s: %w", contVeth(e.ID), err))
	}
	return errors.Join(errs...)
}
