package driver

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/network"

	"grapevine/driver/dataplane"
	"grapevine/gossip"
)

// The probe device exists exactly while a VXLAN network (and so the VXLAN
// ingress filter) does, reaches the live members' VTEPs and nothing else,
// and follows membership.
func TestProbeDeviceFollowsNetworksAndMembers(t *testing.T) {
	e, c := newClusterEnv(t, "h0", "198.18.0.1")
	c.SetMember("h1", "198.18.0.2", gossip.StateAlive, gossip.EventJoin)
	e.flush()
	if p := e.fake.ProbeSpec(); p != nil {
		t.Fatalf("probe device %+v without a VXLAN network", p)
	}
	nid := id("n")
	e.mustCreateNetwork(netReq{id: nid, subnet: sub20})
	want := func(peers ...string) {
		t.Helper()
		p := e.fake.ProbeSpec()
		if p == nil {
			t.Fatal("no probe device with a VXLAN network")
		}
		var got []string
		for _, a := range p.Peers {
			got = append(got, a.String())
		}
		if p.VNI != ProbeVNI || p.Port != testVXLANPort || p.Local != netip.MustParseAddr("198.18.0.1") || !slices.Equal(got, peers) {
			t.Fatalf("probe device %+v, want VNI %d port %d local 198.18.0.1 peers %v", *p, ProbeVNI, testVXLANPort, peers)
		}
	}
	want("198.18.0.2")
	c.SetMember("h2", "198.18.0.3", gossip.StateAlive, gossip.EventJoin)
	e.flush()
	want("198.18.0.2", "198.18.0.3")
	c.SetMember("h1", "198.18.0.2", gossip.StateDead, gossip.EventDead)
	e.flush()
	want("198.18.0.3")
	if err := e.d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: nid}); err != nil {
		t.Fatal(err)
	}
	if p := e.fake.ProbeSpec(); p != nil {
		t.Fatalf("probe device %+v after the last VXLAN network went", p)
	}
}

// ProbePaths: a peer with a VXLAN network is probed at the network's MTU
// and, when only smaller probes cross, the largest that does is found; a
// peer without one is skipped, and HOST limits the probes.
func TestProbePaths(t *testing.T) {
	e, c := newClusterEnv(t, "h0", "198.18.0.1")
	if got, err := e.d.ProbePaths(""); got != nil || err != nil {
		t.Fatalf("ProbePaths without a VXLAN network: %v, %v; want nothing", got, err)
	}
	c.SetMember("h1", "198.18.0.2", gossip.StateAlive, gossip.EventJoin)
	c.SetMember("h2", "198.18.0.3", gossip.StateAlive, gossip.EventJoin)
	c.SetMember("h3", "198.18.0.4", gossip.StateAlive, gossip.EventJoin)
	remoteNetwork(t, c, "h1", sub20, networkDef{Version: 1, Mode: modeVXLAN, VNI: autoVNI(netip.MustParsePrefix(sub20)), MTU: 1450})
	remoteNetwork(t, c, "h2", sub20, networkDef{Version: 1, Mode: modeVXLAN, VNI: autoVNI(netip.MustParsePrefix(sub20)), MTU: 1450})
	e.mustCreateNetwork(netReq{id: id("n"), subnet: sub20})
	e.flush()
	e.fake.SetPathMTU(netip.MustParseAddr("198.18.0.2"), 1500)
	e.fake.SetPathMTU(netip.MustParseAddr("198.18.0.3"), 1377)
	got, err := e.d.ProbePaths("")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("%d paths, want 3: %+v", len(got), got)
	}
	if p := got[0]; p.Node != "h1" || !p.Reached || p.Size != 1450 || p.Carries != 1450 {
		t.Errorf("h1: %+v, want reached carrying all 1450 bytes", p)
	}
	if p := got[1]; p.Node != "h2" || !p.Reached || p.Carries != 1377 {
		t.Errorf("h2: %+v, want reached carrying 1377 bytes", p)
	}
	if p := got[2]; p.Node != "h3" || p.Skipped == "" || p.Reached {
		t.Errorf("h3 (no VXLAN network): %+v, want skipped", p)
	}
	e.fake.SetPathMTU(netip.MustParseAddr("198.18.0.3"), 0)
	got, err = e.d.ProbePaths("h2")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Node != "h2" || got[0].Reached || got[0].Error != "" {
		t.Errorf("ProbePaths(h2) with the path blocked: %+v, want only h2, not reached, no other error", got)
	}
}

// The probe's VNI is refused as -o vni.
func TestProbeVNIRefused(t *testing.T) {
	e := newEnv(t)
	err := e.d.CreateNetwork(e.createReq(netReq{id: id("n"), subnet: sub20, opts: map[string]string{"vni": "8388607"}}))
	wantErr(t, err, "reserved for grapevine's own probe")
}

// A probe device refused because its VNI is still held (the device of a
// plugin process that just stopped) is retried within about a second, not
// at the next repair pass, so a doctor run on another host soon after this
// plugin's restart does not report the path as blocked.
func TestProbeDeviceRetriedSoonWhenVNIHeld(t *testing.T) {
	e, c := newClusterEnv(t, "h0", "198.18.0.1")
	c.SetMember("h1", "198.18.0.2", gossip.StateAlive, gossip.EventJoin)
	e.flush()
	e.fake.SetFail("EnsureProbe", fmt.Errorf("probe: vni held by a stopping process: %w", dataplane.ErrVNIInUse))
	e.mustCreateNetwork(netReq{id: id("n"), subnet: sub20})
	if p := e.fake.ProbeSpec(); p != nil {
		t.Fatalf("probe device %+v while its VNI is held", p)
	}
	e.fake.SetFail("EnsureProbe", nil)
	deadline := time.Now().Add(3 * time.Second)
	for e.fake.ProbeSpec() == nil {
		if time.Now().After(deadline) {
			t.Fatal("no probe device 3s after its VNI was freed")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
