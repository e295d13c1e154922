package plugin

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"

	"grapevine/gossip"
)

// Settings are the plugin's configuration, read from the environment that
// config.json declares and `docker plugin set` changes.
type Settings struct {
	Peers      []string     // PEERS: host[:port] to join; empty = a cluster of one
	Advertise  string       // ADVERTISE: "" (auto), an IPv4 address or an interface name
	GossipPort int          // GOSSIP_PORT
	VXLANPort  int          // VXLAN_PORT
	GossipKey  []byte       // the primary GOSSIP_KEY, which seals what this host sends; nil = clear text
	Pool       netip.Prefix // POOL: where networks without --subnet get theirs
	Scope      string       // SCOPE: "local" or "global"
	LogLevel   logrus.Level // LOG_LEVEL

	// GossipKeys are every GOSSIP_KEY, primary (GossipKey) first: gossip
	// sealed with any of them is accepted, so a fleet can rotate its key
	// without a partition.
	GossipKeys [][]byte
	// InsecurePlaintextGossip is INSECURE_PLAINTEXT_GOSSIP: the operator's
	// explicit consent to gossip with PEERS in clear text.
	InsecurePlaintextGossip bool
	// MetricsAddr is METRICS_ADDR, where Prometheus metrics are served;
	// invalid (the zero value) when off.
	MetricsAddr netip.AddrPort
}

// Setting names, as operators type them in `docker plugin set`.
const (
	envPeers      = "PEERS"
	envAdvertise  = "ADVERTISE"
	envGossipPort = "GOSSIP_PORT"
	envVXLANPort  = "VXLAN_PORT"
	envGossipKey  = "GOSSIP_KEY"
	envPool       = "POOL"
	envScope      = "SCOPE"
	envLogLevel   = "LOG_LEVEL"
	envInsecure   = "INSECURE_PLAINTEXT_GOSSIP"
)

// keyHowTo tells an operator how to make a GOSSIP_KEY.
const keyHowTo = "make one with `openssl rand -base64 32` (or `head -c32 /dev/urandom | base64`) and give every host the same value"

// Defaults of every setting (the same values config.json declares).
const (
	DefaultGossipPort = 7947
	DefaultVXLANPort  = 4789
	DefaultPool       = "10.213.0.0/16"
	DefaultScope      = "local"
)

// ParseSettings reads the settings through getenv. Every problem is reported,
// each naming the setting, its value and what is allowed.
func ParseSettings(getenv func(string) string) (Settings, error) {
	s := Settings{
		GossipPort: DefaultGossipPort,
		VXLANPort:  DefaultVXLANPort,
		Pool:       netip.MustParsePrefix(DefaultPool),
		Scope:      DefaultScope,
		LogLevel:   logrus.InfoLevel,
	}
	var errs []error
	bad := func(name, value, allowed string) {
		errs = append(errs, fmt.Errorf("setting %s=%q is invalid: %s (fix with `docker plugin set <plugin> %s=…` while the plugin is disabled)", name, value, allowed, name))
	}

	if v := strings.TrimSpace(getenv(envPeers)); v != "" {
		for _, p := range strings.Split(v, ",") {
			p = strings.TrimSpace(p)
			if p == "" {
				continue
			}
			if err := checkPeer(p); err != nil {
				bad(envPeers, v, fmt.Sprintf("%q: %v; want a comma-separated list of host[:port]", p, err))
				continue
			}
			s.Peers = append(s.Peers, p)
		}
	}
	s.Advertise = strings.TrimSpace(getenv(envAdvertise))
	if a := s.Advertise; a != "" {
		if ip, err := netip.ParseAddr(a); err == nil {
			if !ip.Is4() {
				bad(envAdvertise, a, "only IPv4 addresses are supported")
			}
		} else if strings.ContainsAny(a, "/: ") || len(a) > 15 {
			bad(envAdvertise, a, "want empty (automatic), an IPv4 address or an interface name")
		}
	}
	if v := strings.TrimSpace(getenv(envGossipPort)); v != "" {
		if p, err := strconv.Atoi(v); err != nil || p < 1 || p > 65535 {
			bad(envGossipPort, v, "want a port number 1-65535")
		} else {
			s.GossipPort = p
		}
	}
	if v := strings.TrimSpace(getenv(envVXLANPort)); v != "" {
		if p, err := strconv.Atoi(v); err != nil || p < 1 || p > 65535 {
			bad(envVXLANPort, v, "want a UDP port number 1-65535")
		} else {
			s.VXLANPort = p
		}
	}
	if s.GossipPort == s.VXLANPort {
		errs = append(errs, fmt.Errorf("settings %s and %s are both %d: gossip and the overlay need different ports", envGossipPort, envVXLANPort, s.GossipPort))
	}
	errs = append(errs, s.parseGossipKeys(getenv)...)
	if v := strings.TrimSpace(getenv(envPool)); v != "" {
		p, err := netip.ParsePrefix(v)
		switch {
		case err != nil || !p.Addr().Is4():
			bad(envPool, v, "want an IPv4 CIDR such as 10.213.0.0/16")
		case p != p.Masked():
			bad(envPool, v, fmt.Sprintf("host bits are set; did you mean %s?", p.Masked()))
		case p.Bits() > 24:
			bad(envPool, v, "too small: POOL must hold at least one /24 (prefix length ≤ 24)")
		default:
			s.Pool = p
		}
	}
	if v := strings.TrimSpace(getenv(envScope)); v != "" {
		if v != "local" && v != "global" {
			bad(envScope, v, `want "local" (plain networks on any host) or "global" (Swarm-only clusters)`)
		} else {
			s.Scope = v
		}
	}
	if err := s.parseMetricsAddr(getenv); err != nil {
		errs = append(errs, err)
	}
	if v := strings.TrimSpace(getenv(envLogLevel)); v != "" {
		l, err := logrus.ParseLevel(v)
		if err != nil {
			bad(envLogLevel, v, "want one of panic, fatal, error, warn, info, debug, trace")
		} else {
			s.LogLevel = l
		}
	}
	return s, errors.Join(errs...)
}

