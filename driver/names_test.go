package driver

import (
	"maps"
	"net/netip"
	"testing"

	"github.com/docker/go-plugins-helpers/network"
)

// TestNameNetworks: VXLAN networks are listed with their subnets, a macvlan
// network (whose traffic never passes this host) is not, a removed one goes.
func TestNameNetworks(t *testing.T) {
	e := newLANEnv(t)
	vx, mv := id("names-vx"), id("names-mv")
	e.mustCreateNetwork(netReq{id: vx, subnet: "198.19.50.0/24"})
	e.mustCreateNetwork(lanReq(mv, lanSubnet, nil))
	want := map[string]netip.Prefix{vx: netip.MustParsePrefix("198.19.50.0/24")}
	if got := e.d.NameNetworks(); !maps.Equal(got, want) {
		t.Errorf("NameNetworks = %v, want %v", got, want)
	}
	if err := e.d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: vx}); err != nil {
		t.Fatal(err)
	}
	if got := e.d.NameNetworks(); len(got) != 0 {
		t.Errorf("NameNetworks after delete = %v, want none", got)
	}
}
