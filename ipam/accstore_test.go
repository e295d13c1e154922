package ipam

import (
	"encoding/json"
	"strings"
	"testing"

	"go.etcd.io/bbolt"

	"grapevine/gossip"
	"grapevine/gossip/gossiptest"
)

// hostileAcc is stored acceptor state this host could never have written:
// broken JSON, and JSON that breaks what its own answers keep true.
var hostileAcc = map[string][]byte{
	"truncated":          []byte(`{"version":1,"promised":{"n":5,"p":"x"`),
	"not json":           []byte("\x00\xffgarbage"),
	"wrong type":         []byte(`{"promised":{"n":"five"}}`),
	"accepted > promise": []byte(`{"promised":{"n":1,"p":"x"},"accepted":{"n":9,"p":"x"},"value":"1"}`),
	"ballot, no value":   []byte(`{"promised":{"n":1,"p":"x"},"accepted":{"n":1,"p":"x"}}`),
	"value, no ballot":   []byte(`{"promised":{"n":1,"p":"x"},"value":"1"}`),
	"decided, no value":  []byte(`{"promised":{"n":1,"p":"x"},"decided":true}`),
	"huge ballot":        []byte(`{"promised":{"n":4611686018427387904,"p":"x"}}`),
}

// putRawAcc stores raw bytes as this host's acceptor state of inst.
func putRawAcc(t *testing.T, db *bbolt.DB, inst string, raw []byte) {
	t.Helper()
	err := db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.Bucket(rootBucket).CreateBucketIfNotExists(paxosBucket)
		if err != nil {
			return err
		}
		return b.Put([]byte(inst), raw)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func rawAcc(t *testing.T, db *bbolt.DB, inst string) []byte {
	t.Helper()
	var out []byte
	if err := db.View(func(tx *bbolt.Tx) error {
		out = append(out, tx.Bucket(rootBucket).Bucket(paxosBucket).Get([]byte(inst))...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestTrustDamagedPromiseRefused: with this host's stored promise damaged
// (and no record of it in gossip, as after a crash between the two
// writes), a lower ballot's prepare and accept get no answer, the damaged
// bytes stay, and reading the state names the key and the fix; treating it
// as "no promise" would promise the lower ballot.
func TestTrustDamagedPromiseRefused(t *testing.T) {
	a := startNode(t, gossiptest.NewNet(), "a", nil, fastCfg())
	c := a.d.cl
	for name, raw := range hostileAcc {
		t.Run(name, func(t *testing.T) {
			inst := "init/198.19.40.0/24-" + strings.ReplaceAll(name, " ", "-")
			putRawAcc(t, a.db, inst, raw)
			for _, p := range []proposal{
				{Version: recordVersion, Ballot: ballot{N: 1, P: "c"}, Phase: phasePrepare},
				{Version: recordVersion, Ballot: ballot{N: 1, P: "c"}, Phase: phaseAccept, Value: json.RawMessage(`"v"`)},
			} {
				c.onProp(nil, &gossip.Record{Kind: kindProp, Key: inst + "/c", Owner: "c", Value: encodeRec(p), Version: 1})
			}
			if got := rawAcc(t, a.db, inst); string(got) != string(raw) {
				t.Fatalf("damaged state overwritten with %s", got)
			}
			if r, ok := a.gc.Get(kindAcc, inst+"/a"); ok {
				t.Fatalf("acceptor record published over damaged state: %s", r.Value)
			}
			c.accMu.Lock()
			_, _, err := c.loadAcc(inst)
			c.accMu.Unlock()
			if err == nil || !strings.Contains(err.Error(), inst) || !strings.Contains(err.Error(), "move the plugin's state directory aside") {
				t.Fatalf("loadAcc error %v, want one naming %s and the fix", err, inst)
			}
			if _, err := c.learn(inst, ballot{N: 1, P: "c"}, json.RawMessage(`"v"`)); err == nil {
				t.Fatal("learn over damaged state succeeded")
			}
		})
	}
}

// TestTrustDamagedPromiseStopsStart: a host whose stored acceptor state is
// damaged does not start (republishing it would otherwise skip it
// silently), and says which key and what to do.
func TestTrustDamagedPromiseStopsStart(t *testing.T) {
	n := gossiptest.NewNet()
	a := startNode(t, n, "a", nil, fastCfg())
	const inst = "init/198.19.41.0/24"
	putRawAcc(t, a.db, inst, hostileAcc["accepted > promise"])
	a.stop()
	db, err := bbolt.Open(a.path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	gc := n.Node(t, "a", func(g *gossip.Config) { g.DB = db })
	t.Cleanup(func() { _ = gc.Shutdown() })
	cfg := fastCfg()
	cfg.DB, cfg.Cluster, cfg.Log = db, gc, gossiptest.Log("a")
	d, err := New(withTestPool(cfg))
	if err == nil {
		d.Close()
		t.Fatal("New started with damaged acceptor state")
	}
	if !strings.Contains(err.Error(), `key "`+inst+`" of bucket ipam/paxos`) || !strings.Contains(err.Error(), "state directory aside") {
		t.Fatalf("New: %v, want the key and the fix", err)
	}
}

// FuzzAcceptorState decodes arbitrary bytes as this host's stored acceptor
// state of one instance (bucket ipam/paxos): never a panic; state accepted
// is state this host's answers can produce (checked ballots, accepted not
// above promised unless decided, a value exactly with its ballot) and
// survives storing again unchanged; anything refused names the key and the
// fix instead of reading as "no promise".
func FuzzAcceptorState(f *testing.F) {
	for _, raw := range hostileAcc {
		f.Add(raw)
	}
	f.Add([]byte(`{"version":1,"promised":{"n":3,"p":"a"}}`))
	f.Add([]byte(`{"version":1,"promised":{"n":3,"p":"a"},"accepted":{"n":2,"p":"b"},"value":{"range":"198.19.0.0/24"}}`))
	f.Add([]byte(`{"version":1,"promised":{"n":1,"p":"a"},"accepted":{"n":4,"p":"c"},"value":"x","decided":true}`))
	const inst = "init/198.19.42.0/24"
	f.Fuzz(func(t *testing.T, raw []byte) {
		a, err := decodeAcc(inst, raw)
		if err != nil {
			if msg := err.Error(); !strings.Contains(msg, `"`+inst+`"`) || !strings.Contains(msg, "state directory aside") {
				t.Fatalf("refusal without the key and the fix: %v", err)
			}
			return
		}
		switch {
		case a.Promised.N >= maxBallotN || a.Accepted.N >= maxBallotN:
			t.Fatalf("ballot out of range accepted: %+v", a)
		case !a.Decided && a.Promised.less(a.Accepted):
			t.Fatalf("accepted above promised accepted: %+v", a)
		case a.Accepted.zero() != (len(a.Value) == 0):
			t.Fatalf("value and ballot disagree: %+v", a)
		}
		again, err := decodeAcc(inst, encodeRec(a))
		if err != nil {
			t.Fatalf("stored again, %+v no longer reads: %v", a, err)
		}
		if string(encodeRec(again)) != string(encodeRec(a)) {
			t.Fatalf("stored again, %+v reads as %+v", a, again)
		}
	})
}
