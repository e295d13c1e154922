package driver

import (
	"maps"
	"net/netip"
	"testing"

	"github.com/docker/go-plugins-helpers/network"

	"grapevine/driver/dataplane"
	"grapevine/gossip"
)

// testTunnel is a host able to carry encrypted networks.
func testTunnel() TunnelConfig {
	return TunnelConfig{PrivateKey: dataplane.Key{1}, Port: 51820, GossipKeyed: true}
}

// withTunnel restarts e's driver with tc as its tunnel configuration.
func (e *env) withTunnel(tc TunnelConfig) {
	e.t.Helper()
	e.tunnel = tc
	e.restart(e.fake)
}

func encReq(seed, subnet string, opts map[string]string) netReq {
	o := map[string]string{userEncrypted: "true"}
	maps.Copy(o, opts)
	return netReq{id: id(seed), subnet: subnet, opts: o}
}

// TestEncryptedRefusals: the option is refused without GOSSIP_KEY, without a
// key, on macvlan and with a non-boolean value, each naming the cause.
func TestEncryptedRefusals(t *testing.T) {
	e := newEnv(t)
	noGossipKey := testTunnel()
	noGossipKey.GossipKeyed = false
	cases := []struct {
		name string
		tc   TunnelConfig
		opts map[string]string
		want string
	}{
		{"no gossip key", noGossipKey, nil, "needs GOSSIP_KEY"},
		{"no wireguard key", TunnelConfig{GossipKeyed: true}, nil, "no WireGuard key"},
		{"macvlan", testTunnel(), map[string]string{userMode: modeMACVLAN}, "only allowed with -o mode=vxlan"},
		{"not a boolean", testTunnel(), map[string]string{userEncrypted: "yes please"}, "is not a boolean"},
		{"mode=encrypted", testTunnel(), map[string]string{userMode: modeEncrypted}, "-o encrypted=true"},
		{"mtu above the underlay's less both headers", testTunnel(), map[string]string{optMTU: "1441"}, "from 68 to 1440"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e.withTunnel(tc.tc)
			err := e.d.CreateNetwork(e.createReq(encReq("n-"+tc.name, "198.19.30.0/24", tc.opts)))
			wantErr(t, err, tc.want)
			if e.fake.Tunnel() != nil {
				t.Errorf("a refused network left a tunnel")
			}
		})
	}
}

// TestEncryptedNetworkLinks: an encrypted network is a bridge answering ARP
// for routed addresses (proxy ARP), with the WireGuard overhead in its MTU,
// and no VXLAN device; its firewall forwards between the bridge and the
// tunnel; the tunnel exists while the network does.
func TestEncryptedNetworkLinks(t *testing.T) {
	e := newEnv(t)
	e.withTunnel(testTunnel())
	nid := id("enc")
	e.mustCreateNetwork(encReq("enc", "198.19.30.0/24", nil))
	if l, ok := e.fake.Link(vxlanName(nid)); ok {
		t.Fatalf("an encrypted network has a VXLAN device: %+v", l.VXLAN)
	}
	br, ok := e.fake.Link(bridgeName(nid))
	if !ok || !br.Bridge.ProxyARP || br.Bridge.MTU != 1500-60 {
		t.Fatalf("bridge %+v (found %v): want proxy ARP on, mtu 1440", br.Bridge, ok)
	}
	if fw := e.fake.Firewall().Networks; len(fw) != 1 || fw[0].Tunnel != tunnelName {
		t.Errorf("firewall networks %+v: want one, forwarding to %s", fw, tunnelName)
	}
	tn := e.fake.Tunnel()
	if tn == nil || tn.MTU != 1440 || tn.ListenPort != 51820 || tn.Name != tunnelName {
		t.Fatalf("tunnel %+v: want %s, mtu 1440, port 51820", tn, tunnelName)
	}
	if err := e.d.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.fake.Link(tunnelName); !ok {
		t.Fatalf("reconcile removed the tunnel link as an orphan")
	}
	if err := e.d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: nid}); err != nil {
		t.Fatal(err)
	}
	if tn := e.fake.Tunnel(); tn != nil {
		t.Errorf("tunnel %+v left after the last encrypted network was deleted", tn)
	}
}

