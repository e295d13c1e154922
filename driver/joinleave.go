package driver

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/docker/go-plugins-helpers/network"
)

// containerIfPrefix is the name prefix Docker gives the interface inside the
// container (eth0, eth1, …).
const containerIfPrefix = "eth"

// Join has the network's mode make the endpoint's links (vxlan: a veth pair
// on the bridge; macvlan: a child of the parent) and records the endpoint as
// joined.
func (d *Driver) Join(r *network.JoinRequest) (*network.JoinResponse, error) {
	if r == nil {
		return nil, errors.New("Join: empty request")
	}
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
	if key := sandboxKey(r.SandboxKey); key != e.SandboxKey {
		e = e.clone() // the mode's setJoined persists it with the endpoint
		e.SandboxKey = key
		d.endpoints[e.ID] = e
	}
	resp, err := n.mode().join(d, n, e)
	if err == nil {
		d.kickSandboxes()
	}
	return resp, err
}

// Leave has the network's mode remove the endpoint's links and records the
// endpoint as no longer joined. Unknown endpoints and repeats are success
// (the links a VXLAN endpoint would have are removed by name).
func (d *Driver) Leave(r *network.LeaveRequest) error {
	if r == nil {
		return errors.New("Leave: empty request")
	}
	if err := checkID("EndpointID", r.EndpointID); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var mode netMode = vxlanMode{}
	e, ok := d.endpoints[r.EndpointID]
	n := d.networkOfEndpoint(e)
	if n != nil {
		mode = n.mode()
	}
	if !ok {
		e = &endpointRecord{ID: r.EndpointID}
	}
	errs := []error{mode.leave(d, n, e)}
	if ok {
		errs = append(errs, d.setJoined(e, false))
	}
	d.kickSandboxes()
	d.epLog(r.NetworkID, r.EndpointID).Debug("endpoint left")
	return errors.Join(errs...)
}

// setJoined records whether the endpoint is joined. Caller holds mu.
func (d *Driver) setJoined(e *endpointRecord, joined bool) error {
	if e.Joined == joined {
		return nil
	}
	ne := e.clone()
	ne.Joined = joined
	if !joined {
		ne.SandboxKey = ""
	}
	if err := d.store.putEndpoint(ne); err != nil {
		return err
	}
	d.endpoints[ne.ID] = ne
	return nil
}

// joinedEndpoints lists a network's joined endpoints, sorted by id. Caller
// holds mu.
func (d *Driver) joinedEndpoints(networkID string) []*endpointRecord {
	var out []*endpointRecord
	for _, e := range d.endpoints {
		if e.NetworkID == networkID && e.Joined {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b *endpointRecord) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// networkOfEndpoint returns e's network, nil for a nil or orphaned e. Caller
// holds mu.
func (d *Driver) networkOfEndpoint(e *endpointRecord) *networkRecord {
	if e == nil {
		return nil
	}
	return d.networks[e.NetworkID]
}
