package gossiptest

import (
	"encoding/binary"
	"io"
	"log"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"grapevine/gossip"
)

// Rogue is a member that holds the cluster's keys but is not a
// gossip.Cluster: it speaks the record wire format by hand, so a test can
// make it send whatever a buggy or compromised host could (versions near
// 2^64, oversized records, keys in other hosts' names, undecodable bytes)
// and check that the honest members refuse it. Its messages are encoded
// here, independently of package gossip's encoder.
type Rogue struct {
	name string
	ml   *memberlist.Memberlist

	mu      sync.Mutex
	state   []byte                     // answer to push/pulls
	members map[string]memberlist.Node // others, copied in node events
}

// Rogue starts a rogue member named name on this network holding keys
// (primary first; none for a keyless cluster), joined to every node
// already on it; it leaves at the end of the test.
func (n *Net) Rogue(t testing.TB, name string, keys [][]byte) *Rogue {
	t.Helper()
	cfg := n.Config(name)
	r := &Rogue{name: name, members: make(map[string]memberlist.Node)}
	mc := memberlist.DefaultLANConfig()
	mc.Name = name
	mc.Transport = cfg.Transport
	mc.ProbeInterval, mc.ProbeTimeout, mc.SuspicionMult = cfg.ProbeInterval, cfg.ProbeTimeout, cfg.SuspicionMult
	mc.GossipInterval, mc.PushPullInterval, mc.TCPTimeout = cfg.GossipInterval, cfg.PushPullInterval, cfg.TCPTimeout
	mc.Delegate = &rogueDelegate{r: r}
	mc.Events = &rogueEvents{r: r}
	mc.Logger = log.New(io.Discard, "", 0)
	if len(keys) > 0 {
		kr, err := memberlist.NewKeyring(keys[1:], keys[0])
		if err != nil {
			t.Fatalf("gossiptest: rogue keyring: %v", err)
		}
		mc.Keyring, mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = kr, true, true
	}
	tr := cfg.Transport.(*transport)
	tr.down.Store(false)
	ml, err := memberlist.Create(mc)
	if err != nil {
		t.Fatalf("gossiptest: rogue %s: %v", name, err)
	}
	r.ml = ml
	t.Cleanup(func() {
		_ = ml.Shutdown()
		tr.down.Store(true)
	})
	if len(cfg.Peers) > 0 {
		if _, err := ml.Join(cfg.Peers); err != nil {
			t.Fatalf("gossiptest: rogue %s joining: %v", name, err)
		}
	}
	return r
}

// Send sends msg as one gossip packet (as the fast path does) to every
// member the rogue knows, and reports how many it sent to.
func (r *Rogue) Send(msg []byte) int {
	// Copies taken in node events, under memberlist's lock: the nodes
	// of Members() are rewritten by memberlist while others read them.
	r.mu.Lock()
	targets := make([]memberlist.Node, 0, len(r.members))
	for _, m := range r.members {
		targets = append(targets, m)
	}
	r.mu.Unlock()
	sent := 0
	for i := range targets {
		if r.ml.SendBestEffort(&targets[i], msg) == nil {
			sent++
		}
	}
	return sent
}

// SetState sets what the rogue answers push/pulls with (nil: nothing).
func (r *Rogue) SetState(msg []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.state = msg
}

// PushPull makes the rogue exchange state with the member at addr now,
// sending what SetState set.
func (r *Rogue) PushPull(addr string) error {
	_, err := r.ml.Join([]string{addr})
	return err
}

// Members is how many alive members the rogue sees, itself included.
func (r *Rogue) Members() int { return r.ml.NumMembers() }

// Wait polls until the rogue sees want alive members (itself included) and
// Send reaches every other one.
func (r *Rogue) Wait(t testing.TB, want int) {
	t.Helper()
	Eventually(t, 30*time.Second, "the rogue to see every member", func() bool {
		r.mu.Lock()
		known := len(r.members)
		r.mu.Unlock()
		return r.Members() == want && known == want-1
	})
}

// Wire format of package gossip, written out independently:
//
//	message = wireVersion(1) type record…
//	record  = uvarint(version) flags(1 = deleted) uvarint-prefixed kind, key, owner, value
//	type 1  = one record; type 2 = uvarint(count) records
const (
	wireVersion = 1
	msgRecord   = 1
	msgState    = 2
)

// RecordMessage encodes rec as the broadcast message of one record, with
// no check at all (the version, names and sizes are sent as given).
func RecordMessage(rec gossip.Record) []byte {
	return appendRecord([]byte{wireVersion, msgRecord}, rec)
}

// StateMessage encodes recs as a push/pull state, unchecked.
func StateMessage(recs ...gossip.Record) []byte {
	b := binary.AppendUvarint([]byte{wireVersion, msgState}, uint64(len(recs)))
	for _, rec := range recs {
		b = appendRecord(b, rec)
	}
	return b
}

func appendRecord(b []byte, rec gossip.Record) []byte {
	b = binary.AppendUvarint(b, rec.Version)
	flags := byte(0)
	if rec.Deleted {
		flags = 1
	}
	b = append(b, flags)
	for _, s := range [][]byte{[]byte(rec.Kind), []byte(rec.Key), []byte(rec.Owner), rec.Value} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

// rogueDelegate answers push/pulls with the rogue's chosen state and
// ignores everything it receives.
type rogueDelegate struct{ r *Rogue }

func (d *rogueDelegate) NodeMeta(int) []byte             { return nil }
func (d *rogueDelegate) NotifyMsg([]byte)                {}
func (d *rogueDelegate) GetBroadcasts(int, int) [][]byte { return nil }
func (d *rogueDelegate) MergeRemoteState([]byte, bool)   {}

func (d *rogueDelegate) LocalState(bool) []byte {
	d.r.mu.Lock()
	defer d.r.mu.Unlock()
	return d.r.state
}

// rogueEvents keeps copies of the other members for Send.
type rogueEvents struct{ r *Rogue }

func (e *rogueEvents) NotifyJoin(n *memberlist.Node)   { e.set(n, true) }
func (e *rogueEvents) NotifyUpdate(n *memberlist.Node) { e.set(n, true) }
func (e *rogueEvents) NotifyLeave(n *memberlist.Node)  { e.set(n, false) }

func (e *rogueEvents) set(n *memberlist.Node, alive bool) {
	if n.Name == e.r.name {
		return
	}
	e.r.mu.Lock()
	defer e.r.mu.Unlock()
	if alive {
		e.r.members[n.Name] = *n
	} else {
		delete(e.r.members, n.Name)
	}
}
