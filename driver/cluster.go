package driver

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"grapevine/gossip"
)

// Replicated record kinds written and read by the driver.
//
//	network   "<subnet>/<node>"  networkDef   one per host that has the network
//	endpoint  "<subnet>/<ip>"    endpointDef  written by the endpoint's host
//
// Each record has one writer (the host named in it), so last-writer-wins never
// has to merge two hosts' opinions.
const (
	kindNetwork  = "network"
	kindEndpoint = "endpoint"
)

// networkDef is how one host defines a subnet: the cluster-wide identity of a
// network (Docker's network ids differ between hosts).
type networkDef struct {
	Version int        `json:"version"`
	Mode    string     `json:"mode"`
	VNI     uint32     `json:"vni"`
	Gateway netip.Addr `json:"gateway"`
	MTU     int        `json:"mtu,omitempty"`
	// HostAccess is the host's macvlan shim address (host_access), which must
	// differ between hosts.
	HostAccess netip.Addr `json:"host_access,omitzero"`
}

// endpointDef is one endpoint as other hosts need it: where to send its frames.
type endpointDef struct {
	Version int    `json:"version"`
	MAC     string `json:"mac"`
	Node    string `json:"node"`
}

func (n networkDef) String() string {
	if m, ok := modeNamed(n.Mode); ok && !m.overlay() {
		return "mode=" + n.Mode // no VNI
	}
	return fmt.Sprintf("mode=%s vni=%d", n.Mode, n.VNI)
}

func networkKey(subnet netip.Prefix, node string) string { return subnet.String() + "/" + node }

func endpointKey(subnet netip.Prefix, ip netip.Addr) string {
	return subnet.String() + "/" + ip.String()
}

// splitKey splits "<a.b.c.d>/<bits>/<rest>" into the subnet and rest.
func splitKey(key string) (netip.Prefix, string, bool) {
	addr, rest, ok := strings.Cut(key, "/")
	if !ok {
		return netip.Prefix{}, "", false
	}
	bits, tail, ok := strings.Cut(rest, "/")
	if !ok || tail == "" {
		return netip.Prefix{}, "", false
	}
	p, err := netip.ParsePrefix(addr + "/" + bits)
	if err != nil || p != p.Masked() {
		return netip.Prefix{}, "", false
	}
	return p, tail, true
}

func defOf(n *networkRecord) networkDef {
	return networkDef{Version: recordVersion, Mode: n.Mode, VNI: n.VNI, Gateway: n.Gateway.Addr(), MTU: n.MTU, HostAccess: n.HostAccess}
}

// parseNetworkRecord reads a host's definition of a subnet: keyed by the
// subnet and its writer's name, with a known mode, a VNI in range (vxlan),
// and gateway and host access addresses inside the subnet. Anything else is
// not used (ok false).
func parseNetworkRecord(r *gossip.Record) (netip.Prefix, string, networkDef, bool) {
	var def networkDef
	subnet, node, ok := splitKey(r.Key)
	if !ok || node != r.Owner || !subnet.Addr().Is4() || json.Unmarshal(r.Value, &def) != nil {
		return netip.Prefix{}, "", networkDef{}, false
	}
	inside := func(a netip.Addr) bool { return !a.IsValid() || subnet.Contains(a) }
	mode, _ := modeNamed(def.Mode)
	switch {
	case mode == nil:
	case mode.overlay() && (def.VNI < 1 || def.VNI > maxVNI):
	case def.MTU != 0 && (def.MTU < 68 || def.MTU > maxLinkMTU):
	case !inside(def.Gateway) || !inside(def.HostAccess):
	default:
		return subnet, node, def, true
	}
	return netip.Prefix{}, "", networkDef{}, false
}

// clusterDef is another host's definition of a subnet.
type clusterDef struct {
	node    string
	version uint64
	def     networkDef
}

// clusterDefs returns the other hosts' definitions of subnet, first definer
// (lowest record version, then node name) first.
func (d *Driver) clusterDefs(subnet netip.Prefix) []clusterDef {
	var out []clusterDef
	for _, r := range d.cluster.List(kindNetwork) {
		p, node, def, ok := parseNetworkRecord(&r)
		if !ok || p != subnet || node == d.self {
			continue
		}
		out = append(out, clusterDef{node: node, version: r.Version, def: def})
	}
	slices.SortFunc(out, func(a, b clusterDef) int {
		if a.version != b.version {
			if a.version < b.version {
				return -1
			}
			return 1
		}
		return strings.Compare(a.node, b.node)
	})
	return out
}

