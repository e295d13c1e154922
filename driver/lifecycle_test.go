package driver

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"testing"

	"github.com/docker/go-plugins-helpers/network"

	"grapevine/driver/dataplane"
)

// TestLifecycle follows `docker run --network N -p 8080:80 -p 53/udp` and its
// teardown, repeating every call once, and checks the Fake is empty at the end.
func TestLifecycle(t *testing.T) {
	e := newEnv(t)
	nid, eid := id("net"), id("ep")
	e.mustCreateNetwork(netReq{id: nid, subnet: "198.19.1.0/24"})

	for range 2 {
		resp := e.mustCreateEndpoint(nid, eid, "198.19.1.2/24", "")
		if resp.Interface == nil || resp.Interface.MacAddress != "02:42:c6:13:01:02" || resp.Interface.Address != "" {
			t.Fatalf("CreateEndpoint response %+v: want only the generated MAC", resp.Interface)
		}
	}
	// Docker-supplied MAC is not echoed back.
	eid2 := id("ep2")
	if resp := e.mustCreateEndpoint(nid, eid2, "198.19.1.3/24", "02:00:00:00:00:99"); resp.Interface != nil {
		t.Fatalf("echoed a Docker-supplied field: %+v", resp.Interface)
	}

	for range 2 {
		j := e.mustJoin(nid, eid)
		if j.InterfaceName.SrcName != contVeth(eid) || j.InterfaceName.DstPrefix != "eth" || j.Gateway != "198.19.1.1" {
			t.Fatalf("Join response %+v", j)
		}
	}
	host, ok := e.fake.Link(hostVeth(eid))
	if !ok {
		t.Fatal("host end missing after Join")
	}
	wantVeth := dataplane.VethSpec{HostName: hostVeth(eid), ContainerName: contVeth(eid), MTU: 1450,
		Master: bridgeName(nid), Hairpin: true}
	gotVeth := host.Veth
	gotVeth.MAC = nil
	if !reflect.DeepEqual(gotVeth, wantVeth) || host.Veth.MAC.String() != "02:42:c6:13:01:02" {
		t.Fatalf("veth %+v, want %+v with MAC 02:42:c6:13:01:02", host.Veth, wantVeth)
	}
	e.fake.MoveOut(contVeth(eid)) // Docker moves it into the container

	for range 2 {
		if err := e.program(nid, eid, pb{Proto: 6, Port: 80, HostPort: 8080}, pb{Proto: 17, Port: 53}); err != nil {
			t.Fatal(err)
		}
	}
	fw := e.fake.Firewall()
	if got := hostPorts(fw); !slices.Equal(got, []uint16{8080, ephemeralFirst}) {
		t.Fatalf("host ports %v", got)
	}
	for _, p := range fw.Ports {
		if p.ContainerIP != netip.MustParseAddr("198.19.1.2") || p.Bridge != bridgeName(nid) || p.EndpointID != eid || p.HostIP.IsValid() {
			t.Fatalf("port rule %+v", p)
		}
	}

	info, err := e.d.EndpointInfo(&network.InfoRequest{NetworkID: nid, EndpointID: eid})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(info)
	var decoded struct {
		PortMap []dockerPortBinding `json:"com.docker.network.portmap"`
		MAC     string              `json:"com.docker.network.endpoint.macaddress"`
	}
	if err := json.Unmarshal(data, &decoded); err != nil {
		t.Fatal(err)
	}
	wantPM := []dockerPortBinding{
		{Proto: 6, IP: "198.19.1.2", Port: 80, HostPort: 8080, HostPortEnd: 8080},
		{Proto: 17, IP: "198.19.1.2", Port: 53, HostPort: ephemeralFirst, HostPortEnd: ephemeralFirst},
	}
	if !slices.Equal(decoded.PortMap, wantPM) || decoded.MAC != "02:42:c6:13:01:02" {
		t.Fatalf("EndpointInfo %s", data)
	}

	for range 2 {
		if err := e.d.RevokeExternalConnectivity(&network.RevokeExternalConnectivityRequest{NetworkID: nid, EndpointID: eid}); err != nil {
			t.Fatal(err)
		}
	}
	if len(e.fake.Firewall().Ports) != 0 {
		t.Fatal("ports left after revoke")
	}
	for range 2 {
		if err := e.d.Leave(&network.LeaveRequest{NetworkID: nid, EndpointID: eid}); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := e.fake.Link(hostVeth(eid)); ok {
		t.Fatal("host end left after Leave")
	}
	for range 2 {
		for _, ep := range []string{eid, eid2} {
			if err := e.d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: nid, EndpointID: ep}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if st := e.d.Status(); st[0].Endpoints != 0 {
		t.Fatalf("status after DeleteEndpoint %+v", st)
	}
	for range 2 {
		if err := e.d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: nid}); err != nil {
			t.Fatal(err)
		}
	}
	if links := e.fake.LinkNames(); len(links) != 0 {
		t.Fatalf("links left: %v", links)
	}
	if fw := e.fake.Firewall(); len(fw.Networks) != 0 || len(fw.Ports) != 0 {
		t.Fatalf("firewall left: %+v", fw)
	}
	e.restart(e.fake)
	if len(e.d.Status()) != 0 {
		t.Fatal("deleted network came back after restart")
	}
}

