package driver

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/docker/go-plugins-helpers/network"

	"grapevine/driver/dataplane"
)

// portsEnv is one network with n joined endpoints e0..e(n-1).
func portsEnv(t *testing.T, n int) (*env, string, []string) {
	e := newEnv(t)
	nid := id("pn")
	e.mustCreateNetwork(netReq{id: nid, subnet: "198.19.1.0/24"})
	var eps []string
	for i := range n {
		ep := id(fmt.Sprint("pe", i))
		e.mustCreateEndpoint(nid, ep, fmt.Sprintf("198.19.1.%d/24", i+2), "")
		e.mustJoin(nid, ep)
		eps = append(eps, ep)
	}
	return e, nid, eps
}

func TestPortConflicts(t *testing.T) {
	e, nid, eps := portsEnv(t, 4)
	if err := e.program(nid, eps[0], pb{Proto: 6, Port: 80, HostPort: 8080}); err != nil {
		t.Fatal(err)
	}
	err := e.program(nid, eps[1], pb{Proto: 6, Port: 80, HostPort: 8080})
	wantErr(t, err, fmt.Sprintf("host port 8080/tcp is already in use (by grapevine endpoint %s on network %s); publish on another port", shortID(eps[0]), shortID(nid)))
	// same port, other protocol: fine
	if err := e.program(nid, eps[1], pb{Proto: 17, Port: 80, HostPort: 8080}); err != nil {
		t.Fatal(err)
	}
	// specific host addresses: distinct ones coexist, "all" overlaps both
	if err := e.program(nid, eps[2], pb{Proto: 6, Port: 80, HostIP: "198.18.0.1", HostPort: 9090}); err != nil {
		t.Fatal(err)
	}
	if err := e.program(nid, eps[3], pb{Proto: 6, Port: 80, HostIP: "198.18.0.2", HostPort: 9090}); err != nil {
		t.Fatal(err)
	}
	e2 := e
	ep5 := id("pe5")
	e2.mustCreateEndpoint(nid, ep5, "198.19.1.50/24", "")
	err = e.program(nid, ep5, pb{Proto: 6, Port: 80, HostIP: "0.0.0.0", HostPort: 9090})
	wantErr(t, err, "host port 9090/tcp is already in use (by grapevine endpoint")
	// refused: nothing of ep5 is in the firewall or its record
	for _, p := range e.fake.Firewall().Ports {
		if p.EndpointID == ep5 {
			t.Fatalf("refused binding was programmed: %+v", p)
		}
	}
	// a port held by something else on the host
	e.fake.SetPortBusy(dataplane.TCP, netip.Addr{}, 2222, "sshd")
	err = e.program(nid, ep5, pb{Proto: 6, Port: 22, HostPort: 2222})
	wantErr(t, err, "host port 2222/tcp is already in use (by sshd); publish on another port")
	// two bindings of one request on the same host port
	err = e.program(nid, ep5, pb{Proto: 6, Port: 80, HostPort: 7000}, pb{Proto: 6, Port: 81, HostPort: 7000})
	wantErr(t, err, "host port 7000/tcp is already in use (by another port of the same container)")
	if len(e.fake.Firewall().Ports) != 4 {
		t.Fatalf("port rules %+v", e.fake.Firewall().Ports)
	}
}

func TestPortChoice(t *testing.T) {
	e, nid, eps := portsEnv(t, 3)
	e.fake.SetPortBusy(dataplane.TCP, netip.Addr{}, ephemeralFirst, "docker-proxy")
	if err := e.program(nid, eps[0], pb{Proto: 6, Port: 80}); err != nil {
		t.Fatal(err)
	}
	if err := e.program(nid, eps[1], pb{Proto: 6, Port: 80}); err != nil {
		t.Fatal(err)
	}
	if got := hostPorts(e.fake.Firewall()); !slices.Equal(got, []uint16{ephemeralFirst + 1, ephemeralFirst + 2}) {
		t.Fatalf("ephemeral ports %v", got)
	}
	// a range takes its first free port
	e.fake.SetPortBusy(dataplane.TCP, netip.Addr{}, 7000, "nginx")
	if err := e.program(nid, eps[2], pb{Proto: 6, Port: 80, HostPort: 7000, HostPortEnd: 7002}); err != nil {
		t.Fatal(err)
	}
	if got := hostPorts(e.fake.Firewall()); !slices.Contains(got, 7001) {
		t.Fatalf("range binding chose %v, want 7001", got)
	}
	// a full range is refused
	ep := id("pe-full")
	e.mustCreateEndpoint(nid, ep, "198.19.1.60/24", "")
	e.fake.SetPortBusy(dataplane.TCP, netip.Addr{}, 7002, "nginx")
	err := e.program(nid, ep, pb{Proto: 6, Port: 80, HostPort: 7000, HostPortEnd: 7002})
	wantErr(t, err, "no free host port in 7000-7002/tcp")

	// repeat keeps the chosen ports; revoke frees them for others
	before := hostPorts(e.fake.Firewall())
	if err := e.program(nid, eps[0], pb{Proto: 6, Port: 80}); err != nil {
		t.Fatal(err)
	}
	if got := hostPorts(e.fake.Firewall()); !slices.Equal(got, before) {
		t.Fatalf("repeat moved ports: %v -> %v", before, got)
	}
	if err := e.d.RevokeExternalConnectivity(&network.RevokeExternalConnectivityRequest{NetworkID: nid, EndpointID: eps[0]}); err != nil {
		t.Fatal(err)
	}
	if err := e.program(nid, ep, pb{Proto: 6, Port: 80}); err != nil {
		t.Fatal(err)
	}
	info, _ := e.d.EndpointInfo(&network.InfoRequest{NetworkID: nid, EndpointID: ep})
	if pm := info[optPortMap].([]dockerPortBinding); len(pm) != 1 || pm[0].HostPort != ephemeralFirst+1 {
		t.Fatalf("after revoke the freed port was not reused: %+v", pm)
	}
}

