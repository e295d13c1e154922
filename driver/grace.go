package driver

import (
	"time"

	"github.com/sirupsen/logrus"

	"grapevine/gossip"
)

// A member that leaves gracefully (its plugin shuts down: `docker plugin
// disable`, a settings change, an upgrade, a clean dockerd stop) keeps its
// containers and their kernel links, and is normally back within seconds.
// Its endpoints' forwarding and neighbour entries and its place in the VXLAN
// ingress filter therefore stay for a grace period, so containers on the
// other hosts keep talking to its containers (and its containers to them)
// throughout a rolling change. The entries go when the grace ends, or are
// replaced by what the member re-asserts when it returns: it withdraws the
// records of endpoints it no longer has. A member that fails (stops answering
// without saying it leaves) loses its entries at once, as before.

// defaultLeftGrace is Config.LeftGrace's default: long enough for a plugin
// restart with a settings change or an upgrade (Docker waits up to 10 s for
// the old process, the new one rejoins in seconds), short enough that a host
// that left for good stops attracting traffic soon.
const defaultLeftGrace = 2 * time.Minute

// leftPeers is when each member that left gracefully left, until it is seen
// alive or failed again. Guarded by Driver.mu.
type leftPeers struct {
	grace time.Duration
	now   func() time.Time
	since map[string]leftPeer
}

type leftPeer struct {
	at      time.Time
	expired bool // the grace ended and its entries were dropped
}

func newLeftPeers(grace time.Duration) *leftPeers {
	if grace <= 0 {
		grace = defaultLeftGrace
	}
	return &leftPeers{grace: grace, now: time.Now, since: map[string]leftPeer{}}
}

// noteMember follows m's state before it replaces the member's previous
// state in the model. A grace starts when the member is reported leaving
// (an EventLeave) or a membership snapshot shows a member known alive as
// left; any other state ends it. A member first seen as already left (after
// this host's own restart) gets no grace: when it left is unknown. Caller
// holds mu.
func (d *Driver) noteMember(m gossip.Member, reportedLeaving bool) {
	if m.State != gossip.StateLeft {
		delete(d.left.since, m.Name)
		return
	}
	if _, ok := d.left.since[m.Name]; ok {
		return
	}
	prev, known := d.peers.members[m.Name]
	if !reportedLeaving && (!known || prev.State != gossip.StateAlive) {
		return
	}
	d.left.since[m.Name] = leftPeer{at: d.left.now()}
	d.log.WithFields(logrus.Fields{"peer": m.Name, "grace": d.left.grace.String()}).
		Info("peer left gracefully: its endpoints stay programmed and its VTEP accepted until it returns or the grace ends")
}

// reachable reports whether m's endpoints are programmed and its VTEP
// accepted: it is alive (or suspect), or it left gracefully less than the
// grace ago; and the cluster has not forgotten it (a forgotten host that
// returns owns no addresses: its endpoints may hold addresses handed out
// again since). Caller holds mu.
func (d *Driver) reachable(m gossip.Member) bool {
	if d.forgotten != nil && d.forgotten(m.Name) {
		return false
	}
	switch m.State {
	case gossip.StateAlive:
		return true
	case gossip.StateLeft:
		l, ok := d.left.since[m.Name]
		return ok && !l.expired && d.left.now().Sub(l.at) < d.left.grace
	}
	return false
}

// expireLeft drops the entries and the VTEP of every member whose grace
// ended since the last call: its keys are applied again (now unwanted) and
// the ingress filter loses its VTEP. Caller holds mu.
func (d *Driver) expireLeft() {
	expired := false
	for name, l := range d.left.since {
		if l.expired || d.left.now().Sub(l.at) < d.left.grace {
			continue
		}
		d.left.since[name] = leftPeer{at: l.at, expired: true}
		expired = true
		n := 0
		for k, ep := range d.peers.eps {
			if ep.node == name {
				d.markDirty(k)
				n++
			}
		}
		d.log.WithFields(logrus.Fields{"peer": name, "endpoints": n, "left_for": d.left.now().Sub(l.at).Round(time.Second).String()}).
			Info("peer did not return within the grace: removing its endpoints and its VTEP")
	}
	if expired {
		d.membersChanged()
	}
}

// inContact reports whether this host knows the cluster's members: it has
// been in contact with one since its start, or has no PEERS. Before that it
// knows no member, so the repair pass leaves the other hosts' entries where
// the last run of the plugin left them (its containers keep talking through
// a restart) instead of removing them all; as for the VXLAN ingress filter
// (Partial). Caller holds mu.
func (d *Driver) inContact() bool {
	return d.cluster.Joined() || !d.cluster.HasPeers()
}
