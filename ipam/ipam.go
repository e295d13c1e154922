package ipam

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"time"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/sirupsen/logrus"
	"go.etcd.io/bbolt"

	"grapevine/gossip"
)

// Address spaces grapevine serves. Docker asks for the local space for plain
// networks and for the global space from a Swarm manager's allocator.
const (
	LocalAddressSpace  = "grapevine-local"
	GlobalAddressSpace = "grapevine-global"
)

// Option keys and values Docker uses in IPAM requests.
const (
	requestAddressTypeKey = "RequestAddressType"
	gatewayAddressType    = "com.docker.network.gateway"
	dockerOptionPrefix    = "com.docker."
	// macAddressKey carries the endpoint's MAC address. Docker adds it to
	// every endpoint's address request because GetCapabilities answers
	// RequiresMACAddress; --aux-address requests never carry it.
	macAddressKey = "com.docker.network.endpoint.macaddress"
)

// Prefix lengths of Config.DefaultPool and of the subnets chosen from it.
const (
	// DefaultPrefixLen is the prefix length of auto-chosen subnets when
	// Config.DefaultPrefixLen is zero.
	DefaultPrefixLen = 24
	// MinPrefixLen is the shortest prefix Config.DefaultPool may have.
	MinPrefixLen = 8
	maxPrefixLen = 30
)

// Error kinds. Every error returned by the Driver matches one of these with
// errors.Is (storage failures wrap the bbolt error instead).
var (
	// ErrInvalid: a request field is malformed or out of the allowed range.
	ErrInvalid = errors.New("invalid ipam request")
	// ErrUnsupported: the request asks for something grapevine does not do (IPv6).
	ErrUnsupported = errors.New("unsupported ipam request")
	// ErrConflict: the pool or address is already used.
	ErrConflict = errors.New("ipam conflict")
	// ErrExhausted: no subnet or address is left.
	ErrExhausted = errors.New("ipam space exhausted")
	// ErrUnknownPool: the PoolID names no pool this host holds.
	ErrUnknownPool = errors.New("unknown ipam pool")
	// ErrNotOwned: the address lies in a block this host does not own.
	ErrNotOwned = errors.New("address block owned by another host")
)

// opError carries an operator-facing message and an error kind.
type opError struct {
	kind error
	err  error
}

func (e *opError) Error() string   { return e.err.Error() }
func (e *opError) Unwrap() []error { return []error{e.kind, e.err} }

func failf(kind error, format string, a ...any) error {
	return &opError{kind: kind, err: fmt.Errorf(format, a...)}
}

// Config configures a Driver.
type Config struct {
	// DB is the plugin's store; the Driver owns its top-level bucket "ipam".
	DB *bbolt.DB
	// DefaultPool is where subnets of networks created without --subnet come
	// from: an IPv4 network address of prefix length MinPrefixLen to /30.
	// Required; the plugin passes the operator's setting POOL, whose
	// default it holds.
	DefaultPool netip.Prefix
	// DefaultPrefixLen is the prefix length of auto-chosen subnets, from
	// DefaultPool's to /30. Zero means DefaultPrefixLen (24).
	DefaultPrefixLen int
	// RouteConflict reports a host route (not grapevine's) overlapping p, as a
	// human description like "198.18.0.0/24 dev eth0", or "" when none. It is
	// consulted only when choosing a subnet automatically, never with the
	// Driver's lock held. Nil means "no host routes".
	RouteConflict func(p netip.Prefix) (string, error)
	// Log receives the driver's messages. Nil discards them.
	Log *logrus.Entry

	// Cluster is the replicated state shared with the other hosts. Nil
	// keeps the single-host behaviour: this host owns every pool whole.
	// With a Cluster, pools of the local address space are cluster-wide
	// (identified by their subnet) and divided into blocks (see doc.go);
	// pools of the global address space stay per host (Swarm's manager
	// chooses their addresses), and so do local ones with SwarmAllocates.
	Cluster gossip.Replicated
	// ReclaimAfter is how long a host must have been continuously absent
	// (as seen by a majority of all known hosts) before its blocks may be
	// reclaimed. Zero or negative means 24 hours.
	ReclaimAfter time.Duration
	// ForgetAfter is how long a host must have been continuously absent,
	// as seen by every host that stays, before an operator may forget it
	// (Forget). Zero or negative means 1 hour.
	ForgetAfter time.Duration
	// AgreeTimeout bounds one agreement (Paxos round trips until a value
	// is chosen) on the first division of a pool or on a reclaim. Zero or
	// negative means 5 seconds.
	AgreeTimeout time.Duration
	// DonateTimeout bounds how long a request for an address waits for
	// another host to donate space when this host's blocks are full. Zero
	// or negative means 5 seconds.
	DonateTimeout time.Duration
	// Now is the clock for absence times (reclaim). Nil means time.Now.
	Now func() time.Time

	// SwarmAllocates says that a Swarm manager chooses every address of
	// every network on this host: the plugin sets it with SCOPE=global,
	// where every grapevine network is a Swarm network. Pools of the local
	// address space then behave like those of the global space: they are
	// not divided among the hosts (the Cluster is not consulted for them),
	// an identical RequestPool takes another reference, and a request for
	// a specific address (the manager's choice, repeated by a host that is
	// both manager and worker) is accepted in any block, idempotently. A
	// local-space request without an address is refused: only the manager
	// may choose addresses, or two hosts could hand out the same one.
	SwarmAllocates bool

	// ObserveAgreement, when set, is told the duration and outcome of
	// every agreement this host proposes or asks the leader to run (a
	// pool's first division, a reclaim). ObserveDonation is told how long
	// each request for donated space took, whether made ahead (free space
	// ran low) or by an address request waiting for it. Both are for metrics and must be
	// quick. Only used with a Cluster.
	ObserveAgreement func(time.Duration, error)
	ObserveDonation  func(time.Duration, error)
}