func TestPortsFromCreateEndpoint(t *testing.T) {
	e := newEnv(t)
	nid, eid := id("n"), id("e")
	e.mustCreateNetwork(netReq{id: nid, subnet: "198.19.1.0/24"})
	_, err := e.d.CreateEndpoint(wire(t, &network.CreateEndpointRequest{
		NetworkID: nid, EndpointID: eid,
		Interface: &network.EndpointInterface{Address: "198.19.1.2/24"},
		Options: map[string]any{
			optPortMap: []pb{{Proto: 6, Port: 80, HostPort: 8080}, {Proto: 6, Port: 80, HostIP: "::", HostPort: 8080}},
			optExposed: []map[string]int{{"Proto": 6, "Port": 80}},
		},
	}))
	if err != nil {
		t.Fatal(err)
	}
	e.mustJoin(nid, eid)
	// Program without options uses what CreateEndpoint recorded; "::" and ""
	// are both "all addresses" and collapse into one binding.
	if err := e.d.ProgramExternalConnectivity(&network.ProgramExternalConnectivityRequest{NetworkID: nid, EndpointID: eid}); err != nil {
		t.Fatal(err)
	}
	if got := hostPorts(e.fake.Firewall()); !slices.Equal(got, []uint16{8080}) {
		t.Fatalf("ports %v", got)
	}
	info, err := e.d.EndpointInfo(&network.InfoRequest{NetworkID: nid, EndpointID: eid})
	if err != nil {
		t.Fatal(err)
	}
	if ex, ok := info[optExposed].([]dockerTransportPort); !ok || len(ex) != 1 || ex[0].Port != 80 {
		t.Fatalf("exposed ports %+v", info[optExposed])
	}
}

func TestProgramRollback(t *testing.T) {
	e, nid, eps := portsEnv(t, 1)
	boom := errors.New("boom")
	e.fake.SetFail("SyncFirewall", boom)
	err := e.program(nid, eps[0], pb{Proto: 6, Port: 80, HostPort: 8080})
	if !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
	e.fake.SetFail("SyncFirewall", nil)
	info, _ := e.d.EndpointInfo(&network.InfoRequest{NetworkID: nid, EndpointID: eps[0]})
	if pm := info[optPortMap].([]dockerPortBinding); len(pm) != 0 {
		t.Fatalf("failed program left bindings: %+v", pm)
	}
	e.restart(e.fake)
	info, _ = e.d.EndpointInfo(&network.InfoRequest{NetworkID: nid, EndpointID: eps[0]})
	if pm := info[optPortMap].([]dockerPortBinding); len(pm) != 0 {
		t.Fatalf("failed program persisted bindings: %+v", pm)
	}
	// the port is free for a retry
	if err := e.program(nid, eps[0], pb{Proto: 6, Port: 80, HostPort: 8080}); err != nil {
		t.Fatal(err)
	}

	// PortInUse failing is reported, nothing applied
	e.fake.SetFail("PortInUse", boom)
	ep := id("pe-x")
	e.mustCreateEndpoint(nid, ep, "198.19.1.70/24", "")
	err = e.program(nid, ep, pb{Proto: 6, Port: 80, HostPort: 9000})
	if !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
	if len(e.fake.Firewall().Ports) != 1 {
		t.Fatalf("ports %+v", e.fake.Firewall().Ports)
	}
}

// TestPublishedPortsListed: status lists the programmed mappings (Docker
// 20.10's `docker port` cannot), and an IPv6 host address is refused with a
// message naming IPv6, without programming anything.
func TestPublishedPortsListed(t *testing.T) {
	e, nid, eps := portsEnv(t, 2)
	if err := e.program(nid, eps[0], pb{Proto: 6, Port: 80, HostIP: "127.0.0.1", HostPort: 8080}, pb{Proto: 17, Port: 53, HostPort: 5353}); err != nil {
		t.Fatal(err)
	}
	got := e.d.PublishedPorts()
	if len(got) != 2 || got[0].HostPort != 5353 || got[0].HostIP != "0.0.0.0" || got[0].Proto != "udp" ||
		got[1].HostPort != 8080 || got[1].HostIP != "127.0.0.1" || got[1].ContainerPort != 80 || got[1].Endpoint != shortID(eps[0]) {
		t.Fatalf("PublishedPorts = %+v", got)
	}
	for _, v6 := range []string{"::1", "fd00::1"} {
		err := e.program(nid, eps[1], pb{Proto: 6, Port: 80, HostIP: v6, HostPort: 8081})
		wantErr(t, err, "is IPv6; grapevine publishes ports on IPv4 only")
	}
	if n := len(e.d.PublishedPorts()); n != 2 {
		t.Fatalf("%d ports published after the IPv6 refusals, want 2", n)
	}
}
