package driver

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/docker/go-plugins-helpers/network"

	"grapevine/gossip"
)

// TestFirewallIsolatesMacvlanShims: a macvlan network's host shim is handed to
// the firewall as a network the bridges must not reach; without host access
// (no shim) nothing is.
func TestFirewallIsolatesMacvlanShims(t *testing.T) {
	e := newLANEnv(t)
	ha, plain := id("ha"), id("pl")
	e.mustCreateNetwork(withAux(lanReq(ha, lanSubnet, map[string]string{"parent": "eth0", "host_access": "true"}), "host", "198.18.0.200"))
	if got, want := e.fake.Firewall().Shims, []string{shimName(ha)}; !slices.Equal(got, want) {
		t.Fatalf("firewall shims = %q, want %q", got, want)
	}
	e.mustCreateNetwork(lanReq(plain, "198.18.64.0/24", map[string]string{"parent": "eth0"}))
	if got, want := e.fake.Firewall().Shims, []string{shimName(ha)}; !slices.Equal(got, want) {
		t.Fatalf("after a macvlan network without host access: firewall shims = %q, want %q", got, want)
	}
}

// TestVXLANIngressFollowsMembers: the VXLAN ingress filter exists with the
// first VXLAN network, accepts the live members' VTEPs and follows joins,
// failures and departures (after their grace, TestLeftPeerGrace); it goes
// with the last VXLAN network.
func TestVXLANIngressFollowsMembers(t *testing.T) {
	e, c := newClusterEnv(t, "h0", "198.18.0.1")
	c.SetMember("h1", "198.18.0.2", gossip.StateAlive, gossip.EventJoin)
	if in := e.fake.Firewall().VXLAN; in.Port != 0 {
		t.Fatalf("filter %+v without any network", in)
	}
	n := id("vx")
	e.mustCreateNetwork(netReq{id: n, subnet: sub20})
	peers := func() []netip.Addr { return e.fake.Firewall().VXLAN.Peers }
	if in := e.fake.Firewall().VXLAN; in.Port != 4789 || !slices.Equal(in.Peers, []netip.Addr{netip.MustParseAddr("198.18.0.2")}) {
		t.Fatalf("filter %+v, want port 4789 accepting h1's VTEP only", in)
	}
	c.SetMember("h2", "198.18.0.3", gossip.StateAlive, gossip.EventJoin)
	c.SetMember("h3", "", gossip.StateAlive, gossip.EventJoin) // no VTEP yet
	if want := []netip.Addr{netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.3")}; !slices.Equal(peers(), want) {
		t.Fatalf("after h2 joined: peers %v, want %v", peers(), want)
	}
	c.SetMember("h1", "198.18.0.2", gossip.StateDead, gossip.EventDead)
	c.SetMember("h2", "198.18.0.3", gossip.StateLeft, gossip.EventLeave)
	// h2 keeps its place for the grace after a graceful leave (grace.go)
	if want := []netip.Addr{netip.MustParseAddr("198.18.0.3")}; !slices.Equal(peers(), want) {
		t.Fatalf("after h1 failed and h2 left: peers %v, want h2's %v", peers(), want)
	}
	c.SetMember("h1", "198.18.0.2", gossip.StateAlive, gossip.EventJoin)
	if err := e.d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: n}); err != nil {
		t.Fatal(err)
	}
	if in := e.fake.Firewall().VXLAN; in.Port != 0 {
		t.Fatalf("filter %+v after the last VXLAN network was deleted", in)
	}
}
