package driver

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/network"
	"go.etcd.io/bbolt"

	"grapevine/driver/dataplane"
	"grapevine/driver/dataplane/dataplanetest"
	"grapevine/gossip/gossiptest"
)

const testPlugin = "grapevine:test"

// testVXLANPort is the UDP port of the test hosts' VXLAN devices.
const testVXLANPort = 4789

var testSpaces = []string{"grapevine-local", "grapevine-global"}

// env is one simulated host: a Fake kernel, a bbolt file and a Driver.
type env struct {
	t    *testing.T
	fake *dataplanetest.Fake
	path string
	db   *bbolt.DB
	d    *Driver
	// cluster, when set, is passed as Config.Cluster.
	cluster *gossiptest.FakeCluster
	// hostAddress, when set, is passed as Config.HostAddress.
	hostAddress func(space string, subnet netip.Prefix) (netip.Addr, error)
	// tunnel is passed as Config.Tunnel.
	tunnel TunnelConfig
	// forgotten, when set, is passed as Config.Forgotten.
	forgotten func(node string) bool
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, fake: dataplanetest.NewFake(), path: filepath.Join(t.TempDir(), "state.db")}
	e.open()
	t.Cleanup(func() {
		e.d.Close()
		_ = e.db.Close()
	})
	return e
}

// newClusterEnv is newEnv for a host named node of a fake cluster whose
// underlay (VTEP) is vtep.
func newClusterEnv(t *testing.T, node, vtep string) (*env, *gossiptest.FakeCluster) {
	t.Helper()
	c := gossiptest.NewFakeCluster(node)
	e := &env{t: t, fake: dataplanetest.NewFake(), path: filepath.Join(t.TempDir(), "state.db"), cluster: c}
	e.fake.SetUnderlay(&dataplane.Underlay{Addr: netip.MustParseAddr(vtep), Link: "eth0", MTU: 1500})
	e.open()
	t.Cleanup(func() {
		e.d.Close()
		_ = e.db.Close()
	})
	return e, c
}

// open (re)opens the DB and builds a Driver on it, as a plugin start does.
func (e *env) open() {
	e.t.Helper()
	db, err := bbolt.Open(e.path, 0o600, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	e.db = db
	d, err := New(e.config())
	if err != nil {
		e.t.Fatal(err)
	}
	e.d = d
}

// restart closes the DB and opens a new Driver on it; fake becomes the kernel
// the new Driver sees.
func (e *env) restart(fake *dataplanetest.Fake) {
	e.t.Helper()
	e.d.Close()
	if err := e.db.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.fake = fake
	e.open()
}

func (e *env) config() Config {
	f := e.fake
	cfg := Config{
		DB:            e.db,
		Dataplane:     f,
		Underlay:      func() (dataplane.Underlay, error) { return f.ResolveUnderlay("") },
		VXLANPort:     testVXLANPort,
		Scope:         "local",
		AddressSpaces: testSpaces,
		PluginName:    testPlugin,
		HostAddress:   e.hostAddress,
		Tunnel:        e.tunnel,
		Forgotten:     e.forgotten,
	}
	if e.cluster != nil {
		cfg.Cluster = e.cluster
		cfg.PeerRepair = -1 // tests call ReconcilePeers themselves
	}
	return cfg
}

// id makes a Docker-like 64-hex id whose first 11 characters differ per seed.
func id(seed string) string {
	h := sha256.Sum256([]byte(seed))
	return hex.EncodeToString(h[:])
}

// wire sends v through JSON, as the socket server does, so option values have
// the types Docker's JSON gives them.
func wire[T any](t *testing.T, v *T) *T {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out T
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

type netReq struct {
	id       string
	subnet   string
	gateway  string
	space    string
	opts     map[string]string
	internal bool
	aux      map[string]string // --aux-address name=IP
}

func (e *env) createReq(r netReq) *network.CreateNetworkRequest {
	if r.gateway == "" {
		p := netip.MustParsePrefix(r.subnet)
		r.gateway = netip.PrefixFrom(p.Addr().Next(), p.Bits()).String()
	}
	if r.space == "" {
		r.space = "grapevine-local"
	}
	opts := map[string]any{}
	if r.opts != nil {
		opts[optGeneric] = r.opts
	}
	if r.internal {
		opts[optInternal] = true
	}
	ipd := &network.IPAMData{AddressSpace: r.space, Pool: r.subnet, Gateway: r.gateway}
	if len(r.aux) > 0 {
		ipd.AuxAddresses = map[string]any{}
		for k, v := range r.aux {
			ipd.AuxAddresses[k] = v
		}
	}
	return wire(e.t, &network.CreateNetworkRequest{
		NetworkID: r.id,
		Options:   opts,
		IPv4Data:  []*network.IPAMData{ipd},
	})
}

func (e *env) mustCreateNetwork(r netReq) {
	e.t.Helper()
	if err := e.d.CreateNetwork(e.createReq(r)); err != nil {
		e.t.Fatalf("CreateNetwork %s: %v", r.subnet, err)
	}
}

func (e *env) mustCreateEndpoint(netID, epID, addr, mac string) *network.CreateEndpointResponse {
	e.t.Helper()
	resp, err := e.d.CreateEndpoint(wire(e.t, &network.CreateEndpointRequest{
		NetworkID: netID, EndpointID: epID,
		Interface: &network.EndpointInterface{Address: addr, MacAddress: mac},
		Options:   map[string]any{},
	}))
	if err != nil {
		e.t.Fatalf("CreateEndpoint %s: %v", addr, err)
	}
	return resp
}

func (e *env) mustJoin(netID, epID string) *network.JoinResponse {
	e.t.Helper()
	resp, err := e.d.Join(&network.JoinRequest{NetworkID: netID, EndpointID: epID, SandboxKey: "/var/run/docker/netns/x"})
	if err != nil {
		e.t.Fatalf("Join: %v", err)
	}
	return resp
}

type pb struct {
	Proto       uint8
	IP          string
	Port        uint16
	HostIP      string
	HostPort    uint16
	HostPortEnd uint16
}

func (e *env) program(netID, epID string, ports ...pb) error {
	return e.d.ProgramExternalConnectivity(wire(e.t, &network.ProgramExternalConnectivityRequest{
		NetworkID: netID, EndpointID: epID,
		Options: map[string]any{optPortMap: ports},
	}))
}

func hostPorts(fw dataplane.Firewall) []uint16 {
	var out []uint16
	for _, p := range fw.Ports {
		out = append(out, p.HostPort)
	}
	slices.Sort(out)
	return out
}

func wantErr(t *testing.T, err error, substr string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", substr)
	}
	if !strings.Contains(err.Error(), substr) {
		t.Fatalf("error %q does not contain %q", err, substr)
	}
}