// parseGossipKeys reads GOSSIP_KEY (a comma-separated list, primary first)
// and INSECURE_PLAINTEXT_GOSSIP, and refuses PEERS without a key unless the
// operator opted in to clear text.
func (s *Settings) parseGossipKeys(getenv func(string) string) []error {
	var errs []error
	fix := fmt.Sprintf("(fix with `docker plugin set <plugin> %s=…` while the plugin is disabled)", envGossipKey)
	keys, err := ParseGossipKeys(getenv(envGossipKey))
	if err != nil {
		errs = append(errs, fmt.Errorf("setting %s is invalid: %w %s", envGossipKey, err, fix))
	} else if len(keys) > 0 {
		s.GossipKeys, s.GossipKey = keys, keys[0]
	}
	switch v := strings.TrimSpace(getenv(envInsecure)); v {
	case "", "false":
	case "true":
		s.InsecurePlaintextGossip = true
	default:
		errs = append(errs, fmt.Errorf("setting %s=%q is invalid: want true or false (fix with `docker plugin set <plugin> %s=…` while the plugin is disabled)", envInsecure, v, envInsecure))
	}
	if len(s.Peers) > 0 && err == nil && len(keys) == 0 && !s.InsecurePlaintextGossip {
		errs = append(errs, fmt.Errorf("setting %s is empty but %s is set: gossip between hosts must be encrypted and authenticated; %s, with `docker plugin set <plugin> %s=…` while the plugin is disabled (on a trusted network only, %s=true gossips in clear text instead)",
			envGossipKey, envPeers, keyHowTo, envGossipKey, envInsecure))
	}
	return errs
}

// ParseGossipKeys decodes GOSSIP_KEY: one or more comma-separated base64
// keys of 16, 24 or 32 bytes, the primary first. Blank means no key (nil).
// A key listed twice is refused: it is always a typing mistake during a
// rotation.
func ParseGossipKeys(v string) ([][]byte, error) {
	if strings.TrimSpace(v) == "" {
		return nil, nil
	}
	var keys [][]byte
	seen := map[string]int{}
	for i, field := range strings.Split(v, ",") {
		if strings.TrimSpace(field) == "" {
			return nil, fmt.Errorf("key %d of the comma-separated list is empty", i+1)
		}
		key, err := gossip.ParseKey(field)
		if err != nil {
			return nil, fmt.Errorf("key %d of the comma-separated list: %w", i+1, err)
		}
		if j, dup := seen[string(key)]; dup {
			return nil, fmt.Errorf("keys %d and %d of the comma-separated list are the same key", j+1, i+1)
		}
		seen[string(key)] = i
		keys = append(keys, key)
	}
	return keys, nil
}

func checkPeer(p string) error {
	host, port := p, ""
	if h, pt, err := net.SplitHostPort(p); err == nil {
		host, port = h, pt
	}
	if host == "" {
		return errors.New("empty host")
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("port %q is not 1-65535", port)
		}
	}
	return nil
}
