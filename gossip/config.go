package gossip

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/sirupsen/logrus"
	"go.etcd.io/bbolt"
)

// Defaults applied by New to zero fields of Config.
const (
	DefaultBindAddr            = "0.0.0.0"
	DefaultProbeInterval       = time.Second
	DefaultProbeTimeout        = 500 * time.Millisecond
	DefaultGossipInterval      = 200 * time.Millisecond
	DefaultGossipNodes         = 3
	DefaultPushPullInterval    = 15 * time.Second
	DefaultRetransmitMult      = 4
	DefaultSuspicionMult       = 4
	DefaultTCPTimeout          = 10 * time.Second
	DefaultPushPullBudget      = 256 << 10
	DefaultMaxQueuedBroadcasts = 4096
	DefaultTombstoneTTL        = time.Hour
	DefaultFloorTTL            = 7 * 24 * time.Hour
	DefaultReapInterval        = time.Minute
	DefaultJoinBackoffMin      = time.Second
	DefaultJoinBackoffMax      = 30 * time.Second
	DefaultLeaveTimeout        = 5 * time.Second
	DefaultFanOut              = 32
	DefaultRejoinInterval      = 10 * time.Second
	DefaultGossipToTheDeadTime = 30 * time.Second // memberlist's LAN default
	DefaultMaxRecordsPerWriter = 1 << 16
	DefaultMaxBytesPerWriter   = 32 << 20
)

