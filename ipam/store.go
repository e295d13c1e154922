package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"

	"github.com/sirupsen/logrus"

	"go.etcd.io/bbolt"
)

// Layout of the "ipam" bucket:
//
//	ipam/pools/<PoolID>/meta    poolRecord (JSON)
//	ipam/pools/<PoolID>/cursor  cursorRecord (JSON)
//	ipam/pools/<PoolID>/addrs/<address>  addrRecord (JSON), one per allocated address
//
// The gateway lives in meta; network and broadcast addresses are implied.
var (
	rootBucket   = []byte("ipam")
	poolsBucket  = []byte("pools")
	addrsBucket  = []byte("addrs")
	metaKey      = []byte("meta")
	cursorKey    = []byte("cursor")
	storeVersion = 1
)

// poolRecord is the persisted form of a pool.
type poolRecord struct {
	Version int      `json:"version"`
	ID      string   `json:"id"`
	Gen     uint64   `json:"gen"`
	Space   string   `json:"space"`
	Pool    string   `json:"pool"`
	SubPool string   `json:"subPool,omitempty"`
	Gateway string   `json:"gateway,omitempty"`
	Refs    int      `json:"refs"`
	Auto    bool     `json:"auto,omitempty"`
	Used    bool     `json:"used,omitempty"`
	Owned   []string `json:"owned"`          // "first-last" ranges this host owns
	Lost    []string `json:"lost,omitempty"` // ranges reclaimed from this host while it was away
	// Aux lists the --aux-address reservations; null in stores written
	// before they were recorded (the list is then unknown).
	Aux    []string `json:"aux"`
	Served bool     `json:"served,omitempty"` // an endpoint asked for an address
	// Host is this host's own address (HostAddress), also stored under addrs.
	Host string `json:"host,omitempty"`
}

// cursorRecord is where dynamic allocation continues.
type cursorRecord struct {
	Version int    `json:"version"`
	Next    string `json:"next"`
}

// addrRecord marks one allocated address.
type addrRecord struct {
	Version int `json:"version"`
}

func (p *pool) record() poolRecord {
	r := poolRecord{
		Version: storeVersion, ID: p.id, Gen: p.gen, Space: p.space, Pool: p.prefix.String(),
		Refs: p.refs, Auto: p.auto, Used: p.used, Owned: p.owned.format(p.prefix.Addr()), Lost: p.lost,
		Aux: p.auxList(), Served: p.served,
	}
	if p.sub.IsValid() {
		r.SubPool = p.sub.String()
	}
	if p.gateway.IsValid() {
		r.Gateway = p.gateway.String()
	}
	if p.host.IsValid() {
		r.Host = p.host.String()
	}
	return r
}

// syncTx returns a transaction function that makes the stored pool id (and the
// addresses at ords) equal to the in-memory state at the time it runs: it
// writes the pool if it exists, deletes it otherwise, and rewrites it entirely
// when the stored copy belongs to an earlier pool instance with the same id.
// Being state-copying, it is idempotent and order-independent (see committer).
func (d *Driver) syncTx(id string, ords ...uint32) func(*bbolt.Tx) error {
	return func(tx *bbolt.Tx) error {
		d.mu.Lock()
		defer d.mu.Unlock()
		pools := tx.Bucket(rootBucket).Bucket(poolsBucket)
		if pools == nil {
			return errors.New("ipam: bucket ipam/pools is missing")
		}
		key := []byte(id)
		p := d.pools[id]
		b := pools.Bucket(key)
		if b != nil && (p == nil || storedGen(b) != p.gen) {
			if err := pools.DeleteBucket(key); err != nil {
				return fmt.Errorf("deleting stored pool %s: %w", id, err)
			}
			b = nil
		}
		if p == nil {
			return nil
		}
		full := b == nil
		if full {
			var err error
			if b, err = pools.CreateBucket(key); err != nil {
				return fmt.Errorf("storing pool %s: %w", id, err)
			}
		}
		if err := putJSON(b, metaKey, p.record()); err != nil {
			return fmt.Errorf("storing pool %s: %w", id, err)
		}
		cur := cursorRecord{Version: storeVersion, Next: ordToAddr(p.prefix.Addr(), p.alloc.cursor).String()}
		if err := putJSON(b, cursorKey, cur); err != nil {
			return fmt.Errorf("storing pool %s cursor: %w", id, err)
		}
		addrs, err := b.CreateBucketIfNotExists(addrsBucket)
		if err != nil {
			return fmt.Errorf("storing pool %s addresses: %w", id, err)
		}
		if full {
			ords = p.allocatedOrds()
		}
		for _, o := range ords {
			k := []byte(ordToAddr(p.prefix.Addr(), o).String())
			if p.allocated(o) {
				err = putJSON(addrs, k, addrRecord{Version: storeVersion})
			} else {
				err = addrs.Delete(k)
			}
			if err != nil {
				return fmt.Errorf("storing address %s of pool %s: %w", k, id, err)
			}
		}
		return nil
	}
}

// allocatedOrds lists every allocated ordinal (reserved ones excluded).
func (p *pool) allocatedOrds() []uint32 {
	out := make([]uint32, 0, p.count)
	for w, word := range p.alloc.bits.words {
		for word != 0 {
			o := uint32(w)<<6 | uint32(bits.TrailingZeros64(word))
			word &= word - 1
			if !p.reserved(o) {
				out = append(out, o)
			}
		}
	}
	return out
}

