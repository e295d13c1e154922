package gossip

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/bbolt"
)

// bbolt layout, all under the top-level bucket "gossip":
//
//	meta              → persistedMeta (JSON)
//	records/<kind>\x00<key> → persistedRecord (JSON)
var (
	bucketName    = []byte("gossip")
	recordsBucket = []byte("records")
	metaKey       = []byte("meta")
)

const persistVersion = 1

type persistedMeta struct {
	Version int    `json:"version"`
	Node    string `json:"node"`  // NodeName that wrote the DB
	Clock   uint64 `json:"clock"` // Lamport clock
}

type persistedRecord struct {
	Version  int       `json:"version"` // format version
	Kind     string    `json:"kind"`
	Key      string    `json:"key"`
	Value    []byte    `json:"value,omitempty"`
	Owner    string    `json:"owner"`
	Lamport  uint64    `json:"lamport"`
	Deleted  bool      `json:"deleted,omitempty"`
	ReapAt   time.Time `json:"reap_at,omitzero"`
	Floor    bool      `json:"floor,omitempty"`
	ForgetAt time.Time `json:"forget_at,omitzero"`
}

func dbKey(k rkey) []byte {
	return []byte(k.kind + "\x00" + k.key)
}

// loadState reads the persisted records and clock. A missing bucket is an
// empty state; an undecodable record is skipped and reported (peers will
// supply it again), never fatal.
func loadState(db *bbolt.DB) (entries map[rkey]*entry, meta persistedMeta, skipped []string, err error) {
	entries = make(map[rkey]*entry)
	err = db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketName)
		if b == nil {
			return nil
		}
		if v := b.Get(metaKey); v != nil {
			if err := json.Unmarshal(v, &meta); err != nil {
				return fmt.Errorf("decode gossip/meta: %w", err)
			}
		}
		rb := b.Bucket(recordsBucket)
		if rb == nil {
			return nil
		}
		return rb.ForEach(func(k, v []byte) error {
			var p persistedRecord
			if err := json.Unmarshal(v, &p); err != nil || p.Kind == "" || p.Key == "" {
				skipped = append(skipped, fmt.Sprintf("%q: %v", k, err))
				return nil
			}
			entries[rkey{p.Kind, p.Key}] = &entry{
				rec: Record{
					Kind: p.Kind, Key: p.Key, Value: p.Value, Owner: p.Owner,
					Version: p.Lamport, Deleted: p.Deleted, ReapAt: p.ReapAt,
				},
				floor:    p.Floor,
				forgetAt: p.ForgetAt,
			}
			return nil
		})
	})
	if err != nil {
		return nil, meta, nil, fmt.Errorf("load gossip state: %w", err)
	}
	return entries, meta, skipped, nil
}

// loadRefusal is a persisted record or clock that New refused.
type loadRefusal struct {
	rec   *Record // nil for the clock
	cause RefusalCause
	err   error
}

// checkLoaded applies the checks of received records to persisted state,
// so that a poisoned DB (written by an older release that trusted any
// version, or edited by hand) is not trusted either. A clock beyond
// MaxVersion is refused and replaced by trustedTop of the records; records
// that fail checkRecord, or whose version is more than MaxClockAhead beyond
// the clock, are dropped (peers send what is legitimate again). It returns
// the clock to use.
func checkLoaded(entries map[rkey]*entry, stored uint64) (uint64, []loadRefusal) {
	var out []loadRefusal
	clock := stored
	if clock > MaxVersion {
		clock = trustedTop(entries)
		out = append(out, loadRefusal{cause: CauseVersion, err: fmt.Errorf("stored clock %d is beyond the highest version %d", stored, MaxVersion)})
	}
	for k, e := range entries {
		cause, err := checkRecord(&e.rec)
		if err == nil && e.rec.Version > clock+MaxClockAhead {
			cause, err = CauseVersion, fmt.Errorf("stored version %d is more than %d ahead of the clock %d", e.rec.Version, MaxClockAhead, clock)
		}
		if err != nil {
			out = append(out, loadRefusal{rec: e.rec.clone(), cause: cause, err: err})
			delete(entries, k)
		}
	}
	return clock, out
}

// trustedTop is the highest version a clock could have reached by the
// rules of apply from the lowest stored version: the top of the run of
// sorted versions with no step above MaxClockAhead. Versions above a
// larger gap are what a forger pushed in.
func trustedTop(entries map[rkey]*entry) uint64 {
	versions := make([]uint64, 0, len(entries))
	for _, e := range entries {
		if e.rec.Version <= MaxVersion {
			versions = append(versions, e.rec.Version)
		}
	}
	if len(versions) == 0 {
		return 0
	}
	slices.Sort(versions)
	top := versions[0]
	for _, v := range versions[1:] {
		if v-top > MaxClockAhead {
			break
		}
		top = v
	}
	return top
}

// writeState writes changed records (deleting those gone) and the clock in
// one durable transaction.
func writeState(db *bbolt.DB, node string, items []dirtyItem, clock uint64) error {
	err := db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketName)
		if err != nil {
			return err
		}
		rb, err := b.CreateBucketIfNotExists(recordsBucket)
		if err != nil {
			return err
		}
		for _, it := range items {
			if it.e == nil {
				if err := rb.Delete(dbKey(it.k)); err != nil {
					return err
				}
				continue
			}
			r := &it.e.rec
			v, err := json.Marshal(persistedRecord{
				Version: persistVersion, Kind: r.Kind, Key: r.Key, Value: r.Value,
				Owner: r.Owner, Lamport: r.Version, Deleted: r.Deleted, ReapAt: r.ReapAt,
				Floor: it.e.floor, ForgetAt: it.e.forgetAt,
			})
			if err != nil {
				return err
			}
			if err := rb.Put(dbKey(it.k), v); err != nil {
				return err
			}
		}
		v, err := json.Marshal(persistedMeta{Version: persistVersion, Node: node, Clock: clock})
		if err != nil {
			return err
		}
		return b.Put(metaKey, v)
	})
	if err != nil {
		return fmt.Errorf("write gossip state (%d records): %w", len(items), err)
	}
	return nil
}

// flush writes the store's pending changes. flushMu serialises flushes, so a
// later flush always writes a later snapshot.
func (c *Cluster) flush() error {
	if c.cfg.DB == nil {
		c.store.takeDirty()
		return nil
	}
	c.flushMu.Lock()
	defer c.flushMu.Unlock()
	items, clock, clockDirty := c.store.takeDirty()
	if len(items) == 0 && !clockDirty {
		return nil
	}
	if err := writeState(c.cfg.DB, c.cfg.NodeName, items, clock); err != nil {
		c.store.redirty(items)
		return err
	}
	return nil
}

// kickFlush asks the flusher goroutine to persist received records soon,
// without blocking the memberlist goroutine that received them.
func (c *Cluster) kickFlush() {
	select {
	case c.flushCh <- struct{}{}:
	default:
	}
}
