package plugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	bolt "go.etcd.io/bbolt"

	"grapevine/driver"
	"grapevine/driver/dataplane"
	"grapevine/driver/dataplane/dataplanetest"
	"grapevine/gossip"
	gvipam "grapevine/ipam"
)

// fuzzServer serves the real network and IPAM drivers (over the in-memory
// data plane, on a fresh state file) or, with bad settings, no drivers at
// all, on a unix socket in dir.
func fuzzServer(f *testing.F, dir string, badSettings error) *http.Client {
	log := logrus.New()
	log.SetOutput(io.Discard)
	entry := logrus.NewEntry(log)
	srv := NewServer(entry)
	if badSettings != nil {
		srv.SetBackend(nil, nil, func() any { return errorStatus(badSettings) }, badSettings)
	} else {
		db, err := bolt.Open(filepath.Join(dir, "state.db"), 0o600, &bolt.Options{NoSync: true}) // fsyncs would dominate
		if err != nil {
			f.Fatal(err)
		}
		f.Cleanup(func() { _ = db.Close() })
		dp := dataplanetest.NewFake()
		nd, err := driver.New(driver.Config{
			DB: db, Dataplane: dp, Underlay: func() (dataplane.Underlay, error) { return dp.ResolveUnderlay("") }, Log: entry,
			AddressSpaces: []string{gvipam.LocalAddressSpace, gvipam.GlobalAddressSpace},
			VXLANPort:     DefaultVXLANPort, Scope: DefaultScope,
		})
		if err != nil {
			f.Fatal(err)
		}
		id, err := gvipam.New(gvipam.Config{DB: db, DefaultPool: netip.MustParsePrefix("198.19.128.0/17"), DefaultPrefixLen: 24, Log: entry})
		if err != nil {
			f.Fatal(err)
		}
		f.Cleanup(func() { nd.Close(); id.Close() })
		srv.SetBackend(nd, ipamAdapter{Driver: id}, func() any { return map[string]string{"host": "fuzz"} }, nil)
	}
	sock := filepath.Join(dir, "gv.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		f.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	f.Cleanup(func() { _ = ln.Close() })
	return trustClient(sock)
}

// FuzzHandlers sends arbitrary bodies to every route, to the real drivers
// and to a plugin with bad settings: every answer is JSON, every refusal
// carries its reason, and no call panics.
func FuzzHandlers(f *testing.F) {
	for i, path := range trustRoutes {
		for _, body := range []string{"", "{}", "null", "[]", "{not json", `{"NetworkID":"n1","EndpointID":"e1"}`} {
			f.Add(uint8(i), []byte(body), false)
		}
		f.Add(uint8(i), []byte(fuzzSeedBody(path)), false)
		f.Add(uint8(i), []byte(fuzzSeedBody(path)), true)
	}
	good := fuzzServer(f, f.TempDir(), nil)
	bad := fuzzServer(f, f.TempDir(), errors.New("setting GOSSIP_KEY is empty but PEERS is set"))
	f.Fuzz(func(t *testing.T, route uint8, body []byte, badSettings bool) {
		if len(body) > 64<<10 {
			return
		}
		path := trustRoutes[int(route)%len(trustRoutes)]
		c := good
		if badSettings {
			c = bad
		}
		resp, err := c.Post("http://plugin"+path, "application/vnd.docker.plugins.v1.2+json", bytes.NewReader(body))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var answer any
		if err := json.Unmarshal(raw, &answer); err != nil {
			t.Fatalf("%s %q: answer %d is not JSON: %q", path, body, resp.StatusCode, raw)
		}
		if bytes.Contains(raw, []byte("internal error in grapevine")) {
			t.Fatalf("%s %q: the handler panicked: %s", path, body, raw)
		}
		if resp.StatusCode == http.StatusOK && (!badSettings || path == StatusPath) {
			return
		}
		m, _ := answer.(map[string]any)
		msg, _ := m["Err"].(string)
		if alt, _ := m["Error"].(string); msg == "" || alt != msg {
			t.Fatalf("%s %q: refusal %d without the same reason in Err and Error: %s", path, body, resp.StatusCode, raw)
		}
		if badSettings && !strings.Contains(msg, "GOSSIP_KEY") {
			t.Fatalf("%s %q: with bad settings answered %d %s, not the settings error", path, body, resp.StatusCode, raw)
		}
	})
}

// fuzzSeedBody is a well-formed request for path.
func fuzzSeedBody(path string) string {
	switch {
	case strings.HasSuffix(path, "CreateNetwork"):
		return `{"NetworkID":"n1","Options":{"com.docker.network.generic":{"vni":"77"}},"IPv4Data":[{"AddressSpace":"grapevine-local","Pool":"198.19.40.0/24","Gateway":"198.19.40.1/24"}]}`
	case strings.HasSuffix(path, "CreateEndpoint"):
		return `{"NetworkID":"n1","EndpointID":"e1","Interface":{"Address":"198.19.40.2/24","MacAddress":"02:42:c6:13:28:02"}}`
	case strings.HasSuffix(path, "Join"):
		return `{"NetworkID":"n1","EndpointID":"e1","SandboxKey":"/var/run/docker/netns/x"}`
	case strings.HasSuffix(path, "RequestPool"):
		return `{"AddressSpace":"grapevine-local","Pool":"198.19.40.0/24","Options":{}}`
	case strings.HasSuffix(path, "RequestAddress"):
		return `{"PoolID":"grapevine-local/198.19.40.0/24","Address":"198.19.40.7","Options":{}}`
	case strings.HasSuffix(path, "ProgramExternalConnectivity"):
		return `{"NetworkID":"n1","EndpointID":"e1","Options":{"com.docker.network.portmap":[{"Proto":6,"Port":80,"HostPort":8080}]}}`
	}
	return `{"NetworkID":"n1","EndpointID":"e1","PoolID":"grapevine-local/198.19.40.0/24","Address":"198.19.40.7"}`
}

// FuzzParseSettings feeds arbitrary values to every setting: parsing never
// panics, accepted settings are in range, and refusals name a setting
// without showing the key.
func FuzzParseSettings(f *testing.F) {
	f.Add("198.18.0.12,h2:7000", "eth0", "7947", "4789", testKeyA, "198.19.128.0/17", "local", "info", "")
	f.Add("198.18.0.12", "", "", "", "", "", "", "", "true")
	f.Add("", "198.18.0.11", "7000", "7000", testKeyB+","+testKeyA, "10.0.0.1/8", "global", "debug", "false")
	f.Add(":1,[::1]:99999", "fe80::1", "-1", "x", "!!,", "fd00::/64", "swarm", "loud", "yes")
	f.Fuzz(func(t *testing.T, peers, advertise, gossipPort, vxlanPort, key, pool, scope, level, insecure string) {
		env := map[string]string{
			envPeers: peers, envAdvertise: advertise, envGossipPort: gossipPort, envVXLANPort: vxlanPort,
			envGossipKey: key, envPool: pool, envScope: scope, envLogLevel: level, envInsecure: insecure,
		}
		s, err := ParseSettings(envOf(env))
		if err != nil {
			checkRefusal(t, env, err)
			return
		}
		checkAccepted(t, s)
		if err := librariesAccept(t, s); err != nil {
			t.Fatalf("settings accepted, %v", err)
		}
	})
}

func checkRefusal(t *testing.T, env map[string]string, err error) {
	named := false
	for name := range env {
		named = named || strings.Contains(err.Error(), name)
	}
	if !named {
		t.Fatalf("refusal names no setting: %v", err)
	}
	key := strings.TrimSpace(env[envGossipKey])
	if len(key) < 16 {
		return // short strings may occur in the message by chance
	}
	for name, v := range env {
		if name != envGossipKey && strings.Contains(v, key) {
			return // echoed as the value of another setting
		}
	}
	if strings.Contains(err.Error(), key) {
		t.Fatalf("refusal shows GOSSIP_KEY: %v", err)
	}
}

func checkAccepted(t *testing.T, s Settings) {
	for _, p := range s.Peers {
		if _, err := gossip.NormalizePeer(p, s.GossipPort); p == "" || err != nil {
			t.Fatalf("accepted peer %q", p)
		}
	}
	if s.GossipPort < 1 || s.GossipPort > 65535 || s.VXLANPort < 1 || s.VXLANPort > 65535 || s.GossipPort == s.VXLANPort {
		t.Fatalf("accepted ports %d %d", s.GossipPort, s.VXLANPort)
	}
	if !s.Pool.Addr().Is4() || s.Pool != s.Pool.Masked() || s.Pool.Bits() > 24 || s.Pool.Bits() < 8 {
		t.Fatalf("accepted pool %s", s.Pool)
	}
	if s.Scope != "local" && s.Scope != "global" {
		t.Fatalf("accepted scope %q", s.Scope)
	}
	if len(s.Peers) > 0 && len(s.GossipKeys) == 0 && !s.InsecurePlaintextGossip {
		t.Fatalf("accepted PEERS %v without a key or the opt-in", s.Peers)
	}
	for _, k := range s.GossipKeys {
		if n := len(k); n != 16 && n != 24 && n != 32 {
			t.Fatalf("accepted a key of %d bytes", n)
		}
	}
	if len(s.GossipKeys) > 0 && !bytes.Equal(s.GossipKey, s.GossipKeys[0]) || len(s.GossipKeys) == 0 && s.GossipKey != nil {
		t.Fatalf("primary key %x is not the first of %x", s.GossipKey, s.GossipKeys)
	}
}
