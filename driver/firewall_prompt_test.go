package driver

import (
	"errors"
	"testing"

	"grapevine/driver/dataplane"
)

// TestSyncFirewallRewritesFromState: whatever the kernel's rules became,
// SyncFirewall puts back exactly the rules of the persisted state, and says
// so when the data plane refuses.
func TestSyncFirewallRewritesFromState(t *testing.T) {
	e := newEnv(t)
	nid := id("fwp")
	e.mustCreateNetwork(netReq{id: nid, subnet: "198.19.1.0/24"})
	want := e.fake.Firewall()
	if len(want.Networks) != 1 || want.Networks[0].NetworkID != nid {
		t.Fatalf("firewall after create: %+v", want)
	}
	// someone else's sync left other rules
	if err := e.fake.SyncFirewall(dataplane.Firewall{}); err != nil {
		t.Fatal(err)
	}
	if err := e.d.SyncFirewall(); err != nil {
		t.Fatal(err)
	}
	if got := e.fake.Firewall(); len(got.Networks) != 1 || got.Networks[0].NetworkID != nid || got.Networks[0].Bridge != bridgeName(nid) {
		t.Errorf("firewall after SyncFirewall: %+v, want %+v", got, want)
	}

	e.fake.SetFail("SyncFirewall", errors.New("iptables-restore: exit status 4"))
	err := e.d.SyncFirewall()
	wantErr(t, err, "program firewall rules: iptables-restore: exit status 4")
}
