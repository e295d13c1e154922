package driver

import (
	"slices"
	"testing"
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
