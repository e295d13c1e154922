package gossip

import (
	"time"

	"github.com/sirupsen/logrus"
)

// A member holding the key can write a record in another member's name:
// memberlist does not say who sent a message, so the owner inside the
// record is all a receiver knows. Other members cannot tell such a forgery
// from the real thing, but the member it names can (with a DB it holds
// every record it wrote): it refuses the forgery and overrides it
// everywhere with a newer write of its own, its live record written again
// or, for a key it holds no live record of, a tombstone.

const (
	// reassertQueueLen bounds the forgeries waiting to be overridden;
	// beyond it they are only counted (a later copy triggers it again).
	reassertQueueLen = 256
	// reassertInterval is the least time between two overrides of one
	// key, so that two hosts sharing a name (a cloned machine) override
	// each other at this pace instead of in a storm.
	reassertInterval = 5 * time.Second
)

// queueReassert hands a forgery of this node's name to reassertLoop. It
// never blocks (it runs on memberlist's goroutines).
func (c *Cluster) queueReassert(forged *Record) {
	select {
	case c.reassertCh <- forged.clone():
	default:
	}
}

// reassertLoop overrides forgeries of this node's records, each key at
// most once per reassertInterval.
func (c *Cluster) reassertLoop() {
	defer c.wg.Done()
	last := make(map[rkey]time.Time)
	for {
		select {
		case <-c.stop:
			return
		case f := <-c.reassertCh:
			k, now := rkey{f.Kind, f.Key}, time.Now()
			if t, ok := last[k]; ok && now.Sub(t) < reassertInterval {
				continue
			}
			for k, t := range last {
				if now.Sub(t) >= reassertInterval {
					delete(last, k)
				}
			}
			last[k] = now
			c.reassert(f)
		}
	}
}

// reassert writes this node's own truth for the key f forged, with a
// version above f's.
func (c *Cluster) reassert(f *Record) {
	err := c.write(func() (*Record, error) { return c.store.prepareReassert(f) })
	l := c.log.WithFields(logrus.Fields{"kind": f.Kind, "key": f.Key, "forged_version": f.Version})
	if err != nil {
		l.WithError(err).Error("could not override a record forged in this node's name")
		return
	}
	l.Warn("overrode a record forged in this node's name (another member holds the key and writes as this node, or this machine was cloned)")
}

// prepareReassert makes the own write that overrides forgery f: the live
// record this node holds for the key, written again, or else a tombstone;
// its version is above f's (which apply bounded by MaxClockAhead). It
// returns nil when the key already holds something newer than f.
func (s *store) prepareReassert(f *Record) (*Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := rkey{f.Kind, f.Key}
	e := s.entries[k]
	if e != nil && newer(&e.rec, f) {
		return nil, nil
	}
	if f.Version > s.clock {
		s.clock = f.Version
		s.clockDirty = true
	}
	r := &Record{Kind: f.Kind, Key: f.Key, Owner: s.self, Version: s.clock + 1, Deleted: true, ReapAt: s.now().Add(s.tombstoneTTL)}
	if e != nil && !e.floor && !e.rec.Deleted && e.rec.Owner == s.self {
		r.Value, r.Deleted, r.ReapAt = append([]byte(nil), e.rec.Value...), false, time.Time{}
		if e.rec.Value == nil {
			r.Value = nil
		}
	}
	return r, s.reserveLocked(e, r)
}
