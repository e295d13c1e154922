package plugin

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"grapevine/gossip"
)

// kindInstance records which running process holds a node identity: key
// <node>, value an instanceRecord. Every start writes a fresh instance, so
// a newer record naming another instance under this host's own name comes
// from a second live process with the same identity: a cloned machine.
const kindInstance = "plugin-instance"

// instanceVersion is the format version of instanceRecord.
const instanceVersion = 1

// DefaultCloneCheckEvery is how often a host that has seen its identity used
// elsewhere asserts it again. A sighting or a conflict clears after
// cloneQuietPeriods periods without another.
const DefaultCloneCheckEvery = 15 * time.Second

// cloneQuietPeriods is how many check periods without a sighting close a
// conflict. A twin learns the other's writes only through third hosts'
// state exchanges (memberlist sends everything addressed to the shared name
// to one of the two), so sightings can be minutes apart in a large cluster.
const cloneQuietPeriods = 20

type instanceRecord struct {
	Version  int    `json:"version"`
	Instance string `json:"instance"` // random, chosen at each start
	Addr     string `json:"addr"`     // gossip address of that process
}

// cloneGuard detects another live process using this host's node identity
// and, while one is seen, refuses allocations.
//
// A foreign instance seen once may be a write of this host's own previous
// run that was broadcast but not persisted before a crash: the guard
// answers (at its next check) with its own record, which such a leftover
// can never overtake. A live twin answers in turn, so a second sighting is
// a conflict. While a sighting is open both twins assert their record once
// per period, so each keeps seeing the other; cloneQuietPeriods silent
// periods close it.
type cloneGuard struct {
	r      gossip.Replicated
	self   string
	mine   instanceRecord
	value  []byte
	period time.Duration
	now    func() time.Time
	log    *logrus.Entry

	mu          sync.Mutex
	strikes     int
	lastForeign time.Time
	foreign     instanceRecord // the last other process seen with this identity
	conflict    bool
}

func newCloneGuard(r gossip.Replicated, addr string, period time.Duration, log *logrus.Entry) (*cloneGuard, error) {
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("choosing an instance id: %w", err)
	}
	g := &cloneGuard{
		r: r, self: r.LocalName(), period: period, now: time.Now, log: log,
		mine: instanceRecord{Version: instanceVersion, Instance: hex.EncodeToString(id[:]), Addr: addr},
	}
	var err error
	if g.value, err = json.Marshal(g.mine); err != nil {
		return nil, fmt.Errorf("encoding the instance record: %w", err)
	}
	return g, nil
}

// start publishes this process's instance, then watches for others under
// the same name until ctx ends. wg tracks the watcher.
func (g *cloneGuard) start(ctx context.Context, wg *sync.WaitGroup) {
	if err := g.assert(); err != nil {
		g.log.WithError(err).Warn("clone detection works only once this host's instance record is published; retrying periodically")
		g.mu.Lock()
		g.strikes = 1 // keeps tick re-asserting until it works
		g.mu.Unlock()
	}
	g.r.Subscribe(kindInstance, g.onRecord)
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(g.period)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				g.tick()
			}
		}
	}()
}

// assert writes this process's instance record (a no-op when it is already
// the current one).
func (g *cloneGuard) assert() error {
	if err := g.r.Put(kindInstance, g.self, g.value); err != nil {
		return fmt.Errorf("publishing this host's instance record: %w", err)
	}
	return nil
}

// onRecord counts a newer record under this host's name written by another
// instance; tick answers it.
func (g *cloneGuard) onRecord(_, rec *gossip.Record) {
	if rec == nil || rec.Key != g.self || rec.Owner != g.self {
		return
	}
	var other instanceRecord
	if err := json.Unmarshal(rec.Value, &other); err != nil || other.Instance == "" {
		g.log.WithError(err).WithField("peer", rec.Owner).Warn("ignoring a malformed instance record under this host's name")
		return
	}
	if other.Instance == g.mine.Instance {
		return
	}
	g.mu.Lock()
	g.strikes++
	g.lastForeign, g.foreign = g.now(), other
	newConflict := g.strikes >= 2 && !g.conflict
	g.conflict = g.conflict || newConflict
	g.mu.Unlock()
	if newConflict {
		g.log.WithFields(logrus.Fields{"node": g.self, "peer": other.Addr}).Error(g.conflictError().Error())
	}
}

// tick re-asserts this host's record while a conflict or a first sighting
// is open, and closes it after cloneQuietPeriods without a foreign record.
func (g *cloneGuard) tick() {
	g.mu.Lock()
	if g.strikes == 0 {
		g.mu.Unlock()
		return
	}
	if g.now().Sub(g.lastForeign) >= cloneQuietPeriods*g.period {
		was := g.conflict
		g.strikes, g.conflict = 0, false
		g.mu.Unlock()
		if was {
			g.log.WithField("node", g.self).Info("no other instance of this host's identity seen for a while: allocating again")
		}
		return
	}
	g.mu.Unlock()
	if err := g.assert(); err != nil {
		g.log.WithError(err).Warn("could not re-assert this host's instance record")
	}
}

// conflictError is nil while no other live process uses this identity (or
// without a guard), and otherwise tells the operator what happened and how
// to reset.
func (g *cloneGuard) conflictError() error {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.conflict {
		return nil
	}
	return fmt.Errorf("grapevine refuses to allocate: another live host (gossip address %s) uses this host's node identity %q, "+
		"so one of the two machines is a copy of the other (a machine image cloned after grapevine first ran). "+
		"On the copy: `docker plugin disable -f <plugin>`, delete the contents of its state directory (the plugin's state mount, default /var/lib/grapevine), "+
		"`docker plugin enable <plugin>`, then remove and recreate that host's grapevine networks; "+
		"the other host allocates again by itself (see docs/security.md, \"Cloned hosts\")",
		g.foreign.Addr, g.self)
}
