package plugin

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// Keys of the tests (base64 of 16 and 32 bytes).
const (
	testKeyA = "Z3JhcGV2aW5lLXRlc3QtQQ==" // "grapevine-test-A"
	testKeyB = "Z3JhcGV2aW5lLXRydXN0LXRlc3Qta2V5LUItMzJieXQ="
)

func TestPeersWithoutKeyAreRefused(t *testing.T) {
	_, err := ParseSettings(envOf(map[string]string{"PEERS": "198.18.0.12"}))
	if err == nil {
		t.Fatal("PEERS without GOSSIP_KEY was accepted")
	}
	for _, want := range []string{"GOSSIP_KEY", "openssl rand -base64 32", "head -c32 /dev/urandom | base64", "INSECURE_PLAINTEXT_GOSSIP=true", "docker plugin set"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	// a cluster of one needs no key
	if _, err := ParseSettings(envOf(nil)); err != nil {
		t.Errorf("no PEERS, no key: %v", err)
	}
	// a key is enough
	s, err := ParseSettings(envOf(map[string]string{"PEERS": "198.18.0.12", "GOSSIP_KEY": testKeyA}))
	if err != nil || string(s.GossipKey) != "grapevine-test-A" {
		t.Errorf("PEERS with a key: %v, key %q", err, s.GossipKey)
	}
}

func TestInsecurePlaintextGossipIsExplicit(t *testing.T) {
	s, err := ParseSettings(envOf(map[string]string{"PEERS": "198.18.0.12", "INSECURE_PLAINTEXT_GOSSIP": "true"}))
	if err != nil || !s.InsecurePlaintextGossip || s.GossipKey != nil {
		t.Fatalf("opt-in: %v %+v", err, s)
	}
	for _, v := range []string{"yes", "1", "TRUE "} {
		_, err := ParseSettings(envOf(map[string]string{"PEERS": "198.18.0.12", "INSECURE_PLAINTEXT_GOSSIP": v}))
		if err == nil || !strings.Contains(err.Error(), "INSECURE_PLAINTEXT_GOSSIP") {
			t.Errorf("INSECURE_PLAINTEXT_GOSSIP=%q: %v", v, err)
		}
	}
	_, err = ParseSettings(envOf(map[string]string{"PEERS": "198.18.0.12", "INSECURE_PLAINTEXT_GOSSIP": "false"}))
	if err == nil || !strings.Contains(err.Error(), "GOSSIP_KEY is empty") {
		t.Errorf("INSECURE_PLAINTEXT_GOSSIP=false must not allow clear text: %v", err)
	}
}

func TestInsecurePlaintextGossipWarnsAtStart(t *testing.T) {
	for _, tc := range []struct {
		s    Settings
		want string
	}{
		{Settings{InsecurePlaintextGossip: true}, "neither encrypted nor authenticated"},
		{Settings{InsecurePlaintextGossip: true, GossipKeys: [][]byte{[]byte("grapevine-test-A")}}, "has no effect"},
		{Settings{}, ""},
	} {
		var buf bytes.Buffer
		log := logrus.New()
		log.SetOutput(&buf)
		warnInsecure(logrus.NewEntry(log), tc.s)
		out := buf.String()
		if tc.want == "" && out != "" || tc.want != "" && (!strings.Contains(out, tc.want) || !strings.Contains(out, "level=warn") || !strings.Contains(out, "INSECURE_PLAINTEXT_GOSSIP")) {
			t.Errorf("%+v: logged %q, want %q", tc.s, out, tc.want)
		}
	}
}

func TestGossipKeyListPrimaryFirst(t *testing.T) {
	s, err := ParseSettings(envOf(map[string]string{"PEERS": "198.18.0.12", "GOSSIP_KEY": " " + testKeyB + " , " + testKeyA + " "}))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := base64.StdEncoding.DecodeString(testKeyB)
	if len(s.GossipKeys) != 2 || !bytes.Equal(s.GossipKeys[0], b) || string(s.GossipKeys[1]) != "grapevine-test-A" || !bytes.Equal(s.GossipKey, b) {
		t.Fatalf("keys %q, primary %q", s.GossipKeys, s.GossipKey)
	}
	for _, tc := range []struct{ value, want string }{
		{testKeyA + "," + testKeyA, "keys 1 and 2 of the comma-separated list are the same key"},
		{testKeyA + ",," + testKeyB, "key 2 of the comma-separated list is empty"},
		{testKeyA + ",", "key 2 of the comma-separated list is empty"},
		{testKeyA + ",c2VjcmV0", "key 2 of the comma-separated list: GOSSIP_KEY decodes to 6 bytes"},
		{"!!" + testKeyA, "key 1 of the comma-separated list: GOSSIP_KEY is not valid base64"},
	} {
		_, err := ParseSettings(envOf(map[string]string{"PEERS": "198.18.0.12", "GOSSIP_KEY": tc.value}))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "docker plugin set <plugin> GOSSIP_KEY=") {
			t.Errorf("GOSSIP_KEY=%q: %v, want %q", tc.value, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), testKeyA) || strings.Contains(err.Error(), "grapevine-test-A") {
			t.Errorf("GOSSIP_KEY=%q: the error shows key material: %v", tc.value, err)
		}
		if strings.Contains(err.Error(), "GOSSIP_KEY is empty") {
			t.Errorf("GOSSIP_KEY=%q: a bad key is also reported as missing: %v", tc.value, err)
		}
	}
}

