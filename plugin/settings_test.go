package plugin

import (
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
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
		{map[string]string{"ADVERTISE": "fe80::1"}, "ADVERTISE"},
		{map[string]string{"ADVERTISE": "10.0.0.0/8"}, "ADVERTISE"},
		{map[string]string{"GOSSIP_PORT": "abc"}, "GOSSIP_PORT"},
		{map[string]string{"VXLAN_PORT": "0"}, "VXLAN_PORT"},
		{map[string]string{"VXLAN_PORT": "7947"}, "different ports"},
		{map[string]string{"POOL": "10.213.0.1/16"}, "did you mean 10.213.0.0/16"},
		{map[string]string{"POOL": "10.213.0.0/25"}, "at least one /24"},
		{map[string]string{"POOL": "fd00::/64"}, "IPv4 CIDR"},
		{map[string]string{"SCOPE": "swarm"}, `SCOPE="swarm"`},
		{map[string]string{"LOG_LEVEL": "loud"}, "LOG_LEVEL"},
	} {
		_, err := ParseSettings(envOf(tc.env))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want it to contain %q", tc.env, err, tc.want)
		}
		if err != nil && !strings.Contains(err.Error(), "docker plugin set") && !strings.Contains(err.Error(), "different ports") {
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
