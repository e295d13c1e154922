package ipam

import (
	"errors"
	"net/netip"
	"sync"
	"testing"

	"github.com/docker/go-plugins-helpers/ipam"
)

// routeTable is a fake RouteConflict with a fixed set of host routes.
type routeTable struct {
	mu     sync.Mutex
	routes map[netip.Prefix]string
	calls  int
	err    error
}

func (r *routeTable) conflict(p netip.Prefix) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.err != nil {
		return "", r.err
	}
	for rp, dev := range r.routes {
		if rp.Overlaps(p) {
			return rp.String() + " dev " + dev, nil
		}
	}
	return "", nil
}

func autoPool(t *testing.T, h *harness) (string, string) {
	t.Helper()
	res, err := h.d.RequestPool(&ipam.RequestPoolRequest{})
	if err != nil {
		t.Fatalf("auto RequestPool: %v", err)
	}
	return res.PoolID, res.Pool
}

func TestAutoPoolSkipsPoolsAndRoutes(t *testing.T) {
	rt := &routeTable{routes: map[netip.Prefix]string{netip.MustParsePrefix("198.18.2.0/23"): "eth0"}}
	h := newHarness(t, Config{DefaultPool: netip.MustParsePrefix("198.18.0.0/20"), RouteConflict: rt.conflict})
	h.pool(LocalAddressSpace, "198.18.0.0/24", "")
	h.pool(GlobalAddressSpace, "198.18.1.0/25", "") // the other space counts too
	id, p := autoPool(t, h)
	if p != "198.18.4.0/24" || id != "grapevine-local/198.18.4.0/24" {
		t.Fatalf("auto pool = %s (%s), want 198.18.4.0/24", p, id)
	}
	// The answer is usable like any pool.
	if got := h.gateway(id, ""); got != "198.18.4.1/24" {
		t.Fatalf("gateway = %s", got)
	}
	if _, p := autoPool(t, h); p != "198.18.5.0/24" {
		t.Fatalf("second auto pool = %s", p)
	}
	// Auto pools in the global space avoid local ones.
	res, err := h.d.RequestPool(&ipam.RequestPoolRequest{AddressSpace: GlobalAddressSpace})
	if err != nil || res.Pool != "198.18.6.0/24" {
		t.Fatalf("global auto pool = %+v, %v", res, err)
	}
}

func TestAutoPoolPrefixLen(t *testing.T) {
	h := newHarness(t, Config{DefaultPool: netip.MustParsePrefix("198.18.0.0/16"), DefaultPrefixLen: 28})
	h.pool("", "198.18.0.0/28", "")
	if _, p := autoPool(t, h); p != "198.18.0.16/28" {
		t.Fatalf("auto pool = %s", p)
	}
}

func TestAutoPoolErrors(t *testing.T) {
	t.Run("exhausted by pools", func(t *testing.T) {
		h := newHarness(t, Config{DefaultPool: netip.MustParsePrefix("198.18.0.0/23")})
		h.pool("", "198.18.0.0/23", "")
		_, err := h.d.RequestPool(&ipam.RequestPoolRequest{})
		wantErr(t, err, ErrExhausted, "no free /24 left in POOL 198.18.0.0/23: every one overlaps another grapevine network; pass --subnet to choose one, or set a larger POOL")
	})
	t.Run("exhausted by routes", func(t *testing.T) {
		rt := &routeTable{routes: map[netip.Prefix]string{netip.MustParsePrefix("198.18.1.0/24"): "eth1"}}
		h := newHarness(t, Config{DefaultPool: netip.MustParsePrefix("198.18.0.0/23"), RouteConflict: rt.conflict})
		h.pool("", "198.18.0.0/24", "")
		_, err := h.d.RequestPool(&ipam.RequestPoolRequest{})
		wantErr(t, err, ErrExhausted, "or a host route (e.g. 198.18.1.0/24 overlaps 198.18.1.0/24 dev eth1); pass --subnet")
	})
	t.Run("route lookup fails", func(t *testing.T) {
		boom := errors.New("netlink: boom")
		rt := &routeTable{err: boom}
		h := newHarness(t, Config{DefaultPool: netip.MustParsePrefix("198.18.0.0/23"), RouteConflict: rt.conflict})
		_, err := h.d.RequestPool(&ipam.RequestPoolRequest{})
		wantErr(t, err, boom, "checking host routes for subnet 198.18.0.0/24 of POOL 198.18.0.0/23")
		if n := len(h.d.Status()); n != 0 {
			t.Fatalf("failed request left %d pools", n)
		}
	})
}

