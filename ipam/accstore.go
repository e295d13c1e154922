package ipam

import (
	"encoding/json"
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

// loadAcc returns this host's stored acceptor state of inst.
func (c *clusterState) loadAcc(inst string) (accState, bool) {
	var a accState
	found := false
	_ = c.db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket(rootBucket).Bucket(paxosBucket)
		if b == nil {
			return nil
		}
		if raw := b.Get([]byte(inst)); raw != nil && json.Unmarshal(raw, &a) == nil {
			found = true
		}
		return nil
	})
	return a, found
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
// or another host overwrote it).
func (c *clusterState) republishAcc() error {
	stored := map[string]accState{}
	err := c.db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket(rootBucket).Bucket(paxosBucket)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var a accState
			if json.Unmarshal(v, &a) == nil {
				stored[string(k)] = a
			}
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