// Config configures a Cluster. Every field has a usable zero value (the
// documented default) except where noted; New validates the result.
type Config struct {
	// NodeName names this host in the cluster and in record owners. It must
	// be unique in the cluster and stable across restarts (records owned by
	// a previous name are not "own" records any more). Default: hostname.
	NodeName string

	// BindAddr is the address memberlist listens on (TCP and UDP).
	// Default "0.0.0.0". Ignored when Transport is set.
	BindAddr string

	// AdvertiseAddr is the address other hosts use to reach this one, for
	// gossip and as the VTEP. Zero lets memberlist pick the first private
	// address of the host (not recommended: plugin resolves ADVERTISE).
	AdvertiseAddr netip.Addr

	// Port is the gossip port, for both TCP and UDP, bound and advertised,
	// and the port of Peers entries that give none. Required (1-65535):
	// the operator's default lives with the settings, in package plugin.
	// Ignored for binding when Transport is set.
	Port int

	// Peers are "host[:port]" entries (port defaults to Port). Empty
	// means a single-host cluster: Joined is true at once. Entries naming
	// this host are harmless: joining only oneself does not count as joined.
	Peers []string

	// Keys is the decoded GOSSIP_KEY list: the keyring, primary key
	// first, each of 16, 24 or 32 bytes selecting AES-128/192/256-GCM.
	// With keys every message is encrypted with the primary key and
	// authenticated, and a message is accepted only if one of the keys
	// opens it: plain or foreign-key messages are refused, so a host
	// without a key can neither join nor inject records. Several keys let
	// a fleet rotate keys without a partition (see RotateKeys in the
	// package documentation, and InstallKey, UseKey, RemoveKey to do it
	// without restarts). Empty sends everything in clear text (Start logs
	// a warning).
	Keys [][]byte

	// MaxRecordsPerWriter and MaxBytesPerWriter cap what one writer (record
	// owner) may have stored on this node: live records and tombstones
	// still gossiped, counted with their encoded size. A received record
	// past its writer's cap is refused (and counted in RefusalStats); an
	// own write past it fails with ErrWriterCap. Every member should use
	// the same caps. Defaults 65536 records and 32 MiB.
	MaxRecordsPerWriter int
	MaxBytesPerWriter   int

	// Meta is published in memberlist's node metadata (at most 512 bytes
	// encoded). Meta.VTEP defaults to AdvertiseAddr.
	Meta NodeMeta

	// DB persists records and the Lamport clock in bucket "gossip". Nil
	// keeps everything in memory (tests only: a restarted node would lose
	// its clock and its records).
	DB *bbolt.DB

	// Log receives this package's and memberlist's messages, the latter
	// mapped to logrus levels with field component=memberlist. Nil discards.
	Log *logrus.Entry

	// Transport carries memberlist's packets and streams. Nil uses the real
	// network (memberlist's NetTransport on BindAddr:Port). Tests pass
	// memberlist.MockNetwork transports.
	Transport memberlist.Transport

	// ProbeInterval is the time between failure probes of one random
	// member; with ProbeTimeout (the wait for an ack, longer than the
	// network RTT) and SuspicionMult it sets how fast a dead host is
	// noticed: suspicion lasts SuspicionMult × log10(N+1) × ProbeInterval.
	// Defaults 1 s, 500 ms, 4.
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	SuspicionMult int

	// GossipInterval is the time between gossip rounds, each sending queued
	// broadcasts to GossipNodes random members. Lower spreads records
	// faster for more packets. Defaults 200 ms, 3.
	GossipInterval time.Duration
	GossipNodes    int

	// FanOut is the "fast path" for this node's own writes: besides being
	// queued for gossip, every local Put and Delete is sent at once, one
	// UDP packet each (encrypted and authenticated like all gossip), to
	// every other alive member when there are at most FanOut of them, else
	// to FanOut random ones, from which gossip carries it on (a member
	// that receives a record new to it queues it for gossip, whichever way
	// it came). A small cluster thus holds a write after one network
	// delay instead of one or more GossipIntervals, and a large cluster's
	// epidemic starts from FanOut+1 holders instead of one.
	//
	// Bandwidth trade-off: the writer sends FanOut extra packets per own
	// write (the record plus about 50 bytes of framing, more with a key);
	// gossip's own traffic is unchanged (each holder still retransmits the
	// record RetransmitMult × log10(N+1) times), so with N members and W
	// writes per second cluster-wide the fast path adds about
	// W × min(FanOut, N-1) × (record + 50) / N bytes per member per second
	// (at 100 writes/s, 32 fan-out, 150-byte records, 500 members: about
	// 1.3 KB/s per member, against ~100 KB/s of gossip). The sends run on
	// a background goroutine, never in Put; writes made while it is more
	// than a thousand writes behind skip the fast path (Stats
	// DirectDropped) and travel by gossip only. Negative disables the fast
	// path. Default 32.
	FanOut int

	// RetransmitMult: each broadcast is sent RetransmitMult × log10(N+1)
	// times by every node that queues it (N from memberlist's member
	// count). Higher is more robust to loss, costs more packets. Default 4.
	RetransmitMult int

	// PushPullInterval is the time between full TCP state exchanges with
	// one random member (memberlist scales it up above 32 members). It
	// bounds how long a lost broadcast stays unrepaired. Default 15 s.
	PushPullInterval time.Duration

	// TCPTimeout bounds one TCP connection (join, push/pull). Default 10 s.
	TCPTimeout time.Duration

	// PushPullBudget caps, in bytes, the records sent by one push/pull.
	// Larger states are sent as a window that rotates through all records,
	// one window per exchange. Minimum MaxRecordBytes. Default 256 KiB.
	PushPullBudget int

	// MaxQueuedBroadcasts caps the broadcast queue; beyond it the oldest
	// broadcasts are dropped and anti-entropy delivers those records
	// instead. Default 4096.
	MaxQueuedBroadcasts int

	// TombstoneTTL is how long a deletion is gossiped before it is reaped
	// into a floor. It must be much longer than the time to converge
	// (a few PushPullIntervals × windows per full state). Default 1 h.
	TombstoneTTL time.Duration

	// FloorTTL is how long a reaped deletion is remembered (locally, not
	// gossiped: kind, key, version) to reject stale copies from hosts that
	// slept through it. A host away longer than this can resurrect deleted
	// records; keep it above the longest absence after which a host may
	// return with its old state. Default 7 days.
	FloorTTL time.Duration

	// ReapInterval is how often tombstones and floors are checked for
	// expiry. Default 1 min.
	ReapInterval time.Duration

	// JoinBackoffMin and JoinBackoffMax bound the wait between attempts to
	// reach PEERS; the wait doubles after every failed attempt (±20 %
	// jitter). Once joined, an isolated node (no alive peer) retries at
	// the same pace. Defaults 1 s and 30 s.
	JoinBackoffMin time.Duration
	JoinBackoffMax time.Duration

	// LeaveTimeout bounds the graceful leave broadcast in Shutdown.
	// Default 5 s.
	LeaveTimeout time.Duration

	// RejoinInterval is the time (±20 % jitter) between rejoin rounds,
	// which heal partitions between groups of members: memberlist stops
	// gossiping to a member GossipToTheDeadTime after declaring it dead,
	// so two groups that each still have several members would never
	// merge again by themselves. Every round contacts (a memberlist join:
	// one TCP push/pull) up to three random addresses among the PEERS
	// entries and the failed members this node remembers (at most 1024,
	// the oldest failure forgotten first) that are not currently alive;
	// members that left gracefully are not contacted. A round with nothing
	// to contact costs nothing. Default 10 s.
	RejoinInterval time.Duration

	// GossipToTheDeadTime is how long memberlist keeps gossiping to a
	// member after declaring it dead (and keeps it in its node list); a
	// dead member that answers within this time is taken back by
	// memberlist itself, later only by the rejoin rounds. Default 30 s.
	GossipToTheDeadTime time.Duration

	// Now is the clock for tombstone reaping. Nil is time.Now; tests pass
	// a fake clock.
	Now func() time.Time
}

