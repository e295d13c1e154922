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
// elsewhere asserts its instance record again (gossip itself overrides a
// record refused as written in this host's name), and checks whether
// cloneQuietPeriods periods passed without a sighting.
const DefaultCloneCheckEvery = 15 * time.Second

// cloneQuietPeriods is how many check periods without a sighting close a
// conflict. A twin learns the other's writes only through third hosts'
// relays and state exchanges (memberlist sends everything addressed to the
// shared name to one of the two), and gossip overrides a key at most every
// few seconds, so sightings can be minutes apart in a large cluster.
const cloneQuietPeriods = 20

type instanceRecord struct {
	Version  int    `json:"version"`
	Instance string `json:"instance"` // random, chosen at each start
	Addr     string `json:"addr"`     // gossip address of that process
}

// cloneGuard detects another live process using this host's node identity
// and, while one is seen, refuses allocations.
//
// It sees instance records at the gossip boundary (a validator), before
// gossip refuses one in this host's name as an impersonation and overrides
// it with this host's own, newer record; the twin's gossip does the same
// with that override, so two live twins keep writing new versions of their
// records at each other. A sighting is a record of another instance with a
// version above the last seen of it: a leftover of this host's own earlier
// run (a state file restored from a backup) is one version however often it
// is relayed, so only a live twin makes a second sighting, which is a
// conflict. cloneQuietPeriods periods without a sighting close it.
type cloneGuard struct {
	r      gossip.Replicated
	self   string
	mine   instanceRecord // Instance fixed by newCloneGuard, Addr by start
	period time.Duration
	now    func() time.Time
	log    *logrus.Entry

	mu          sync.Mutex
	value       []byte // mine, encoded by start
	strikes     int
	lastForeign time.Time
	foreign     instanceRecord    // the last other process seen with this identity
	seen        map[string]uint64 // highest version seen per foreign instance
	conflict    bool
}

// newCloneGuard chooses this process's instance id and registers the
// boundary check of instance records; call it before the cluster starts.
func newCloneGuard(r gossip.Replicated, period time.Duration, log *logrus.Entry) (*cloneGuard, error) {
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("choosing an instance id: %w", err)
	}
	g := &cloneGuard{
		r: r, self: r.LocalName(), period: period, now: time.Now, log: log,
		mine: instanceRecord{Version: instanceVersion, Instance: hex.EncodeToString(id[:])},
		seen: map[string]uint64{},
	}
	r.RegisterValidator(kindInstance, g.validate)
	return g, nil
}

// start publishes this process's instance at its gossip address addr, then
// closes quiet sightings until ctx ends. wg tracks the ticker.
func (g *cloneGuard) start(ctx context.Context, wg *sync.WaitGroup, addr string) {
	mine := g.mine
	mine.Addr = addr
	value, err := json.Marshal(mine)
	if err != nil {
		g.log.WithError(err).Error("encoding this host's instance record: clone detection is off")
		return
	}
	g.mu.Lock()
	g.value = value
	g.mu.Unlock()
	if err := g.assert(); err != nil {
		g.log.WithError(err).Warn("could not publish this host's instance record; retrying periodically")
		g.mu.Lock()
		g.strikes = 1 // keeps tick re-asserting until it works
		g.mu.Unlock()
	}
	runEvery(ctx, wg, g.period, g.tick)
}

// assert writes this process's instance record (a no-op when it is already
// the current one).
func (g *cloneGuard) assert() error {
	g.mu.Lock()
	value := g.value
	g.mu.Unlock()
	if err := g.r.Put(kindInstance, g.self, value); err != nil {
		return fmt.Errorf("publishing this host's instance record: %w", err)
	}
	return nil
}

// validate is the boundary check of received instance records: keyed by
// their writer's name, with a well-formed value. One in this host's own
// name from another instance is counted as a sighting.
func (g *cloneGuard) validate(r gossip.Record) error {
	if err := ownerIsKey(r); err != nil {
		return err
	}
	if r.Deleted {
		return nil
	}
	var other instanceRecord
	if err := json.Unmarshal(r.Value, &other); err != nil || other.Instance == "" {
		return fmt.Errorf("instance record of %q is malformed (%w): want JSON with an instance id", r.Key, err)
	}
	if r.Owner == g.self && other.Instance != g.mine.Instance {
		g.sighted(other, r.Version)
	}
	return nil
}

// ownerIsKey refuses an instance record not keyed by its writer's name.
var ownerIsKey = gossip.OwnerIsKey()

// sighted counts a record of another instance under this host's name.
func (g *cloneGuard) sighted(other instanceRecord, version uint64) {
	g.mu.Lock()
	if last, ok := g.seen[other.Instance]; ok && version <= last {
		g.mu.Unlock()
		return // the same write again (relayed), or an older one
	}
	g.seen[other.Instance] = version
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
		g.strikes, g.conflict, g.seen = 0, false, map[string]uint64{}
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
