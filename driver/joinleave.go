package driver

import (
	"errors"
	"fmt"
	"net"

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
	if err := d.dp.DeleteLink(hostVeth(r.EndpointID)); err != nil {
		errs = append(errs, fmt.Errorf("delete link %s: %w", hostVeth(r.EndpointID), err))
	}
	e, ok := d.endpoints[r.EndpointID]
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
