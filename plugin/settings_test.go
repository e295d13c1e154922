package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	"go.etcd.io/bbolt"

	"grapevine/driver"
	"grapevine/driver/dataplane"
	"grapevine/gossip"
	gvipam "grapevine/ipam"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestParseSettingsDefaults(t *testing.T) {
	s, err := ParseSettings(envOf(nil))
	if err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if s.GossipPort != 7947 || s.VXLANPort != 4789 || s.Pool.String() != "10.213.0.0/16" || s.Scope != "local" || s.LogLevel != logrus.InfoLevel || len(s.Peers) != 0 {
		t.Fatalf("unexpected defaults: %+v", s)
	}
}

func TestParseSettingsValid(t *testing.T) {
	s, err := ParseSettings(envOf(map[string]string{
		"PEERS": "198.18.0.11, h2:7000,,h3", "ADVERTISE": "eth0", "GOSSIP_PORT": "7000",
		"VXLAN_PORT": "4790", "POOL": "198.19.128.0/17", "SCOPE": "global", "LOG_LEVEL": "debug",
		"GOSSIP_KEY": "MDEyMzQ1Njc4OWFiY2RlZg==",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(s.Peers, "|"); got != "198.18.0.11|h2:7000|h3" {
		t.Errorf("peers = %q", got)
	}
	if s.Advertise != "eth0" || s.GossipPort != 7000 || s.VXLANPort != 4790 || s.Pool.String() != "198.19.128.0/17" || s.Scope != "global" || s.LogLevel != logrus.DebugLevel {
		t.Errorf("unexpected: %+v", s)
	}
}

func TestParseSettingsErrors(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"PEERS": "h1:99999"}, `PEERS=`},
		{map[string]string{"PEERS": ":7946"}, "empty host"},
		{map[string]string{"PEERS": "[fd00::1", "GOSSIP_KEY": "MDEyMzQ1Njc4OWFiY2RlZg=="}, "is not host[:port]"},
		{map[string]string{"PEERS": "h1:0", "GOSSIP_KEY": "MDEyMzQ1Njc4OWFiY2RlZg=="}, `port "0" is not 1-65535`},
		{map[string]string{"ADVERTISE": "fe80::1"}, "ADVERTISE"},
		{map[string]string{"ADVERTISE": "10.0.0.0/8"}, "ADVERTISE"},
		{map[string]string{"GOSSIP_PORT": "abc"}, "GOSSIP_PORT"},
		{map[string]string{"VXLAN_PORT": "0"}, "VXLAN_PORT"},
		{map[string]string{"VXLAN_PORT": "7947"}, "different ports"},
		{map[string]string{"POOL": "10.213.0.1/16"}, "did you mean 10.213.0.0/16"},
		{map[string]string{"POOL": "10.213.0.0/25"}, "at least one /24"},
		{map[string]string{"POOL": "fd00::/64"}, "IPv4 CIDR"},
		{map[string]string{"POOL": "10.0.0.0/7"}, "too large: the prefix length must be at least 8"},
		{map[string]string{"SCOPE": "swarm"}, `SCOPE="swarm"`},
		{map[string]string{"LOG_LEVEL": "loud"}, "LOG_LEVEL"},
	} {
		_, err := ParseSettings(envOf(tc.env))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want it to contain %q", tc.env, err, tc.want)
		}
		if err != nil && !strings.Contains(err.Error(), "docker plugin set") {
			t.Errorf("%v: error %q does not say how to fix it", tc.env, err)
		}
	}
}

func TestParseSettingsGossipKey(t *testing.T) {
	s, err := ParseSettings(envOf(map[string]string{"GOSSIP_KEY": "MDEyMzQ1Njc4OWFiY2RlZg=="}))
	if err != nil || len(s.GossipKey) != 16 {
		t.Fatalf("16-byte key: %v %d", err, len(s.GossipKey))
	}
	for _, bad := range []string{"not base64!", "MDEyMzQ1"} {
		_, err := ParseSettings(envOf(map[string]string{"GOSSIP_KEY": bad}))
		if err == nil || !strings.Contains(err.Error(), "GOSSIP_KEY") || !strings.Contains(err.Error(), "docker plugin set") {
			t.Errorf("GOSSIP_KEY=%q: %v", bad, err)
		}
	}
}

