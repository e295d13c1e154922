package dataplane

import (
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// portLab: a host namespace (Kernel) with two underlay addresses, a LAN
// namespace beside it, and a container namespace behind bridge gvb-a whose
// server on port 80 answers "hi".
type portLab struct {
	lan, gv netns.NsHandle // the LAN machine, grapevine's container
}

func newPortLab(t *testing.T, k *Kernel, tn *testNS) portLab {
	t.Helper()
	_, lan, lanNL := otherNS(t)
	if err := tn.nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ul0"}, PeerName: "ul1"}); err != nil {
		t.Fatal(err)
	}
	if err := tn.nl.LinkSetNsFd(tn.link("ul1"), int(lan)); err != nil {
		t.Fatal(err)
	}
	addAddr(t, tn.nl, tn.link("ul0"), "198.18.0.1/24")
	addAddr(t, tn.nl, tn.link("ul0"), "198.18.0.2/24")
	if err := tn.nl.LinkSetUp(tn.link("ul0")); err != nil {
		t.Fatal(err)
	}
	ul1, err := lanNL.LinkByName("ul1")
	if err != nil {
		t.Fatal(err)
	}
	addAddr(t, lanNL, ul1, "198.18.0.200/24")
	if err := lanNL.LinkSetUp(ul1); err != nil {
		t.Fatal(err)
	}
	// a routed neighbour: the LAN machine knows the way to the containers
	if err := lanNL.RouteAdd(&netlink.Route{Dst: mustIPNet("198.19.1.0/24"), Gw: net.ParseIP("198.18.0.1")}); err != nil {
		t.Fatal(err)
	}

	if err := k.EnsureBridge(BridgeSpec{Name: "gvb-a", MTU: 1500, Address: mustPrefix("198.19.1.1/24")}); err != nil {
		t.Fatal(err)
	}
	if err := k.EnsureVeth(VethSpec{HostName: "gve-a", ContainerName: "gvc-a", MTU: 1500, MAC: mustMAC(t, "02:42:c6:13:01:05"), Master: "gvb-a", Hairpin: true}); err != nil {
		t.Fatal(err)
	}
	gv := container(t, tn, "gvc-a", "198.19.1.5/24", "198.19.1.1")
	serve(t, gv, "hi")
	return portLab{lan: lan, gv: gv}
}

// container moves the link into a new namespace, addresses it, routes
// through gw and returns the namespace.
func container(t *testing.T, tn *testNS, link, addr, gw string) netns.NsHandle {
	t.Helper()
	_, cns, cnl := otherNS(t)
	if err := tn.nl.LinkSetNsFd(tn.link(link), int(cns)); err != nil {
		t.Fatal(err)
	}
	c, err := cnl.LinkByName(link)
	if err != nil {
		t.Fatal(err)
	}
	addAddr(t, cnl, c, addr)
	if err := cnl.LinkSetUp(c); err != nil {
		t.Fatal(err)
	}
	if err := cnl.RouteAdd(&netlink.Route{Gw: net.ParseIP(gw)}); err != nil {
		t.Fatal(err)
	}
	return cns
}

// serve answers body to every TCP connection on port 80 inside ns.
func serve(t *testing.T, ns netns.NsHandle, body string) {
	t.Helper()
	var l net.Listener
	var err error
	inNS(t, ns, func() {
		if l, err = net.Listen("tcp4", ":80"); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = conn.Write([]byte(body))
			conn.Close()
		}
	}()
}

func mustIPNet(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}

// answers dials addr from the calling thread's namespace and reports whether
// the container's server answered "hi".
func answers(addr string) bool { return answersWith(addr, "hi") }

