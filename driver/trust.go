package driver

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/sirupsen/logrus"

	"grapevine/gossip"
)

// Other hosts' endpoint records are input from a possibly buggy or hostile
// member: each is checked where it is used, and a refused record programs
// nothing (what an earlier record of the same key programmed stays). The
// endpoint's host is the record's writer (gossip.Record.Owner); the VTEP is
// that member's own gossip address. Each refusal is logged once per record
// key and cause and counted by cause (Refused, shown by grapevine status).

// Refusal causes, as counted by Refused.
const (
	causeKey         = "malformed_key"           // key is not "<subnet>/<address inside it>"
	causeUndecoded   = "undecodable"             // value is not an endpoint record
	causeMAC         = "mac_not_unicast"         // zero, multicast or broadcast MAC
	causeNode        = "node_not_writer"         // the value names another host than its writer
	causeAddress     = "reserved_address"        // network, broadcast, gateway, host access or aux address
	causeHeld        = "address_held"            // another live host's endpoint has the address
	causeDelete      = "delete_not_writer"       // a deletion by another host than the endpoint's
	causeVTEP        = "vtep_not_member_address" // the member's VTEP is not its gossip address
	causeUnreachable = "unreachable"             // not a refusal: the host cannot be programmed now
)

var causeText = map[string]string{
	causeKey:       "its key is not <subnet>/<address inside the subnet>",
	causeUndecoded: "its value is not an endpoint record",
	causeMAC:       "its MAC is not a unicast Ethernet address",
	causeNode:      "its value names another host than the one that wrote it",
	causeAddress:   "its address is the network's network, broadcast, gateway, host access or aux address",
	causeHeld:      "another live host's endpoint already has the address",
	causeDelete:    "it deletes another live host's endpoint",
	causeVTEP:      "the host's VTEP in its membership metadata is not the address it gossips from",
}

// hwAddr is an Ethernet MAC address, parsed once where a record enters.
type hwAddr [6]byte

func parseHWAddr(s string) (hwAddr, error) {
	m, err := net.ParseMAC(s)
	if err != nil {
		return hwAddr{}, fmt.Errorf("mac %q: %w", s, err)
	}
	hw, ok := hwAddrOf(m)
	if !ok {
		return hwAddr{}, fmt.Errorf("mac %q is not a 6-byte Ethernet address", s)
	}
	return hw, nil
}

// hwAddrOf converts a MAC read from the kernel; ok is false unless it is a
// 6-byte Ethernet address.
func hwAddrOf(m net.HardwareAddr) (hwAddr, bool) {
	if len(m) != 6 {
		return hwAddr{}, false
	}
	return hwAddr(m), true
}

// unicast reports whether m may be a station's address: not all-zero, not
// multicast or broadcast.
func (m hwAddr) unicast() bool { return m != hwAddr{} && m[0]&1 == 0 }

func (m hwAddr) hw() net.HardwareAddr { return net.HardwareAddr(slices.Clone(m[:])) }

func (m hwAddr) String() string { return net.HardwareAddr(m[:]).String() }

// refusals remembers which record keys are refused for which cause, so each
// is logged once, and counts them.
type refusals struct {
	current map[string]string // record key → cause
	counts  map[string]uint64 // cause → refusals
}

func newRefusals() refusals {
	return refusals{current: map[string]string{}, counts: map[string]uint64{}}
}

// refuse notes that the record of key, written by peer, is refused for
// cause; the first time, it is logged and counted. n is the local network of
// the record's subnet, if any. Caller holds mu.
func (d *Driver) refuse(key, peer, cause string, n *networkRecord) {
	r := &d.peers.refused
	if r.current[key] == cause {
		return
	}
	r.current[key] = cause
	r.counts[cause]++
	log := d.log
	if n != nil {
		log = d.netLog(n.ID)
	}
	log.WithFields(logrus.Fields{"peer": peer, "key": key, "cause": cause}).
		Warn("refused another host's endpoint record: " + causeText[cause] + "; nothing is programmed for it")
}

// Refused counts the other hosts' endpoint records refused so far, by cause
// (nil without a cluster).
func (d *Driver) Refused() map[string]uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.peers == nil || len(d.peers.refused.counts) == 0 {
		return nil
	}
	return maps.Clone(d.peers.refused.counts)
}