// withDefaults returns cfg with defaults filled in and checks it.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.NodeName == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return cfg, fmt.Errorf("Config.NodeName is empty and the hostname is unknown (%w): set NodeName: %w", err, ErrInvalidConfig)
		}
		cfg.NodeName = h
	}
	if cfg.BindAddr == "" {
		cfg.BindAddr = DefaultBindAddr
	}
	if cfg.Meta.VTEP == (netip.Addr{}) {
		cfg.Meta.VTEP = cfg.AdvertiseAddr
	}
	cfg.Meta.Version = metaVersion
	if cfg.Log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		l.SetLevel(logrus.PanicLevel) // do not format lines nobody reads
		cfg.Log = logrus.NewEntry(l)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.setTuningDefaults()
	if errs := cfg.check(); len(errs) > 0 {
		return cfg, fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(errs...))
	}
	return cfg, nil
}

// setTuningDefaults fills the zero timing and size fields.
func (cfg *Config) setTuningDefaults() {
	setDur := func(p *time.Duration, d time.Duration) {
		if *p == 0 {
			*p = d
		}
	}
	setInt := func(p *int, d int) {
		if *p == 0 {
			*p = d
		}
	}
	setDur(&cfg.ProbeInterval, DefaultProbeInterval)
	setDur(&cfg.ProbeTimeout, DefaultProbeTimeout)
	setDur(&cfg.GossipInterval, DefaultGossipInterval)
	setDur(&cfg.PushPullInterval, DefaultPushPullInterval)
	setDur(&cfg.TCPTimeout, DefaultTCPTimeout)
	setDur(&cfg.TombstoneTTL, DefaultTombstoneTTL)
	setDur(&cfg.FloorTTL, DefaultFloorTTL)
	setDur(&cfg.ReapInterval, DefaultReapInterval)
	setDur(&cfg.JoinBackoffMin, DefaultJoinBackoffMin)
	setDur(&cfg.JoinBackoffMax, DefaultJoinBackoffMax)
	setDur(&cfg.LeaveTimeout, DefaultLeaveTimeout)
	setDur(&cfg.RejoinInterval, DefaultRejoinInterval)
	setDur(&cfg.GossipToTheDeadTime, DefaultGossipToTheDeadTime)
	setInt(&cfg.SuspicionMult, DefaultSuspicionMult)
	setInt(&cfg.GossipNodes, DefaultGossipNodes)
	setInt(&cfg.RetransmitMult, DefaultRetransmitMult)
	setInt(&cfg.PushPullBudget, DefaultPushPullBudget)
	setInt(&cfg.MaxQueuedBroadcasts, DefaultMaxQueuedBroadcasts)
	setInt(&cfg.FanOut, DefaultFanOut)
	setInt(&cfg.MaxRecordsPerWriter, DefaultMaxRecordsPerWriter)
	setInt(&cfg.MaxBytesPerWriter, DefaultMaxBytesPerWriter)
}