// TestEncryptedPeers: a remote endpoint on an encrypted network is one of
// its host's tunnel addresses (no forwarding entry), until it is withdrawn;
// a member without a WireGuard key gets no address and is no tunnel peer; a
// member repeating another's key is no tunnel peer either.
func TestEncryptedPeers(t *testing.T) {
	e, c := newClusterEnv(t, "h1", "198.18.0.1")
	e.withTunnel(testTunnel())
	const subnet = "198.19.31.0/24"
	key2 := gossip.TunnelKey{2}
	for _, m := range []struct {
		name, vtep string
		key        gossip.TunnelKey
	}{{"h2", "198.18.0.2", key2}, {"h3", "198.18.0.3", gossip.TunnelKey{}}, {"h4", "198.18.0.4", key2}} {
		c.PutMember(gossip.Member{Name: m.name, State: gossip.StateAlive,
			Addr: netip.AddrPortFrom(netip.MustParseAddr(m.vtep), 7946),
			Meta: gossip.NodeMeta{Version: 1, VTEP: netip.MustParseAddr(m.vtep), VXLANPort: 4789, TunnelKey: m.key, TunnelPort: tunnelPortOf(m.key)}})
	}
	nid := id("encp")
	e.mustCreateNetwork(encReq("encp", subnet, nil))
	remoteEndpoint(t, c, "h2", subnet, "198.19.31.130", "02:42:c6:13:1f:82")
	remoteEndpoint(t, c, "h3", subnet, "198.19.31.131", "02:42:c6:13:1f:83")
	if err := e.d.ReconcilePeers(); err != nil {
		t.Fatal(err)
	}
	if fdb := e.fake.FDB(vxlanName(nid)); len(fdb) != 0 {
		t.Errorf("fdb %v: an encrypted network has no forwarding entries", fdb)
	}
	tn := e.fake.Tunnel()
	if tn == nil || len(tn.Peers) != 1 || tn.Peers[0].VTEP != netip.MustParseAddr("198.18.0.2") ||
		tn.Peers[0].Endpoint != netip.MustParseAddrPort("198.18.0.2:51820") || tn.Peers[0].PublicKey != dataplane.Key(key2) {
		t.Fatalf("tunnel peers %+v: want only h2 at 198.18.0.2:51820 (h3 has no key, h4 repeats h2's)", tn)
	}
	if a := tn.Peers[0].Addrs; len(a) != 1 || a[0] != netip.MustParseAddr("198.19.31.130") {
		t.Errorf("h2's tunnel addresses %v: want its endpoint 198.19.31.130 only", a)
	}
	c.RemoteDelete("h2", kindEndpoint, endpointKey(netip.MustParsePrefix(subnet), netip.MustParseAddr("198.19.31.130")))
	if err := e.d.ReconcilePeers(); err != nil {
		t.Fatal(err)
	}
	if tn := e.fake.Tunnel(); tn == nil || len(tn.Peers) != 1 || len(tn.Peers[0].Addrs) != 0 {
		t.Errorf("tunnel %+v: want h2 a peer without addresses once its endpoint is withdrawn", tn)
	}
}

func tunnelPortOf(k gossip.TunnelKey) int {
	if k.IsZero() {
		return 0
	}
	return 51820
}

// TestEncryptedMismatch: a subnet another host defines in clear is refused
// as encrypted here, and the reverse, naming the host.
func TestEncryptedMismatch(t *testing.T) {
	e, c := newClusterEnv(t, "h1", "198.18.0.1")
	e.withTunnel(testTunnel())
	remoteNetwork(t, c, "h2", "198.19.32.0/24", networkDef{Version: 1, Mode: modeVXLAN, VNI: 9000, Gateway: netip.MustParseAddr("198.19.32.1")})
	remoteNetwork(t, c, "h3", "198.19.33.0/24", networkDef{Version: 1, Mode: modeEncrypted, VNI: 9001, Gateway: netip.MustParseAddr("198.19.33.1")})
	err := e.d.CreateNetwork(e.createReq(encReq("m1", "198.19.32.0/24", nil)))
	wantErr(t, err, "defined on host h2 as mode=vxlan")
	err = e.d.CreateNetwork(e.createReq(netReq{id: id("m2"), subnet: "198.19.33.0/24"}))
	wantErr(t, err, "host h3 as mode=encrypted vni=9001; use -o encrypted=true")
	e.mustCreateNetwork(encReq("m3", "198.19.33.0/24", nil))
}