// trustRoutes are every path the server answers (NetworkDriver, IpamDriver and
// grapevine's own status and doctor).
var trustRoutes = []string{
	"/NetworkDriver.GetCapabilities", "/NetworkDriver.CreateNetwork", "/NetworkDriver.AllocateNetwork",
	"/NetworkDriver.DeleteNetwork", "/NetworkDriver.FreeNetwork", "/NetworkDriver.CreateEndpoint",
	"/NetworkDriver.DeleteEndpoint", "/NetworkDriver.EndpointOperInfo", "/NetworkDriver.Join",
	"/NetworkDriver.Leave", "/NetworkDriver.DiscoverNew", "/NetworkDriver.DiscoverDelete",
	"/NetworkDriver.ProgramExternalConnectivity", "/NetworkDriver.RevokeExternalConnectivity",
	"/IpamDriver.GetCapabilities", "/IpamDriver.GetDefaultAddressSpaces", "/IpamDriver.RequestPool",
	"/IpamDriver.ReleasePool", "/IpamDriver.RequestAddress", "/IpamDriver.ReleaseAddress",
	StatusPath, ForgetPath, DoctorPath,
}

// trustClient posts to the plugin socket the way dockerd does.
func trustClient(socket string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}}
}

// TestBadSettingsAnswerEveryCall runs the real Serve with a bad setting and
// calls every route on its socket, capabilities first as dockerd does: each
// answers the settings error as JSON, and none panics.
func TestBadSettingsAnswerEveryCall(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Socket: filepath.Join(dir, "gv.sock"), StateDir: filepath.Join(dir, "state")}
	env := envOf(map[string]string{"PEERS": "198.18.0.12"}) // no GOSSIP_KEY
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, opts, env) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	c := trustClient(opts.Socket)
	for _, path := range trustRoutes {
		var resp *http.Response
		trustRetry(t, 5*time.Second, func() (err error) {
			resp, err = c.Post("http://plugin"+path, "application/vnd.docker.plugins.v1.2+json", strings.NewReader(`{"NetworkID":"n1","PoolID":"p","Address":"198.19.0.2"}`))
			return err
		})
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Errorf("%s: answer is not JSON: %q", path, raw)
			continue
		}
		msg := ""
		for _, k := range []string{"Err", "Error", "error"} {
			if v, ok := m[k].(string); ok && v != "" {
				msg = v
				break
			}
		}
		if !strings.Contains(msg, "GOSSIP_KEY") || strings.Contains(msg, "internal error") || strings.Contains(msg, "nil pointer") {
			t.Errorf("%s: answered %d %s, want the settings error naming GOSSIP_KEY", path, resp.StatusCode, raw)
		}
		if path != StatusPath && resp.StatusCode == http.StatusOK {
			t.Errorf("%s: a refused call answered 200", path)
		}
	}
}

// trustRetry retries f until it succeeds or timeout passes.
func trustRetry(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
