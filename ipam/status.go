package ipam

// PoolStatus describes one pool for the plugin's status output.
type PoolStatus struct {
	PoolID    string   `json:"poolId"`
	Space     string   `json:"space"`
	Pool      string   `json:"pool"`
	SubPool   string   `json:"subPool,omitempty"` // --ip-range
	Gateway   string   `json:"gateway,omitempty"`
	Refs      int      `json:"refs"`      // requests sharing the pool (global space)
	Allocated int      `json:"allocated"` // addresses held by endpoints and aux addresses
	Capacity  int      `json:"capacity"`  // addresses this host may hand out dynamically (owned ∩ range)
	Free      int      `json:"free"`      // of Capacity, still free
	Owned     []string `json:"owned"`     // "first-last" ranges this host owns
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
		out = append(out, s)
	}
	return out
}
