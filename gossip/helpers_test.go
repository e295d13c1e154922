package gossip

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/sirupsen/logrus"
)

// testNet is an in-memory network built on memberlist's MockNetwork, which
// hands out the addresses. All transports must be created (addTransport)
// before any node starts, because MockNetwork's maps are not safe for
// concurrent use.
//
// Delivery does not use MockTransport's unbuffered channels: with dozens of
// nodes, two memberlist receive loops that answer each other's pings block
// on each other forever. Each testTransport has buffered inboxes instead and
// behaves like a network: a packet to a full inbox is lost (UDP), a dial to
// a full stream backlog is refused (TCP).
//
// Each transport can be taken down (a stopped node) or isolated (a
// partitioned node: nothing in or out), and counts the bytes it sends.
type testNet struct {
	mock   memberlist.MockNetwork
	byAddr map[string]*testTransport
	byName map[string]*testTransport
}

func newTestNet() *testNet {
	return &testNet{byAddr: map[string]*testTransport{}, byName: map[string]*testTransport{}}
}

type testAddr string

func (a testAddr) Network() string { return "mock" }
func (a testAddr) String() string  { return string(a) }

type testTransport struct {
	*memberlist.MockTransport // addressing only (FinalAdvertiseAddr)
	net                       *testNet
	name                      string
	addr                      string
	packets                   chan *memberlist.Packet
	streams                   chan net.Conn
	down                      atomic.Bool
	isolated                  atomic.Bool
	sent                      atomic.Uint64
}

var errUnreachable = errors.New("test network: unreachable")

func (n *testNet) addTransport(name string) *testTransport {
	mt := n.mock.NewTransport(name)
	ip, port, err := mt.FinalAdvertiseAddr("", 0)
	if err != nil {
		panic(err)
	}
	t := &testTransport{
		MockTransport: mt, net: n, name: name,
		addr:    net.JoinHostPort(ip.String(), fmt.Sprint(port)),
		packets: make(chan *memberlist.Packet, 1024),
		streams: make(chan net.Conn, 64),
	}
	n.byAddr[t.addr] = t
	n.byName[name] = t
	return t
}

func (n *testNet) peer(a memberlist.Address) *testTransport {
	if a.Name != "" {
		return n.byName[a.Name]
	}
	return n.byAddr[a.Addr]
}

func (t *testTransport) blocked(dest *testTransport) bool {
	return dest == nil || t.isolated.Load() || t.down.Load() || dest.isolated.Load() || dest.down.Load()
}

func (t *testTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }
func (t *testTransport) StreamCh() <-chan net.Conn           { return t.streams }