// checkCluster refuses a new network whose subnet another host defines
// differently, and adopts the cluster's VNI when none was given. An explicit
// or automatic VNI that another subnet uses in the cluster is refused or
// skipped. Caller holds mu.
func (d *Driver) checkCluster(spec *networkSpec) error {
	if d.cluster == nil {
		return nil
	}
	if spec.hostIP.IsValid() {
		for _, c := range d.clusterDefs(spec.subnet) {
			if c.def.HostAccess == spec.hostIP {
				return fmt.Errorf("host_access address %s is already the shim address of host %s on %s: give each host its own with --aux-address host-<hostname>=IP, or none to have one allocated",
					spec.hostIP, c.node, spec.subnet)
			}
		}
	}
	if defs := d.clusterDefs(spec.subnet); len(defs) > 0 {
		first := defs[0]
		where := fmt.Sprintf("%s is already defined on host %s as %s", spec.subnet, first.node, first.def)
		switch {
		case first.def.Mode != spec.mode.name():
			return fmt.Errorf("%s; %s", where, modeHint(first.def.Mode))
		case spec.vni != 0 && spec.vni != first.def.VNI:
			return fmt.Errorf("%s; use -o vni=%d or omit -o vni", where, first.def.VNI)
		case first.def.Gateway.IsValid() && first.def.Gateway != spec.gateway.Addr():
			return fmt.Errorf("%s is already defined on host %s with gateway %s; use --gateway %s (the gateway is the same on every host)",
				spec.subnet, first.node, first.def.Gateway, first.def.Gateway)
		}
		if first.def.MTU != 0 && spec.mtu != 0 && first.def.MTU != spec.mtu {
			d.log.WithFields(logrus.Fields{"subnet": spec.subnet, "peer": first.node, "peer_mtu": first.def.MTU, "mtu": spec.mtu}).
				Warn("network MTU differs from the one on another host; large packets between the hosts may be dropped")
		}
		if spec.vni == 0 && spec.mode.overlay() {
			for _, n := range d.networks {
				if n.VNI == first.def.VNI {
					return fmt.Errorf("%s, but vni %d is already used by grapevine network %s (subnet %s) on this host: remove that network first",
						where, first.def.VNI, shortID(n.ID), n.Subnet)
				}
			}
			spec.vni = first.def.VNI
			spec.adopted = first.node
		}
		return nil
	}
	if spec.vni != 0 {
		if subnet, node, ok := d.clusterVNIUser(spec.vni, spec.subnet); ok {
			return fmt.Errorf("vni %d is already used by subnet %s (defined on host %s): pick another -o vni or omit it", spec.vni, subnet, node)
		}
	}
	return nil
}

// clusterVNIUser finds another subnet that uses vni in the cluster.
func (d *Driver) clusterVNIUser(vni uint32, subnet netip.Prefix) (netip.Prefix, string, bool) {
	if d.cluster == nil {
		return netip.Prefix{}, "", false
	}
	for _, r := range d.cluster.List(kindNetwork) {
		p, node, def, ok := parseNetworkRecord(&r)
		if ok && p != subnet && def.VNI == vni {
			return p, node, true
		}
	}
	return netip.Prefix{}, "", false
}

// conflictOf describes how other hosts' definitions of n's subnet differ from
// n ("" when they agree). Caller holds mu.
func (d *Driver) conflictOf(n *networkRecord) string {
	if d.cluster == nil {
		return ""
	}
	var out []string
	for _, c := range d.clusterDefs(n.Subnet) {
		if c.def.Mode != n.Mode || c.def.VNI != n.VNI || (c.def.Gateway.IsValid() && c.def.Gateway != n.Gateway.Addr()) {
			out = append(out, fmt.Sprintf("host %s defines %s as %s gateway %s; this host uses %s gateway %s",
				c.node, n.Subnet, c.def, c.def.Gateway, defOf(n), n.Gateway.Addr()))
		}
		if n.HostAccess.IsValid() && c.def.HostAccess == n.HostAccess {
			out = append(out, fmt.Sprintf("host %s uses the same host_access address %s", c.node, n.HostAccess))
		}
	}
	return strings.Join(out, "; ")
}

