package plugin

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"grapevine/gossip"
	gvipam "grapevine/ipam"
)

// Settings are the plugin's configuration, read from the environment that
// config.json declares and `docker plugin set` changes. ParseSettings is
// the one place they are checked: the libraries they are passed to (gossip,
// driver, ipam) check their Config fields for programming errors only, and
// hold no default of their own for them.
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
	// ForgetAfter is FORGET_AFTER: how long a host must have been absent,
	// as every host that stays sees it, before `grapevine forget` may
	// remove it from the known hosts.
	ForgetAfter time.Duration
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
	envForget     = "FORGET_AFTER"
)

// keyHowTo tells an operator how to make a GOSSIP_KEY.
const keyHowTo = "make one with `openssl rand -base64 32` (or `head -c32 /dev/urandom | base64`) and give every host the same value"

// Defaults of the settings: the only copy in the code. config.json declares
// the same values (a test compares them).
const (
	DefaultGossipPort = 7947 // Swarm's own memberlist uses 7946
	DefaultVXLANPort  = 4789 // IANA's VXLAN port
	DefaultPool       = "10.213.0.0/16"
	DefaultScope      = "local"
	DefaultLogLevel   = logrus.InfoLevel
	DefaultForget     = time.Hour
)

// settingErrors collects the refusals of ParseSettings.
type settingErrors []error

// bad refuses value of setting name, saying what is allowed and how to fix it.
func (e *settingErrors) bad(name, value, allowed string) {
	*e = append(*e, fmt.Errorf("setting %s=%q is invalid: %s (fix with `docker plugin set <plugin> %s=…` while the plugin is disabled)", name, value, allowed, name))
}

// ParseSettings reads the settings through getenv. Every problem is reported,
// each naming the setting, its value and what is allowed.
func ParseSettings(getenv func(string) string) (Settings, error) {
	s := Settings{
		GossipPort:  DefaultGossipPort,
		VXLANPort:   DefaultVXLANPort,
		Pool:        netip.MustParsePrefix(DefaultPool),
		Scope:       DefaultScope,
		LogLevel:    DefaultLogLevel,
		ForgetAfter: DefaultForget,
	}
	var errs settingErrors
	get := func(name string) string { return strings.TrimSpace(getenv(name)) }

	s.GossipPort = errs.port(envGossipPort, get(envGossipPort), "want a port number 1-65535", s.GossipPort)
	s.VXLANPort = errs.port(envVXLANPort, get(envVXLANPort), "want a UDP port number 1-65535", s.VXLANPort)
	if s.GossipPort == s.VXLANPort {
		errs = append(errs, fmt.Errorf("settings %s and %s are both %d: gossip and the overlay need different ports (fix with `docker plugin set <plugin> %s=…` while the plugin is disabled)",
			envGossipPort, envVXLANPort, s.GossipPort, envVXLANPort))
	}
	for _, port := range []int{s.GossipPort, s.VXLANPort} {
		if port == TunnelPort {
			errs = append(errs, fmt.Errorf("settings %s and %s must not be %d, the port of encrypted networks (docs/encryption.md) (fix with `docker plugin set <plugin> NAME=…` while the plugin is disabled)",
				envGossipPort, envVXLANPort, TunnelPort))
		}
	}
	s.Peers = errs.peers(get(envPeers), s.GossipPort)
	s.Advertise = get(envAdvertise)
	errs.advertise(s.Advertise)
	errs = append(errs, s.parseGossipKeys(getenv)...)
	if v := get(envPool); v != "" {
		s.Pool = errs.pool(v, s.Pool)
	}
	switch v := get(envScope); v {
	case "":
	case "local", "global":
		s.Scope = v
	default:
		errs.bad(envScope, v, `want "local" (plain networks on any host) or "global" (Swarm-only clusters)`)
	}
	if err := s.parseMetricsAddr(getenv); err != nil {
		errs = append(errs, err)
	}
	if v := get(envForget); v != "" {
		if d, err := time.ParseDuration(v); err != nil || d < time.Second {
			errs.bad(envForget, v, "want a duration of at least 1s, such as 1h or 30m")
		} else {
			s.ForgetAfter = d
		}
	}
	if v := get(envLogLevel); v != "" {
		if l, err := logrus.ParseLevel(v); err != nil {
			errs.bad(envLogLevel, v, "want one of panic, fatal, error, warn, info, debug, trace")
		} else {
			s.LogLevel = l
		}
	}
	return s, errors.Join(errs...)
}

// port parses a port setting; blank keeps def.
func (e *settingErrors) port(name, v, allowed string, def int) int {
	if v == "" {
		return def
	}
	p, err := strconv.Atoi(v)
	if err != nil || p < 1 || p > 65535 {
		e.bad(name, v, allowed)
		return def
	}
	return p
}

// peers parses PEERS, a comma-separated list of host[:port] (blank entries
// are skipped), with the rules gossip applies to Config.Peers.
func (e *settingErrors) peers(v string, gossipPort int) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if _, err := gossip.NormalizePeer(p, gossipPort); err != nil {
			e.bad(envPeers, v, fmt.Sprintf("%v; want a comma-separated list of host[:port]", err))
			continue
		}
		out = append(out, p)
	}
	return out
}

// advertise checks ADVERTISE: blank, an IPv4 address or an interface name.
func (e *settingErrors) advertise(a string) {
	if a == "" {
		return
	}
	if ip, err := netip.ParseAddr(a); err == nil {
		if !ip.Is4() {
			e.bad(envAdvertise, a, "only IPv4 addresses are supported")
		}
	} else if strings.ContainsAny(a, "/: ") || len(a) > 15 {
		e.bad(envAdvertise, a, "want empty (automatic), an IPv4 address or an interface name")
	}
}

// pool parses POOL: an IPv4 network that holds at least one subnet of the
// size IPAM chooses, within the sizes IPAM accepts; a refusal keeps def.
func (e *settingErrors) pool(v string, def netip.Prefix) netip.Prefix {
	p, err := netip.ParsePrefix(v)
	switch {
	case err != nil || !p.Addr().Is4():
		e.bad(envPool, v, "want an IPv4 CIDR such as "+DefaultPool)
	case p != p.Masked():
		e.bad(envPool, v, fmt.Sprintf("host bits are set; did you mean %s?", p.Masked()))
	case p.Bits() > gvipam.DefaultPrefixLen:
		e.bad(envPool, v, fmt.Sprintf("too small: POOL must hold at least one /%d (prefix length ≤ %d)", gvipam.DefaultPrefixLen, gvipam.DefaultPrefixLen))
	case p.Bits() < gvipam.MinPrefixLen:
		e.bad(envPool, v, fmt.Sprintf("too large: the prefix length must be at least %d", gvipam.MinPrefixLen))
	default:
		return p
	}
	return def
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
		key, err := parseKey(field)
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

// parseKey decodes one GOSSIP_KEY: standard base64 of 16, 24 or 32 bytes
// (AES-128, -192 or -256). Its errors never show the key.
func parseKey(field string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(field))
	if err != nil {
		return nil, fmt.Errorf("GOSSIP_KEY is not valid base64 (%w); %s", err, keyHowTo)
	}
	if n := len(key); n != 16 && n != 24 && n != 32 {
		return nil, fmt.Errorf("GOSSIP_KEY decodes to %d bytes, want 16, 24 or 32; %s", n, keyHowTo)
	}
	return key, nil
}
