package gossip

import (
	"encoding/base64"
	"encoding/json"
	"errors"
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
	// TunnelKey is the host's WireGuard public key; zero when the host does
	// not support encrypted networks. TunnelPort is its WireGuard UDP port.
	TunnelKey  TunnelKey `json:"wg_key,omitzero"`
	TunnelPort int       `json:"wg_port,omitempty"`
}

// TunnelKey is a WireGuard public key, base64 in the metadata.
type TunnelKey [32]byte

// IsZero reports whether k is no key.
func (k TunnelKey) IsZero() bool { return k == TunnelKey{} }

// MarshalText implements encoding.TextMarshaler.
func (k TunnelKey) MarshalText() ([]byte, error) {
	return []byte(base64.StdEncoding.EncodeToString(k[:])), nil
}

// UnmarshalText implements encoding.TextUnmarshaler: exactly 32 bytes in
// standard base64, not all zero.
func (k *TunnelKey) UnmarshalText(b []byte) error {
	raw, err := base64.StdEncoding.DecodeString(string(b))
	if err != nil || len(raw) != len(k) {
		return fmt.Errorf("wg_key is not %d bytes in base64", len(k))
	}
	copy(k[:], raw)
	if k.IsZero() {
		return errors.New("wg_key is all zero")
	}
	return nil
}

// wireMeta is NodeMeta as sent, plus the leaving flag Shutdown announces
// just before the graceful leave. memberlist's events do not tell a leave
// from a failure, so peers use the flag to report EventLeave rather than
// EventDead (best effort: if the announcement is lost, a leave is reported
// as a failure).
type wireMeta struct {
	NodeMeta
	Leaving bool `json:"leaving,omitempty"`
}

func (m NodeMeta) encode() ([]byte, error) {
	return json.Marshal(wireMeta{NodeMeta: m})
}

func encodeLeavingMeta(m NodeMeta) ([]byte, error) {
	return json.Marshal(wireMeta{NodeMeta: m, Leaving: true})
}

func decodeMeta(b []byte) (wireMeta, error) {
	var m wireMeta
	if len(b) == 0 {
		return m, nil
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return wireMeta{}, fmt.Errorf("node metadata: %w", err)
	}
	if m.TunnelPort < 0 || m.TunnelPort > 65535 || m.TunnelKey.IsZero() != (m.TunnelPort == 0) {
		return wireMeta{}, fmt.Errorf("node metadata: wg_port %d outside 1..65535 or without wg_key", m.TunnelPort)
	}
	return m, nil
}

// MemberState is a member's state as memberlist sees it. memberlist (v0.7)
// does not expose suspicion, so a suspect member is reported alive until it
// is declared dead: the Node.State of Memberlist.Members is never set (the
// state lives in an unexported struct), and no delegate hears of it
// (EventDelegate reports join, leave and update; AliveDelegate and
// PingDelegate see alive messages and successful probes only).
type MemberState int

// Member states.
const (
	StateAlive MemberState = iota // a member (possibly suspect)
	StateDead                     // failed: stopped answering
	StateLeft                     // left gracefully
)

func (s MemberState) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateDead:
		return "dead"
	case StateLeft:
		return "left"
	}
	return fmt.Sprintf("MemberState(%d)", int(s))
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

// member converts a memberlist node (whose State field memberlist leaves
// unset) into an alive Member, and reports whether it announced it is
// leaving.
func (c *Cluster) member(n *memberlist.Node) (Member, bool) {
	m := Member{Name: n.Name, State: StateAlive, Self: n.Name == c.cfg.NodeName}
	if a, ok := netip.AddrFromSlice(n.Addr); ok {
		m.Addr = netip.AddrPortFrom(a.Unmap(), n.Port)
	}
	meta, err := decodeMeta(n.Meta)
	if err != nil {
		m.MetaErr = err.Error()
	}
	m.Meta = meta.NodeMeta
	return m, meta.Leaving
}

// eventDelegate implements memberlist.EventDelegate. memberlist calls it
// with its node lock held, so it only records and queues: it must never
// call back into memberlist.
type eventDelegate struct{ c *Cluster }

// NotifyJoin implements memberlist.EventDelegate.
func (d *eventDelegate) NotifyJoin(n *memberlist.Node) { d.c.nodeEvent(n, EventJoin) }

// NotifyUpdate implements memberlist.EventDelegate.
func (d *eventDelegate) NotifyUpdate(n *memberlist.Node) { d.c.nodeEvent(n, EventUpdate) }

// NotifyLeave implements memberlist.EventDelegate; it is called for leaves
// and failures alike (EventDead unless the node announced it was leaving).
func (d *eventDelegate) NotifyLeave(n *memberlist.Node) { d.c.nodeEvent(n, EventDead) }

// SetTunnelKey publishes a new WireGuard public key (and port) in this
// host's metadata: the other members learn it by memberlist's update
// broadcast (and, failing that, by its next state exchange).
func (c *Cluster) SetTunnelKey(key TunnelKey, port int) error {
	if key.IsZero() || port < 1 || port > 65535 {
		return fmt.Errorf("gossip: tunnel key must be set and port %d within 1..65535", port)
	}
	c.metaMu.Lock()
	meta := c.cfg.Meta
	meta.TunnelKey, meta.TunnelPort = key, port
	b, err := meta.encode()
	if err == nil {
		c.cfg.Meta, c.meta = meta, b
	}
	c.metaMu.Unlock()
	if err != nil {
		return fmt.Errorf("gossip: encode metadata: %w", err)
	}
	ml := c.ml.Load()
	if ml == nil {
		return nil // published when gossip starts
	}
	if err := ml.UpdateNode(c.cfg.LeaveTimeout); err != nil {
		return fmt.Errorf("gossip: announce the new tunnel key: %w", err)
	}
	return nil
}
