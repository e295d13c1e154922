package gossip

import (
	"encoding/json"
	"fmt"
	"net/netip"

	"github.com/hashicorp/memberlist"
)

// metaVersion is the format version of NodeMeta's encoding.
const metaVersion = 1

// NodeMeta is what every host publishes about itself in memberlist's node
// metadata (at most 512 bytes once encoded).
type NodeMeta struct {
	// Version is the format version of this struct; set by New.
	Version int `json:"version"`
	// VTEP is the host's VXLAN tunnel endpoint; defaults to AdvertiseAddr.
	VTEP netip.Addr `json:"vtep"`
	// VXLANPort is the host's VXLAN UDP port (VXLAN_PORT).
	VXLANPort int `json:"vxlan_port,omitempty"`
	// Release is the grapevine software version running on the host.
	Release string `json:"release,omitempty"`
}

func (m NodeMeta) encode() ([]byte, error) {
	return json.Marshal(m)
}

func decodeMeta(b []byte) (NodeMeta, error) {
	var m NodeMeta
	if len(b) == 0 {
		return m, nil
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("node metadata: %w", err)
	}
	return m, nil
}

// MemberState is a member's state as memberlist sees it.
type MemberState int

// Member states.
const (
	StateAlive   MemberState = iota // answering probes
	StateSuspect                    // missed probes; may be declared dead soon
	StateDead                       // failed: stopped answering
	StateLeft                       // left gracefully
)

func (s MemberState) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateSuspect:
		return "suspect"
	case StateDead:
		return "dead"
	case StateLeft:
		return "left"
	}
	return fmt.Sprintf("MemberState(%d)", int(s))
}

func memberState(s memberlist.NodeStateType) MemberState {
	switch s {
	case memberlist.StateSuspect:
		return StateSuspect
	case memberlist.StateDead:
		return StateDead
	case memberlist.StateLeft:
		return StateLeft
	}
	return StateAlive
}

// Member is one host of the cluster.
type Member struct {
	Name  string
	Addr  netip.AddrPort // gossip address
	Meta  NodeMeta       // zero (and MetaErr set) when undecodable
	State MemberState
	Self  bool // this node
	// MetaErr describes undecodable metadata (e.g. a newer peer's format).
	MetaErr string `json:",omitempty"`
}

// EventType says what happened to a member in a node event.
type EventType int

// Node events.
const (
	EventJoin   EventType = iota // a member appeared or came back
	EventLeave                   // a member left gracefully
	EventUpdate                  // a member's metadata or address changed
	EventDead                    // a member failed (stopped answering)
)

func (e EventType) String() string {
	switch e {
	case EventJoin:
		return "join"
	case EventLeave:
		return "leave"
	case EventUpdate:
		return "update"
	case EventDead:
		return "dead"
	}
	return fmt.Sprintf("EventType(%d)", int(e))
}

func (c *Cluster) member(n *memberlist.Node) Member {
	m := Member{Name: n.Name, State: memberState(n.State), Self: n.Name == c.cfg.NodeName}
	if a, ok := netip.AddrFromSlice(n.Addr); ok {
		m.Addr = netip.AddrPortFrom(a.Unmap(), n.Port)
	}
	meta, err := decodeMeta(n.Meta)
	if err != nil {
		m.MetaErr = err.Error()
	}
	m.Meta = meta
	return m
}

// eventDelegate implements memberlist.EventDelegate. memberlist calls it
// with its node lock held, so it only records and queues: it must never
// call back into memberlist.
type eventDelegate struct{ c *Cluster }

func (d *eventDelegate) NotifyJoin(n *memberlist.Node)   { d.c.nodeEvent(n, EventJoin) }
func (d *eventDelegate) NotifyUpdate(n *memberlist.Node) { d.c.nodeEvent(n, EventUpdate) }
func (d *eventDelegate) NotifyLeave(n *memberlist.Node) {
	if n.State == memberlist.StateLeft {
		d.c.nodeEvent(n, EventLeave)
		return
	}
	d.c.nodeEvent(n, EventDead)
}