// publishOwn makes this host's records match its persisted state: a network
// record per network, an endpoint record per endpoint, and no other records
// owned by this host. Caller holds mu.
func (d *Driver) publishOwn() error {
	if d.cluster == nil {
		return nil
	}
	var errs []error
	wantNets := map[string]bool{}
	for _, n := range d.networks {
		wantNets[networkKey(n.Subnet, d.self)] = true
		errs = append(errs, d.publishNetwork(n))
	}
	wantEps := map[string]bool{}
	for _, e := range d.endpoints {
		n := d.networks[e.NetworkID]
		if n == nil {
			continue
		}
		wantEps[endpointKey(n.Subnet, e.Address.Addr())] = true
		errs = append(errs, d.publishEndpoint(n, e))
	}
	for kind, want := range map[string]map[string]bool{kindNetwork: wantNets, kindEndpoint: wantEps} {
		for _, r := range d.cluster.List(kind) {
			if r.Owner != d.self || want[r.Key] {
				continue
			}
			if err := d.cluster.Delete(kind, r.Key); err != nil {
				errs = append(errs, fmt.Errorf("withdraw stale %s record %s: %w", kind, r.Key, err))
				continue
			}
			d.log.WithFields(logrus.Fields{"kind": kind, "key": r.Key}).Info("withdrew a record of something this host no longer has")
		}
	}
	return joinErrs(errs)
}

func (d *Driver) publishNetwork(n *networkRecord) error {
	v, err := json.Marshal(defOf(n))
	if err != nil {
		return fmt.Errorf("encode network record of %s: %w", n.Subnet, err)
	}
	if err := d.cluster.Put(kindNetwork, networkKey(n.Subnet, d.self), v); err != nil {
		return fmt.Errorf("publish network %s to the cluster: %w", n.Subnet, err)
	}
	return nil
}

func (d *Driver) publishEndpoint(n *networkRecord, e *endpointRecord) error {
	v, err := json.Marshal(endpointDef{Version: recordVersion, MAC: e.MAC, Node: d.self})
	if err != nil {
		return fmt.Errorf("encode endpoint record of %s: %w", e.Address.Addr(), err)
	}
	if err := d.cluster.Put(kindEndpoint, endpointKey(n.Subnet, e.Address.Addr()), v); err != nil {
		return fmt.Errorf("publish endpoint %s to the cluster: %w", e.Address.Addr(), err)
	}
	return nil
}

// withdraw deletes a record this host owns; a record another host has since
// written (an address now used there) is left alone.
func (d *Driver) withdraw(kind, key string) error {
	r, ok := d.cluster.Get(kind, key)
	if !ok || r.Owner != d.self {
		return nil
	}
	if err := d.cluster.Delete(kind, key); err != nil {
		return fmt.Errorf("withdraw %s record %s from the cluster: %w", kind, key, err)
	}
	return nil
}

// clusterNetworkCreated publishes a new network and schedules the programming
// of the remote endpoints already known for its subnet. Caller holds mu.
func (d *Driver) clusterNetworkCreated(n *networkRecord) {
	if d.cluster == nil {
		return
	}
	if err := d.publishNetwork(n); err != nil {
		d.netLog(n.ID).WithError(err).Warn("network not yet published; reconcile retries")
	}
	for k, ep := range d.peers.eps {
		if ep.subnet == n.Subnet {
			d.markDirty(k)
		}
	}
}

// clusterNetworkDeleted withdraws the network's records and forgets what was
// programmed on its (deleted) VXLAN device. Caller holds mu.
func (d *Driver) clusterNetworkDeleted(n *networkRecord, eps []*endpointRecord) {
	if d.cluster == nil {
		return
	}
	log := d.netLog(n.ID)
	for _, e := range eps {
		if err := d.withdraw(kindEndpoint, endpointKey(n.Subnet, e.Address.Addr())); err != nil {
			log.WithError(err).Warn("endpoint record not withdrawn; reconcile retries")
		}
	}
	if err := d.withdraw(kindNetwork, networkKey(n.Subnet, d.self)); err != nil {
		log.WithError(err).Warn("network record not withdrawn; reconcile retries")
	}
	d.forgetDevice(vxlanName(n.ID))
}

// clusterEndpointCreated publishes a new endpoint. Caller holds mu.
func (d *Driver) clusterEndpointCreated(n *networkRecord, e *endpointRecord) {
	if d.cluster == nil {
		return
	}
	k := endpointKey(n.Subnet, e.Address.Addr())
	if ep, ok := d.peers.eps[k]; ok {
		d.epLog(n.ID, e.ID).WithFields(logrus.Fields{"address": e.Address.Addr(), "peer": ep.node}).
			Warn("address is also announced by another host; this host's endpoint wins here")
	}
	if err := d.publishEndpoint(n, e); err != nil {
		d.epLog(n.ID, e.ID).WithError(err).Warn("endpoint not yet published; reconcile retries")
	}
	d.markDirty(k) // a remote entry for the same address must go
}