func storedGen(b *bbolt.Bucket) uint64 {
	var r poolRecord
	if err := json.Unmarshal(b.Get(metaKey), &r); err != nil {
		return 0
	}
	return r.Gen
}

func putJSON(b *bbolt.Bucket, key []byte, v any) error {
	buf, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, buf)
}

// persist makes the stored pool id and addresses ords durable as they are now.
// It must be called without d.mu held.
func (d *Driver) persist(id string, ords ...uint32) error {
	if err := d.commit.do(d.syncTx(id, ords...)); err != nil {
		return fmt.Errorf("saving ipam state of pool %s: %w", id, err)
	}
	return nil
}

// load creates the buckets and restores every stored pool.
func (d *Driver) load() error {
	err := d.db.Update(func(tx *bbolt.Tx) error {
		root, err := tx.CreateBucketIfNotExists(rootBucket)
		if err != nil {
			return err
		}
		_, err = root.CreateBucketIfNotExists(poolsBucket)
		return err
	})
	if err != nil {
		return fmt.Errorf("creating bucket ipam: %w", err)
	}
	err = d.db.View(func(tx *bbolt.Tx) error {
		pools := tx.Bucket(rootBucket).Bucket(poolsBucket)
		return pools.ForEachBucket(func(k []byte) error {
			p, err := loadPool(string(k), pools.Bucket(k))
			if err != nil {
				return err
			}
			if p.swarm = d.swarmChooses(p.space); p.swarm {
				// Owned whole, even if an earlier run (without
				// SwarmAllocates) divided it among the hosts.
				p.owned = newOwnership(span{0, p.size() - 1})
				p.rebuildSpans()
			}
			d.pools[p.id] = p
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("restoring ipam state: %w", err)
	}
	for _, p := range d.pools {
		d.log.WithFields(logrus.Fields{"pool": p.id, "addresses": p.count, "gateway": p.gateway}).Debug("restored ipam pool")
	}
	d.log.WithField("pools", len(d.pools)).Info("ipam state restored")
	return nil
}

// loadPool rebuilds one pool from its bucket.
func loadPool(id string, b *bbolt.Bucket) (*pool, error) {
	var r poolRecord
	if err := json.Unmarshal(b.Get(metaKey), &r); err != nil {
		return nil, fmt.Errorf("pool %s: reading meta: %w", id, err)
	}
	if r.Version != storeVersion {
		return nil, fmt.Errorf("pool %s: record version %d, this grapevine reads version %d", id, r.Version, storeVersion)
	}
	space, prefix, sub, err := parsePoolID(id)
	if err != nil {
		return nil, err
	}
	if r.ID != id || r.Space != space || r.Pool != prefix.String() || r.SubPool != optPrefix(sub) {
		return nil, fmt.Errorf("pool %s: stored record describes %s/%s/%s", id, r.Space, r.Pool, r.SubPool)
	}
	owned, err := parseOwnership(prefix, r.Owned)
	if err != nil {
		return nil, fmt.Errorf("pool %s: %w", id, err)
	}
	p := newPool(id, space, prefix, sub, owned)
	p.gen, p.refs, p.auto, p.used, p.lost = r.Gen, max(r.Refs, 1), r.Auto, r.Used, r.Lost
	if r.Gateway != "" {
		g, err := netip.ParseAddr(r.Gateway)
		if err != nil || !prefix.Contains(g) {
			return nil, fmt.Errorf("pool %s: stored gateway %q is not an address of the pool", id, r.Gateway)
		}
		p.gateway = g
		p.alloc.claim(addrToOrd(prefix, g))
	}
	var cur cursorRecord
	if raw := b.Get(cursorKey); raw != nil {
		if err := json.Unmarshal(raw, &cur); err != nil {
			return nil, fmt.Errorf("pool %s: reading cursor: %w", id, err)
		}
		c, err := netip.ParseAddr(cur.Next)
		if err != nil || !prefix.Contains(c) {
			return nil, fmt.Errorf("pool %s: stored cursor %q is not an address of the pool", id, cur.Next)
		}
		p.alloc.cursor = addrToOrd(prefix, c)
	}
	if addrs := b.Bucket(addrsBucket); addrs != nil {
		err := addrs.ForEach(func(k, _ []byte) error {
			a, err := netip.ParseAddr(string(k))
			if err != nil || !prefix.Contains(a) {
				return fmt.Errorf("pool %s: stored address %q is not an address of the pool", id, k)
			}
			o := addrToOrd(prefix, a)
			if p.reserved(o) || !p.alloc.claim(o) {
				return fmt.Errorf("pool %s: stored address %s is reserved or duplicated", id, a)
			}
			p.count++
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if err := p.restoreAux(r.Aux); err != nil {
		return nil, fmt.Errorf("pool %s: %w", id, err)
	}
	if err := p.restoreHost(r.Host); err != nil {
		return nil, fmt.Errorf("pool %s: %w", id, err)
	}
	p.served = r.Served
	return p, nil
}

func optPrefix(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}
