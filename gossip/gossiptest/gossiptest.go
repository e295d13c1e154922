// Package gossiptest runs real gossip.Cluster nodes (memberlist and all) over
// an in-memory network, for the tests of the packages that consume replicated
// state (ipam, driver) and for gossip's own cluster tests and benchmark
// (package gossip_test). The network can partition nodes into groups, heal,
// and kill a node abruptly; nothing touches a real socket.
//
// Delivery behaves like a network: each node has buffered inboxes, a packet
// to a full inbox is lost (UDP) and a dial to a full backlog is refused (TCP);
// traffic between nodes in different partition groups, or to and from a
// killed node, is dropped.
package gossiptest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/sirupsen/logrus"

	"grapevine/gossip"
)

// Net is one in-memory network. The zero value is not usable: call NewNet.
type Net struct {
	mu     sync.RWMutex // written when nodes are added or partitions change; read per packet
	byAddr map[string]*transport
	byName map[string]*transport
	group  map[string]int // partition group by node name; empty = no partition
	nextIP int
}

// NewNet makes an empty network.
func NewNet() *Net {
	return &Net{byAddr: map[string]*transport{}, byName: map[string]*transport{}, group: map[string]int{}}
}

// Config returns fast test timings for a node named name on this network,
// with Peers naming every node already on it. Callers may change any field
// (DB, Peers, Keys, Meta …) before passing it to Start.
func (n *Net) Config(name string) gossip.Config {
	tr := n.transport(name)
	n.mu.RLock()
	var peers []string
	for other, t := range n.byName {
		if other != name {
			peers = append(peers, t.addr)
		}
	}
	n.mu.RUnlock()
	return gossip.Config{
		NodeName:         name,
		Port:             tr.port,
		Transport:        tr,
		Peers:            peers,
		Log:              Log(name),
		ProbeInterval:    200 * time.Millisecond,
		ProbeTimeout:     100 * time.Millisecond,
		SuspicionMult:    3,
		GossipInterval:   10 * time.Millisecond,
		PushPullInterval: 200 * time.Millisecond,
		TCPTimeout:       time.Second,
		JoinBackoffMin:   10 * time.Millisecond,
		JoinBackoffMax:   100 * time.Millisecond,
		LeaveTimeout:     200 * time.Millisecond,
		ReapInterval:     10 * time.Millisecond,
		RejoinInterval:   500 * time.Millisecond,
	}
}

// Node starts a node named name (Config(name), changed by mod when not nil)
// and shuts it down at the end of the test. Starting a name again after Kill
// or Shutdown brings the node back on the same address.
func (n *Net) Node(t testing.TB, name string, mod func(*gossip.Config)) *gossip.Cluster {
	t.Helper()
	cfg := n.Config(name)
	if mod != nil {
		mod(&cfg)
	}
	return n.Start(t, cfg)
}

// Start starts a node from cfg, whose Transport must come from Config.
func (n *Net) Start(t testing.TB, cfg gossip.Config) *gossip.Cluster {
	t.Helper()
	tr, ok := cfg.Transport.(*transport)
	if !ok || tr.net != n {
		t.Fatalf("gossiptest: config for %q does not come from this Net's Config", cfg.NodeName)
	}
	tr.down.Store(false)
	c, err := gossip.New(cfg)
	if err != nil {
		t.Fatalf("gossiptest: New(%s): %v", cfg.NodeName, err)
	}
	if err := c.Start(); err != nil {
		t.Fatalf("gossiptest: Start(%s): %v", cfg.NodeName, err)
	}
	t.Cleanup(func() {
		_ = c.Shutdown()
		tr.down.Store(true)
	})
	return c
}

// Kill cuts the named node off abruptly: from now on it neither sends nor
// receives, as if its host lost power. Shut its Cluster down afterwards (its
// leave announcement is lost) or let the test's cleanup do it.
func (n *Net) Kill(name string) {
	if tr := n.lookupName(name); tr != nil {
		tr.down.Store(true)
	}
}

// Partition splits the network: nodes in different groups cannot reach each
// other; nodes named in no group form one more group of their own.
func (n *Net) Partition(groups ...[]string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.group = map[string]int{}
	for i, g := range groups {
		for _, name := range g {
			n.group[name] = i + 1
		}
	}
}

// Heal removes any partition.
func (n *Net) Heal() { n.Partition() }

// Addr is the named node's gossip address ("ip:port", for Config.Peers),
// or "" when no Config was made for that name.
func (n *Net) Addr(name string) string {
	if tr := n.lookupName(name); tr != nil {
		return tr.addr
	}
	return ""
}

// BytesSent is how many bytes the named node has sent so far.
func (n *Net) BytesSent(name string) uint64 {
	if tr := n.lookupName(name); tr != nil {
		return tr.sent.Load()
	}
	return 0
}

// Dials is how many TCP streams (joins, push/pulls, TCP pings) other nodes
// that were not killed have tried to open to the named node so far, whether
// or not they got through.
func (n *Net) Dials(name string) uint64 {
	if tr := n.lookupName(name); tr != nil {
		return tr.dialed.Load()
	}
	return 0
}

