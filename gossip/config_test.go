package gossip

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

func TestConfigDefaultsAndValidation(t *testing.T) {
	cfg, err := Config{NodeName: "a", Port: testPort, AdvertiseAddr: netip.MustParseAddr("198.18.0.1")}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.BindAddr != "0.0.0.0" || cfg.PushPullBudget != DefaultPushPullBudget ||
		cfg.TombstoneTTL != DefaultTombstoneTTL || cfg.RejoinInterval != DefaultRejoinInterval ||
		cfg.GossipToTheDeadTime != DefaultGossipToTheDeadTime || cfg.Meta.VTEP != cfg.AdvertiseAddr || cfg.Meta.Version != metaVersion {
		t.Errorf("defaults not applied: %+v", cfg)
	}
	if cfg, err := (Config{Port: testPort}).withDefaults(); err != nil || cfg.NodeName == "" {
		t.Errorf("default node name: %q %v", cfg.NodeName, err)
	}

	tests := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"port", func(c *Config) { c.Port = 70000 }, "Config.Port 70000 is not a port: want 1-65535"},
		{"no port", func(c *Config) { c.Port = 0 }, "Config.Port 0 is not a port"},
		{"key", func(c *Config) { c.Keys = [][]byte{[]byte("short")} }, "Config.Keys[0] is 5 bytes: want 16, 24 or 32"},
		{"empty peer", func(c *Config) { c.Peers = []string{"a", " "} }, "Config.Peers[1]: empty entry"},
		{"bad peer port", func(c *Config) { c.Peers = []string{"host:http"} }, `Config.Peers[0]: "host:http": port "http" is not 1-65535`},
		{"budget", func(c *Config) { c.PushPullBudget = 100 }, "Config.PushPullBudget 100 bytes is below MaxRecordBytes"},
		{"floor ttl", func(c *Config) { c.TombstoneTTL = time.Hour; c.FloorTTL = time.Minute }, "floors must outlive tombstones"},
		{"backoff", func(c *Config) { c.JoinBackoffMin = time.Minute; c.JoinBackoffMax = time.Second }, "Config.JoinBackoffMax 1s is below"},
		{"negative", func(c *Config) { c.ProbeInterval = -time.Second }, "Config.ProbeInterval -1s is negative"},
		{"negative rejoin", func(c *Config) { c.RejoinInterval = -time.Second }, "Config.RejoinInterval -1s is negative"},
		{"negative dead gossip", func(c *Config) { c.GossipToTheDeadTime = -time.Second }, "Config.GossipToTheDeadTime -1s is negative"},
		{"meta too big", func(c *Config) { c.Meta.Release = strings.Repeat("r", 600) }, "Config.Meta encodes to"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{NodeName: "a", Port: testPort}
			tt.mod(&cfg)
			_, err := New(cfg)
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

func TestNormalizePeer(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{"10.0.0.1", "10.0.0.1:7947", ""},
		{"10.0.0.1:8000", "10.0.0.1:8000", ""},
		{"host-b", "host-b:7947", ""},
		{" host-b:7 ", "host-b:7", ""},
		{"fd00::1", "[fd00::1]:7947", ""},
		{"[fd00::1]:9000", "[fd00::1]:9000", ""},
		{"host:0", "", `port "0" is not 1-65535`},
		{":7947", "", "empty host"},
		{" ", "", "empty entry"},
		{"[fd00::1", "", "not host[:port]"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := NormalizePeer(tt.in, testPort)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("got %q, %v; want error %q", got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestMemberlistLogLevels(t *testing.T) {
	l := logrus.New()
	var buf bytes.Buffer
	l.SetOutput(&buf)
	l.SetLevel(logrus.DebugLevel)
	l.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true})
	ml := newMemberlistLogger(logrus.NewEntry(l), nil)
	tests := []struct{ line, level, msg string }{
		{"[DEBUG] memberlist: Stream connection from=1.2.3.4", "debug", "Stream connection from=1.2.3.4"},
		{"[INFO] memberlist: Marking b as failed", "info", "Marking b as failed"},
		{"[WARN] memberlist: Refuting a dead message", "warning", "Refuting a dead message"},
		{"[ERR] memberlist: failed to receive: no installed keys", "error", "failed to receive: no installed keys"},
		{"no level at all", "info", "no level at all"},
	}
	for _, tt := range tests {
		buf.Reset()
		ml.Print(tt.line)
		out := buf.String()
		if !strings.Contains(out, "level="+tt.level) || !strings.Contains(out, tt.msg) ||
			!strings.Contains(out, "component=memberlist") || strings.Contains(out, "[") {
			t.Errorf("%q logged as %q", tt.line, out)
		}
	}
}