func TestInternalNetworkJoin(t *testing.T) {
	e := newEnv(t)
	nid, eid := id("n"), id("e")
	e.mustCreateNetwork(netReq{id: nid, subnet: "198.19.1.0/24", internal: true})
	e.mustCreateEndpoint(nid, eid, "198.19.1.2/24", "")
	if j := e.mustJoin(nid, eid); j.Gateway != "" {
		t.Fatalf("internal network returned gateway %q", j.Gateway)
	}
	if err := e.program(nid, eid, pb{Proto: 6, Port: 80, HostPort: 8080}); err != nil {
		t.Fatal(err)
	}
	if len(e.fake.Firewall().Ports) != 0 {
		t.Fatal("internal network got published ports")
	}
}

func TestDeleteNetworkWithEndpoints(t *testing.T) {
	e := newEnv(t)
	nid := id("n")
	e.mustCreateNetwork(netReq{id: nid, subnet: "198.19.1.0/24"})
	for i := range 3 {
		ep := id(fmt.Sprint("e", i))
		e.mustCreateEndpoint(nid, ep, fmt.Sprintf("198.19.1.%d/24", i+2), "")
		e.mustJoin(nid, ep)
		if err := e.program(nid, ep, pb{Proto: 6, Port: 80}); err != nil {
			t.Fatal(err)
		}
	}
	if len(e.fake.Firewall().Ports) != 3 {
		t.Fatal("expected 3 port rules")
	}
	if err := e.d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: nid}); err != nil {
		t.Fatal(err)
	}
	if links := e.fake.LinkNames(); len(links) != 0 {
		t.Fatalf("links left: %v", links)
	}
	if fw := e.fake.Firewall(); len(fw.Networks)+len(fw.Ports) != 0 {
		t.Fatalf("firewall left: %+v", fw)
	}
	e.restart(e.fake)
	if len(e.d.endpoints) != 0 {
		t.Fatal("endpoint records survived their network")
	}
}

