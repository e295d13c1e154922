package driver

import (
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/docker/go-plugins-helpers/network"

	"grapevine/gossip"
)

// FuzzParseNetwork feeds CreateNetwork requests with arbitrary options,
// pools, gateways and aux addresses to the option parser: it never panics,
// and what it accepts is a valid network.
func FuzzParseNetwork(f *testing.F) {
	f.Add([]byte(`{"com.docker.network.generic":{"mode":"vxlan","vni":"42"}}`), "198.19.20.0/24", "198.19.20.1/24", "host-h1", "198.19.20.9")
	f.Add([]byte(`{"com.docker.network.generic":{"mode":"macvlan","parent":"eth0","host_access":"true"},"com.docker.network.internal":true}`), "198.18.0.0/24", "198.18.0.1", "host", "198.18.0.50")
	f.Add([]byte(`{"com.docker.network.generic":{"com.docker.network.driver.mtu":"1400"},"com.docker.network.enable_ipv6":"false"}`), "198.19.0.0/30", "198.19.0.2", "", "")
	f.Add([]byte(`{"com.docker.network.generic":{"vni":"-1","mode":7}}`), "198.19.0.0/31", "198.19.0.3", "x", "y")
	f.Add([]byte(`{"com.docker.network.generic":"x","com.docker.network.internal":"maybe"}`), "::/0", "", "", "")
	d := &Driver{spaces: testSpaces}
	f.Fuzz(func(t *testing.T, opts []byte, pool, gateway, auxName, auxAddr string) {
		var o map[string]any
		if json.Unmarshal(opts, &o) != nil {
			return
		}
		req := &network.CreateNetworkRequest{NetworkID: "n", Options: o, IPv4Data: []*network.IPAMData{{
			AddressSpace: testSpaces[0], Pool: pool, Gateway: gateway, AuxAddresses: map[string]any{auxName: auxAddr},
		}}}
		s, err := d.parseNetwork(req)
		if err != nil {
			return
		}
		switch {
		case s.mode == nil || s.mode.name() != modeVXLAN && s.mode.name() != modeMACVLAN:
			t.Fatalf("mode %v accepted", s.mode)
		case s.vni > maxVNI:
			t.Fatalf("vni %d accepted", s.vni)
		case !s.subnet.Addr().Is4() || s.subnet.Bits() > 30 || s.subnet != s.subnet.Masked():
			t.Fatalf("subnet %s accepted", s.subnet)
		case !s.subnet.Contains(s.gateway.Addr()) || s.gateway.Addr() == s.subnet.Addr() || s.gateway.Addr() == lastAddr(s.subnet):
			t.Fatalf("gateway %s of %s accepted", s.gateway, s.subnet)
		case s.mode.name() == modeVXLAN && (s.parentOpt != "" || s.hostAccess):
			t.Fatalf("macvlan options accepted in vxlan mode: %+v", s)
		}
		for _, a := range auxAddrs(s) {
			if !s.subnet.Contains(a) {
				t.Fatalf("aux %s outside %s kept", a, s.subnet)
			}
		}
	})
}

// FuzzEndpointRecord decodes arbitrary endpoint records: never a panic, and
// an accepted one is a unicast MAC at a host address of its subnet, owned
// by its writer.
func FuzzEndpointRecord(f *testing.F) {
	f.Add("198.19.20.0/24/198.19.20.10", "h1", []byte(`{"version":1,"mac":"02:42:c6:13:14:0a","node":"h1"}`))
	f.Add("198.19.20.0/24/198.19.20.11", "h1", []byte(`{"version":1,"mac":"00:00:00:00:00:00","node":"h1"}`))
	f.Add("198.19.20.0/24/198.19.20.255", "h1", []byte(`{"version":1,"mac":"02:42:c6:13:14:0b"}`))
	f.Add("198.19.20.0/24/198.19.20.12", "rogue", []byte(`{"version":1,"mac":"02:42:c6:13:14:0c","node":"h2"}`))
	f.Add("198.19.20.1/24/198.19.20.12", "h1", []byte(`{"mac":"01:00:5e:00:00:01"}`))
	f.Add("198.19.20.0/24/::1", "h1", []byte(`null`))
	f.Fuzz(func(t *testing.T, key, owner string, value []byte) {
		subnet, ip, ok := parseEndpointKey(key)
		if !ok {
			return
		}
		if !subnet.Contains(ip) || !ip.Is4() {
			t.Fatalf("key %q gave %s in %s", key, ip, subnet)
		}
		r := &gossip.Record{Kind: kindEndpoint, Key: key, Owner: owner, Value: value}
		ep, cause := decodeEndpoint(r, subnet, ip)
		if cause != "" {
			if ep != nil || causeText[cause] == "" {
				t.Fatalf("refusal %q with endpoint %+v", cause, ep)
			}
			return
		}
		switch {
		case !ep.mac.unicast():
			t.Fatalf("mac %s accepted", ep.mac)
		case ep.node != owner:
			t.Fatalf("endpoint of %q in a record written by %q", ep.node, owner)
		case ep.ip == subnet.Addr() || ep.ip == lastAddr(subnet):
			t.Fatalf("address %s of %s accepted", ep.ip, subnet)
		}
		if m, err := parseHWAddr(ep.mac.String()); err != nil || m != ep.mac {
			t.Fatalf("mac %s does not round-trip: %v", ep.mac, err)
		}
	})
}

// FuzzNetworkRecord decodes arbitrary network records: never a panic, and an
// accepted one is its writer's definition with a valid mode, VNI, MTU and
// addresses.
func FuzzNetworkRecord(f *testing.F) {
	f.Add("198.19.20.0/24/h1", "h1", []byte(`{"version":1,"mode":"vxlan","vni":9000000,"gateway":"198.19.20.1","mtu":1450}`))
	f.Add("198.18.0.0/24/h2", "h2", []byte(`{"version":1,"mode":"macvlan","gateway":"198.18.0.1","host_access":"198.18.0.101"}`))
	f.Add("198.19.20.0/24/h1", "rogue", []byte(`{"version":1,"mode":"vxlan","vni":5}`))
	f.Add("198.19.20.0/24/h1", "h1", []byte(`{"version":1,"mode":"vxlan","vni":0,"gateway":"10.0.0.1"}`))
	f.Fuzz(func(t *testing.T, key, owner string, value []byte) {
		r := &gossip.Record{Kind: kindNetwork, Key: key, Owner: owner, Value: value}
		subnet, node, def, ok := parseNetworkRecord(r)
		if !ok {
			return
		}
		inside := func(a netip.Addr) bool { return !a.IsValid() || subnet.Contains(a) }
		switch {
		case node != owner:
			t.Fatalf("definition of %q in a record written by %q", node, owner)
		case subnet != subnet.Masked() || !subnet.Addr().Is4():
			t.Fatalf("subnet %s accepted", subnet)
		case def.Mode == modeVXLAN && (def.VNI == 0 || def.VNI > maxVNI):
			t.Fatalf("vni %d accepted", def.VNI)
		case def.Mode != modeVXLAN && def.Mode != modeMACVLAN:
			t.Fatalf("mode %q accepted", def.Mode)
		case !inside(def.Gateway) || !inside(def.HostAccess):
			t.Fatalf("addresses outside %s accepted: %+v", subnet, def)
		}
	})
}
