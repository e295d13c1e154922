package driver

import (
	"time"

	"grapevine/internal/ratelog"
)

// Programmed counts the entries grapevine wrote on one network's VXLAN
// device for other hosts' endpoints.
type Programmed struct {
	FDB   int // forwarding entries, one per remote MAC
	Neigh int // neighbour entries, one per remote endpoint
}

// Programmed returns, by network ID, the remote endpoint entries this host
// programmed (as of the last write or repair); networks without any are
// absent. For metrics.
func (d *Driver) Programmed() map[string]Programmed {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]Programmed{}
	if d.peers == nil {
		return out
	}
	byDev := map[string]string{}
	for id := range d.networks {
		byDev[vxlanName(id)] = id
	}
	for _, e := range d.peers.prog {
		if e.vx == tunnelName { // an encrypted network's: by its subnet
			if n := d.networkOfAddr(e.ip); n != nil {
				p := out[n.ID]
				p.Neigh++
				out[n.ID] = p
			}
			continue
		}
		if id, ok := byDev[e.vx]; ok {
			p := out[id]
			p.Neigh++
			out[id] = p
		}
	}
	for vx, macs := range d.peers.macRefs {
		if id, ok := byDev[vx]; ok && len(macs) > 0 {
			p := out[id]
			p.FDB = len(macs)
			out[id] = p
		}
	}
	return out
}

// RepairKey names one kind of drift a reconcile loop fixes.
type RepairKey struct {
	Loop   string // "peers" (remote endpoint entries) or "links"
	Repair string // what was fixed, e.g. "fdb_set", "orphan_link_deleted"
}

// Repair kinds counted by Repairs.
var (
	repairFDBSet      = RepairKey{"peers", "fdb_set"}
	repairFDBDeleted  = RepairKey{"peers", "fdb_deleted"}
	repairNeighSet    = RepairKey{"peers", "neigh_set"}
	repairNeighDel    = RepairKey{"peers", "neigh_deleted"}
	repairOrphanLinks = RepairKey{"links", "orphan_link_deleted"}
)

// Repairs counts, since start, the drift between the kernel and the
// replicated state that the reconcile loops found and fixed, every kind
// included (at zero when none was). For metrics.
func (d *Driver) Repairs() map[RepairKey]uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[RepairKey]uint64{}
	for _, k := range []RepairKey{repairFDBSet, repairFDBDeleted, repairNeighSet, repairNeighDel, repairOrphanLinks} {
		out[k] = d.repairs[k]
	}
	return out
}

// noteRepairs adds one pass's peer repairs. Caller holds mu.
func (d *Driver) noteRepairs(rep peerRepairs) {
	d.noteRepair(repairFDBSet, rep.fdbSet)
	d.noteRepair(repairFDBDeleted, rep.fdbDel)
	d.noteRepair(repairNeighSet, rep.neighSet)
	d.noteRepair(repairNeighDel, rep.neighDel)
}

// noteRepair adds n repairs of kind k. Caller holds mu.
func (d *Driver) noteRepair(k RepairKey, n int) {
	if n <= 0 {
		return
	}
	if d.repairs == nil {
		d.repairs = map[RepairKey]uint64{}
	}
	d.repairs[k] += uint64(n)
}

// noteArrival remembers when the live endpoint record of key reached this
// host, unless an earlier version is still waiting to be programmed.
// Caller holds mu.
func (d *Driver) noteArrival(key string, live bool, now time.Time) {
	if !live {
		delete(d.peers.arrived, key)
		return
	}
	if _, waiting := d.peers.arrived[key]; !waiting {
		d.peers.arrived[key] = now
	}
}

// noteProgrammed reports the convergence lag of key, whose entries were
// just written, if its record's arrival is still pending. Caller holds mu.
func (d *Driver) noteProgrammed(key string) {
	t, ok := d.peers.arrived[key]
	if !ok {
		return
	}
	delete(d.peers.arrived, key)
	if d.observeLag != nil {
		d.observeLag(time.Since(t))
	}
}

// peerLogInterval is how often one line is logged for a failure to
// program one peer's endpoints for one cause (the repair loop retries
// every few seconds); peerLogKeys bounds the (peer, cause) pairs tracked.
const (
	peerLogInterval = time.Minute
	peerLogKeys     = 256
)

// logApplyFailure logs that the entries of endpoint record k could not be
// programmed, at most once per peer and cause every peerLogInterval.
// Caller holds mu.
func (d *Driver) logApplyFailure(k string, err error) {
	peer := ""
	if ep := d.peers.eps[k]; ep != nil {
		peer = ep.node
	}
	ok, suppressed := d.peerLog.Allow(peer + "\x00" + ratelog.Cause(err.Error()))
	if !ok {
		return
	}
	log := d.log.WithField("peer", peer)
	if subnet, ip, valid := parseEndpointKey(k); valid {
		log = log.WithField("endpoint", ip.String())
		if n := d.networkOf(subnet); n != nil {
			log = log.WithField("network", shortID(n.ID))
		}
	}
	if suppressed > 0 {
		log = log.WithField(ratelog.SuppressedField, suppressed)
	}
	log.WithError(err).Warn("programming a remote endpoint failed; the periodic repair retries")
}

// RecordKinds are the replicated record kinds the driver writes and reads.
func RecordKinds() []string { return []string{kindNetwork, kindEndpoint} }
