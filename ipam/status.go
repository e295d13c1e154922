package ipam

// PoolStatus describes one pool for the plugin's status output.
type PoolStatus struct {
	PoolID    string   `json:"pool_id"`
	Space     string   `json:"space"`
	Pool      string   `json:"pool"`
	SubPool   string   `json:"sub_pool,omitempty"` // --ip-range
	Gateway   string   `json:"gateway,omitempty"`
	Refs      int      `json:"refs"`      // requests sharing the pool (global space)
	Allocated int      `json:"allocated"` // addresses held by endpoints and aux addresses
	Capacity  int      `json:"capacity"`  // addresses this host may hand out dynamically (owned ∩ range)
	Free      int      `json:"free"`      // of Capacity, still free
	Owned     []string `json:"owned"`     // "first-last" ranges this host owns
	// Blocks lists every block of a cluster-wide pool with its owner (node
	// name), as this host sees the replicated state; empty without a
	// cluster, in the global address space, or before the division is agreed.
	Blocks []BlockStatus `json:"blocks,omitempty"`
	// Lost lists "first-last" ranges this host owned that the cluster
	// reclaimed while it was away; it never allocates from them again.
	Lost []string `json:"lost,omitempty"`
	// HostAddress is this host's own address in the pool (its macvlan
	// shim, -o host_access without --aux-address); empty when none.
	HostAddress string `json:"host_address,omitempty"`
}

// BlockStatus is one block of a pool and its owner.
type BlockStatus struct {
	First string `json:"first"`
	Last  string `json:"last"`
	Owner string `json:"owner"`
	// Reclaimed: taken over from a host absent longer than ReclaimAfter.
	Reclaimed bool `json:"reclaimed,omitempty"`
}

// Status lists every pool, sorted by PoolID.
func (d *Driver) Status() []PoolStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]PoolStatus, 0, len(d.pools))
	for _, p := range d.sortedPools() {
		s := PoolStatus{
			PoolID: p.id, Space: p.space, Pool: p.prefix.String(), SubPool: optPrefix(p.sub),
			Refs: p.refs, Allocated: p.count, Capacity: p.capacity(), Free: p.alloc.free,
			Owned: p.owned.format(p.prefix.Addr()),
		}
		if p.gateway.IsValid() {
			s.Gateway = p.gateway.String()
		}
		if p.host.IsValid() {
			s.HostAddress = p.host.String()
		}
		if p.clustered {
			bs, _ := d.cl.blocks(p.prefix)
			for _, b := range bs {
				s.Blocks = append(s.Blocks, BlockStatus{First: ordToAddr(p.prefix.Addr(), b.lo).String(),
					Last: ordToAddr(p.prefix.Addr(), b.hi).String(), Owner: b.owner, Reclaimed: b.reclaimed})
			}
			s.Lost = append([]string(nil), p.lost...)
		}
		out = append(out, s)
	}
	return out
}

// RecordKinds are the replicated record kinds IPAM writes and reads.
func RecordKinds() []string {
	return []string{kindHost, kindPool, kindBlock, kindWant, kindProp, kindAcc}
}