func (t *testTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (t *testTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	now := time.Now()
	dest := t.net.peer(a)
	if t.blocked(dest) {
		return now, nil // a lost UDP packet
	}
	t.sent.Add(uint64(len(b)))
	p := &memberlist.Packet{Buf: append([]byte(nil), b...), From: testAddr(t.addr), Timestamp: now}
	select {
	case dest.packets <- p:
	default: // receive buffer full: dropped, as UDP would
	}
	return now, nil
}

func (t *testTransport) IngestPacket(conn net.Conn, addr net.Addr, now time.Time, shouldClose bool) error {
	return errors.New("test transport: IngestPacket unsupported")
}

func (t *testTransport) IngestStream(conn net.Conn) error {
	return errors.New("test transport: IngestStream unsupported")
}

func (t *testTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (t *testTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	dest := t.net.peer(a)
	if t.blocked(dest) {
		return nil, fmt.Errorf("dial %s: %w", a.Addr, errUnreachable)
	}
	p1, p2 := net.Pipe()
	select {
	case dest.streams <- &countConn{Conn: p1, n: &dest.sent}:
	default:
		return nil, fmt.Errorf("dial %s: backlog full: %w", a.Addr, errUnreachable)
	}
	return &countConn{Conn: p2, n: &t.sent}, nil
}

func (t *testTransport) Shutdown() error { return nil }

// setDown marks the node stopped (true) or about to start (false).
func (t *testTransport) setDown(down bool) { t.down.Store(down) }

type countConn struct {
	net.Conn
	n *atomic.Uint64
}

func (c *countConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.n.Add(uint64(n))
	return n, err
}

// testLog returns a logger; set GOSSIP_TEST_LOG=debug to see it on stderr.
func testLog(name string) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	if lv, err := logrus.ParseLevel(os.Getenv("GOSSIP_TEST_LOG")); err == nil {
		l.SetOutput(os.Stderr)
		l.SetLevel(lv)
	}
	return l.WithField("node", name)
}

// fakeClock is a settable clock shared by a test's nodes.
type fakeClock struct{ off atomic.Int64 }

func (f *fakeClock) now() time.Time          { return time.Now().Add(time.Duration(f.off.Load())) }
func (f *fakeClock) advance(d time.Duration) { f.off.Add(int64(d)) }
func fastConfig(name string, tr *testTransport) Config {
	return Config{
		NodeName:         name,
		Transport:        tr,
		Log:              testLog(name),
		ProbeInterval:    200 * time.Millisecond,
		ProbeTimeout:     100 * time.Millisecond,
		SuspicionMult:    3,
		GossipInterval:   10 * time.Millisecond,
		PushPullInterval: 100 * time.Millisecond,
		TCPTimeout:       time.Second,
		JoinBackoffMin:   10 * time.Millisecond,
		JoinBackoffMax:   100 * time.Millisecond,
		LeaveTimeout:     200 * time.Millisecond,
		ReapInterval:     10 * time.Millisecond,
	}
}

// testNode is one cluster member of a test.
type testNode struct {
	name string
	tr   *testTransport
	cfg  Config
	c    *Cluster
}

// startNode creates and starts a cluster on tr; Shutdown runs at cleanup.
func startNode(t testing.TB, cfg Config) *testNode {
	t.Helper()
	tr := cfg.Transport.(*testTransport)
	tr.setDown(false)
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", cfg.NodeName, err)
	}
	if err := c.Start(); err != nil {
		t.Fatalf("Start(%s): %v", cfg.NodeName, err)
	}
	n := &testNode{name: cfg.NodeName, tr: tr, cfg: cfg, c: c}
	t.Cleanup(func() { n.stop(t) })
	return n
}

func (n *testNode) stop(t testing.TB) {
	if err := n.c.Shutdown(); err != nil {
		t.Errorf("Shutdown(%s): %v", n.name, err)
	}
	n.tr.setDown(true)
}

// startCluster starts size nodes n0..n(size-1), all joining n0, and waits
// until every node sees every other one alive.
func startCluster(t testing.TB, size int, mod func(i int, cfg *Config)) (*testNet, []*testNode) {
	t.Helper()
	tn := newTestNet()
	trs := make([]*testTransport, size)
	for i := range trs {
		trs[i] = tn.addTransport(fmt.Sprintf("n%d", i))
	}
	nodes := make([]*testNode, size)
	for i := range nodes {
		cfg := fastConfig(trs[i].name, trs[i])
		if i > 0 {
			cfg.Peers = []string{trs[0].addr}
		}
		if mod != nil {
			mod(i, &cfg)
		}
		nodes[i] = startNode(t, cfg)
	}
	waitMembers(t, nodes, size)
	return tn, nodes
}

// waitMembers waits until every node counts want alive members.
func waitMembers(t testing.TB, nodes []*testNode, want int) {
	t.Helper()
	waitFor(t, 90*time.Second, fmt.Sprintf("%d nodes to see %d alive members", len(nodes), want), func() bool {
		for _, n := range nodes {
			if n.c.numNodes() != want {
				return false
			}
		}
		return true
	})
}

// waitFor polls cond every few milliseconds until it holds or the deadline
// passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// allHave reports whether every node holds exactly rec's version of its key
// (or, for a tombstone, no live record).
func allHave(nodes []*testNode, want Record) bool {
	for _, n := range nodes {
		got, ok := n.c.Get(want.Kind, want.Key)
		if want.Deleted {
			if ok {
				return false
			}
			continue
		}
		if !ok || !sameVersion(&got, &want) {
			return false
		}
	}
	return true
}