// Eventually polls cond every few milliseconds until it holds, failing the
// test with what when timeout passes first.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gossiptest: timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Log returns a discarding logger, or one writing to stderr at the level
// named by the environment variable GOSSIP_TEST_LOG (e.g. "debug"). The
// discarding logger's level is Panic, so that hundreds of simulated nodes
// do not spend their CPU formatting lines nobody reads.
func Log(name string) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.SetLevel(logrus.PanicLevel)
	if lv, err := logrus.ParseLevel(os.Getenv("GOSSIP_TEST_LOG")); err == nil {
		l.SetOutput(os.Stderr)
		l.SetLevel(lv)
	}
	return l.WithField("node", name)
}

func (n *Net) transport(name string) *transport {
	n.mu.Lock()
	defer n.mu.Unlock()
	if t, ok := n.byName[name]; ok {
		return t
	}
	t := n.newTransportLocked(name)
	n.byName[name] = t
	return t
}

// newTransportLocked makes a transport for name on the next free address
// and registers it by address. n.mu must be held.
func (n *Net) newTransportLocked(name string) *transport {
	n.nextIP++
	ip := net.IPv4(100, 64, byte(n.nextIP>>8), byte(n.nextIP))
	t := &transport{
		net: n, name: name, ip: ip, port: 7947,
		addr:    net.JoinHostPort(ip.String(), "7947"),
		packets: make(chan *memberlist.Packet, 1024),
		streams: make(chan net.Conn, 64),
	}
	n.byAddr[t.addr] = t
	return t
}

func (n *Net) lookupName(name string) *transport {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.byName[name]
}

// route finds the destination of a send from src, or nil when it cannot be
// reached (unknown, killed, or across a partition).
func (n *Net) route(src *transport, a memberlist.Address) *transport {
	n.mu.RLock()
	defer n.mu.RUnlock()
	dst := n.byAddr[a.Addr]
	if a.Name != "" {
		if byName := n.byName[a.Name]; byName != nil {
			dst = byName
		}
	}
	if dst == nil || src.down.Load() || dst.down.Load() || n.group[src.name] != n.group[dst.name] {
		return nil
	}
	return dst
}

// countDial counts a dial towards the node at a, reachable or not.
func (n *Net) countDial(a memberlist.Address) {
	n.mu.RLock()
	dst := n.byAddr[a.Addr]
	if byName := n.byName[a.Name]; a.Name != "" && byName != nil {
		dst = byName
	}
	n.mu.RUnlock()
	if dst != nil {
		dst.dialed.Add(1)
	}
}

// transport is a memberlist.Transport on a Net.
type transport struct {
	net     *Net
	name    string
	ip      net.IP
	port    int
	addr    string
	packets chan *memberlist.Packet
	streams chan net.Conn
	down    atomic.Bool
	sent    atomic.Uint64
	dialed  atomic.Uint64 // streams others tried to open to this node
}

var _ memberlist.NodeAwareTransport = (*transport)(nil)

var errUnreachable = errors.New("gossiptest: unreachable")

type addr string

func (a addr) Network() string { return "gossiptest" }
func (a addr) String() string  { return string(a) }

func (t *transport) FinalAdvertiseAddr(string, int) (net.IP, int, error) { return t.ip, t.port, nil }
func (t *transport) PacketCh() <-chan *memberlist.Packet                 { return t.packets }
func (t *transport) StreamCh() <-chan net.Conn                           { return t.streams }
func (t *transport) Shutdown() error                                     { return nil }

func (t *transport) WriteTo(b []byte, a string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: a})
}

func (t *transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	now := time.Now()
	dst := t.net.route(t, a)
	if dst == nil {
		return now, nil // lost, as a UDP packet would be
	}
	t.sent.Add(uint64(len(b)))
	select {
	case dst.packets <- &memberlist.Packet{Buf: append([]byte(nil), b...), From: addr(t.addr), Timestamp: now}:
	default: // inbox full: dropped
	}
	return now, nil
}

func (t *transport) DialTimeout(a string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: a}, timeout)
}

func (t *transport) DialAddressTimeout(a memberlist.Address, _ time.Duration) (net.Conn, error) {
	if !t.down.Load() {
		t.net.countDial(a)
	}
	dst := t.net.route(t, a)
	if dst == nil {
		return nil, fmt.Errorf("dial %s: %w", a.Addr, errUnreachable)
	}
	c1, c2 := net.Pipe()
	select {
	case dst.streams <- &cutConn{Conn: c1, from: dst, to: t}:
	default:
		return nil, fmt.Errorf("dial %s: backlog full: %w", a.Addr, errUnreachable)
	}
	return &cutConn{Conn: c2, from: t, to: dst}, nil
}

// cutConn is one end of a stream; writes fail once the two ends are cut
// apart (partition or kill), and count towards the writer's bytes sent.
type cutConn struct {
	net.Conn
	from, to *transport
}

func (c *cutConn) Write(b []byte) (int, error) {
	if c.from.net.route(c.from, memberlist.Address{Addr: c.to.addr}) == nil {
		_ = c.Close()
		return 0, fmt.Errorf("write to %s: %w", c.to.addr, errUnreachable)
	}
	n, err := c.Conn.Write(b)
	c.from.sent.Add(uint64(n))
	return n, err
}