// Driver is grapevine's IPAM driver.
type Driver struct {
	db        *bbolt.DB
	commit    *committer
	log       *logrus.Entry
	defPool   netip.Prefix
	defLen    int
	routeConf func(netip.Prefix) (string, error)
	swarm     bool // Config.SwarmAllocates

	mu    sync.Mutex
	pools map[string]*pool // by PoolID
	// refused holds auto-chosen subnets that Docker released without using
	// (it asks again when an answer overlaps a host route); auto-selection
	// offers them only as a last resort. lastAuto is the latest auto answer,
	// never offered twice in a row. Both live in memory only.
	refused  map[netip.Prefix]bool
	lastAuto netip.Prefix

	cl *clusterState // nil without a cluster
	// own serialises changes of block ownership (grants, donations,
	// reclaims) so that records can be written without holding mu: the
	// shared bbolt DB is locked by gossip writes and by ipam's commits,
	// which take mu inside their transaction. Order: own, then mu.
	own      sync.Mutex
	answered map[string]uint64 // want record key → last Seq answered
	wantSeq  uint64
	bg       sync.WaitGroup // background persists and requests for space
	forgetMu sync.Mutex     // one Forget at a time on this host
	learnMu  sync.Mutex     // serialises catchUpForgets; taken before own
}

// New checks cfg, creates the "ipam" bucket if needed and restores every pool,
// gateway, allocated address and cursor persisted by an earlier run.
func New(cfg Config) (*Driver, error) {
	if cfg.DB == nil {
		return nil, errors.New("ipam: Config.DB is nil")
	}
	log := cfg.Log
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = logrus.NewEntry(l)
	}
	def := cfg.DefaultPool
	if !def.IsValid() || !def.Addr().Is4() || def != def.Masked() || def.Bits() < MinPrefixLen || def.Bits() > maxPrefixLen {
		return nil, fmt.Errorf("ipam: Config.DefaultPool %s: want an IPv4 network address with a prefix length of /%d to /%d",
			def, MinPrefixLen, maxPrefixLen)
	}
	plen := cfg.DefaultPrefixLen
	if plen == 0 {
		plen = DefaultPrefixLen
	}
	if plen < def.Bits() || plen > maxPrefixLen {
		return nil, fmt.Errorf("ipam: Config.DefaultPrefixLen /%d does not fit Config.DefaultPool %s: want /%d to /%d", plen, def, def.Bits(), maxPrefixLen)
	}
	d := &Driver{
		db:        cfg.DB,
		commit:    &committer{db: cfg.DB},
		log:       log,
		defPool:   def,
		defLen:    plen,
		routeConf: cfg.RouteConflict,
		swarm:     cfg.SwarmAllocates,
		pools:     make(map[string]*pool),
		refused:   make(map[netip.Prefix]bool),
		answered:  make(map[string]uint64),
	}
	if cfg.Cluster != nil {
		d.cl = newClusterState(cfg, log)
		d.cl.vote = d.cl.voteFor
		d.cl.decidedHook = d.applyDecision
	}
	if err := d.load(); err != nil {
		return nil, err
	}
	if d.cl != nil {
		if err := d.joinCluster(); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// Close stops the Driver's background work (requests for space in
// flight, replicated-state callbacks) and waits for it. The DB stays open.
func (d *Driver) Close() {
	if d.cl != nil {
		d.cl.close()
	}
	d.bg.Wait()
}

// Capabilities is the IPAM capabilities answer. The helper package's type lacks
// RequiresRequestReplay, so grapevine defines its own.
//
// RequiresMACAddress is true, not because grapevine uses the MAC but because
// it tells Docker's two kinds of specific-address request apart: with it,
// libnetwork (20.10, endpoint.go createEndpoint) adds the endpoint's MAC
// under com.docker.network.endpoint.macaddress to every endpoint's request
// (a random one when the user gave none, also passed to the network
// driver's CreateEndpoint), while --aux-address reservations
// (network.go ipamAllocateVersion) always come with nil options. Docker
// then chooses the MAC, which the network driver must use without echoing.
//
// RequiresRequestReplay is false: grapevine restores its own state, so Docker
// need not replay pools and addresses at daemon start.
type Capabilities struct {
	RequiresMACAddress    bool
	RequiresRequestReplay bool
}

// GetCapabilities answers IpamDriver.GetCapabilities.
func (d *Driver) GetCapabilities() (*Capabilities, error) {
	return &Capabilities{RequiresMACAddress: true}, nil
}

// GetDefaultAddressSpaces answers IpamDriver.GetDefaultAddressSpaces.
func (d *Driver) GetDefaultAddressSpaces() (*ipam.AddressSpacesResponse, error) {
	return &ipam.AddressSpacesResponse{
		LocalDefaultAddressSpace:  LocalAddressSpace,
		GlobalDefaultAddressSpace: GlobalAddressSpace,
	}, nil
}
