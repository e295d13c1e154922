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
	lan netns.NsHandle
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
	_, cns, cnl := otherNS(t)
	if err := tn.nl.LinkSetNsFd(tn.link("gvc-a"), int(cns)); err != nil {
		t.Fatal(err)
	}
	c, err := cnl.LinkByName("gvc-a")
	if err != nil {
		t.Fatal(err)
	}
	addAddr(t, cnl, c, "198.19.1.5/24")
	if err := cnl.LinkSetUp(c); err != nil {
		t.Fatal(err)
	}
	if err := cnl.RouteAdd(&netlink.Route{Gw: net.ParseIP("198.19.1.1")}); err != nil {
		t.Fatal(err)
	}
	var l net.Listener
	inNS(t, cns, func() {
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
			_, _ = conn.Write([]byte("hi"))
			conn.Close()
		}
	}()
	return portLab{lan: lan}
}

func mustIPNet(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}

// answers dials addr from the calling thread's namespace and reports whether
// the container's server answered.
func answers(addr string) bool {
	c, err := net.DialTimeout("tcp4", addr, 700*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	b, _ := io.ReadAll(c)
	return string(b) == "hi"
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
