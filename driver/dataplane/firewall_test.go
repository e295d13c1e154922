package dataplane

import (
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
)

const (
	netA = "aaaaaaaaaaaa1111111111111111111111111111111111111111111111111111"
	netB = "bbbbbbbbbbbb2222222222222222222222222222222222222222222222222222"
	epA1 = "a1a1a1a1a1a1ffffffffffffffffffffffffffffffffffffffffffffffffffff"
	epA2 = "a2a2a2a2a2a2ffffffffffffffffffffffffffffffffffffffffffffffffffff"
)

func testFirewall() Firewall {
	return Firewall{
		Networks: []NetworkRules{
			{NetworkID: netB, Bridge: "gvb-b", Subnet: mustPrefix("198.19.2.0/24"), Internal: true},
			{NetworkID: netA, Bridge: "gvb-a", Subnet: mustPrefix("198.19.1.0/24"), Masquerade: true},
		},
		Ports: []PortRule{
			{NetworkID: netA, EndpointID: epA2, Bridge: "gvb-a", Proto: UDP, HostIP: mustAddr("198.18.0.1"), HostPort: 5353, ContainerIP: mustAddr("198.19.1.6"), ContainerPort: 53},
			{NetworkID: netA, EndpointID: epA1, Bridge: "gvb-a", Proto: TCP, HostPort: 8080, ContainerIP: mustAddr("198.19.1.5"), ContainerPort: 80},
		},
	}
}

// wantFirewall is testFirewall as iptables-save prints it.
var wantFirewall = fwRules{
	"filter": {
		`-A GRAPEVINE-FORWARD -i gvb-a ! -o gvb-a -m comment --comment "grapevine:aaaaaaaaaaaa" -j GRAPEVINE-ISOLATION`,
		`-A GRAPEVINE-FORWARD -i gvb-b ! -o gvb-b -m comment --comment "grapevine:bbbbbbbbbbbb" -j GRAPEVINE-ISOLATION`,
		`-A GRAPEVINE-FORWARD ! -i gvb-a -o gvb-a -m comment --comment "grapevine:aaaaaaaaaaaa" -j GRAPEVINE-ISOLATION-IN`,
		`-A GRAPEVINE-FORWARD ! -i gvb-b -o gvb-b -m comment --comment "grapevine:bbbbbbbbbbbb" -j GRAPEVINE-ISOLATION-IN`,
		`-A GRAPEVINE-FORWARD -i gvb-a -o gvb-a -m comment --comment "grapevine:aaaaaaaaaaaa" -j ACCEPT`,
		`-A GRAPEVINE-FORWARD -i gvb-b -o gvb-b -m comment --comment "grapevine:bbbbbbbbbbbb" -j ACCEPT`,
		`-A GRAPEVINE-FORWARD -i gvb-a ! -o gvb-a -m comment --comment "grapevine:aaaaaaaaaaaa" -j ACCEPT`,
		`-A GRAPEVINE-FORWARD -o gvb-a -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment "grapevine:aaaaaaaaaaaa" -j ACCEPT`,
		`-A GRAPEVINE-FORWARD -d 198.19.1.5/32 -o gvb-a -p tcp -m tcp --dport 80 -m conntrack --ctstate DNAT --ctorigdstport 8080 -m comment --comment "grapevine:aaaaaaaaaaaa:a1a1a1a1a1a1" -j ACCEPT`,
		`-A GRAPEVINE-FORWARD -d 198.19.1.6/32 -o gvb-a -p udp -m udp --dport 53 -m conntrack --ctstate DNAT --ctorigdst 198.18.0.1 --ctorigdstport 5353 -m comment --comment "grapevine:aaaaaaaaaaaa:a2a2a2a2a2a2" -j ACCEPT`,
		`-A GRAPEVINE-FORWARD -o gvb-a -m comment --comment "grapevine:aaaaaaaaaaaa" -j DROP`,
		`-A GRAPEVINE-FORWARD -i gvb-b -m comment --comment "grapevine:bbbbbbbbbbbb" -j DROP`,
		`-A GRAPEVINE-FORWARD -o gvb-b -m comment --comment "grapevine:bbbbbbbbbbbb" -j DROP`,
		`-A GRAPEVINE-INPUT -i gvb-a -m conntrack ! --ctstate RELATED,ESTABLISHED -m comment --comment "grapevine:aaaaaaaaaaaa" -j DROP`,
		`-A GRAPEVINE-ISOLATION -o gvb-a -m comment --comment "grapevine:aaaaaaaaaaaa" -j DROP`,
		`-A GRAPEVINE-ISOLATION -o gvb-b -m comment --comment "grapevine:bbbbbbbbbbbb" -j DROP`,
	},
	"nat": {
		`-A GRAPEVINE-DNAT -p tcp -m tcp --dport 8080 -m comment --comment "grapevine:aaaaaaaaaaaa:a1a1a1a1a1a1" -j DNAT --to-destination 198.19.1.5:80`,
		`-A GRAPEVINE-DNAT -d 198.18.0.1/32 -p udp -m udp --dport 5353 -m comment --comment "grapevine:aaaaaaaaaaaa:a2a2a2a2a2a2" -j DNAT --to-destination 198.19.1.6:53`,
		`-A GRAPEVINE-POSTROUTING -s 198.19.1.0/24 ! -o gvb-a -m comment --comment "grapevine:aaaaaaaaaaaa" -j MASQUERADE`,
		`-A GRAPEVINE-POSTROUTING -s 198.19.1.0/24 -o gvb-a -m conntrack --ctstate DNAT -m comment --comment "grapevine:aaaaaaaaaaaa" -j MASQUERADE`,
		`-A GRAPEVINE-POSTROUTING -s 127.0.0.0/8 -o gvb-a -m comment --comment "grapevine:aaaaaaaaaaaa" -j MASQUERADE`,
	},
}

