package driver

import (
	"encoding/json"
	"fmt"

	"go.etcd.io/bbolt"
)

// Bucket layout: top-level "driver" holding "networks" and "endpoints", each
// keyed by the Docker id, and "vlans", keyed by link name, with a
// JSON-encoded record as value.
var (
	bucketDriver    = []byte("driver")
	bucketNetworks  = []byte("networks")
	bucketEndpoints = []byte("endpoints")
	bucketVLANs     = []byte("vlans")
)

// store persists records in bbolt. Every write is its own durable transaction.
type store struct {
	db *bbolt.DB
}

func (s store) init() error {
	return s.db.Update(func(tx *bbolt.Tx) error {
		top, err := tx.CreateBucketIfNotExists(bucketDriver)
		if err != nil {
			return fmt.Errorf("create bucket %q: %w", bucketDriver, err)
		}
		for _, b := range [][]byte{bucketNetworks, bucketEndpoints, bucketVLANs} {
			if _, err := top.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("create bucket %q: %w", b, err)
			}
		}
		return nil
	})
}

// loadVLANs reads the VLAN links grapevine created.
func (s store) loadVLANs() (map[string]*vlanRecord, error) {
	out := map[string]*vlanRecord{}
	err := s.db.View(func(tx *bbolt.Tx) error {
		top := tx.Bucket(bucketDriver)
		if top == nil {
			return nil
		}
		b := top.Bucket(bucketVLANs)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var r vlanRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("vlan record %s: %w", k, err)
			}
			if r.Version > recordVersion {
				return fmt.Errorf("vlan record %s has version %d, this grapevine understands up to %d: upgrade grapevine", k, r.Version, recordVersion)
			}
			out[string(k)] = &r
			return nil
		})
	})
	return out, err
}

func (s store) putVLAN(r *vlanRecord) error {
	return s.put(bucketVLANs, r.Name, r)
}

func (s store) deleteVLAN(name string) error {
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b, err := s.bucket(tx, bucketVLANs)
		if err != nil {
			return err
		}
		return b.Delete([]byte(name))
	})
	if err != nil {
		return fmt.Errorf("delete vlan record %s: %w", name, err)
	}
	return nil
}

// load reads every record. A record that does not decode, or whose version is
// newer than this code understands, is an error: silently dropping it would
// lose a network.
func (s store) load() (map[string]*networkRecord, map[string]*endpointRecord, error) {
	nets := map[string]*networkRecord{}
	eps := map[string]*endpointRecord{}
	err := s.db.View(func(tx *bbolt.Tx) error {
		top := tx.Bucket(bucketDriver)
		if top == nil {
			return nil
		}
		if b := top.Bucket(bucketNetworks); b != nil {
			err := b.ForEach(func(k, v []byte) error {
				var r networkRecord
				if err := json.Unmarshal(v, &r); err != nil {
					return fmt.Errorf("network record %s: %w", k, err)
				}
				if r.Version > recordVersion {
					return fmt.Errorf("network record %s has version %d, this grapevine understands up to %d: upgrade grapevine", k, r.Version, recordVersion)
				}
				nets[string(k)] = &r
				return nil
			})
			if err != nil {
				return err
			}
		}
		if b := top.Bucket(bucketEndpoints); b != nil {
			return b.ForEach(func(k, v []byte) error {
				var r endpointRecord
				if err := json.Unmarshal(v, &r); err != nil {
					return fmt.Errorf("endpoint record %s: %w", k, err)
				}
				if r.Version > recordVersion {
					return fmt.Errorf("endpoint record %s has version %d, this grapevine understands up to %d: upgrade grapevine", k, r.Version, recordVersion)
				}
				eps[string(k)] = &r
				return nil
			})
		}
		return nil
	})
	return nets, eps, err
}

func (s store) put(bucket []byte, id string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s record %s: %w", bucket, id, err)
	}
	err = s.db.Update(func(tx *bbolt.Tx) error {
		b, err := s.bucket(tx, bucket)
		if err != nil {
			return err
		}
		return b.Put([]byte(id), data)
	})
	if err != nil {
		return fmt.Errorf("persist %s record %s: %w", bucket, id, err)
	}
	return nil
}

func (s store) bucket(tx *bbolt.Tx, name []byte) (*bbolt.Bucket, error) {
	top, err := tx.CreateBucketIfNotExists(bucketDriver)
	if err != nil {
		return nil, err
	}
	return top.CreateBucketIfNotExists(name)
}

func (s store) putNetwork(r *networkRecord) error {
	return s.put(bucketNetworks, r.ID, r)
}

func (s store) putEndpoint(r *endpointRecord) error {
	return s.put(bucketEndpoints, r.ID, r)
}

// deleteNetwork removes a network and the given endpoints in one transaction.
func (s store) deleteNetwork(id string, endpointIDs []string) error {
	err := s.db.Update(func(tx *bbolt.Tx) error {
		nb, err := s.bucket(tx, bucketNetworks)
		if err != nil {
			return err
		}
		eb, err := s.bucket(tx, bucketEndpoints)
		if err != nil {
			return err
		}
		for _, e := range endpointIDs {
			if err := eb.Delete([]byte(e)); err != nil {
				return err
			}
		}
		return nb.Delete([]byte(id))
	})
	if err != nil {
		return fmt.Errorf("delete network record %s: %w", id, err)
	}
	return nil
}

func (s store) deleteEndpoint(id string) error {
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b, err := s.bucket(tx, bucketEndpoints)
		if err != nil {
			return err
		}
		return b.Delete([]byte(id))
	})
	if err != nil {
		return fmt.Errorf("delete endpoint record %s: %w", id, err)
	}
	return nil
}
