package ipam

import (
	"encoding/json"
	"errors"
	"fmt"

	"go.etcd.io/bbolt"
)

// This host's Paxos acceptor state is its promise to the cluster: it lives
// in the bucket ipam/paxos (instance → accState JSON) and is written there,
// durably, before the record carrying it is written to gossip. A crash
// between the two loses no promise (the record is written again at start),
// and a record in this host's name overwritten by another host (last writer
// wins) cannot make it forget one.
var paxosBucket = []byte("paxos")

// loadAcc returns this host's stored acceptor state of inst; found is false
// when none is stored. Stored state that cannot be read is an error, never
// "no promise": forgetting a promise could let two values be chosen.
func (c *clusterState) loadAcc(inst string) (a accState, found bool, err error) {
	err = c.db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket(rootBucket).Bucket(paxosBucket)
		if b == nil {
			return nil
		}
		raw := b.Get([]byte(inst))
		if raw == nil {
			return nil
		}
		found = true
		var derr error
		a, derr = decodeAcc(inst, raw)
		return derr
	})
	if err != nil {
		return accState{}, false, fmt.Errorf("reading this host's acceptor state of %s from bucket ipam/paxos: %w", inst, err)
	}
	return a, found, nil
}

// decodeAcc decodes stored acceptor state and checks what this host's own
// answers always keep true; anything else is damage, reported with the fix.
func decodeAcc(inst string, raw []byte) (accState, error) {
	var a accState
	err := json.Unmarshal(raw, &a)
	if err == nil {
		err = a.check()
	}
	if err != nil {
		return accState{}, fmt.Errorf("key %q of bucket ipam/paxos in the state file (state.db) is damaged (%w): the promise it held is unknown, so this host refuses to answer or decide %s rather than act as if it had promised nothing; move the plugin's state directory aside so that the host rejoins under a new name (a backup could hold an older promise, so do not restore one)",
			inst, err, inst)
	}
	return a, nil
}

// check reports acceptor state this host could not have written: a ballot
// out of range, an accepted ballot above the promise (only learning a
// decision may record that), or a value without its ballot or vice versa.
func (a accState) check() error {
	switch {
	case a.Promised.N >= maxBallotN || a.Accepted.N >= maxBallotN:
		return fmt.Errorf("ballot %d or %d is %d or more", a.Promised.N, a.Accepted.N, uint64(maxBallotN))
	case !a.Decided && a.Promised.less(a.Accepted):
		return fmt.Errorf("accepted ballot %d/%s is above the promised %d/%s", a.Accepted.N, a.Accepted.P, a.Promised.N, a.Promised.P)
	case a.Accepted.zero() != (len(a.Value) == 0):
		return errors.New("an accepted ballot without a value, or a value without one")
	case a.Decided && len(a.Value) == 0:
		return errors.New("decided without a value")
	}
	return nil
}

// storeAcc makes this host's acceptor state of inst durable.
func (c *clusterState) storeAcc(inst string, a accState) error {
	err := c.db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.Bucket(rootBucket).CreateBucketIfNotExists(paxosBucket)
		if err != nil {
			return err
		}
		return putJSON(b, []byte(inst), a)
	})
	if err != nil {
		return fmt.Errorf("storing acceptor state of %s in bucket ipam/paxos: %w", inst, err)
	}
	return nil
}

// republishAcc writes every stored acceptor state whose record in gossip is
// missing, stale or not this host's (a crash came between the two writes,
// or another host overwrote it). Damaged stored state stops the start.
func (c *clusterState) republishAcc() error {
	stored := map[string]accState{}
	err := c.db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket(rootBucket).Bucket(paxosBucket)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			a, err := decodeAcc(string(k), v)
			if err != nil {
				return err
			}
			stored[string(k)] = a
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("reading bucket ipam/paxos: %w", err)
	}
	for inst, a := range stored {
		r, ok := c.r.Get(kindAcc, inst+"/"+c.self)
		if ok && r.Owner == c.self && string(r.Value) == string(encodeRec(a)) {
			continue
		}
		if err := c.r.Put(kindAcc, inst+"/"+c.self, encodeRec(a)); err != nil {
			return fmt.Errorf("republishing acceptor state of %s: %w", inst, err)
		}
	}
	return nil
}