// check reports every field of cfg (defaults applied) that New cannot use,
// each naming the field. These are programming errors: the plugin checks
// the operator's settings, with the settings' names, before it fills Config.
func (cfg *Config) check() []error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}
	if cfg.Port < 1 || cfg.Port > 65535 {
		bad("Config.Port %d is not a port: want 1-65535", cfg.Port)
	}
	if !validName(cfg.NodeName) {
		bad("Config.NodeName %.32q is not a node name: use 1-%d letters, digits, '.', '_' or '-', starting with a letter or digit", cfg.NodeName, MaxOwnerLen)
	}
	for i, k := range cfg.Keys {
		if err := memberlist.ValidateKey(k); err != nil {
			bad("Config.Keys[%d] is %d bytes: want 16, 24 or 32", i, len(k))
		}
	}
	if cfg.MaxRecordsPerWriter < 1 || cfg.MaxBytesPerWriter < MaxRecordBytes {
		bad("Config.MaxRecordsPerWriter %d and Config.MaxBytesPerWriter %d: want at least 1 record and MaxRecordBytes (%d)", cfg.MaxRecordsPerWriter, cfg.MaxBytesPerWriter, MaxRecordBytes)
	}
	for i, p := range cfg.Peers {
		if _, err := NormalizePeer(p, cfg.Port); err != nil {
			bad("Config.Peers[%d]: %v", i, err)
		}
	}
	if cfg.PushPullBudget < MaxRecordBytes {
		bad("Config.PushPullBudget %d bytes is below MaxRecordBytes (%d)", cfg.PushPullBudget, MaxRecordBytes)
	}
	if cfg.FloorTTL < cfg.TombstoneTTL {
		bad("Config.FloorTTL %v is shorter than Config.TombstoneTTL %v: floors must outlive tombstones", cfg.FloorTTL, cfg.TombstoneTTL)
	}
	if cfg.JoinBackoffMax < cfg.JoinBackoffMin {
		bad("Config.JoinBackoffMax %v is below Config.JoinBackoffMin %v", cfg.JoinBackoffMax, cfg.JoinBackoffMin)
	}
	for name, d := range map[string]time.Duration{
		"ProbeInterval": cfg.ProbeInterval, "ProbeTimeout": cfg.ProbeTimeout,
		"GossipInterval": cfg.GossipInterval, "PushPullInterval": cfg.PushPullInterval,
		"TCPTimeout": cfg.TCPTimeout, "TombstoneTTL": cfg.TombstoneTTL,
		"ReapInterval": cfg.ReapInterval, "JoinBackoffMin": cfg.JoinBackoffMin,
		"LeaveTimeout": cfg.LeaveTimeout, "RejoinInterval": cfg.RejoinInterval,
		"GossipToTheDeadTime": cfg.GossipToTheDeadTime,
	} {
		if d < 0 {
			bad("Config.%s %v is negative", name, d)
		}
	}
	if meta, err := cfg.Meta.encode(); err != nil {
		bad("Config.Meta: %v", err)
	} else if len(meta) > memberlist.MetaMaxSize {
		bad("Config.Meta encodes to %d bytes, more than memberlist's %d", len(meta), memberlist.MetaMaxSize)
	}
	return errs
}

// NormalizePeer turns a peer entry "host", "host:port", "[v6]:port" or a
// bare IPv6 address into "host:port", with defPort where none is given.
// The plugin checks PEERS with it; New checks Config.Peers with it.
func NormalizePeer(p string, defPort int) (string, error) {
	p = strings.TrimSpace(p)
	if p == "" {
		return "", errors.New("empty entry: want host[:port]")
	}
	if a, err := netip.ParseAddr(p); err == nil {
		return netip.AddrPortFrom(a, uint16(defPort)).String(), nil
	}
	host, port, err := net.SplitHostPort(p)
	if err != nil {
		if strings.Contains(p, "[") || strings.Count(p, ":") > 0 {
			return "", fmt.Errorf("%q is not host[:port] (%w)", p, err)
		}
		return net.JoinHostPort(p, strconv.Itoa(defPort)), nil
	}
	if host == "" {
		return "", fmt.Errorf("%q: empty host: want host:port", p)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("%q: port %q is not 1-65535", p, port)
	}
	return net.JoinHostPort(host, port), nil
}

// memberlistConfig translates cfg for memberlist.
func (c *Cluster) memberlistConfig() *memberlist.Config {
	cfg := c.cfg
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeName
	mc.BindAddr = cfg.BindAddr
	mc.BindPort = cfg.Port
	mc.AdvertisePort = cfg.Port
	if cfg.AdvertiseAddr.IsValid() {
		mc.AdvertiseAddr = cfg.AdvertiseAddr.Unmap().String()
	}
	mc.Transport = cfg.Transport
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.SuspicionMult = cfg.SuspicionMult
	mc.GossipInterval = cfg.GossipInterval
	mc.GossipNodes = cfg.GossipNodes
	mc.RetransmitMult = cfg.RetransmitMult
	mc.PushPullInterval = cfg.PushPullInterval
	mc.TCPTimeout = cfg.TCPTimeout
	mc.GossipToTheDeadTime = cfg.GossipToTheDeadTime
	if c.keyring != nil {
		mc.Keyring = c.keyring
		mc.GossipVerifyIncoming = true
		mc.GossipVerifyOutgoing = true
	}
	mc.Delegate = &delegate{c: c}
	mc.Events = &eventDelegate{c: c}
	mc.LogOutput = nil
	mc.Logger = newMemberlistLogger(cfg.Log, &c.health)
	mc.Ping = pingDelegate{h: &c.health}
	return mc
}
