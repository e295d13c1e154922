package dataplane

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// TestNamesRedirect: a query from the subnet to any address's port 53 reaches
// the resolver's sockets, which recover the original destination (UDP by
// conntrack, TCP by SO_ORIGINAL_DST); after the lease the rules match
// nothing; Remove leaves no trace.
func TestNamesRedirect(t *testing.T) {
	tn, k := newKernelNS(t)
	_, cns, _ := otherNS(t)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "gvtnh"}, PeerName: "gvtnc"}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	peer := tn.link("gvtnc")
	if err := netlink.LinkSetNsFd(peer, int(cns)); err != nil {
		t.Fatal(err)
	}
	run(t, "ip", "addr", "add", "198.19.40.1/24", "dev", "gvtnh")
	run(t, "ip", "link", "set", "gvtnh", "up")
	inNS(t, cns, func() {
		run(t, "ip", "addr", "add", "198.19.40.2/24", "dev", "gvtnc")
		run(t, "ip", "link", "set", "gvtnc", "up")
		run(t, "ip", "route", "add", "default", "via", "198.19.40.1")
	})

	udp, err := net.ListenUDP("udp4", &net.UDPAddr{})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	tcp, err := net.ListenTCP("tcp4", &net.TCPAddr{})
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	uport, tport := uint16(udp.LocalAddr().(*net.UDPAddr).Port), uint16(tcp.Addr().(*net.TCPAddr).Port)
	subnet := netip.MustParsePrefix("198.19.40.0/24")
	redirect := NamesRedirect{UDPPort: uport, TCPPort: tport, Subnets: []netip.Prefix{subnet}, Until: time.Now().Add(time.Minute)}
	if err := k.SyncNamesRedirect(redirect); err != nil {
		t.Fatal(err)
	}
	if err := k.SyncNamesRedirect(redirect); err != nil { // a repeat
		t.Fatal(err)
	}
	if n := strings.Count(run(t, "iptables", "-t", "nat", "-S", "PREROUTING"), chainNames); n != 1 {
		t.Errorf("%d jumps to %s, want 1", n, chainNames)
	}
	upstream := netip.MustParseAddrPort("198.18.200.1:53")

	var client netip.AddrPort
	inNS(t, cns, func() { client = sendUDP(t, upstream) })
	got := recvUDP(t, udp, time.Second)
	if !got.IsValid() || got.Addr() != client.Addr() {
		t.Fatalf("redirected datagram from %s not received (got %v)", client, got)
	}
	local := netip.MustParseAddrPort(fmt.Sprintf("198.19.40.1:%d", uport)) // REDIRECT: the receiving link's address
	orig, err := OriginalDstUDP(got, local)
	if err != nil || orig != upstream {
		t.Errorf("OriginalDstUDP = %v, %v; want %s", orig, err, upstream)
	}
	other := netip.AddrPortFrom(got.Addr(), got.Port()+1)
	if orig, err := OriginalDstUDP(other, local); err == nil {
		t.Errorf("OriginalDstUDP of a datagram never sent = %v, want an error", orig)
	}
	// the resolver's kept socket: the same answers, again after a miss
	ct, err := NewConntrack()
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Close()
	for i, c := range []netip.AddrPort{got, other, got} {
		orig, err := ct.OriginalDstUDP(c, local)
		if want := c == got; want != (err == nil) || (want && orig != upstream) {
			t.Errorf("Conntrack.OriginalDstUDP #%d of %s = %v, %v; want %s: %v", i, c, orig, err, upstream, want)
		}
	}

	var conn net.Conn
	inNS(t, cns, func() {
		conn, err = net.DialTimeout("tcp4", upstream.String(), 2*time.Second)
	})
	if err != nil {
		t.Fatalf("tcp to %s: %v", upstream, err)
	}
	defer conn.Close()
	ac, err := tcp.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	if orig, err := OriginalDstTCP(ac); err != nil || orig != upstream {
		t.Errorf("OriginalDstTCP = %v, %v; want %s", orig, err, upstream)
	}

	// a tapped container's UDP queries skip the redirect, until it leaves the set
	if err := k.SetNamesTapped([]netip.Addr{client.Addr()}); err != nil {
		t.Fatal(err)
	}
	inNS(t, cns, func() { sendUDP(t, upstream) })
	if got := recvUDP(t, udp, 300*time.Millisecond); got.IsValid() {
		t.Errorf("datagram from tapped %s redirected", got)
	}
	if err := k.SetNamesTapped(nil); err != nil {
		t.Fatal(err)
	}
	inNS(t, cns, func() { sendUDP(t, upstream) })
	if got := recvUDP(t, udp, time.Second); !got.IsValid() {
		t.Error("datagram not redirected after its address left the tapped set")
	}

	redirect.Until = time.Now().Add(-time.Minute) // the lease ran out
	if err := k.SyncNamesRedirect(redirect); err != nil {
		t.Fatal(err)
	}
	inNS(t, cns, func() { sendUDP(t, upstream) })
	if got := recvUDP(t, udp, 300*time.Millisecond); got.IsValid() {
		t.Errorf("datagram from %s redirected after the lease ran out", got)
	}

	if err := k.RemoveNamesRedirect(); err != nil {
		t.Fatal(err)
	}
	if err := k.RemoveNamesRedirect(); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	if out := run(t, "iptables-save", "-t", "nat"); strings.Contains(out, chainNames) {
		t.Errorf("after remove, nat still mentions %s:\n%s", chainNames, out)
	}
	if _, err := k.nl.IpsetList(tappedSet); !isNoSet(err) {
		t.Errorf("after remove, ipset %s: %v; want it gone", tappedSet, err)
	}
}

