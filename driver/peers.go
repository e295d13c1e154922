package driver

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/sirupsen/logrus"

	"grapevine/driver/dataplane"
	"grapevine/gossip"
)

// Remote endpoints are programmed in two stages. Gossip callbacks only update
// the model below (under mu, briefly) and mark record keys dirty; the peer
// worker then applies dirty keys to the kernel in batches, taking mu per
// batch, so Docker's requests interleave with a large update. ReconcilePeers
// compares the kernel with the model and repairs both directions.

// peerBatch bounds the keys applied per lock hold.
const peerBatch = 256

// defaultPeerRepair is how often the peer worker runs ReconcilePeers.
const defaultPeerRepair = 10 * time.Second

// defaultAddressHoldoff is Config.AddressHoldoff's default: four times the
// plugin's reconcile period, within which a holder re-announces an address
// it still has.
const defaultAddressHoldoff = 2 * time.Minute

// remoteEP is an accepted endpoint record of another host.
type remoteEP struct {
	subnet netip.Prefix
	ip     netip.Addr
	mac    hwAddr
	node   string // the record's writer
}

// progEntry is what this host wrote to the kernel for one endpoint record.
type progEntry struct {
	vx   string
	ip   netip.Addr
	mac  hwAddr
	vtep netip.Addr
}

// peerState is the model of the cluster's endpoints and members. Guarded by
// Driver.mu.
type peerState struct {
	eps     map[string]*remoteEP           // endpoint record key → remote endpoint
	members map[string]gossip.Member       // by name
	prog    map[string]progEntry           // endpoint record key → programmed entries
	macRefs map[string]map[hwAddr][]string // vxlan → mac → keys programmed with it
	dirty   map[string]struct{}
	refused refusals
	held    map[string]heldEP    // record key → refused takeover (causeHeld)
	arrived map[string]time.Time // record key → arrival of a version not yet programmed
}

// heldEP is a record refused because another live host's endpoint holds its
// address, and since when.
type heldEP struct {
	ep    remoteEP
	since time.Time
}

func newPeerState() *peerState {
	return &peerState{
		eps:     map[string]*remoteEP{},
		members: map[string]gossip.Member{},
		prog:    map[string]progEntry{},
		macRefs: map[string]map[hwAddr][]string{},
		dirty:   map[string]struct{}{},
		refused: newRefusals(),
		held:    map[string]heldEP{},
		arrived: map[string]time.Time{},
	}
}

func (p *peerState) setProg(k string, e progEntry) {
	p.delProg(k)
	p.prog[k] = e
	if p.macRefs[e.vx] == nil {
		p.macRefs[e.vx] = map[hwAddr][]string{}
	}
	p.macRefs[e.vx][e.mac] = append(p.macRefs[e.vx][e.mac], k)
}

func (p *peerState) delProg(k string) {
	e, ok := p.prog[k]
	if !ok {
		return
	}
	delete(p.prog, k)
	refs := slices.DeleteFunc(p.macRefs[e.vx][e.mac], func(s string) bool { return s == k })
	if len(refs) == 0 {
		delete(p.macRefs[e.vx], e.mac)
	} else {
		p.macRefs[e.vx][e.mac] = refs
	}
}