func TestEndpointErrors(t *testing.T) {
	e := newEnv(t)
	nid := id("n")
	e.mustCreateNetwork(netReq{id: nid, subnet: "198.19.1.0/24"})
	e.mustCreateEndpoint(nid, id("taken"), "198.19.1.9/24", "")
	cases := []struct {
		name string
		req  *network.CreateEndpointRequest
		want string
	}{
		{"nil interface", &network.CreateEndpointRequest{NetworkID: nid, EndpointID: id("x")}, "no IPv4 address"},
		{"ipv6", &network.CreateEndpointRequest{NetworkID: nid, EndpointID: id("x"),
			Interface: &network.EndpointInterface{Address: "198.19.1.2/24", AddressIPv6: "fd00::2/64"}}, "IPv6 is not supported"},
		{"bad address", &network.CreateEndpointRequest{NetworkID: nid, EndpointID: id("x"),
			Interface: &network.EndpointInterface{Address: "nonsense"}}, `endpoint address "nonsense" is not an IPv4 address`},
		{"outside subnet", &network.CreateEndpointRequest{NetworkID: nid, EndpointID: id("x"),
			Interface: &network.EndpointInterface{Address: "198.19.2.2/24"}}, "outside the network's subnet 198.19.1.0/24"},
		{"gateway", &network.CreateEndpointRequest{NetworkID: nid, EndpointID: id("x"),
			Interface: &network.EndpointInterface{Address: "198.19.1.1/24"}}, "is the network's gateway"},
		{"address taken", &network.CreateEndpointRequest{NetworkID: nid, EndpointID: id("x"),
			Interface: &network.EndpointInterface{Address: "198.19.1.9/24"}}, "already used by endpoint"},
		{"multicast mac", &network.CreateEndpointRequest{NetworkID: nid, EndpointID: id("x"),
			Interface: &network.EndpointInterface{Address: "198.19.1.2/24", MacAddress: "01:00:5e:00:00:01"}}, "not a unicast Ethernet address"},
		{"unknown network", &network.CreateEndpointRequest{NetworkID: id("nope"), EndpointID: id("x"),
			Interface: &network.EndpointInterface{Address: "198.19.1.2/24"}}, "is not known to grapevine on this host"},
		{"bad portmap", &network.CreateEndpointRequest{NetworkID: nid, EndpointID: id("x"),
			Interface: &network.EndpointInterface{Address: "198.19.1.2/24"},
			Options:   map[string]any{optPortMap: []any{map[string]any{"Proto": 1.0, "Port": 80.0}}}},
			"Proto 1 is not allowed: use tcp (6), udp (17) or sctp (132)"},
		{"portmap not a list", &network.CreateEndpointRequest{NetworkID: nid, EndpointID: id("x"),
			Interface: &network.EndpointInterface{Address: "198.19.1.2/24"},
			Options:   map[string]any{optPortMap: "8080:80"}}, "expected a list of objects"},
		{"portmap item not an object", &network.CreateEndpointRequest{NetworkID: nid, EndpointID: id("x"),
			Interface: &network.EndpointInterface{Address: "198.19.1.2/24"},
			Options:   map[string]any{optPortMap: []any{"x"}}}, "item #1 is a string"},
		{"ipv6 host ip", &network.CreateEndpointRequest{NetworkID: nid, EndpointID: id("x"),
			Interface: &network.EndpointInterface{Address: "198.19.1.2/24"},
			Options: map[string]any{optPortMap: []any{
				map[string]any{"Proto": 6.0, "Port": 80.0, "HostIP": "fd00::1", "HostPort": 80.0}}}}, "grapevine publishes ports on IPv4 only"},
		{"host ip not a string", &network.CreateEndpointRequest{NetworkID: nid, EndpointID: id("x"),
			Interface: &network.EndpointInterface{Address: "198.19.1.2/24"},
			Options: map[string]any{optPortMap: []any{
				map[string]any{"Proto": 6.0, "Port": 80.0, "HostIP": 5.0}}}}, "HostIP is a float64"},
		{"reversed range", &network.CreateEndpointRequest{NetworkID: nid, EndpointID: id("x"),
			Interface: &network.EndpointInterface{Address: "198.19.1.2/24"},
			Options: map[string]any{optPortMap: []any{
				map[string]any{"Proto": 6.0, "Port": 80.0, "HostPort": 90.0, "HostPortEnd": 80.0}}}}, "host port range 90-80 is reversed"},
		{"port out of range", &network.CreateEndpointRequest{NetworkID: nid, EndpointID: id("x"),
			Interface: &network.EndpointInterface{Address: "198.19.1.2/24"},
			Options: map[string]any{optExposed: []any{
				map[string]any{"Proto": 6.0, "Port": 70000.0}}}}, "Port 70000 is not a port number"},
		{"endpoint id collides", &network.CreateEndpointRequest{NetworkID: nid, EndpointID: id("taken")[:11] + "zzz",
			Interface: &network.EndpointInterface{Address: "198.19.1.3/24"}}, "kernel names would collide"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.d.CreateEndpoint(c.req)
			wantErr(t, err, c.want)
		})
	}
	if st := e.d.Status(); st[0].Endpoints != 1 {
		t.Fatalf("refused endpoints were recorded: %+v", st)
	}
	// A repeat that changes the address is refused.
	_, err := e.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: nid, EndpointID: id("taken"),
		Interface: &network.EndpointInterface{Address: "198.19.1.10/24"}})
	wantErr(t, err, "already exists on network")
}

