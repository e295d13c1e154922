package driver

import (
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/network"

	"grapevine/driver/dataplane"
	"grapevine/driver/dataplane/dataplanetest"
)

// TestRestartReconcile: state survives a restart with an empty kernel (a host
// reboot); Reconcile recreates what is missing and removes orphans, leaving
// links that are not grapevine's alone.
func TestRestartReconcile(t *testing.T) {
	e := newEnv(t)
	nid, joined, idle := id("n"), id("joined"), id("idle")
	e.mustCreateNetwork(netReq{id: nid, subnet: "198.19.1.0/24", opts: map[string]string{"vni": "77", optMTU: "1400"}})
	e.mustCreateEndpoint(nid, joined, "198.19.1.2/24", "")
	e.mustCreateEndpoint(nid, idle, "198.19.1.3/24", "02:00:00:00:00:03")
	e.mustJoin(nid, joined)
	if err := e.program(nid, joined, pb{Proto: 6, Port: 80, HostPort: 8080}); err != nil {
		t.Fatal(err)
	}
	statusBefore := e.d.Status()
	fwBefore := e.fake.Firewall()

	kernel := dataplanetest.NewFake()
	kernel.AddLink("gvb-deadbeef000", dataplanetest.KindBridge) // orphans of an earlier run
	kernel.AddLink("gvx-deadbeef000", dataplanetest.KindVXLAN)
	kernel.AddLink("gve-deadbeef000", dataplanetest.KindVeth)
	kernel.AddLink("gvc-deadbeef000", dataplanetest.KindVethPeer)
	kernel.AddLink("gvu-deadbeef000", dataplanetest.KindVeth) // an uplink whose bridge's namespace is gone
	kernel.AddLink("gvi-deadbeef000", dataplanetest.KindVethPeer)
	kernel.AddLink("gvz-notours", dataplanetest.KindOther)      // our prefix letter, not our name scheme
	kernel.AddLink("gvb-notoursatall", dataplanetest.KindOther) // an id longer than names keep
	kernel.AddLink("gvbr0", dataplanetest.KindOther)
	kernel.AddLink("eth1", dataplanetest.KindOther)
	e.restart(kernel)

	if got := e.d.Status(); !reflect.DeepEqual(got, statusBefore) {
		t.Fatalf("status after restart %+v, before %+v", got, statusBefore)
	}
	if err := e.d.Reconcile(); err != nil {
		t.Fatal(err)
	}
	want := []string{bridgeName(nid), contVeth(joined), hostVeth(joined), vxlanName(nid), "eth1", "gvb-notoursatall", "gvbr0", "gvz-notours"}
	slices.Sort(want)
	if got := kernel.LinkNames(); !slices.Equal(got, want) {
		t.Fatalf("links after reconcile %v, want %v", got, want)
	}
	vx, _ := kernel.Link(vxlanName(nid))
	if vx.VXLAN.VNI != 77 || vx.VXLAN.MTU != 1400 || vx.VXLAN.Master != bridgeName(nid) {
		t.Fatalf("recreated vxlan %+v", vx.VXLAN)
	}
	veth, _ := kernel.Link(hostVeth(joined))
	if veth.Veth.MTU != 1400 || veth.Veth.Master != bridgeName(nid) || veth.Veth.MAC.String() != "02:42:c6:13:01:02" {
		t.Fatalf("recreated veth %+v", veth.Veth)
	}
	if fw := kernel.Firewall(); !slices.Equal(fw.Networks, fwBefore.Networks) || !slices.Equal(fw.Ports, fwBefore.Ports) {
		t.Fatalf("firewall after restart %+v, before %+v", fw, fwBefore)
	}

	// Repeated reconcile changes nothing; a deleted link comes back.
	_ = kernel.DeleteLink(vxlanName(nid))
	if err := e.d.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if got := kernel.LinkNames(); !slices.Equal(got, want) {
		t.Fatalf("links after second reconcile %v", got)
	}

	// Endpoints survive for teardown after the restart.
	if err := e.d.RevokeExternalConnectivity(&network.RevokeExternalConnectivityRequest{NetworkID: nid, EndpointID: joined}); err != nil {
		t.Fatal(err)
	}
	if err := e.d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: nid}); err != nil {
		t.Fatal(err)
	}
	if got := kernel.LinkNames(); !slices.Equal(got, []string{"eth1", "gvb-notoursatall", "gvbr0", "gvz-notours"}) {
		t.Fatalf("links after delete %v", got)
	}
}

