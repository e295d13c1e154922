package dataplane

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The VXLAN ingress filter: in the raw table, before conntrack and before the
// VXLAN socket decapsulates anything, UDP to the VXLAN port is dropped unless
// its source is in the set of the cluster's members' VTEPs.
const (
	chainVXLAN = "GRAPEVINE-VXLAN" // raw: drops VXLAN frames from non-members
	// vtepSet is the ipset (hash:ip) of the members' VTEPs.
	vtepSet = "grapevine-vteps"
)

// VXLANIngress is who may send VXLAN frames to this host. A zero Port turns
// the filter off (no VXLAN network on this host): rule and set are removed.
type VXLANIngress struct {
	Port uint16
	// Peers are the IPv4 VTEPs of the cluster's current members.
	Peers []netip.Addr
	// Partial: Peers may be incomplete (this host has not yet been in
	// contact with the cluster after a start): they are added, none is
	// removed, so a restart does not cut off the members not yet heard of.
	Partial bool
}

// vxlanRule renders the raw table's rule for in.
func vxlanRule(in VXLANIngress) string {
	return fmt.Sprintf(`-A %s -p udp -m udp --dport %d -m set ! --match-set %s src -m comment --comment "grapevine:vxlan" -j DROP`,
		chainVXLAN, in.Port, vtepSet)
}

func validateVXLAN(in VXLANIngress) error {
	for _, p := range in.Peers {
		if !p.Is4() {
			return fmt.Errorf("vxlan ingress: peer VTEP %v is not an IPv4 address", p)
		}
	}
	return nil
}

// SetVXLANPeers implements Dataplane: it makes the VTEP set hold exactly
// in.Peers (at least, when in.Partial) when the filter is in place, and does
// nothing otherwise (SyncFirewall creates it with the first VXLAN network).
// in.Port is not used.
func (k *Kernel) SetVXLANPeers(in VXLANIngress) error {
	if err := validateVXLAN(in); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	set, err := k.nl.IpsetList(vtepSet)
	if isNoSet(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read ipset %s: %w", vtepSet, err)
	}
	return k.fillVTEPSet(set, in)
}

// ensureVTEPSet creates the set if needed and fills it.
func (k *Kernel) ensureVTEPSet(in VXLANIngress) error {
	set, err := k.ensureAddrSet(vtepSet)
	if err != nil {
		return err
	}
	return k.fillVTEPSet(set, in)
}

// fillVTEPSet adds the missing peers to the set and deletes the others
// (unless in.Partial).
func (k *Kernel) fillVTEPSet(set *netlink.IPSetResult, in VXLANIngress) error {
	added, deleted, err := k.fillAddrSet(set, in.Peers, in.Partial)
	for _, a := range added {
		k.log.WithField("peer_vtep", a).Info("VXLAN frames from this VTEP are accepted")
	}
	for _, a := range deleted {
		k.log.WithField("peer_vtep", a).Info("VXLAN frames from this VTEP are dropped: no longer a member")
	}
	return err
}

// destroyVTEPSet removes the set; a missing set is success. The rule that
// refers to it must be gone first.
func (k *Kernel) destroyVTEPSet() error { return k.destroyAddrSet(vtepSet) }

// isNoSet reports the kernel's answer for a set or entry that does not exist.
func isNoSet(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENXIO)
}

// VXLANDrops implements Dataplane: the packets the VXLAN ingress filter has
// dropped since its rule was written (0 without the filter).
func (k *Kernel) VXLANDrops() (uint64, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	stats, err := k.ipt.StructuredStats("raw", chainVXLAN)
	if isNoChain(err) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read the counters of raw/%s: %w", chainVXLAN, err)
	}
	var n uint64
	for _, s := range stats {
		if s.Target == "DROP" {
			n += s.Packets
		}
	}
	return n, nil
}