// markDirty schedules key for the peer worker. Caller holds mu.
func (d *Driver) markDirty(k string) {
	d.peers.dirty[k] = struct{}{}
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// hostVTEP returns the VTEP of a member whose endpoints can be programmed:
// alive (or suspect) or within its grace after a graceful leave (grace.go),
// with a VTEP, on this host's VXLAN port. A VTEP that is
// not the member's own gossip address (the one memberlist reaches it at) is
// refused: a member could otherwise send its endpoints' traffic to any
// machine. The cause is "" when the member is merely unreachable.
func (d *Driver) hostVTEP(node string) (netip.Addr, string) {
	m, ok := d.peers.members[node]
	if !ok || !d.reachable(m) || !m.Meta.VTEP.IsValid() {
		return netip.Addr{}, causeUnreachable
	}
	if m.Meta.VXLANPort != 0 && m.Meta.VXLANPort != d.port {
		return netip.Addr{}, causeUnreachable
	}
	if m.Meta.VTEP != m.Addr.Addr() {
		return netip.Addr{}, causeVTEP
	}
	return m.Meta.VTEP, ""
}

// networkOf returns the local network of a subnet.
func (d *Driver) networkOf(subnet netip.Prefix) *networkRecord {
	for _, n := range d.networks {
		if n.Subnet == subnet {
			return n
		}
	}
	return nil
}

// networkOfAddr returns the local network whose subnet holds ip.
func (d *Driver) networkOfAddr(ip netip.Addr) *networkRecord {
	for _, n := range d.networks {
		if n.Subnet.Contains(ip) {
			return n
		}
	}
	return nil
}

// want is what must be programmed for an endpoint record key: nothing unless
// the endpoint is remote and live, its network exists here, its host is
// reachable, and no local endpoint holds the address. Caller holds mu.
func (d *Driver) want(k string) (progEntry, bool) {
	ep, ok := d.peers.eps[k]
	if !ok {
		return progEntry{}, false
	}
	n := d.networkOf(ep.subnet)
	if n == nil || !n.mode().overlay() {
		return progEntry{}, false // macvlan: the endpoint is on the LAN
	}
	if cause := reservedCause(n, ep.ip); cause != "" {
		d.refuse(k, ep.node, cause, n)
		return progEntry{}, false
	}
	vtep, cause := d.hostVTEP(ep.node)
	if cause == causeVTEP {
		d.refuse(k, ep.node, cause, n)
	}
	if cause != "" || (n.Mode == modeEncrypted && !d.encryptedPeer(ep.node)) {
		return progEntry{}, false // no tunnel to a host without a key
	}
	if d.localAddr(n.ID, ep.ip) {
		return progEntry{}, false
	}
	if n.Mode == modeEncrypted { // routed into the tunnel (encrypted.go)
		return progEntry{vx: tunnelName, ip: ep.ip, mac: ep.mac, vtep: vtep}, true
	}
	return progEntry{vx: vxlanName(n.ID), ip: ep.ip, mac: ep.mac, vtep: vtep}, true
}

func (d *Driver) localAddr(netID string, ip netip.Addr) bool {
	for _, e := range d.endpoints {
		if e.NetworkID == netID && e.Address.Addr() == ip {
			return true
		}
	}
	return false
}

// applyKey makes the kernel match want(k) for one key. Caller holds mu.
func (d *Driver) applyKey(k string) error {
	w, wok := d.want(k)
	h, hok := d.peers.prog[k]
	if wok && hok && w == h {
		return nil
	}
	if (hok && h.vx == tunnelName) || (wok && w.vx == tunnelName) {
		return d.applyTunnelKey(k, w, wok, h, hok)
	}
	var errs []error
	if hok {
		sameNeigh := wok && w.vx == h.vx && w.ip == h.ip
		sameMAC := wok && w.vx == h.vx && w.mac == h.mac
		d.peers.delProg(k)
		if !sameNeigh {
			if err := d.dp.DelNeigh(h.vx, h.ip); err != nil {
				errs = append(errs, err)
			}
		}
		if !sameMAC {
			errs = append(errs, d.releaseMAC(h.vx, h.mac))
		}
	}
	if wok {
		if err := d.dp.SetFDB(w.vx, w.mac.hw(), w.vtep); err != nil {
			errs = append(errs, err)
		} else if err := d.dp.SetNeigh(w.vx, w.ip, w.mac.hw()); err != nil {
			errs = append(errs, err)
		} else {
			d.peers.setProg(k, w)
			d.noteProgrammed(k)
		}
	}
	return errors.Join(errs...)
}

// applyTunnelKey is applyKey for a key programmed (h) or wanted (w) on an
// encrypted network: the entry becomes (or stops being) one of its host's
// tunnel addresses, and the tunnel is reconfigured. Caller holds mu.
func (d *Driver) applyTunnelKey(k string, w progEntry, wok bool, h progEntry, hok bool) error {
	var errs []error
	if hok && h.vx != tunnelName { // moved off a VXLAN device
		d.peers.delProg(k)
		errs = append(errs, d.dp.DelNeigh(h.vx, h.ip), d.releaseMAC(h.vx, h.mac))
	}
	d.peers.delProg(k)
	if wok && w.vx == tunnelName {
		d.peers.setProg(k, w)
	}
	if err := d.syncTunnel(); err != nil {
		return errors.Join(append(errs, err)...)
	}
	if wok {
		d.noteProgrammed(k)
	}
	return errors.Join(errs...)
}

// releaseMAC removes the FDB entries of mac unless another programmed
// endpoint uses the same MAC on the device, which then gets them back.
func (d *Driver) releaseMAC(vx string, mac hwAddr) error {
	if refs := d.peers.macRefs[vx][mac]; len(refs) > 0 {
		return d.dp.SetFDB(vx, mac.hw(), d.peers.prog[refs[0]].vtep)
	}
	return d.dp.DelFDB(vx, mac.hw())
}

// forgetDevice drops what was programmed on a deleted VXLAN device. Caller
// holds mu.
func (d *Driver) forgetDevice(vx string) {
	for k, e := range d.peers.prog {
		if e.vx == vx {
			d.peers.delProg(k)
		}
	}
	delete(d.peers.macRefs, vx)
}

// applyDirty applies up to limit dirty keys (all when limit ≤ 0) and returns how
// many remain. Failures are logged once per batch; ReconcilePeers retries.
func (d *Driver) applyDirty(limit int) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.peers == nil {
		return 0
	}
	n := 0
	for k := range d.peers.dirty {
		if limit > 0 && n >= limit {
			break
		}
		n++
		delete(d.peers.dirty, k)
		if err := d.applyKey(k); err != nil {
			d.logApplyFailure(k, err)
		}
	}
	return len(d.peers.dirty)
}