// decodeEndpoint checks what an endpoint record says on its own: a
// unicast MAC, no other host than its writer, and a host address of the
// subnet. The cause is "" for a good record.
func decodeEndpoint(r *gossip.Record, subnet netip.Prefix, ip netip.Addr) (*remoteEP, string) {
	var def endpointDef
	if err := json.Unmarshal(r.Value, &def); err != nil {
		return nil, causeUndecoded
	}
	mac, err := parseHWAddr(def.MAC)
	switch {
	case err != nil:
		return nil, causeUndecoded
	case !mac.unicast():
		return nil, causeMAC
	case def.Node != "" && def.Node != r.Owner:
		return nil, causeNode
	case ip == subnet.Addr() || ip == lastAddr(subnet):
		return nil, causeAddress
	}
	return &remoteEP{subnet: subnet, ip: ip, mac: mac, node: r.Owner}, ""
}

// parseEndpointKey splits an endpoint record key into its subnet and an
// IPv4 address inside it.
func parseEndpointKey(key string) (netip.Prefix, netip.Addr, bool) {
	subnet, ipText, ok := splitKey(key)
	if !ok || !subnet.Addr().Is4() {
		return netip.Prefix{}, netip.Addr{}, false
	}
	ip, err := netip.ParseAddr(ipText)
	if err != nil || !subnet.Contains(ip) {
		return netip.Prefix{}, netip.Addr{}, false
	}
	return subnet, ip, true
}

// reservedCause refuses an address the local network n keeps for itself:
// its network, broadcast, gateway, host access and aux addresses.
func reservedCause(n *networkRecord, ip netip.Addr) string {
	switch {
	case ip == n.Subnet.Addr(), ip == lastAddr(n.Subnet), ip == n.Gateway.Addr():
		return causeAddress
	case n.HostAccess.IsValid() && ip == n.HostAccess, slices.Contains(n.Aux, ip):
		return causeAddress
	}
	return ""
}

// aliveMember reports whether name is a live member of the cluster, or one
// within its grace after a graceful leave (it returns with its endpoints).
// Caller holds mu.
func (d *Driver) aliveMember(name string) bool {
	m, ok := d.peers.members[name]
	return ok && d.reachable(m)
}

// auxAddrs parses the --aux-address values inside the subnet (the others
// are refused by IPAM; they can never be an endpoint's address here).
func auxAddrs(spec networkSpec) []netip.Addr {
	var out []netip.Addr
	for _, v := range spec.aux {
		if a, err := netip.ParseAddr(v); err == nil && spec.subnet.Contains(a) {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// holdAddress remembers a takeover refused because another live host's
// endpoint holds the address, keeping the time of the first identical
// attempt. Caller holds mu.
func (d *Driver) holdAddress(key string, ep *remoteEP) {
	if h, ok := d.peers.held[key]; ok && h.ep == *ep {
		return
	}
	d.peers.held[key] = heldEP{ep: *ep, since: time.Now()}
}

// moveUncontested accepts the refused takeovers whose record is still the
// current one after the holdoff: the previous host did not announce the
// address again, so it moved (its withdrawal was lost or superseded, as
// after a partition). A holder that still has the address re-announces it
// at its next Reconcile, which clears the takeover. Caller holds mu.
func (d *Driver) moveUncontested(now time.Time) {
	for k, h := range d.peers.held {
		if now.Sub(h.since) < d.holdoff {
			continue
		}
		delete(d.peers.held, k)
		r, ok := d.cluster.Get(kindEndpoint, k)
		if !ok || r.Owner != h.ep.node {
			continue
		}
		if ep, cause := decodeEndpoint(&r, h.ep.subnet, h.ep.ip); cause != "" || *ep != h.ep {
			continue
		}
		old := d.peers.eps[k]
		ep := h.ep
		d.peers.eps[k] = &ep
		delete(d.peers.refused.current, k)
		d.markDirty(k)
		fields := logrus.Fields{"peer": ep.node, "key": k}
		if old != nil {
			fields["previous_host"] = old.node
		}
		d.log.WithFields(fields).Info("address moved to another host: its previous host did not announce it again")
	}
}