// TestNamesRulesRefuse: bad input renders no rule.
func TestNamesRulesRefuse(t *testing.T) {
	for _, r := range []NamesRedirect{
		{UDPPort: 0, TCPPort: 1, Subnets: []netip.Prefix{netip.MustParsePrefix("198.19.0.0/24")}},
		{UDPPort: 1, TCPPort: 1, Subnets: []netip.Prefix{netip.MustParsePrefix("198.19.0.1/24")}},
		{UDPPort: 1, TCPPort: 1, Subnets: []netip.Prefix{netip.MustParsePrefix("fd00::/64")}},
		{UDPPort: 1, TCPPort: 1, Subnets: []netip.Prefix{{}}},
	} {
		if lines, err := namesRules(r); err == nil {
			t.Errorf("namesRules(%+v) = %q, want an error", r, lines)
		}
	}
}

func sendUDP(t *testing.T, to netip.AddrPort) netip.AddrPort {
	t.Helper()
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(to))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("query")); err != nil {
		t.Fatal(err)
	}
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

func recvUDP(t *testing.T, c *net.UDPConn, wait time.Duration) netip.AddrPort {
	t.Helper()
	buf := make([]byte, 64)
	_ = c.SetReadDeadline(time.Now().Add(wait))
	_, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
}

// TestNamesFlowsMatch: only DNS flows from the redirect's subnets that a
// redirect sent to a port other than the current resolver's are deleted;
// flows answered by port 53 itself (not redirected), other ports, other
// subnets and other protocols are left alone.
func TestNamesFlowsMatch(t *testing.T) {
	cur := NamesRedirect{UDPPort: 40001, TCPPort: 40002}
	f := namesFlows{subnets: []netip.Prefix{netip.MustParsePrefix("198.19.61.0/24")}, keep: cur}
	flow := func(proto uint8, src string, dport, replySport uint16) *netlink.ConntrackFlow {
		return &netlink.ConntrackFlow{
			Forward: netlink.IPTuple{Protocol: proto, SrcIP: net.ParseIP(src), DstPort: dport},
			Reverse: netlink.IPTuple{Protocol: proto, SrcPort: replySport},
		}
	}
	const udp, tcp, icmp = 17, 6, 1
	for _, c := range []struct {
		name string
		fl   *netlink.ConntrackFlow
		want bool
	}{
		{"udp to an old resolver port", flow(udp, "198.19.61.5", 53, 39000), true},
		{"tcp to an old resolver port", flow(tcp, "198.19.61.5", 53, 39001), true},
		{"udp to the current port", flow(udp, "198.19.61.5", 53, cur.UDPPort), false},
		{"tcp to the current port", flow(tcp, "198.19.61.5", 53, cur.TCPPort), false},
		{"not redirected", flow(udp, "198.19.61.5", 53, 53), false},
		{"not dns", flow(udp, "198.19.61.5", 123, 39000), false},
		{"another subnet", flow(udp, "198.19.62.5", 53, 39000), false},
		{"another protocol", flow(icmp, "198.19.61.5", 53, 39000), false},
	} {
		if got := f.MatchConntrackFlow(c.fl); got != c.want {
			t.Errorf("%s: match %v, want %v", c.name, got, c.want)
		}
	}
	all := namesFlows{subnets: f.subnets}
	if !all.MatchConntrackFlow(flow(udp, "198.19.61.5", 53, cur.UDPPort)) {
		t.Error("with no ports to keep (the redirect removed), a flow to the last port must match")
	}
}
