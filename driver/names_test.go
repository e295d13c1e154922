package driver

import (
	"maps"
	"net/netip"
	"slices"
	"testing"

	"github.com/docker/go-plugins-helpers/network"
)

// TestNameNetworks: VXLAN and macvlan networks are listed with their
// subnets, a removed one goes; TapSandboxes lists joined endpoints only.
func TestNameNetworks(t *testing.T) {
	e := newLANEnv(t)
	vx, mv := id("names-vx"), id("names-mv")
	e.mustCreateNetwork(netReq{id: vx, subnet: "198.19.50.0/24"})
	e.mustCreateNetwork(lanReq(mv, lanSubnet, nil))
	want := map[string]netip.Prefix{vx: netip.MustParsePrefix("198.19.50.0/24"), mv: netip.MustParsePrefix(lanSubnet)}
	if got := e.d.NameNetworks(); !maps.Equal(got, want) {
		t.Errorf("NameNetworks = %v, want %v", got, want)
	}
	if err := e.d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: vx}); err != nil {
		t.Fatal(err)
	}
	delete(want, vx)
	if got := e.d.NameNetworks(); !maps.Equal(got, want) {
		t.Errorf("NameNetworks after delete = %v, want %v", got, want)
	}
}

// TestTapSandboxes: a joined endpoint's sandbox key is listed with its
// address until Leave, kept across a restart (it is stored), signalled on
// join and leave; a key that is not a clean absolute path is not kept.
func TestTapSandboxes(t *testing.T) {
	e := newEnv(t)
	nid, ep, bad := id("tap-net"), id("tap-ep"), id("tap-bad")
	e.mustCreateNetwork(netReq{id: nid, subnet: "198.19.51.0/24"})
	e.mustCreateEndpoint(nid, ep, "198.19.51.5/24", "")
	e.mustCreateEndpoint(nid, bad, "198.19.51.6/24", "")
	drain := func() bool {
		select {
		case <-e.d.SandboxChanges():
			return true
		default:
			return false
		}
	}
	drain()
	const key = "/var/run/docker/netns/0123456789ab"
	if _, err := e.d.Join(&network.JoinRequest{NetworkID: nid, EndpointID: ep, SandboxKey: key}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.Join(&network.JoinRequest{NetworkID: nid, EndpointID: bad, SandboxKey: "/var/run/docker/netns/../../x"}); err != nil {
		t.Fatal(err)
	}
	if !drain() {
		t.Error("no SandboxChanges signal after Join")
	}
	want := map[string][]netip.Prefix{key: {netip.MustParsePrefix("198.19.51.5/24")}}
	check := func(when string, want map[string][]netip.Prefix) {
		t.Helper()
		if got := e.d.TapSandboxes(); !maps.EqualFunc(got, want, slices.Equal) {
			t.Errorf("%s: TapSandboxes = %v, want %v", when, got, want)
		}
	}
	check("joined", want)
	e.restart(e.fake)
	check("after a restart", want)
	if err := e.d.Leave(&network.LeaveRequest{NetworkID: nid, EndpointID: ep}); err != nil {
		t.Fatal(err)
	}
	if !drain() {
		t.Error("no SandboxChanges signal after Leave")
	}
	check("left", map[string][]netip.Prefix{})
}
