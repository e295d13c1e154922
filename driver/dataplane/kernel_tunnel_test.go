package dataplane

import (
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"grapevine/internal/testreq"
)

func tunnelSpec() TunnelSpec {
	return TunnelSpec{
		Name: TunnelName(), PrivateKey: Key{1, 2, 3}, ListenPort: 51999, MTU: 1440,
		Peers: []TunnelPeer{{PublicKey: Key{9}, Endpoint: netip.MustParseAddrPort("198.18.0.2:51820"), VTEP: netip.MustParseAddr("198.18.0.2")}},
	}
}

// rulesAt lists the IPv4 rules at prio in h's namespace.
func rulesAt(t *testing.T, h *netlink.Handle, prio int) []netlink.Rule {
	t.Helper()
	rules, err := h.RuleList(unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	var out []netlink.Rule
	for _, r := range rules {
		if r.Priority == prio {
			out = append(out, r)
		}
	}
	return out
}

// TestTunnelLifecycle: the tunnel link and its peer are made once (a repeat
// changes nothing) and repaired after the link is deleted; the policy
// routing of earlier versions (UDP rules at their priorities, their table's
// route) is removed, another rule at those priorities kept; DeleteTunnel
// removes the link, twice without error.
func TestTunnelLifecycle(t *testing.T) {
	tn, k := newKernelNS(t)
	run(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
	run(t, "ip", "addr", "add", "198.18.0.1/24", "dev", "eth0")
	run(t, "ip", "link", "set", "eth0", "up")
	for range 2 {
		if err := k.EnsureTunnel(tunnelSpec()); err != nil {
			t.Fatal(err)
		}
	}
	st, ok, err := k.TunnelStatus()
	if err != nil || !ok || len(st.Peers) != 1 || st.Peers[0].VTEP != netip.MustParseAddr("198.18.0.2") {
		t.Fatalf("TunnelStatus = %+v, %v, %v: want one peer at 198.18.0.2", st, ok, err)
	}
	t.Logf("tunnel mode %s", st.Mode)
	// what an earlier version left
	run(t, "ip", "route", "add", "default", "dev", TunnelName(), "table", strconv.Itoa(legacyTable))
	run(t, "ip", "rule", "add", "priority", "100", "ipproto", "udp", "dport", "4792", "lookup", strconv.Itoa(legacyTable))
	run(t, "ip", "rule", "add", "priority", "100", "ipproto", "udp", "sport", "4792", "lookup", strconv.Itoa(legacyTable))
	run(t, "ip", "rule", "add", "priority", "101", "ipproto", "udp", "dport", "4792", "blackhole")
	run(t, "ip", "rule", "add", "priority", "100", "to", "198.19.99.0/24", "lookup", "main") // not ours
	if err := k.EnsureTunnel(tunnelSpec()); err != nil {
		t.Fatal(err)
	}
	if r := rulesAt(t, tn.nl, legacyRulePriority); len(r) != 1 || r[0].IPProto != 0 {
		t.Errorf("rules at priority %d after EnsureTunnel: %v, want only the one not grapevine's", legacyRulePriority, r)
	}
	if r := rulesAt(t, tn.nl, legacyDropPriority); len(r) != 0 {
		t.Errorf("rules at priority %d after EnsureTunnel: %v, want none", legacyDropPriority, r)
	}
	if out, err := exec.Command("ip", "route", "show", "table", strconv.Itoa(legacyTable)).CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("table %d after EnsureTunnel: %v %s, want empty", legacyTable, err, out)
	}
	run(t, "ip", "link", "del", TunnelName())
	if err := k.EnsureTunnel(tunnelSpec()); err != nil {
		t.Fatalf("repair after the link was deleted: %v", err)
	}
	if _, err := k.linkByName(TunnelName()); err != nil {
		t.Fatalf("link after repair: %v", err)
	}
	for range 2 {
		if err := k.DeleteTunnel(TunnelName()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := k.linkByName(TunnelName()); err == nil {
		t.Errorf("link %s left after DeleteTunnel", TunnelName())
	}
}

// TestTunnelAddrRoutes: each peer address gets a /32 route into the tunnel
// link (a repeat changes nothing); an address dropped from the spec, or a
// /32 on the link the spec does not hold, loses its route, so the address
// falls back to the main table's other routes; a recreated link gets them
// back.
func TestTunnelAddrRoutes(t *testing.T) {
	_, k := newKernelNS(t)
	run(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
	run(t, "ip", "addr", "add", "198.18.0.1/24", "dev", "eth0")
	run(t, "ip", "link", "set", "eth0", "up")
	run(t, "ip", "link", "add", "br0", "type", "bridge")
	run(t, "ip", "addr", "add", "198.19.31.1/24", "dev", "br0")
	run(t, "ip", "link", "set", "br0", "up")
	spec := func(addrs ...string) TunnelSpec {
		s := tunnelSpec()
		for _, a := range addrs {
			s.Peers[0].Addrs = append(s.Peers[0].Addrs, netip.MustParseAddr(a))
		}
		return s
	}
	via := func(dst string) string {
		out, err := exec.Command("ip", "route", "get", dst).CombinedOutput()
		if err != nil {
			t.Fatalf("ip route get %s: %v %s", dst, err, out)
		}
		return string(out)
	}
	check := func(step string, into, not []string) {
		t.Helper()
		for _, a := range into {
			if out := via(a); !strings.Contains(out, "dev "+TunnelName()) {
				t.Errorf("%s: %s routed %s, want into %s", step, a, out, TunnelName())
			}
		}
		for _, a := range not {
			if out := via(a); !strings.Contains(out, "dev br0") {
				t.Errorf("%s: %s routed %s, want through br0", step, a, out)
			}
		}
	}
	for range 2 {
		if err := k.EnsureTunnel(spec("198.19.31.130", "198.19.31.131")); err != nil {
			t.Fatal(err)
		}
	}
	check("two addresses", []string{"198.19.31.130", "198.19.31.131"}, []string{"198.19.31.132"})
	run(t, "ip", "route", "add", "198.19.31.140/32", "dev", TunnelName())
	if err := k.EnsureTunnel(spec("198.19.31.131", "198.19.31.132")); err != nil {
		t.Fatal(err)
	}
	check("one replaced, a stray route", []string{"198.19.31.131", "198.19.31.132"}, []string{"198.19.31.130", "198.19.31.140"})
	run(t, "ip", "link", "del", TunnelName())
	check("link gone", nil, []string{"198.19.31.131", "198.19.31.132"})
	if err := k.EnsureTunnel(spec("198.19.31.131", "198.19.31.132")); err != nil {
		t.Fatal(err)
	}
	check("link recreated", []string{"198.19.31.131", "198.19.31.132"}, nil)
	if err := k.EnsureTunnel(spec()); err != nil {
		t.Fatal(err)
	}
	check("no addresses", nil, []string{"198.19.31.131", "198.19.31.132"})
}

// TestTunnelKernelMode: where the kernel has WireGuard, the tunnel uses it.
func TestTunnelKernelMode(t *testing.T) {
	tn, k := newKernelNS(t)
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "gvt-probe"
	if err := tn.nl.LinkAdd(&netlink.Wireguard{LinkAttrs: attrs}); err != nil {
		testreq.Missing(t, testreq.WireGuard, "creating a wireguard link: "+err.Error())
	}
	_ = tn.nl.LinkDel(&netlink.Wireguard{LinkAttrs: attrs})
	if err := k.EnsureTunnel(tunnelSpec()); err != nil {
		t.Fatal(err)
	}
	st, _, err := k.TunnelStatus()
	if err != nil || st.Mode != TunnelKernel || len(st.Peers) != 1 {
		t.Fatalf("TunnelStatus = %+v, %v: want kernel mode with one peer", st, err)
	}
}

// TestParseUAPIPeers reads wireguard-go's dump, and refuses a bad key.
func TestParseUAPIPeers(t *testing.T) {
	dump := "private_key=0101\nlisten_port=51820\npublic_key=" + strings.Repeat("02", 32) +
		"\nendpoint=198.18.0.2:51820\nlast_handshake_time_sec=100\nlast_handshake_time_nsec=5\nrx_bytes=7\ntx_bytes=9\nallowed_ip=198.18.0.2/32\n" +
		"public_key=" + strings.Repeat("03", 32) + "\nlast_handshake_time_sec=0\n"
	peers, err := parseUAPIPeers(dump)
	if err != nil || len(peers) != 2 {
		t.Fatalf("parse: %v, %d peers", err, len(peers))
	}
	p := peers[0]
	if p.PublicKey[0] != 2 || p.Endpoint.String() != "198.18.0.2:51820" || p.LastHandshakeTime.Unix() != 100 ||
		p.ReceiveBytes != 7 || p.TransmitBytes != 9 || len(p.AllowedIPs) != 1 {
		t.Errorf("first peer %+v", p)
	}
	if !peers[1].LastHandshakeTime.IsZero() {
		t.Errorf("second peer has a handshake: %v", peers[1].LastHandshakeTime)
	}
	if _, err := parseUAPIPeers("public_key=zz\n"); err == nil {
		t.Error("a bad key was accepted")
	}
}

// TestUAPIText renders a configuration in wireguard-go's protocol: device
// lines first, a removed peer, a set peer with its allowed IPs (its
// addresses, not its VTEP) replaced.
func TestUAPIText(t *testing.T) {
	cfg := wgtypes.Config{ReplacePeers: true}
	key := wgtypes.Key{1}
	port := 51820
	cfg.PrivateKey, cfg.ListenPort = &key, &port
	cfg.Peers = peerConfigs(
		[]TunnelPeer{{PublicKey: Key{7}, Endpoint: netip.MustParseAddrPort("198.18.0.7:51820"), VTEP: netip.MustParseAddr("198.18.0.7")}},
		[]TunnelPeer{{PublicKey: Key{2}, Endpoint: netip.MustParseAddrPort("198.18.0.2:51820"), VTEP: netip.MustParseAddr("198.18.0.2"),
			Addrs: []netip.Addr{netip.MustParseAddr("198.19.31.130"), netip.MustParseAddr("198.19.31.131")}}})
	want := "private_key=01" + strings.Repeat("00", 31) + "\nlisten_port=51820\nreplace_peers=true\n" +
		"public_key=07" + strings.Repeat("00", 31) + "\nremove=true\n" +
		"public_key=02" + strings.Repeat("00", 31) + "\nendpoint=198.18.0.2:51820\npersistent_keepalive_interval=25\nreplace_allowed_ips=true\nallowed_ip=198.19.31.130/32\nallowed_ip=198.19.31.131/32\n"
	if got := uapiText(cfg); got != want {
		t.Errorf("uapiText:\n%s\nwant:\n%s", got, want)
	}
}
