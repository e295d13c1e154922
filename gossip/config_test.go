package gossip

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

func TestParseKey(t *testing.T) {
	b64 := func(n int) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, n)) }
	tests := []struct {
		in      string
		wantLen int
		wantErr string
	}{
		{"", 0, ""},
		{"   ", 0, ""},
		{b64(16), 16, ""},
		{b64(24), 24, ""},
		{" " + b64(32) + "\n", 32, ""},
		{b64(31), 0, "GOSSIP_KEY decodes to 31 bytes, want 16, 24 or 32"},
		{b64(64), 0, "GOSSIP_KEY decodes to 64 bytes"},
		{"not base64!", 0, "GOSSIP_KEY is not valid base64"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			key, err := ParseKey(tt.in)
			if tt.wantErr != "" {
				if !errors.Is(err, ErrInvalidKey) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), "openssl rand -base64 32") {
					t.Errorf("error does not say how to fix it: %v", err)
				}
				return
			}
			if err != nil || len(key) != tt.wantLen {
				t.Fatalf("got %d bytes, %v", len(key), err)
			}
		})
	}
}

func TestConfigDefaultsAndValidation(t *testing.T) {
	cfg, err := Config{NodeName: "a", AdvertiseAddr: netip.MustParseAddr("198.18.0.1")}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Port != DefaultPort || cfg.BindAddr != "0.0.0.0" || cfg.PushPullBudget != DefaultPushPullBudget ||
		cfg.TombstoneTTL != DefaultTombstoneTTL || cfg.RejoinInterval != DefaultRejoinInterval ||
		cfg.GossipToTheDeadTime != DefaultGossipToTheDeadTime || cfg.Meta.VTEP != cfg.AdvertiseAddr || cfg.Meta.Version != metaVersion {
		t.Errorf("defaults not applied: %+v", cfg)
	}
	if cfg, err := (Config{}).withDefaults(); err != nil || cfg.NodeName == "" {
		t.Errorf("default node name: %q %v", cfg.NodeName, err)
	}

	tests := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"port", func(c *Config) { c.Port = 70000 }, "GOSSIP_PORT must be 1-65535"},
		{"key", func(c *Config) { c.Keys = [][]byte{[]byte("short")} }, "GOSSIP_KEY must decode to 16, 24 or 32 bytes"},
		{"empty peer", func(c *Config) { c.Peers = []string{"a", " "} }, "PEERS entry 2 is empty"},
		{"bad peer port", func(c *Config) { c.Peers = []string{"host:http"} }, `PEERS entry "host:http"`},
		{"budget", func(c *Config) { c.PushPullBudget = 100 }, "below MaxRecordBytes"},
		{"floor ttl", func(c *Config) { c.TombstoneTTL = time.Hour; c.FloorTTL = time.Minute }, "floors must outlive tombstones"},
		{"backoff", func(c *Config) { c.JoinBackoffMin = time.Minute; c.JoinBackoffMax = time.Second }, "join backoff max"},
		{"negative", func(c *Config) { c.ProbeInterval = -time.Second }, "probe interval -1s is negative"},
		{"negative rejoin", func(c *Config) { c.RejoinInterval = -time.Second }, "rejoin interval -1s is negative"},
		{"negative dead gossip", func(c *Config) { c.GossipToTheDeadTime = -time.Second }, "gossip-to-the-dead time -1s is negative"},
		{"meta too big", func(c *Config) { c.Meta.Release = strings.Repeat("r", 600) }, "node metadata encodes to"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{NodeName: "a"}
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
		{"host:0", "", "port 1-65535"},
		{":7947", "", "port 1-65535"},
		{"[fd00::1", "", "not host[:port]"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := normalizePeer(tt.in, DefaultPort)
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
	ml := newMemberlistLogger(logrus.NewEntry(l))
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
