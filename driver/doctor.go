package driver

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"grapevine/driver/dataplane"
	"grapevine/gossip"
)

// What `grapevine doctor` asks of the driver: the encapsulated path to
// each peer, probed through the probe device (dataplane's kernel_probe.go),
// and the drift the reconcile loop finds.

// Probe timing: a lost probe is retried, a small one more often (it tells
// a blocked path from a lost packet).
const (
	probeTimeout     = 700 * time.Millisecond
	smallProbeTries  = 3
	largeProbeTries  = 2
	smallProbeSize   = 128
	searchGranule    = 1 // bytes: the MTU search stops this close
	searchProbeTries = 1
)

// PathCheck is one peer's VXLAN path as the doctor probed it.
type PathCheck struct {
	Node string     `json:"node"`
	VTEP netip.Addr `json:"vtep"`
	// Skipped says why the path was not probed ("" when it was).
	Skipped string `json:"skipped,omitempty"`
	// Reached: a small probe crossed the path and came back.
	Reached bool          `json:"reached"`
	RTT     time.Duration `json:"rtt_ns,omitempty"`
	// Size is the networks' packet size probed (the largest MTU of this
	// host's VXLAN networks); Carries the largest size that crossed, equal
	// to Size when the full size did.
	Size    int `json:"size,omitempty"`
	Carries int `json:"carries,omitempty"`
	// Error is a failure other than a lost probe.
	Error string `json:"error,omitempty"`
}

// probeTarget is a peer to probe, chosen with mu held.
type probeTarget struct {
	node    string
	vtep    netip.Addr
	skipped string
}

// ProbePaths probes the VXLAN path to every live member (only node when
// not ""), at a small size and at the networks' full size, and when only
// the small one crosses, searches the largest size that does. No VXLAN
// network on this host: no probe device and nothing probed (nil).
func (d *Driver) ProbePaths(node string) ([]PathCheck, error) {
	size, targets, err := d.probeTargets(node)
	if err != nil || size == 0 {
		return nil, err
	}
	out := make([]PathCheck, 0, len(targets))
	for _, t := range targets {
		pc := PathCheck{Node: t.node, VTEP: t.vtep, Skipped: t.skipped, Size: size}
		if t.skipped == "" {
			d.probePath(&pc)
		}
		out = append(out, pc)
	}
	return out, nil
}

// probeTargets refreshes the probe device's peers and returns the size to
// probe and the members to probe. Takes mu.
func (d *Driver) probeTargets(node string) (int, []probeTarget, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	size := 0
	for _, n := range d.networks {
		if n.mode().overlay() {
			size = max(size, n.MTU)
		}
	}
	if size == 0 || d.cluster == nil {
		return 0, nil, nil
	}
	if err := d.syncProbe(); err != nil {
		return 0, nil, err
	}
	vxlanHosts := d.vxlanHosts()
	var out []probeTarget
	for _, m := range d.cluster.Members() {
		if m.Self || (node != "" && m.Name != node) || m.State != gossip.StateAlive {
			continue
		}
		t := probeTarget{node: m.Name, vtep: m.Meta.VTEP}
		switch {
		case !m.Meta.VTEP.Is4():
			t.skipped = "its VTEP is unknown (no IPv4 VTEP in its metadata)"
		case !vxlanHosts[m.Name]:
			t.skipped = "it has no VXLAN network, so nothing there answers the probe"
		}
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b probeTarget) int { return strings.Compare(a.node, b.node) })
	return size, out, nil
}

// vxlanHosts are the other hosts that publish a VXLAN network. Caller
// holds mu.
func (d *Driver) vxlanHosts() map[string]bool {
	out := map[string]bool{}
	for _, r := range d.cluster.List(kindNetwork) {
		if _, node, def, ok := parseNetworkRecord(&r); ok && def.Mode == modeVXLAN {
			out[node] = true
		}
	}
	return out
}

// probePath fills pc: small probe, full size, then the search.
func (d *Driver) probePath(pc *PathCheck) {
	rtt, err := d.probeTries(pc.VTEP, smallProbeSize, smallProbeTries)
	if err != nil {
		if !errors.Is(err, dataplane.ErrProbeLost) {
			pc.Error = err.Error()
		}
		return
	}
	pc.Reached, pc.RTT = true, rtt
	if pc.Size <= smallProbeSize {
		pc.Carries = pc.Size
		return
	}
	if _, err := d.probeTries(pc.VTEP, pc.Size, largeProbeTries); err == nil {
		pc.Carries = pc.Size
		return
	} else if !errors.Is(err, dataplane.ErrProbeLost) {
		pc.Error = err.Error()
		return
	}
	lo, hi := smallProbeSize, pc.Size // lo crosses, hi does not
	for hi-lo > searchGranule {
		mid := (lo + hi) / 2
		if _, err := d.probeTries(pc.VTEP, mid, searchProbeTries); err == nil {
			lo = mid
		} else {
			hi = mid
		}
	}
	pc.Carries = lo
}

// probeTries sends up to tries probes until one is answered.
func (d *Driver) probeTries(vtep netip.Addr, size, tries int) (time.Duration, error) {
	var err error
	for range tries {
		var rtt time.Duration
		if rtt, err = d.dp.Probe(vtep, size, probeTimeout); err == nil {
			return rtt, nil
		}
		if !errors.Is(err, dataplane.ErrProbeLost) {
			return 0, err
		}
	}
	return 0, err
}

// Drift is what one reconcile pass found different between the kernel and
// the replicated state, and repaired.
type Drift struct {
	// Repairs counts the fixes by loop and kind ("peers/fdb_set" …); empty
	// when the kernel matched.
	Repairs map[string]uint64 `json:"repairs,omitempty"`
	// Error is what the pass could not repair.
	Error string `json:"error,omitempty"`
}

// CheckDrift runs one reconcile pass, the same the periodic loop runs,
// and reports the drift it found and repaired.
func (d *Driver) CheckDrift() Drift {
	before := d.Repairs()
	err := d.Reconcile()
	after := d.Repairs()
	var out Drift
	for _, k := range slices.SortedFunc(maps.Keys(after), func(a, b RepairKey) int {
		return strings.Compare(a.Loop+"/"+a.Repair, b.Loop+"/"+b.Repair)
	}) {
		if n := after[k] - before[k]; n > 0 {
			if out.Repairs == nil {
				out.Repairs = map[string]uint64{}
			}
			out.Repairs[k.Loop+"/"+k.Repair] = n
		}
	}
	if err != nil {
		out.Error = fmt.Sprint(err)
	}
	return out
}
