package driver

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"grapevine/driver/dataplane"
)

// desiredFirewall computes the complete rule set from all persisted networks and
// endpoints; the firewall is never changed incrementally. Caller holds mu.
func (d *Driver) desiredFirewall() dataplane.Firewall {
	var fw dataplane.Firewall
	for _, n := range d.networks {
		n.mode().firewall(d, n, &fw)
	}
	for _, e := range d.endpoints {
		n, ok := d.networks[e.NetworkID]
		if !ok || n.Internal || !n.mode().overlay() {
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
	fw.VXLAN = d.vxlanIngress()
	return fw.Sorted()
}

// syncFirewall hands the desired rule set to the dataplane, then the probe
// device follows (syncProbe). Caller holds mu.
func (d *Driver) syncFirewall() error {
	d.filterSynced = false
	if err := d.dp.SyncFirewall(d.desiredFirewall()); err != nil {
		if perr := d.dp.RemoveProbe(); perr != nil {
			d.log.WithError(perr).Warn("could not remove the probe device")
		}
		return fmt.Errorf("program firewall rules: %w", err)
	}
	d.filterSynced = true
	// the probe only serves the doctor: its failure never fails a network
	// call; the doctor reports it, the next sync retries, and the peer
	// worker retries soon when the VNI is still held (by the device of a
	// plugin process that just stopped, gone within seconds)
	if err := d.syncProbe(); err != nil {
		d.log.WithError(err).Warn("could not set up the doctor's probe device; retrying")
		if errors.Is(err, dataplane.ErrVNIInUse) {
			d.kickProbe()
		}
	}
	return nil
}

// syncProbe keeps the doctor's probe device exactly while the VXLAN ingress
// filter is in place (a VXLAN network exists and the firewall was written),
// reaching the same member VTEPs the filter accepts: the probe opens no
// way in that the networks' VXLAN devices do not. Caller holds mu.
func (d *Driver) syncProbe() error {
	in := d.vxlanIngress()
	var u dataplane.Underlay
	var err error
	if in.Port != 0 {
		u, err = d.underlay()
	}
	if in.Port == 0 || !d.filterSynced || err != nil || !u.Addr.Is4() {
		if rerr := d.dp.RemoveProbe(); rerr != nil {
			return fmt.Errorf("remove the probe device: %w", rerr)
		}
		return nil
	}
	spec := dataplane.ProbeSpec{VNI: ProbeVNI, Port: int(in.Port), Local: u.Addr, Peers: in.Peers}
	if err := d.dp.EnsureProbe(spec); err != nil {
		return fmt.Errorf("the doctor's probe device: %w", err)
	}
	return nil
}

// vxlanIngress is who may send VXLAN frames to this host: with a VXLAN
// network here, the VTEPs of the cluster's live members (no one without a
// cluster). Caller holds mu.
func (d *Driver) vxlanIngress() dataplane.VXLANIngress {
	if !d.hasVXLANNetworks() || d.port <= 0 || d.port > 65535 {
		return dataplane.VXLANIngress{}
	}
	return dataplane.VXLANIngress{Port: uint16(d.port), Peers: d.memberVTEPs(),
		// until the first contact after a start, members not heard of yet
		// keep their place in the filter
		Partial: d.cluster != nil && !d.cluster.Joined()}
}

// memberVTEPs lists the IPv4 VTEPs of the live members other than this
// host, sorted. Caller holds mu.
func (d *Driver) memberVTEPs() []netip.Addr {
	if d.peers == nil {
		return nil
	}
	var out []netip.Addr
	for _, m := range d.peers.members {
		if !m.Self && d.reachable(m) && m.Meta.VTEP.Is4() {
			out = append(out, m.Meta.VTEP)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// membersChanged follows a membership change in the VXLAN ingress filter's
// set of VTEPs (netlink only; the periodic reconcile repairs a failure).
// Caller holds mu.
func (d *Driver) membersChanged() {
	if !d.hasVXLANNetworks() {
		return
	}
	if err := d.dp.SetVXLANPeers(d.vxlanIngress()); err != nil {
		d.log.WithError(err).Warn("could not update the VTEPs the VXLAN ingress filter accepts; reconcile retries")
		return
	}
	if err := d.syncProbe(); err != nil {
		d.log.WithError(err).Warn("could not update the probe device's peers; reconcile retries")
	}
	if d.hasEncrypted() {
		if err := d.syncTunnel(); err != nil {
			d.log.WithError(err).Warn("could not update the tunnel's peers; reconcile retries")
		}
	}
}

// VXLANIngressStatus is the VXLAN ingress filter as `grapevine status` shows it.
type VXLANIngressStatus struct {
	Port    uint16   `json:"port,omitempty"`
	Peers   []string `json:"peers"`
	Dropped uint64   `json:"dropped_frames"`
}

// VXLANIngress reports the filter: the port, the accepted VTEPs and how many
// frames from elsewhere it dropped (zero Port: no filter, no VXLAN network).
func (d *Driver) VXLANIngress() (VXLANIngressStatus, error) {
	d.mu.Lock()
	in := d.vxlanIngress()
	d.mu.Unlock()
	st := VXLANIngressStatus{Port: in.Port, Peers: []string{}}
	for _, p := range in.Peers {
		st.Peers = append(st.Peers, p.String())
	}
	n, err := d.dp.VXLANDrops()
	if err != nil {
		return st, fmt.Errorf("read the VXLAN ingress filter's drop counter: %w", err)
	}
	st.Dropped = n
	return st, nil
}

// Probe retries: a probe device refused because its VNI is still held is
// tried again every probeRetryEvery, at most probeRetries times, before the
// peer repair's own interval takes over.
const (
	probeRetryEvery = 500 * time.Millisecond
	probeRetries    = 30
)

// kickProbe asks the peer worker to retry the probe device soon (no worker
// without a cluster: nothing to probe then). Caller holds mu.
func (d *Driver) kickProbe() {
	if d.probeKick == nil {
		return
	}
	select {
	case d.probeKick <- struct{}{}:
	default:
	}
}

// retryProbe is one retry of the peer worker: true when the device is
// still refused for its VNI and another retry should follow. Takes mu.
func (d *Driver) retryProbe() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	err := d.syncProbe()
	if err == nil {
		d.log.Info("the doctor's probe device is set up")
		return false
	}
	return errors.Is(err, dataplane.ErrVNIInUse)
}