// TestConfigJSONDeclaresTheDefaults: the values config.json gives the
// settings are the defaults ParseSettings applies to blank ones.
func TestConfigJSONDeclaresTheDefaults(t *testing.T) {
	raw, err := os.ReadFile("../config.json")
	if err != nil {
		t.Fatal(err)
	}
	var manifest struct {
		Env []struct{ Name, Value string }
	}
	if err := json.Unmarshal(raw, &manifest); err != nil {
		t.Fatal(err)
	}
	declared := map[string]string{}
	for _, e := range manifest.Env {
		declared[e.Name] = e.Value
	}
	want := map[string]string{
		envPeers: "", envAdvertise: "", envGossipKey: "", envInsecure: "false",
		envGossipPort: strconv.Itoa(DefaultGossipPort), envVXLANPort: strconv.Itoa(DefaultVXLANPort),
		envPool: DefaultPool, envScope: DefaultScope, envLogLevel: DefaultLogLevel.String(),
		envMetricsAddr: DefaultMetricsAddr, envForget: "1h",
	}
	if !maps.Equal(declared, want) {
		t.Fatalf("config.json declares %v, want %v", declared, want)
	}
	fromJSON, err := ParseSettings(envOf(declared))
	if err != nil {
		t.Fatal(err)
	}
	blank, _ := ParseSettings(envOf(nil))
	if !reflect.DeepEqual(fromJSON, blank) {
		t.Fatalf("config.json's values parse to %+v, blank settings to %+v", fromJSON, blank)
	}
}

// TestLibrariesAcceptWhatSettingsAccept: settings are checked once, in
// ParseSettings; gossip, IPAM and the driver refuse none of what it
// accepts, at the edges of every range.
func TestLibrariesAcceptWhatSettingsAccept(t *testing.T) {
	key16, key32 := "MDEyMzQ1Njc4OWFiY2RlZg==", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	for _, env := range []map[string]string{
		nil,
		{"GOSSIP_PORT": "1", "VXLAN_PORT": "65535", "POOL": "100.64.0.0/10", "SCOPE": "global"},
		{"GOSSIP_PORT": "65535", "VXLAN_PORT": "1", "POOL": "198.18.0.0/24", "LOG_LEVEL": "trace"},
		{"POOL": "10.0.0.0/8"},
		{"PEERS": "198.18.0.12,h2:7000,fd00::1,[fd00::2]:9000, h3 ,", "GOSSIP_KEY": key32 + "," + key16},
		{"PEERS": "198.18.0.12:1", "INSECURE_PLAINTEXT_GOSSIP": "true", "ADVERTISE": "eth0"},
	} {
		s, err := ParseSettings(envOf(env))
		if err != nil {
			t.Fatalf("%v: %v", env, err)
		}
		if err := librariesAccept(t, s); err != nil {
			t.Errorf("%v: settings accepted, %v", env, err)
		}
	}
}

// librariesAccept builds gossip, IPAM and the driver from s as the plugin
// does, and returns the first refusal.
func librariesAccept(t *testing.T, s Settings) error {
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "state.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	log := logrus.NewEntry(logrus.New())
	log.Logger.SetOutput(io.Discard)
	if _, err := gossip.New(gossipConfig(s, "h1-abc123", db, log)); err != nil {
		return fmt.Errorf("gossip refused them: %w", err)
	}
	d, err := gvipam.New(ipamConfig(s, db, nil, log))
	if err != nil {
		return fmt.Errorf("IPAM refused them: %w", err)
	}
	d.Close()
	// New never touches the kernel: a data plane whose every call panics
	// proves it.
	noKernel := struct{ dataplane.Dataplane }{}
	underlay := func() (dataplane.Underlay, error) { return dataplane.Underlay{}, errors.New("none") }
	nd, err := driver.New(driverConfig(s, db, noKernel, underlay, nil, log))
	if err != nil {
		return fmt.Errorf("the driver refused them: %w", err)
	}
	nd.Close()
	return nil
}
