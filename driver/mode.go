package driver

import (
	"github.com/docker/go-plugins-helpers/network"

	"grapevine/driver/dataplane"
)

// netMode is what one kind of network is on this host: the links it owns,
// how they are made and repaired, and what an endpoint's Join and Leave do.
// Each mode is a type of its own (vxlan.go, macvlan.go), as moby keeps one
// driver per kind; modeNamed chooses it once from the -o mode option or the
// persisted record, and nothing else looks at the name.
//
// A new kind of network (an encrypted overlay) is a new netMode: its links
// and their repair behind create, ensure and links; overlay tells the rest of
// the driver (remote endpoints, published ports, firewall) whether it is a
// bridge joined to the other hosts' over the underlay.
type netMode interface {
	// name is the mode as given with -o mode, persisted and gossiped.
	name() string
	// overlay reports whether the network is a bridge on this host joined to
	// the other hosts' through the VTEP: endpoints are veths on the bridge,
	// other hosts' endpoints are programmed here, and the host routes,
	// masquerades and publishes ports for it.
	overlay() bool
	// overhead is what the mode adds to a container's packet on the
	// underlay: 0 when containers sit on the underlay itself.
	overhead() int
	// prepare finds the host facts a new network needs that take no lock
	// (the underlay), and refuses what they rule out. Called before mu.
	prepare(d *Driver, spec *networkSpec) error
	// create checks a new network against this host and the cluster and
	// makes its links. On error nothing it made is left. Caller holds mu.
	create(d *Driver, id string, spec networkSpec) (newNetwork, error)
	// ensure repairs a persisted network: its links and what its joined
	// endpoints need on the host side. u is nil when the underlay did not
	// resolve. Caller holds mu.
	ensure(d *Driver, n *networkRecord, u *dataplane.Underlay) error
	// links names every link a network of this mode may own.
	links(networkID string) []string
	// join makes an endpoint's links and tells Docker what to do with them.
	// Caller holds mu.
	join(d *Driver, n *networkRecord, e *endpointRecord) (*network.JoinResponse, error)
	// leave undoes join; a container's link Docker still holds is left to
	// DeleteEndpoint. Caller holds mu.
	leave(d *Driver, n *networkRecord, e *endpointRecord) error
	// firewall adds the network's rules (and its endpoints') to fw.
	// Caller holds mu.
	firewall(d *Driver, n *networkRecord, fw *dataplane.Firewall)
	// status fills the mode's part of a network's status.
	status(n *networkRecord, s *NetworkStatus)
	// deleted releases what the network shared with others once its record
	// is gone. Caller holds mu.
	deleted(d *Driver, n *networkRecord) error
}

// newNetwork is a network whose links a mode has made, not yet persisted.
type newNetwork struct {
	rec *networkRecord
	// undo removes what create made, when a later step fails.
	undo func()
	// announce logs the network's creation.
	announce func()
}

// modes lists every mode, the default first (an array: looking a mode up
// allocates nothing).
func modes() [3]netMode { return [...]netMode{vxlanMode{}, macvlanMode{}, encryptedMode{}} }

// modeNamed is the mode called name, and whether there is one.
func modeNamed(name string) (netMode, bool) {
	for _, m := range modes() {
		if m.name() == name {
			return m, true
		}
	}
	return nil, false
}

// mode is the network's mode. Records written before modes existed have
// none: they are VXLAN networks.
func (n *networkRecord) mode() netMode {
	if m, ok := modeNamed(n.Mode); ok {
		return m
	}
	return vxlanMode{}
}