// answersWith dials addr and reports whether the answer was body.
func answersWith(addr, body string) bool {
	c, err := net.DialTimeout("tcp4", addr, 700*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	b, _ := io.ReadAll(c)
	return string(b) == body
}

func TestPublishedPortsAnswerWhereBound(t *testing.T) {
	tn, k := newKernelNS(t)
	lab := newPortLab(t, k, tn)
	port := func(hostIP string, hostPort uint16) PortRule {
		p := PortRule{NetworkID: netA, EndpointID: epA1, Bridge: "gvb-a", Proto: TCP, HostPort: hostPort, ContainerIP: mustAddr("198.19.1.5"), ContainerPort: 80}
		if hostIP != "" {
			p.HostIP = mustAddr(hostIP)
		}
		return p
	}
	fw := Firewall{
		Networks: []NetworkRules{{NetworkID: netA, Bridge: "gvb-a", Subnet: mustPrefix("198.19.1.0/24"), Masquerade: true}},
		Ports:    []PortRule{port("", 8080), port("127.0.0.1", 8081), port("198.18.0.2", 8082)},
	}
	if err := k.SyncFirewall(fw); err != nil {
		t.Fatalf("SyncFirewall: %v", err)
	}
	fromHost := map[string]bool{
		"127.0.0.1:8080": true, "198.18.0.1:8080": true, "198.18.0.2:8080": true,
		"127.0.0.1:8081": true, "198.18.0.1:8081": false,
		"198.18.0.2:8082": true, "198.18.0.1:8082": false, "127.0.0.1:8082": false,
	}
	for addr, want := range fromHost {
		if got := answers(addr); got != want {
			t.Errorf("from the host, %s answers %t, want %t", addr, got, want)
		}
	}
	fromLAN := map[string]bool{
		"198.18.0.1:8080": true, "198.18.0.2:8080": true,
		"198.18.0.1:8081": false,
		"198.18.0.2:8082": true, "198.18.0.1:8082": false,
		// the container's own address, routed, is not a published port
		"198.19.1.5:80": false,
	}
	inNS(t, lab.lan, func() {
		for addr, want := range fromLAN {
			if got := answers(addr); got != want {
				t.Errorf("from the LAN, %s answers %t, want %t", addr, got, want)
			}
		}
	})

	// Without grapevine's rules none of it answers: the test sees the rules.
	if err := k.RemoveFirewall(); err != nil {
		t.Fatal(err)
	}
	if answers("127.0.0.1:8080") || answers("198.18.0.1:8080") {
		t.Errorf("published ports answer without grapevine's rules")
	}
}

// TestObsoleteOutputJumpRemoved: the nat OUTPUT jump of earlier releases
// (which left out 127.0.0.0/8) is deleted by a sync and by RemoveFirewall.
func TestObsoleteOutputJumpRemoved(t *testing.T) {
	_, k := newKernelNS(t)
	old := append([]string{"-t", "nat", "-A", "OUTPUT"}, splitRule(obsoleteJumps[0].rule)...)
	fw := testFirewall()
	for _, remove := range []func() error{func() error { return k.SyncFirewall(fw) }, k.RemoveFirewall} {
		if err := k.SyncFirewall(fw); err != nil {
			t.Fatal(err)
		}
		run(t, "iptables", old...)
		if err := remove(); err != nil {
			t.Fatal(err)
		}
		if got := ruleLines(saveTable(t, "nat"), "OUTPUT"); slices.Contains(got, "-A OUTPUT "+obsoleteJumps[0].rule) {
			t.Errorf("the obsolete jump survives: %q", got)
		}
	}
}

// TestIsolationFromDockerBridgeTraffic: beside grapevine's bridge, a bridge
// named and filtered as dockerd does docker0 (FORWARD policy DROP, Docker's
// accepts for docker0, its isolation chains). Docker's accept of traffic
// leaving docker0 would let its containers into grapevine's network; with
// grapevine's rules neither side reaches the other, directly or through a
// published port, while the LAN still reaches the published port.
func TestIsolationFromDockerBridgeTraffic(t *testing.T) {
	tn, k := newKernelNS(t)
	lab := newPortLab(t, k, tn)
	dockerForward(t)
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "docker0"}}
	if err := tn.nl.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	addAddr(t, tn.nl, tn.link("docker0"), "198.19.250.1/24")
	if err := tn.nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vd0", MasterIndex: tn.link("docker0").Attrs().Index}, PeerName: "vd1"}); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"docker0", "vd0"} {
		if err := tn.nl.LinkSetUp(tn.link(l)); err != nil {
			t.Fatal(err)
		}
	}
	d0 := container(t, tn, "vd1", "198.19.250.2/24", "198.19.250.1")
	serve(t, d0, "docker0")

	fw := Firewall{
		Networks: []NetworkRules{{NetworkID: netA, Bridge: "gvb-a", Subnet: mustPrefix("198.19.1.0/24"), Masquerade: true}},
		Ports:    []PortRule{{NetworkID: netA, EndpointID: epA1, Bridge: "gvb-a", Proto: TCP, HostPort: 8080, ContainerIP: mustAddr("198.19.1.5"), ContainerPort: 80}},
	}
	if err := k.SyncFirewall(fw); err != nil {
		t.Fatalf("SyncFirewall: %v", err)
	}
	inNS(t, lab.lan, func() {
		if !answers("198.18.0.1:8080") {
			t.Errorf("the LAN does not reach the published port")
		}
	})
	inNS(t, d0, func() {
		for _, addr := range []string{"198.19.1.5:80", "198.18.0.1:8080"} {
			if answers(addr) {
				t.Errorf("a docker0 container reaches grapevine's container at %s", addr)
			}
		}
	})
	inNS(t, lab.gv, func() {
		if answersWith("198.19.250.2:80", "docker0") {
			t.Errorf("grapevine's container reaches the docker0 container")
		}
	})
}