func TestRenderFirewall(t *testing.T) {
	got, err := renderFirewall(testFirewall(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"filter", "nat"} {
		if !slices.Equal(got[table], wantFirewall[table]) {
			t.Errorf("table %s:\n got %s\nwant %s", table, strings.Join(got[table], "\n     "), strings.Join(wantFirewall[table], "\n     "))
		}
	}
	// Input order does not matter.
	fw := testFirewall()
	slices.Reverse(fw.Networks)
	slices.Reverse(fw.Ports)
	again, err := renderFirewall(fw, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(again["filter"], got["filter"]) || !slices.Equal(again["nat"], got["nat"]) {
		t.Errorf("rendering depends on input order")
	}
	// Two host ports for one container port: one more FORWARD accept (each
	// for its own host port) and one more DNAT.
	fw = testFirewall()
	p := fw.Ports[1]
	p.HostPort = 8081
	fw.Ports = append(fw.Ports, p)
	dup, err := renderFirewall(fw, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(dup["filter"]) != len(got["filter"])+1 || len(dup["nat"]) != len(got["nat"])+1 {
		t.Errorf("duplicate container port: filter %d nat %d rules, want %d and %d",
			len(dup["filter"]), len(dup["nat"]), len(got["filter"])+1, len(got["nat"])+1)
	}
}

// TestRenderFirewallTunnel: an encrypted network (here one internal, one
// masquerading) forwards its own subnet between its bridge and the tunnel
// before any isolation or drop, both ways, and never masquerades it there.
func TestRenderFirewallTunnel(t *testing.T) {
	fw := testFirewall()
	fw.Networks[0].Tunnel = "gvt-wireguard"
	fw.Networks[1].Tunnel = "gvt-wireguard"
	got, err := renderFirewall(fw, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantFilter := []string{
		`-A GRAPEVINE-FORWARD -s 198.19.1.0/24 -d 198.19.1.0/24 -i gvb-a -o gvt-wireguard -m comment --comment "grapevine:aaaaaaaaaaaa" -j ACCEPT`,
		`-A GRAPEVINE-FORWARD -s 198.19.1.0/24 -d 198.19.1.0/24 -i gvt-wireguard -o gvb-a -m comment --comment "grapevine:aaaaaaaaaaaa" -j ACCEPT`,
		`-A GRAPEVINE-FORWARD -s 198.19.2.0/24 -d 198.19.2.0/24 -i gvb-b -o gvt-wireguard -m comment --comment "grapevine:bbbbbbbbbbbb" -j ACCEPT`,
		`-A GRAPEVINE-FORWARD -s 198.19.2.0/24 -d 198.19.2.0/24 -i gvt-wireguard -o gvb-b -m comment --comment "grapevine:bbbbbbbbbbbb" -j ACCEPT`,
	}
	if !slices.Equal(got["filter"], append(slices.Clone(wantFilter), wantFirewall["filter"]...)) {
		t.Errorf("filter:\n got %s", strings.Join(got["filter"], "\n     "))
	}
	wantNAT := []string{
		`-A GRAPEVINE-POSTROUTING -s 198.19.1.0/24 -d 198.19.1.0/24 -o gvt-wireguard -m comment --comment "grapevine:aaaaaaaaaaaa" -j RETURN`,
		`-A GRAPEVINE-POSTROUTING -s 198.19.2.0/24 -d 198.19.2.0/24 -o gvt-wireguard -m comment --comment "grapevine:bbbbbbbbbbbb" -j RETURN`,
	}
	nat := wantFirewall["nat"]
	if !slices.Equal(got["nat"], slices.Concat(nat[:2], wantNAT, nat[2:])) {
		t.Errorf("nat:\n got %s", strings.Join(got["nat"], "\n     "))
	}
}

func TestValidateFirewall(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Firewall)
		want   string
	}{
		{"bridge name with a space", func(f *Firewall) { f.Networks[0].Bridge = "gvb b" }, "bridge name"},
		{"bridge name too long", func(f *Firewall) { f.Networks[0].Bridge = "gvb-0123456789ab" }, "bridge name"},
		{"empty network id", func(f *Firewall) { f.Networks[0].NetworkID = "" }, "network id"},
		{"masquerade on internal", func(f *Firewall) { f.Networks[0].Masquerade = true }, "internal"},
		{"masquerade without subnet", func(f *Firewall) { f.Networks[1].Subnet = netip.Prefix{} }, "IPv4 subnet"},
		{"duplicate network", func(f *Firewall) { f.Networks = append(f.Networks, f.Networks[0]) }, "twice"},
		{"port on unknown network", func(f *Firewall) { f.Ports[0].NetworkID = "cccc" }, "not among"},
		{"port on internal network", func(f *Firewall) { f.Ports[0].NetworkID = netB; f.Ports[0].Bridge = "gvb-b" }, "internal"},
		{"port with other bridge", func(f *Firewall) { f.Ports[0].Bridge = "gvb-x" }, "differs"},
		{"port with bad proto", func(f *Firewall) { f.Ports[0].Proto = 1 }, "protocol"},
		{"zero host port", func(f *Firewall) { f.Ports[0].HostPort = 0 }, "non-zero"},
		{"ipv6 container", func(f *Firewall) { f.Ports[0].ContainerIP = mustAddr("fd00::1") }, "container address"},
		{"ipv6 host", func(f *Firewall) { f.Ports[0].HostIP = mustAddr("fd00::1") }, "host address"},
		{"endpoint id with quote", func(f *Firewall) { f.Ports[0].EndpointID = `a"b` }, "endpoint id"},
		{"shim name with a quote", func(f *Firewall) { f.Shims = []string{`gvh-"x`} }, "host interface"},
		{"tunnel name with a space", func(f *Firewall) { f.Networks[1].Tunnel = "gvt wg" }, "tunnel"},
		{"tunnel without subnet", func(f *Firewall) { f.Networks[0].Tunnel = "gvt-wireguard"; f.Networks[0].Subnet = netip.Prefix{} }, "tunnel"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fw := testFirewall()
			tc.mutate(&fw)
			_, err := renderFirewall(fw, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("renderFirewall: %v, want error containing %q", err, tc.want)
			}
		})
	}
	if _, err := renderFirewall(Firewall{}, nil); err != nil {
		t.Errorf("empty firewall: %v", err)
	}
}

func TestSplitRule(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{`-m comment --comment "grapevine:abc" -j X`, []string{"-m", "comment", "--comment", "grapevine:abc", "-j", "X"}},
		{`--comment "a b \"c\"" -j X`, []string{"--comment", `a b "c"`, "-j", "X"}},
		{`  -i  eth0 ! -o eth0 `, []string{"-i", "eth0", "!", "-o", "eth0"}},
		{`--comment ""`, []string{"--comment", ""}},
	}
	for _, tc := range tests {
		if got := splitRule(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("splitRule(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestDNATConflicts(t *testing.T) {
	rule := splitRule
	any4 := netip.IPv4Unspecified()
	h1, h2 := mustAddr("198.18.0.1"), mustAddr("198.18.0.2")
	tests := []struct {
		rule   string
		proto  Proto
		hostIP netip.Addr
		port   uint16
		want   bool
	}{
		{`! -i docker0 -p tcp -m tcp --dport 9090 -j DNAT --to-destination 198.19.9.2:80`, TCP, any4, 9090, true},
		{`! -i docker0 -p tcp -m tcp --dport 9090 -j DNAT --to-destination 198.19.9.2:80`, TCP, h1, 9090, true},
		{`! -i docker0 -p tcp -m tcp --dport 9090 -j DNAT --to-destination 198.19.9.2:80`, UDP, any4, 9090, false},
		{`! -i docker0 -p tcp -m tcp --dport 9090 -j DNAT --to-destination 198.19.9.2:80`, TCP, any4, 9091, false},
		{`-d 198.18.0.1/32 ! -i docker0 -p udp -m udp --dport 53 -j DNAT --to-destination 198.19.9.2:53`, UDP, h1, 53, true},
		{`-d 198.18.0.1/32 ! -i docker0 -p udp -m udp --dport 53 -j DNAT --to-destination 198.19.9.2:53`, UDP, h2, 53, false},
		{`-d 198.18.0.1/32 ! -i docker0 -p udp -m udp --dport 53 -j DNAT --to-destination 198.19.9.2:53`, UDP, any4, 53, true},
		{`-p tcp -m tcp --dport 8000:8010 -j DNAT --to-destination 198.19.9.2`, TCP, any4, 8005, true},
		{`-p tcp -m tcp --dport 8000:8010 -j DNAT --to-destination 198.19.9.2`, TCP, any4, 8011, false},
		{`-i docker0 -j RETURN`, TCP, any4, 9090, false},
		{`-p tcp -m tcp ! --dport 9090 -j DNAT --to-destination 198.19.9.2:80`, TCP, any4, 9090, false},
	}
	for _, tc := range tests {
		if got := dnatConflicts(rule(tc.rule), tc.proto, tc.hostIP, tc.port); got != tc.want {
			t.Errorf("dnatConflicts(%q, %s, %s, %d) = %t, want %t", tc.rule, tc.proto, tc.hostIP, tc.port, got, tc.want)
		}
	}
}

// saveTable returns iptables-save output for table in the current namespace.
func saveTable(t *testing.T, table string) string {
	t.Helper()
	return run(t, "iptables-save", "-t", table)
}

// ruleLines returns the "-A …" lines of the given chains, in order.
func ruleLines(text string, chains ...string) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		for _, c := range chains {
			if strings.HasPrefix(l, "-A "+c+" ") {
				out = append(out, l)
			}
		}
	}
	return out
}

func checkFirewall(t *testing.T, want fwRules) {
	t.Helper()
	filter, nat := saveTable(t, "filter"), saveTable(t, "nat")
	if got := ruleLines(filter, chainForward, chainInput, chainIsolation, chainIsolationIn); !slices.Equal(got, want["filter"]) {
		t.Errorf("filter chains:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want["filter"], "\n     "))
	}
	if got := ruleLines(nat, chainDNAT, chainPostrouting); !slices.Equal(got, want["nat"]) {
		t.Errorf("nat chains:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want["nat"], "\n     "))
	}
	jumps := map[string][]string{
		"INPUT":       ruleLines(filter, "INPUT"),
		"FORWARD":     ruleLines(filter, "FORWARD"),
		"PREROUTING":  ruleLines(nat, "PREROUTING"),
		"OUTPUT":      ruleLines(nat, "OUTPUT"),
		"POSTROUTING": ruleLines(nat, "POSTROUTING"),
	}
	for _, j := range fwJumps {
		if j.table == "raw" {
			continue // the VXLAN filter's jump: TestVXLANIngressFilter
		}
		line := "-A " + j.chain + " " + j.rule
		if n := strings.Count(strings.Join(jumps[j.chain], "\n"), line); n != 1 {
			t.Errorf("jump %q present %d times in %s: %q", line, n, j.chain, jumps[j.chain])
		}
	}
}

func TestSyncFirewall(t *testing.T) {
	_, k := newKernelNS(t)
	// Foreign rules that must survive untouched.
	run(t, "iptables", "-A", "FORWARD", "-i", "eth-x", "-j", "ACCEPT")
	run(t, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "198.18.50.0/24", "-j", "MASQUERADE")

	fw := testFirewall()
	if err := k.SyncFirewall(fw); err != nil {
		t.Fatalf("SyncFirewall: %v", err)
	}
	checkFirewall(t, wantFirewall)
	if first := ruleLines(saveTable(t, "filter"), "FORWARD"); len(first) == 0 || !strings.HasSuffix(first[0], "-j "+chainForward) {
		t.Errorf("FORWARD does not start with the jump to %s: %q", chainForward, first)
	}
	if fwd, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); err != nil || strings.TrimSpace(string(fwd)) != "1" {
		t.Errorf("ip_forward = %q (%v), want 1", fwd, err)
	}

	// A second sync with the same input writes nothing.
	writes := k.restores
	if err := k.SyncFirewall(fw); err != nil {
		t.Fatalf("second SyncFirewall: %v", err)
	}
	if k.restores != writes {
		t.Errorf("second sync ran iptables-restore %d more times, want 0", k.restores-writes)
	}

	// Docker re-inserts its own jump in front of ours: fine, no rewrite.
	run(t, "iptables", "-N", "DOCKER-USER")
	run(t, "iptables", "-I", "FORWARD", "1", "-j", "DOCKER-USER")
	if err := k.SyncFirewall(fw); err != nil {
		t.Fatal(err)
	}
	if k.restores != writes {
		t.Errorf("a foreign jump in front of ours caused a rewrite")
	}

	// Drift: a rule and a jump removed by hand are restored, a jump added twice
	// is deduplicated.
	run(t, "iptables", "-D", chainForward, "3")
	run(t, "iptables", "-A", "FORWARD", "-m", "comment", "--comment", jumpComment, "-j", chainForward)
	run(t, "iptables", "-t", "nat", "-D", "POSTROUTING", "-m", "comment", "--comment", jumpComment, "-j", chainPostrouting)
	if err := k.SyncFirewall(fw); err != nil {
		t.Fatal(err)
	}
	checkFirewall(t, wantFirewall)

	// A removed network leaves no rule behind.
	fw.Networks = fw.Networks[1:] // drop netB (sorted first in testFirewall)
	if err := k.SyncFirewall(fw); err != nil {
		t.Fatal(err)
	}
	wantA := fwRules{}
	for table, lines := range wantFirewall {
		for _, l := range lines {
			if !strings.Contains(l, "grapevine:bbbbbbbbbbbb") {
				wantA[table] = append(wantA[table], l)
			}
		}
	}
	checkFirewall(t, wantA)

	// Nothing for grapevine at all: chains stay, empty.
	if err := k.SyncFirewall(Firewall{}); err != nil {
		t.Fatal(err)
	}
	checkFirewall(t, fwRules{})

	for i := range 2 {
		if err := k.RemoveFirewall(); err != nil {
			t.Fatalf("RemoveFirewall #%d: %v", i+1, err)
		}
	}
	for _, table := range []string{"filter", "nat"} {
		if text := saveTable(t, table); strings.Contains(text, "GRAPEVINE") || strings.Contains(text, `"grapevine`) {
			t.Errorf("after RemoveFirewall table %s still has grapevine rules:\n%s", table, text)
		}
	}
	if !strings.Contains(saveTable(t, "filter"), "-A FORWARD -i eth-x -j ACCEPT") ||
		!strings.Contains(saveTable(t, "nat"), "-A POSTROUTING -s 198.18.50.0/24 -j MASQUERADE") {
		t.Errorf("foreign rules were removed")
	}

	// Sync works again after removal.
	if err := k.SyncFirewall(testFirewall()); err != nil {
		t.Fatal(err)
	}
	checkFirewall(t, wantFirewall)
}

func TestSyncFirewallInternalOnlyLeavesForwardingOff(t *testing.T) {
	_, k := newKernelNS(t)
	// a new namespace may inherit the host's ip_forward (a running dockerd
	// turns it on): start this one from off
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("0\n"), 0o644); err != nil {
		t.Fatalf("turn ip_forward off in the test namespace: %v", err)
	}
	fw := testFirewall()
	fw.Networks, fw.Ports = fw.Networks[:1], nil // netB, internal
	if err := k.SyncFirewall(fw); err != nil {
		t.Fatal(err)
	}
	if fwd, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); err != nil || strings.TrimSpace(string(fwd)) != "0" {
		t.Errorf("ip_forward = %q (%v); an internal-only firewall must not turn it on", fwd, err)
	}
}