// TestNoPanics throws nil and malformed requests at every call.
func TestNoPanics(t *testing.T) {
	e := newEnv(t)
	nid, eid := id("n"), id("e")
	e.mustCreateNetwork(netReq{id: nid, subnet: "198.19.1.0/24"})
	e.mustCreateEndpoint(nid, eid, "198.19.1.2/24", "")
	d := e.d
	calls := map[string]func() error{
		"CreateNetwork nil":  func() error { return d.CreateNetwork(nil) },
		"CreateNetwork zero": func() error { return d.CreateNetwork(&network.CreateNetworkRequest{}) },
		"CreateNetwork nil options": func() error {
			return d.CreateNetwork(&network.CreateNetworkRequest{NetworkID: id("z"), IPv4Data: []*network.IPAMData{{}}})
		},
		"DeleteNetwork nil":   func() error { return d.DeleteNetwork(nil) },
		"DeleteNetwork empty": func() error { return d.DeleteNetwork(&network.DeleteNetworkRequest{}) },
		"CreateEndpoint nil":  func() error { _, err := d.CreateEndpoint(nil); return err },
		"CreateEndpoint zero": func() error { _, err := d.CreateEndpoint(&network.CreateEndpointRequest{}); return err },
		"DeleteEndpoint nil":  func() error { return d.DeleteEndpoint(nil) },
		"EndpointInfo nil":    func() error { _, err := d.EndpointInfo(nil); return err },
		"EndpointInfo zero":   func() error { _, err := d.EndpointInfo(&network.InfoRequest{}); return err },
		"Join nil":            func() error { _, err := d.Join(nil); return err },
		"Join unknown":        func() error { _, err := d.Join(&network.JoinRequest{EndpointID: "x"}); return err },
		"Join wrong network": func() error {
			_, err := d.Join(&network.JoinRequest{NetworkID: id("other"), EndpointID: eid})
			return err
		},
		"Leave nil":   func() error { return d.Leave(nil) },
		"Program nil": func() error { return d.ProgramExternalConnectivity(nil) },
		"Program bad options": func() error {
			return d.ProgramExternalConnectivity(&network.ProgramExternalConnectivityRequest{EndpointID: eid,
				Options: map[string]any{optPortMap: []any{map[string]any{"Proto": "x"}}}})
		},
		"Program unknown": func() error {
			return d.ProgramExternalConnectivity(&network.ProgramExternalConnectivityRequest{EndpointID: "x"})
		},
		"Revoke nil": func() error { return d.RevokeExternalConnectivity(nil) },
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			if err := call(); err == nil {
				t.Fatal("no error")
			}
		})
	}
	// unknown objects on the teardown path are success
	if err := d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: nid, EndpointID: id("ghost")}); err != nil {
		t.Fatal(err)
	}
	if err := d.Leave(&network.LeaveRequest{NetworkID: nid, EndpointID: id("ghost")}); err != nil {
		t.Fatal(err)
	}
	if err := d.RevokeExternalConnectivity(&network.RevokeExternalConnectivityRequest{EndpointID: id("ghost")}); err != nil {
		t.Fatal(err)
	}
	if err := d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: id("ghost")}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.AllocateNetwork(nil); err != nil {
		t.Fatal(err)
	}
	if err := d.FreeNetwork(nil); err != nil {
		t.Fatal(err)
	}
	if err := d.DiscoverNew(&network.DiscoveryNotification{DiscoveryType: 1, DiscoveryData: "x"}); err != nil {
		t.Fatal(err)
	}
	if err := d.DiscoverDelete(nil); err != nil {
		t.Fatal(err)
	}
}