// Docker asks again while it holds an answer that overlaps a host route in its
// own eyes, then releases the refused pools. The same refused answer must
// never come back twice in a row, or Docker loops.
func TestAutoPoolRefusedNotRepeated(t *testing.T) {
	h := newHarness(t, Config{DefaultPool: netip.MustParsePrefix("198.18.0.0/23")})
	// Docker's loop: A refused and held, B accepted; A released afterwards.
	idA, a := autoPool(t, h)
	idB, b := autoPool(t, h)
	if a == b {
		t.Fatalf("same pool twice while held: %s", a)
	}
	if err := h.d.ReleasePool(&ipam.ReleasePoolRequest{PoolID: idA}); err != nil {
		t.Fatal(err)
	}
	h.gateway(idB, "")
	if err := h.d.ReleasePool(&ipam.ReleasePoolRequest{PoolID: idB}); err != nil {
		t.Fatal(err)
	}
	// A was refused, B was used: B is offered first, A only as a last resort.
	if _, p := autoPool(t, h); p != b {
		t.Fatalf("after refusal of %s: got %s, want %s", a, p, b)
	}

	// Only refused candidates left: answers alternate, never repeat.
	h2 := newHarness(t, Config{DefaultPool: netip.MustParsePrefix("198.18.0.0/23")})
	last := ""
	for i := range 6 {
		id, p := autoPool(t, h2)
		if p == last {
			t.Fatalf("round %d: refused pool %s returned twice in a row", i, p)
		}
		last = p
		if err := h2.d.ReleasePool(&ipam.ReleasePoolRequest{PoolID: id}); err != nil {
			t.Fatal(err)
		}
	}

	// A single candidate that Docker refused is not offered again at once.
	h3 := newHarness(t, Config{DefaultPool: netip.MustParsePrefix("198.18.0.0/24")})
	id, _ := autoPool(t, h3)
	if err := h3.d.ReleasePool(&ipam.ReleasePoolRequest{PoolID: id}); err != nil {
		t.Fatal(err)
	}
	_, err := h3.d.RequestPool(&ipam.RequestPoolRequest{})
	wantErr(t, err, ErrExhausted, "no free /24 left in POOL 198.18.0.0/24")
}

func TestAutoPoolConcurrent(t *testing.T) {
	rt := &routeTable{routes: map[netip.Prefix]string{netip.MustParsePrefix("198.18.3.0/24"): "eth0"}}
	h := newHarness(t, Config{DefaultPool: netip.MustParsePrefix("198.18.0.0/20"), RouteConflict: rt.conflict})
	var wg sync.WaitGroup
	got := make(chan string, 15)
	for range 15 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := h.d.RequestPool(&ipam.RequestPoolRequest{})
			if err != nil {
				got <- "error: " + err.Error()
				return
			}
			got <- res.Pool
		}()
	}
	wg.Wait()
	close(got)
	seen := map[string]bool{}
	for p := range got {
		if seen[p] || p == "198.18.3.0/24" {
			t.Fatalf("duplicate, conflicting or failed answer %q", p)
		}
		seen[p] = true
	}
	// 16 candidates, one behind a route: the 16th request finds none.
	_, err := h.d.RequestPool(&ipam.RequestPoolRequest{})
	wantErr(t, err, ErrExhausted, "no free /24 left")
}
