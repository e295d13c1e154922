package driver

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"grapevine/gossip"
	"grapevine/internal/ratelog"
)

// lagRecorder collects the convergence lags the driver reports.
type lagRecorder struct{ lags []time.Duration }

func (r *lagRecorder) observe(d time.Duration) { r.lags = append(r.lags, d) }

func watchLag(e *env) *lagRecorder {
	r := &lagRecorder{}
	e.d.mu.Lock()
	e.d.observeLag = r.observe // called with mu held, like every read of it
	e.d.mu.Unlock()
	return r
}

// Programmed counts what was written for remote endpoints (one FDB entry
// per MAC, one neighbour per endpoint), each programmed record reports one
// convergence lag, and the repairs of drift are counted by kind.
func TestMetricsProgrammedLagRepairs(t *testing.T) {
	e, c := newClusterEnv(t, "h0", "198.18.0.1")
	lag := watchLag(e)
	nid := id("n")
	vx := vxlanName(nid)
	e.mustCreateNetwork(netReq{id: nid, subnet: sub20})
	c.SetMember("h1", "198.18.0.2", gossip.StateAlive, gossip.EventJoin)
	remoteEndpoint(t, c, "h1", sub20, "198.19.20.10", "02:00:00:00:00:0a")
	remoteEndpoint(t, c, "h1", sub20, "198.19.20.11", "02:00:00:00:00:0b")
	remoteEndpoint(t, c, "h1", sub20, "198.19.20.12", "02:00:00:00:00:0b") // shares a MAC
	start := time.Now()
	e.flush()
	took := time.Since(start)

	if got, want := e.d.Programmed()[nid], (Programmed{FDB: 2, Neigh: 3}); got != want {
		t.Errorf("Programmed = %+v, want %+v", got, want)
	}
	if len(lag.lags) != 3 {
		t.Fatalf("%d lags reported, want 3 (one per programmed record): %v", len(lag.lags), lag.lags)
	}
	for _, l := range lag.lags {
		if l < 0 || l > took+time.Second {
			t.Errorf("lag %v outside [0, %v]", l, took+time.Second)
		}
	}

	// Nothing pending: a repair pass that fixes nothing reports no lag and
	// counts no repair.
	if err := e.d.ReconcilePeers(); err != nil {
		t.Fatal(err)
	}
	if len(lag.lags) != 3 || sumRepairs(e.d.Repairs()) != 0 {
		t.Fatalf("clean pass: lags %v, repairs %v; want no new lag and no repair", lag.lags, e.d.Repairs())
	}

	e.fake.DropNeigh(vx, netip.MustParseAddr("198.19.20.10"))
	e.fake.InjectNeigh(vx, netip.MustParseAddr("198.19.20.99"), hwMust(t, "02:00:00:00:00:ee"), true)
	if err := e.d.ReconcilePeers(); err != nil {
		t.Fatal(err)
	}
	want := map[RepairKey]uint64{repairNeighSet: 1, repairNeighDel: 1}
	if got := e.d.Repairs(); sumRepairs(got) != 2 || got[repairNeighSet] != 1 || got[repairNeighDel] != 1 {
		t.Errorf("Repairs = %v, want %v", got, want)
	}
	if len(lag.lags) != 3 {
		t.Errorf("a repair reported a lag: %v", lag.lags)
	}
}

// Records that cannot be programmed (an unknown host's, or a refused
// takeover of another live host's address) report no lag, and their
// pending arrival goes with the record.
func TestMetricsLagNotForUnprogrammed(t *testing.T) {
	e, c := newClusterEnv(t, "h0", "198.18.0.1")
	lag := watchLag(e)
	nid := id("n")
	e.mustCreateNetwork(netReq{id: nid, subnet: sub20})
	c.SetMember("h1", "198.18.0.2", gossip.StateAlive, gossip.EventJoin)
	remoteEndpoint(t, c, "h1", sub20, "198.19.20.10", "02:00:00:00:00:0a")
	e.flush()
	remoteEndpoint(t, c, "h9", sub20, "198.19.20.11", "02:00:00:00:00:0b") // h9 is no member
	remoteEndpoint(t, c, "h9", sub20, "198.19.20.10", "02:00:00:00:00:0c") // h1's address: held
	e.flush()
	if len(lag.lags) != 1 {
		t.Fatalf("lags %v, want only h1's record's", lag.lags)
	}
	if got := e.d.Programmed()[nid]; got != (Programmed{FDB: 1, Neigh: 1}) {
		t.Errorf("Programmed = %+v, want h1's entries only", got)
	}
	c.RemoteDelete("h9", kindEndpoint, sub20+"/198.19.20.11")
	e.flush()
	e.d.mu.Lock()
	pending := len(e.d.peers.arrived)
	e.d.mu.Unlock()
	if pending != 0 {
		t.Errorf("%d arrivals still pending after the unprogrammable record was deleted", pending)
	}
}

func hwMust(t *testing.T, s string) net.HardwareAddr {
	t.Helper()
	m, err := parseHWAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return m.hw()
}

// Failures to program many endpoints of one peer for one cause give one
// line per interval naming the peer, network and endpoint, then a line
// with the count held back; another peer's failures get their own line.
func TestApplyFailuresRateLimitedPerPeer(t *testing.T) {
	e, c := newClusterEnv(t, "h0", "198.18.0.1")
	var buf bytes.Buffer
	l := logrus.New()
	l.SetOutput(&buf)
	l.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true})
	now := time.Unix(1000, 0)
	e.d.mu.Lock()
	e.d.log = logrus.NewEntry(l)
	e.d.peerLog = ratelog.New(peerLogInterval, peerLogKeys, func() time.Time { return now })
	e.d.mu.Unlock()

	nid := id("n")
	e.mustCreateNetwork(netReq{id: nid, subnet: sub20})
	c.SetMember("h1", "198.18.0.2", gossip.StateAlive, gossip.EventJoin)
	c.SetMember("h2", "198.18.0.3", gossip.StateAlive, gossip.EventJoin)
	buf.Reset()
	e.fake.SetFail("SetFDB", errString("injected: no buffer space"))
	for i := range 40 {
		remoteEndpoint(t, c, "h1", sub20, fmt.Sprintf("198.19.20.%d", 10+i), fmt.Sprintf("02:00:00:00:01:%02x", i))
	}
	remoteEndpoint(t, c, "h2", sub20, "198.19.20.200", "02:00:00:00:02:01")
	e.flush()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines for 41 failures of two peers, want 2:\n%s", len(lines), buf.String())
	}
	for _, want := range []string{"peer=h1", "peer=h2"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("no line with %s:\n%s", want, buf.String())
		}
	}
	for _, line := range lines {
		if !strings.Contains(line, "network="+shortID(nid)) || !strings.Contains(line, "endpoint=198.19.20.") {
			t.Errorf("line lacks its network and endpoint: %s", line)
		}
	}

	buf.Reset()
	now = now.Add(peerLogInterval)
	remoteEndpoint(t, c, "h1", sub20, "198.19.20.100", "02:00:00:00:01:ff")
	e.flush()
	if out := buf.String(); !strings.Contains(out, "peer=h1") || !strings.Contains(out, "suppressed=39") {
		t.Errorf("after the interval: %q, want h1's line with suppressed=39", out)
	}
}

func sumRepairs(m map[RepairKey]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}