func TestCapabilitiesAndConfig(t *testing.T) {
	e := newEnv(t)
	c, err := e.d.GetCapabilities()
	if err != nil || c.Scope != "local" || c.ConnectivityScope != "global" {
		t.Fatalf("capabilities %+v %v", c, err)
	}
	cfg := e.config()
	cfg.Scope = "global"
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := d.GetCapabilities(); c.Scope != "global" || c.ConnectivityScope != "global" {
		t.Fatalf("global capabilities %+v", c)
	}
	a, err := d.AllocateNetwork(&network.AllocateNetworkRequest{NetworkID: id("n")})
	if err != nil || a.Options == nil || len(a.Options) != 0 {
		t.Fatalf("AllocateNetwork %+v %v", a, err)
	}
	bad := []struct {
		mut  func(*Config)
		want string
	}{
		{func(c *Config) { c.Scope = "swarm" }, `Config.Scope "swarm" is not a scope`},
		{func(c *Config) { c.Scope = "" }, `Config.Scope "" is not a scope`},
		{func(c *Config) { c.DB = nil }, "Config.DB is nil"},
		{func(c *Config) { c.Dataplane = nil }, "Config.Dataplane is nil"},
		{func(c *Config) { c.Underlay = nil }, "Config.Underlay is nil"},
		{func(c *Config) { c.AddressSpaces = nil }, "Config.AddressSpaces is empty"},
		{func(c *Config) { c.VXLANPort = 70000 }, "Config.VXLANPort 70000 is not a port"},
		{func(c *Config) { c.VXLANPort = 0 }, "Config.VXLANPort 0 is not a port"},
	}
	for _, b := range bad {
		cfg := e.config()
		b.mut(&cfg)
		_, err := New(cfg)
		wantErr(t, err, b.want)
	}
}

// TestConcurrency runs whole container lifecycles on several networks at once,
// with reconciles and status reads in between; run with -race.
func TestConcurrency(t *testing.T) {
	e := newEnv(t)
	const workers = 8
	var wg sync.WaitGroup
	errs := make(chan error, workers*4)
	stop := make(chan struct{})
	var bg sync.WaitGroup
	bg.Add(1)
	go func() {
		defer bg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = e.d.Reconcile()
			_ = e.d.Status()
		}
	}()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nid := id(fmt.Sprint("cn", w))
			subnet := fmt.Sprintf("198.19.%d.0/24", 10+w)
			if err := e.d.CreateNetwork(e.createReq(netReq{id: nid, subnet: subnet})); err != nil {
				errs <- err
				return
			}
			for i := range 3 {
				eid := id(fmt.Sprint("ce", w, i))
				addr := fmt.Sprintf("198.19.%d.%d/24", 10+w, 2+i)
				_, err := e.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: nid, EndpointID: eid,
					Interface: &network.EndpointInterface{Address: addr}})
				if err != nil {
					errs <- err
					return
				}
				if _, err := e.d.Join(&network.JoinRequest{NetworkID: nid, EndpointID: eid}); err != nil {
					errs <- err
					return
				}
				if err := e.program(nid, eid, pb{Proto: 6, Port: 80}); err != nil {
					errs <- err
					return
				}
				if _, err := e.d.EndpointInfo(&network.InfoRequest{NetworkID: nid, EndpointID: eid}); err != nil {
					errs <- err
					return
				}
				for _, f := range []func() error{
					func() error {
						return e.d.RevokeExternalConnectivity(&network.RevokeExternalConnectivityRequest{NetworkID: nid, EndpointID: eid})
					},
					func() error { return e.d.Leave(&network.LeaveRequest{NetworkID: nid, EndpointID: eid}) },
					func() error {
						return e.d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: nid, EndpointID: eid})
					},
				} {
					if err := f(); err != nil {
						errs <- err
						return
					}
				}
			}
			if err := e.d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: nid}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(stop)
	bg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := e.d.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if links := e.fake.LinkNames(); len(links) != 0 {
		t.Fatalf("links left: %v", links)
	}
	if fw := e.fake.Firewall(); len(fw.Networks)+len(fw.Ports) != 0 {
		t.Fatalf("firewall left: %+v", fw)
	}
}
