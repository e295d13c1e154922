package dataplane

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestUplinkNames(t *testing.T) {
	tests := []struct {
		bridge, host, inner, err string
	}{
		{bridge: "gvb-4252a05ea07", host: "gvu-4252a05ea07", inner: "gvi-4252a05ea07"},
		{bridge: "gvb-t", host: "gvu-t", inner: "gvi-t"},
		{bridge: "gv", err: "not one grapevine gives"},
		{bridge: "br0", err: "not one grapevine gives"},
		{bridge: "gvb-0123456789ab", err: "not one grapevine gives"},
		{bridge: "gvx-4252a05ea07", err: "not one grapevine gives"},
		{bridge: "gvbr0", err: "not one grapevine gives"},
	}
	for _, tc := range tests {
		host, inner, err := uplinkNames(tc.bridge)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("uplinkNames(%q) error %v, want one containing %q", tc.bridge, err, tc.err)
			}
			continue
		}
		if err != nil || host != tc.host || inner != tc.inner {
			t.Errorf("uplinkNames(%q) = %q, %q, %v; want %q, %q", tc.bridge, host, inner, err, tc.host, tc.inner)
		}
	}
}

// With isolated bridges, every rule names the uplink where the driver named
// the bridge; the caller's Firewall is left as it was.
func TestUplinkFirewall(t *testing.T) {
	fw := testFirewall()
	got, err := renderFirewall(uplinkFirewall(fw), nil)
	if err != nil {
		t.Fatal(err)
	}
	for table, rules := range got {
		for _, r := range rules {
			if strings.Contains(r, "gvb-") {
				t.Errorf("table %s: rule names a bridge: %s", table, r)
			}
		}
	}
	if !strings.Contains(strings.Join(got["filter"], "\n"), "-i gvu-a -o gvu-a") {
		t.Errorf("no intra-network accept on the uplink in:\n%s", strings.Join(got["filter"], "\n"))
	}
	if fw.Networks[0].Bridge != "gvb-b" || fw.Ports[0].Bridge != "gvb-a" {
		t.Errorf("uplinkFirewall changed its input: %+v", fw)
	}
}

// A grapevine that kept bridges in the host namespace left a bridge, a VXLAN
// device and a veth whose container end is in a container. Isolating and
// ensuring them again moves the bridge end over: the container keeps its
// link and still reaches the gateway, and nothing is left in the host
// namespace but the uplink and the container ends.
func TestIsolationTakesOverHostBridges(t *testing.T) {
	tn, k := newKernelNS(t)
	u := "u1"
	addIfb(t, tn.nl, u, 1500, "198.18.0.1/24")
	br := BridgeSpec{Name: "gvb-m", MTU: 1450, MAC: mustMAC(t, "02:47:00:00:00:09"), Address: mustPrefix("198.19.0.1/24")}
	vx := VXLANSpec{Name: "gvx-m", VNI: 43, Port: 4789, Local: mustAddr("198.18.0.1"), Underlay: u, MTU: 1450, Master: "gvb-m"}
	veth := VethSpec{HostName: "gve-m", ContainerName: "gvc-m", MTU: 1450, MAC: mustMAC(t, "02:42:c6:13:00:0d"), Master: "gvb-m"}
	ensure := func() {
		t.Helper()
		if err := k.EnsureBridge(br); err != nil {
			t.Fatal(err)
		}
		if err := k.EnsureVXLAN(vx); err != nil {
			t.Fatal(err)
		}
		if err := k.EnsureVeth(veth); err != nil {
			t.Fatal(err)
		}
	}
	ensure()
	_, cNS, cnl := otherNS(t)
	cEnd := tn.link("gvc-m")
	if err := tn.nl.LinkSetNsFd(cEnd, int(cNS)); err != nil {
		t.Fatal(err)
	}
	cEnd, err := cnl.LinkByName("gvc-m")
	if err != nil {
		t.Fatal(err)
	}
	addAddr(t, cnl, cEnd, "198.19.0.20/24")
	if err := cnl.LinkSetUp(cEnd); err != nil {
		t.Fatal(err)
	}
	seq := 0
	gw := mustAddr("198.19.0.1")
	eventually(t, 5*time.Second, func() string { seq++; return ping(t, cNS, gw, seq, 300*time.Millisecond) })

	isolate(t, k)
	ensure()
	for _, name := range []string{"gvb-m", "gvx-m", "gve-m"} {
		if _, err := tn.nl.LinkByName(name); err == nil {
			t.Errorf("%s still in the host namespace after isolation", name)
		}
	}
	if _, err := tn.nl.LinkByName("gvu-m"); err != nil {
		t.Errorf("no uplink in the host namespace: %v", err)
	}
	after, err := cnl.LinkByName("gvc-m")
	if err != nil || after.Attrs().Index != cEnd.Attrs().Index {
		t.Fatalf("container link after isolation: %v (index %d, was %d)", err, after.Attrs().Index, cEnd.Attrs().Index)
	}
	eventually(t, 5*time.Second, func() string { seq++; return ping(t, cNS, gw, seq, 300*time.Millisecond) })
	if err := k.DeleteLink("gvb-m"); err != nil {
		t.Fatal(err)
	}
	// the kernel dismantles a namespace asynchronously
	eventually(t, 5*time.Second, func() string {
		if _, err := cnl.LinkByName("gvc-m"); err == nil {
			return "container link survived its network's deletion"
		}
		return ""
	})
}

// TestBridgeProxyARP: a bridge spec with ProxyARP turns proxy ARP on,
// without delay, on the link holding the gateway: the bridge itself, or its
// uplink when networks are isolated; without it the link keeps the default.
func TestBridgeProxyARP(t *testing.T) {
	_, k := newKernelNS(t)
	read := func(link string) string {
		t.Helper()
		arp, err1 := os.ReadFile("/proc/sys/net/ipv4/conf/" + link + "/proxy_arp")
		delay, err2 := os.ReadFile("/proc/sys/net/ipv4/neigh/" + link + "/proxy_delay")
		if err1 != nil || err2 != nil {
			t.Fatalf("read %s: %v %v", link, err1, err2)
		}
		return strings.TrimSpace(string(arp)) + "/" + strings.TrimSpace(string(delay))
	}
	spec := func(name string, on bool) BridgeSpec {
		return BridgeSpec{Name: name, MTU: 1440, Address: mustPrefix("198.19.0.1/24"), ProxyARP: on}
	}
	for _, s := range []BridgeSpec{spec("gvb-p", true), spec("gvb-q", false)} {
		if err := k.EnsureBridge(s); err != nil {
			t.Fatal(err)
		}
	}
	if got := read("gvb-p"); got != "1/0" {
		t.Errorf("bridge with ProxyARP: proxy_arp/proxy_delay %s, want 1/0", got)
	}
	if got := read("gvb-q"); got == "1/0" {
		t.Errorf("bridge without ProxyARP: proxy_arp/proxy_delay %s", got)
	}
	isolate(t, k)
	if err := k.EnsureBridge(spec("gvb-r", true)); err != nil {
		t.Fatal(err)
	}
	if got := read("gvu-r"); got != "1/0" {
		t.Errorf("isolated bridge's uplink with ProxyARP: proxy_arp/proxy_delay %s, want 1/0", got)
	}
}