// clusterEndpointDeleted withdraws an endpoint's record. Caller holds mu.
func (d *Driver) clusterEndpointDeleted(n *networkRecord, e *endpointRecord) {
	if d.cluster == nil || n == nil {
		return
	}
	k := endpointKey(n.Subnet, e.Address.Addr())
	if err := d.withdraw(kindEndpoint, k); err != nil {
		d.epLog(n.ID, e.ID).WithError(err).Warn("endpoint record not withdrawn; reconcile retries")
	}
	d.markDirty(k)
}

// onEndpointRecord follows the endpoint records of other hosts. It runs on
// gossip's callback worker and only updates the model; the peer worker
// programs the kernel. A refused record leaves the model as it was.
func (d *Driver) onEndpointRecord(_, r *gossip.Record) {
	if r == nil {
		return
	}
	subnet, ip, keyOK := parseEndpointKey(r.Key)
	var ep *remoteEP
	cause := causeKey
	if keyOK && !r.Deleted {
		ep, cause = decodeEndpoint(r, subnet, ip)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	n := d.networkOf(subnet)
	old := d.peers.eps[r.Key]
	switch {
	case !keyOK:
	case r.Owner == d.self:
		ep, cause = nil, "" // this host's own endpoint is not remote
	case r.Deleted && old != nil && old.node != r.Owner && d.aliveMember(old.node):
		cause = causeDelete
	case r.Deleted:
		cause = ""
	case cause == "" && old != nil && old.node != r.Owner && d.aliveMember(old.node):
		cause = causeHeld
	}
	if cause == causeHeld {
		d.holdAddress(r.Key, ep)
	}
	if cause != "" {
		d.refuse(r.Key, r.Owner, cause, n)
		return
	}
	delete(d.peers.held, r.Key)
	delete(d.peers.refused.current, r.Key)
	d.noteArrival(r.Key, ep != nil, time.Now())
	if ep == nil {
		delete(d.peers.eps, r.Key)
	} else {
		d.peers.eps[r.Key] = ep
	}
	d.markDirty(r.Key)
}

// onNetworkRecord logs other hosts' definitions that disagree with this one.
func (d *Driver) onNetworkRecord(_, r *gossip.Record) {
	if r == nil || r.Deleted {
		return
	}
	subnet, node, def, ok := parseNetworkRecord(r)
	if !ok {
		d.log.WithFields(logrus.Fields{"key": r.Key, "peer": r.Owner}).Warn("ignoring a network record that is not its writer's definition of a subnet")
		return
	}
	if node == d.self {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, n := range d.networks {
		if n.Subnet == subnet && (def.Mode != n.Mode || def.VNI != n.VNI) {
			d.netLog(n.ID).WithFields(logrus.Fields{"peer": node, "subnet": subnet, "peer_vni": def.VNI, "vni": n.VNI, "peer_mode": def.Mode}).
				Error("another host defines this subnet differently: endpoints on the two hosts cannot reach each other; recreate the network on one of them with the other's -o vni")
		}
	}
}

// onNodeEvent follows membership: a dead host's endpoints are unprogrammed
// (a departed one's when its grace ends, grace.go), a returning or updated
// host's (re)programmed.
func (d *Driver) onNodeEvent(m gossip.Member, ev gossip.EventType) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.noteMember(m, ev == gossip.EventLeave)
	d.peers.members[m.Name] = m
	if ev == gossip.EventJoin || ev == gossip.EventUpdate {
		d.warnPort(m)
	}
	d.membersChanged()
	for k, ep := range d.peers.eps {
		if ep.node == m.Name {
			d.markDirty(k)
		}
	}
}

// warnPort logs a peer whose VXLAN port differs from this host's: its
// endpoints are not programmed (frames would reach the wrong socket).
func (d *Driver) warnPort(m gossip.Member) {
	if p := m.Meta.VXLANPort; p != 0 && p != d.port {
		d.log.WithFields(logrus.Fields{"peer": m.Name, "peer_vxlan_port": p, "vxlan_port": d.port}).
			Error("peer uses another VXLAN_PORT: its endpoints are unreachable from this host; set the same VXLAN_PORT on every host")
	}
}

func joinErrs(errs []error) error {
	var out []error
	for _, e := range errs {
		if e != nil {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		return nil
	}
	if len(out) == 1 {
		return out[0]
	}
	return fmt.Errorf("%w (and %d more)", out[0], len(out)-1)
}

// modeHint tells how to create a network of mode on this host.
func modeHint(mode string) string {
	switch mode {
	case modeEncrypted:
		return "use -o " + userEncrypted + "=true"
	case modeVXLAN:
		return "use -o mode=vxlan without -o " + userEncrypted + "=true"
	}
	return "use -o mode=" + mode
}