// peerLoop is the peer worker: it applies dirty keys as they come, retries
// a refused probe device soon (kickProbe) and runs ReconcilePeers every
// repair interval, until Close.
func (d *Driver) peerLoop(repair time.Duration) {
	defer close(d.done)
	var tick <-chan time.Time
	if repair > 0 {
		t := time.NewTicker(repair)
		defer t.Stop()
		tick = t.C
	}
	var probeRetry <-chan time.Time
	probeLeft := 0
	for {
		select {
		case <-d.stop:
			return
		case <-d.probeKick:
			if probeRetry == nil {
				probeRetry, probeLeft = time.After(probeRetryEvery), probeRetries
			}
		case <-probeRetry:
			probeRetry = nil
			if probeLeft--; d.retryProbe() && probeLeft > 0 {
				probeRetry = time.After(probeRetryEvery)
			}
		case <-d.wake:
			for d.applyDirty(peerBatch) > 0 {
				select {
				case <-d.stop:
					return
				default:
				}
			}
		case <-tick:
			_ = d.ReconcilePeers()
		}
	}
}

// ReconcilePeers makes the forwarding and neighbour entries on every
// grapevine VXLAN device match the cluster's live remote endpoints: missing or
// wrong entries are written, entries that match no live remote endpoint are
// deleted. It is cheap (two netlink dumps per network) and runs every few
// seconds on its own when a Cluster is configured; Reconcile runs it too.
// Best effort: it carries on past failures and returns them joined.
func (d *Driver) ReconcilePeers() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.reconcilePeers()
}

// peerRepairs counts what one reconcile pass changed.
type peerRepairs struct{ fdbSet, fdbDel, neighSet, neighDel int }