func TestPortInUse(t *testing.T) {
	tn, k := newKernelNS(t)
	addIfb(t, tn.nl, "u0", 1500, "198.18.0.1/24", "198.18.0.2/24")

	tl, err := net.Listen("tcp4", "198.18.0.1:8081")
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	ul, err := net.ListenPacket("udp4", "0.0.0.0:5300")
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	// Docker's own published ports, one on every address, one on 198.18.0.1.
	run(t, "iptables", "-t", "nat", "-N", "DOCKER")
	run(t, "iptables", "-t", "nat", "-A", "DOCKER", "-i", "docker0", "-j", "RETURN")
	run(t, "iptables", "-t", "nat", "-A", "DOCKER", "!", "-i", "docker0", "-p", "tcp", "-m", "tcp", "--dport", "9090", "-j", "DNAT", "--to-destination", "198.19.9.2:80")
	run(t, "iptables", "-t", "nat", "-A", "DOCKER", "-d", "198.18.0.1/32", "!", "-i", "docker0", "-p", "tcp", "-m", "tcp", "--dport", "9091", "-j", "DNAT", "--to-destination", "198.19.9.3:80")
	// grapevine's own published port is not counted.
	if err := k.SyncFirewall(testFirewall()); err != nil {
		t.Fatal(err)
	}

	h1, h2 := mustAddr("198.18.0.1"), mustAddr("198.18.0.2")
	tests := []struct {
		proto  Proto
		hostIP netip.Addr
		port   uint16
		want   bool
		holder string
	}{
		{TCP, netip.Addr{}, 8081, true, "socket"},
		{TCP, h1, 8081, true, "socket"},
		{TCP, h2, 8081, false, ""},
		{UDP, netip.Addr{}, 8081, false, ""},
		{UDP, h2, 5300, true, "socket"},
		{TCP, netip.Addr{}, 9090, true, "docker"},
		{TCP, h2, 9090, true, "docker"},
		{UDP, netip.Addr{}, 9090, false, ""},
		{TCP, h1, 9091, true, "docker"},
		{TCP, h2, 9091, false, ""},
		{TCP, netip.Addr{}, 9091, true, "docker"},
		{TCP, netip.Addr{}, 8080, false, ""}, // grapevine's own DNAT
		{SCTP, netip.Addr{}, 8080, false, ""},
	}
	for _, tc := range tests {
		got, why, err := k.PortInUse(tc.proto, tc.hostIP, tc.port)
		if err != nil {
			t.Errorf("PortInUse(%s, %v, %d): %v", tc.proto, tc.hostIP, tc.port, err)
			continue
		}
		if got != tc.want || !strings.Contains(why, tc.holder) {
			t.Errorf("PortInUse(%s, %v, %d) = %t %q, want %t naming %q", tc.proto, tc.hostIP, tc.port, got, why, tc.want, tc.holder)
		}
	}
	if _, _, err := k.PortInUse(TCP, mustAddr("198.18.9.9"), 80); err == nil || !strings.Contains(err.Error(), "not an address of this host") {
		t.Errorf("PortInUse on a foreign address: %v, want an error", err)
	}
	if _, _, err := k.PortInUse(TCP, mustAddr("fd00::1"), 80); err == nil {
		t.Errorf("PortInUse on an IPv6 address succeeded")
	}
}