// TestReconcileBestEffort: one failing network does not stop the others, and
// the errors are all returned.
func TestReconcileBestEffort(t *testing.T) {
	e := newEnv(t)
	a, b := id("a"), id("b")
	e.mustCreateNetwork(netReq{id: a, subnet: "198.19.1.0/24"})
	e.mustCreateNetwork(netReq{id: b, subnet: "198.19.2.0/24"})
	kernel := dataplanetest.NewFake()
	boom, bang := errors.New("boom"), errors.New("bang")
	kernel.SetFail("EnsureBridge:"+bridgeName(a), boom)
	kernel.SetFail("DeleteLink:gvb-orphan00000", bang)
	kernel.AddLink("gvb-orphan00000", dataplanetest.KindBridge)
	e.restart(kernel)
	err := e.d.Reconcile()
	if !errors.Is(err, boom) || !errors.Is(err, bang) {
		t.Fatalf("reconcile error %v does not carry both failures", err)
	}
	if !strings.Contains(err.Error(), "network "+shortID(a)) {
		t.Fatalf("error %q does not name the network", err)
	}
	if _, ok := kernel.Link(vxlanName(b)); !ok {
		t.Fatal("the healthy network was not reconciled")
	}
	if fw := kernel.Firewall(); len(fw.Networks) != 2 {
		t.Fatalf("firewall not synced: %+v", fw)
	}

	// Without an underlay the bridges are still repaired.
	kernel.SetFail("EnsureBridge:"+bridgeName(a), nil)
	kernel.SetUnderlay(nil)
	err = e.d.Reconcile()
	if !errors.Is(err, dataplane.ErrNoUnderlay) {
		t.Fatalf("got %v", err)
	}
	if _, ok := kernel.Link(bridgeName(a)); !ok {
		t.Fatal("bridge not repaired without underlay")
	}
}

// TestReconcileVTEPChange: a new underlay address reaches the VXLAN devices.
func TestReconcileVTEPChange(t *testing.T) {
	e := newEnv(t)
	nid := id("n")
	e.mustCreateNetwork(netReq{id: nid, subnet: "198.19.1.0/24"})
	e.fake.SetUnderlay(&dataplane.Underlay{Addr: netip.MustParseAddr("198.18.5.5"), Link: "eth2", MTU: 1500})
	if err := e.d.Reconcile(); err != nil {
		t.Fatal(err)
	}
	vx, _ := e.fake.Link(vxlanName(nid))
	if vx.VXLAN.Local != netip.MustParseAddr("198.18.5.5") || vx.VXLAN.Underlay != "eth2" {
		t.Fatalf("vxlan %+v", vx.VXLAN)
	}
}

func TestJoinRollbackAndLeaveState(t *testing.T) {
	e := newEnv(t)
	nid, eid := id("n"), id("e")
	e.mustCreateNetwork(netReq{id: nid, subnet: "198.19.1.0/24"})
	e.mustCreateEndpoint(nid, eid, "198.19.1.2/24", "")
	boom := errors.New("boom")
	e.fake.SetFail("EnsureVeth", boom)
	if _, err := e.d.Join(&network.JoinRequest{NetworkID: nid, EndpointID: eid}); !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
	e.fake.SetFail("EnsureVeth", nil)
	if e.d.endpoints[eid].Joined {
		t.Fatal("failed join recorded as joined")
	}
	e.mustJoin(nid, eid)
	if err := e.d.Leave(&network.LeaveRequest{NetworkID: nid, EndpointID: eid}); err != nil {
		t.Fatal(err)
	}
	// After Leave, a restart + reconcile does not bring the veth back.
	e.restart(e.fake)
	if err := e.d.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.fake.Link(hostVeth(eid)); ok {
		t.Fatal("reconcile recreated the veth of an endpoint that left")
	}
}