// reconcilePeers is ReconcilePeers with mu held.
func (d *Driver) reconcilePeers() error {
	if d.cluster == nil || !d.inContact() {
		return nil
	}
	d.moveUncontested(time.Now())
	// Membership snapshot: any change since is also queued as an event, so
	// the model converges whatever the interleaving.
	for _, m := range d.cluster.Members() {
		if !m.Self {
			d.noteMember(m, false)
			d.peers.members[m.Name] = m
		}
	}
	d.expireLeft()
	desired := map[string]map[string]progEntry{} // vxlan (or tunnel) → key → entry
	for k := range d.peers.eps {
		if w, ok := d.want(k); ok {
			if desired[w.vx] == nil {
				desired[w.vx] = map[string]progEntry{}
			}
			desired[w.vx][k] = w
		}
	}
	done := map[string]bool{}
	if d.hasEncrypted() {
		done[tunnelName] = d.repairTunnel(desired[tunnelName])
	}
	ids := make([]string, 0, len(d.networks))
	for id, n := range d.networks {
		if n.mode().overlay() && n.Mode != modeEncrypted {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	var errs []error
	for _, id := range ids {
		vx := vxlanName(id)
		rep, err := d.repairDevice(vx, desired[vx])
		if errors.Is(err, dataplane.ErrLinkNotFound) {
			continue // the full Reconcile recreates the device
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("network %s: %w", shortID(id), err))
		}
		done[vx] = true
		if rep != (peerRepairs{}) {
			d.noteRepairs(rep)
			d.netLog(id).WithFields(logrus.Fields{"fdb_set": rep.fdbSet, "fdb_deleted": rep.fdbDel, "neigh_set": rep.neighSet, "neigh_deleted": rep.neighDel}).
				Info("repaired remote endpoint entries")
		}
	}
	// The model now matches the kernel for every repaired device; entries of
	// devices that no longer belong to a network went with the device.
	for k, e := range d.peers.prog {
		if e.vx != tunnelName && (done[e.vx] || !d.hasDevice(e.vx)) || e.vx == tunnelName && !d.hasEncrypted() {
			d.peers.delProg(k)
		}
	}
	for vx, entries := range desired {
		if !done[vx] || vx == tunnelName {
			continue
		}
		for k, e := range entries {
			d.peers.setProg(k, e)
			d.noteProgrammed(k)
		}
	}
	for k := range d.peers.dirty {
		w, wok := d.want(k)
		h, hok := d.peers.prog[k]
		if (!wok || done[w.vx]) && (!hok || done[h.vx]) {
			delete(d.peers.dirty, k)
		}
	}
	return errors.Join(errs...)
}

// repairTunnel makes the tunnel's addresses the wanted entries (key →
// entry) and repairs the tunnel; it reports whether that worked. Caller
// holds mu.
func (d *Driver) repairTunnel(want map[string]progEntry) bool {
	for k, e := range d.peers.prog {
		if e.vx == tunnelName {
			d.peers.delProg(k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(want)) {
		d.peers.setProg(k, want[k])
	}
	if err := d.syncTunnel(); err != nil {
		d.log.WithError(err).Warn("could not repair the tunnel; retrying")
		return false
	}
	for k := range want {
		d.noteProgrammed(k)
	}
	return true
}

func (d *Driver) hasDevice(vx string) bool {
	for id := range d.networks {
		if vxlanName(id) == vx {
			return true
		}
	}
	return false
}

// repairDevice compares one VXLAN device's entries with want (key → entry).
func (d *Driver) repairDevice(vx string, want map[string]progEntry) (peerRepairs, error) {
	var rep peerRepairs
	fdb, err := d.dp.ListFDB(vx)
	if err != nil {
		return rep, err
	}
	neigh, err := d.dp.ListNeigh(vx)
	if err != nil {
		return rep, err
	}
	wantMAC := map[hwAddr]netip.Addr{} // mac → vtep (first key in order wins)
	wantIP := map[netip.Addr]hwAddr{}
	for _, k := range slices.Sorted(maps.Keys(want)) {
		e := want[k]
		if _, ok := wantMAC[e.mac]; !ok {
			wantMAC[e.mac] = e.vtep
		}
		wantIP[e.ip] = e.mac
	}
	ferr := d.repairFDB(vx, fdb, wantMAC, &rep)
	nerr := d.repairNeigh(vx, neigh, wantIP, &rep)
	return rep, errors.Join(ferr, nerr)
}

// repairFDB makes the device's forwarding entries (have) exactly one self
// entry per wanted MAC, to its VTEP, with its master entry. Caller holds mu.
func (d *Driver) repairFDB(vx string, have []dataplane.FDBEntry, want map[hwAddr]netip.Addr, rep *peerRepairs) error {
	selfs := map[hwAddr][]netip.Addr{}
	masters := map[hwAddr]bool{}
	for _, e := range have {
		m, ok := hwAddrOf(e.MAC)
		if !ok {
			continue // not an Ethernet address: never one grapevine wrote
		}
		if e.Master {
			masters[m] = true
		} else {
			selfs[m] = append(selfs[m], e.VTEP)
		}
	}
	var errs []error
	deleted := map[hwAddr]bool{}
	for _, m := range slices.Concat(sortedMACs(selfs), sortedMACs(masters)) {
		if _, ok := want[m]; ok || deleted[m] {
			continue
		}
		deleted[m] = true
		if err := d.dp.DelFDB(vx, m.hw()); err != nil {
			errs = append(errs, err)
			continue
		}
		rep.fdbDel++
	}
	for m, vtep := range want {
		cur := selfs[m]
		if len(cur) == 1 && cur[0] == vtep && masters[m] {
			continue
		}
		if len(cur) > 1 {
			if err := d.dp.DelFDB(vx, m.hw()); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if err := d.dp.SetFDB(vx, m.hw(), vtep); err != nil {
			errs = append(errs, err)
			continue
		}
		rep.fdbSet++
	}
	return errors.Join(errs...)
}

// repairNeigh makes the device's neighbour entries (have) exactly one
// permanent entry per wanted IP, to its MAC. Caller holds mu.
func (d *Driver) repairNeigh(vx string, have []dataplane.NeighEntry, want map[netip.Addr]hwAddr, rep *peerRepairs) error {
	var errs []error
	haveIP := map[netip.Addr]dataplane.NeighEntry{}
	for _, e := range have {
		if _, ok := want[e.IP]; !ok {
			if err := d.dp.DelNeigh(vx, e.IP); err != nil {
				errs = append(errs, err)
				continue
			}
			rep.neighDel++
			continue
		}
		haveIP[e.IP] = e
	}
	for ip, m := range want {
		if h, ok := haveIP[ip]; ok && h.Permanent && bytes.Equal(h.MAC, m[:]) {
			continue
		}
		if err := d.dp.SetNeigh(vx, ip, m.hw()); err != nil {
			errs = append(errs, err)
			continue
		}
		rep.neighSet++
	}
	return errors.Join(errs...)
}

// sortedMACs returns m's keys in byte order, so repairs run in a stable order.
func sortedMACs[V any](m map[hwAddr]V) []hwAddr {
	return slices.SortedFunc(maps.Keys(m), func(a, b hwAddr) int { return bytes.Compare(a[:], b[:]) })
}

// peerCounts summarises a network's remote endpoints for Status: how many are
// programmed, how many wait for their host, and per host how many exist.
// Caller holds mu.
func (d *Driver) peerCounts(n *networkRecord) (programmed, unreachable int, perHost map[string]int) {
	if d.peers == nil {
		return 0, 0, nil
	}
	for k, ep := range d.peers.eps {
		if ep.subnet != n.Subnet {
			continue
		}
		if perHost == nil {
			perHost = map[string]int{}
		}
		perHost[ep.node]++
		if !n.mode().overlay() {
			continue // on the LAN: nothing to program
		}
		if _, ok := d.want(k); ok {
			programmed++
		} else {
			unreachable++
		}
	}
	return programmed, unreachable, perHost
}
