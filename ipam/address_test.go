package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"github.com/docker/go-plugins-helpers/ipam"
)

func TestRequestAddressErrors(t *testing.T) {
	h := newHarness(t, Config{})
	id := h.pool(LocalAddressSpace, "198.19.10.0/24", "198.19.10.128/25")
	h.gateway(id, "198.19.10.1")
	h.addr(id, "198.19.10.5")
	gw := map[string]string{requestAddressTypeKey: gatewayAddressType}
	ep := endpointOpts()
	tests := []struct {
		name string
		req  ipam.RequestAddressRequest
		kind error
		want string
	}{
		{"unknown pool", ipam.RequestAddressRequest{PoolID: "grapevine-local/198.19.99.0/24"}, ErrUnknownPool, `unknown ipam pool "grapevine-local/198.19.99.0/24"`},
		{"garbage ip", ipam.RequestAddressRequest{PoolID: id, Address: "198.19.10", Options: ep}, ErrInvalid, `invalid --ip "198.19.10"`},
		{"ipv6 ip", ipam.RequestAddressRequest{PoolID: id, Address: "fd00::5", Options: ep}, ErrUnsupported, "--ip fd00::5 is not IPv4"},
		{"ip outside", ipam.RequestAddressRequest{PoolID: id, Address: "198.19.11.5", Options: ep}, ErrInvalid, "--ip 198.19.11.5 is outside the network's subnet 198.19.10.0/24"},
		{"ip network", ipam.RequestAddressRequest{PoolID: id, Address: "198.19.10.0", Options: ep}, ErrInvalid, "--ip 198.19.10.0 is the network address of 198.19.10.0/24"},
		{"ip broadcast", ipam.RequestAddressRequest{PoolID: id, Address: "198.19.10.255", Options: ep}, ErrInvalid, "--ip 198.19.10.255 is the broadcast address"},
		{"ip gateway", ipam.RequestAddressRequest{PoolID: id, Address: "198.19.10.1", Options: ep}, ErrConflict, "--ip 198.19.10.1 is the network's gateway; choose another --ip"},
		{"ip taken", ipam.RequestAddressRequest{PoolID: id, Address: "198.19.10.5", Options: ep}, ErrConflict, "--ip 198.19.10.5 is already in use on this network (by an endpoint or an --aux-address); choose another --ip"},
		{"aux gateway", ipam.RequestAddressRequest{PoolID: id, Address: "198.19.10.1"}, ErrConflict, "--aux-address 198.19.10.1 is the network's gateway; choose another --aux-address"},
		{"aux taken", ipam.RequestAddressRequest{PoolID: id, Address: "198.19.10.5"}, ErrConflict, "--aux-address 198.19.10.5 is already in use on this network"},
		{"aux outside", ipam.RequestAddressRequest{PoolID: id, Address: "198.19.11.5"}, ErrInvalid, "--aux-address 198.19.11.5 is outside the network's subnet 198.19.10.0/24"},
		{"aux broadcast", ipam.RequestAddressRequest{PoolID: id, Address: "198.19.10.255"}, ErrInvalid, "--aux-address 198.19.10.255 is the broadcast address"},
		{"ip taken cidr form", ipam.RequestAddressRequest{PoolID: id, Address: "198.19.10.5/24", Options: ep}, ErrConflict, "198.19.10.5 is already in use"},
		{"gateway garbage", ipam.RequestAddressRequest{PoolID: id, Address: "x", Options: gw}, ErrInvalid, `invalid --gateway "x"`},
		{"gateway outside", ipam.RequestAddressRequest{PoolID: id, Address: "198.19.12.1", Options: gw}, ErrInvalid, "--gateway 198.19.12.1 is outside the network's subnet"},
		{"gateway other", ipam.RequestAddressRequest{PoolID: id, Address: "198.19.10.2", Options: gw}, ErrConflict, "--gateway 198.19.10.2: this network already has gateway 198.19.10.1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := h.status(id)
			_, err := h.d.RequestAddress(&tc.req)
			wantErr(t, err, tc.kind, tc.want)
			if after := h.status(id); after.Allocated != before.Allocated || after.Free != before.Free || after.Gateway != before.Gateway {
				t.Fatalf("failed request changed the pool: %+v -> %+v", before, after)
			}
		})
	}
	if _, err := h.d.RequestAddress(nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("nil request: %v", err)
	}
}

func TestGatewayErrorsFreshPool(t *testing.T) {
	gw := map[string]string{requestAddressTypeKey: gatewayAddressType}
	tests := []struct {
		name, addr, want string
		kind             error
	}{
		{"network", "198.19.10.0", "--gateway 198.19.10.0 is the network address of 198.19.10.0/24; choose a host address", ErrInvalid},
		{"broadcast", "198.19.10.255", "--gateway 198.19.10.255 is the broadcast address", ErrInvalid},
		{"in use", "198.19.10.7", "--gateway 198.19.10.7 is already in use by an endpoint of this network", ErrConflict},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			id := h.pool("", "198.19.10.0/24", "")
			h.addr(id, "198.19.10.7")
			_, err := h.d.RequestAddress(&ipam.RequestAddressRequest{PoolID: id, Address: tc.addr, Options: gw})
			wantErr(t, err, tc.kind, tc.want)
		})
	}
	t.Run("default taken", func(t *testing.T) {
		h := newHarness(t, Config{})
		id := h.pool("", "198.19.10.0/24", "")
		h.addr(id, "") // .1, before any gateway request
		_, err := h.d.RequestAddress(&ipam.RequestAddressRequest{PoolID: id, Options: gw})
		wantErr(t, err, ErrConflict, "the default gateway 198.19.10.1 (first address of 198.19.10.0/24) is already in use by an endpoint; pass --gateway")
	})
}

func TestGatewayIdempotentAndNeverHandedOut(t *testing.T) {
	h := newHarness(t, Config{})
	id := h.pool("", "198.19.10.0/29", "")
	if got := h.gateway(id, ""); got != "198.19.10.1/29" {
		t.Fatalf("default gateway = %s", got)
	}
	for _, want := range []string{"", "198.19.10.1", "198.19.10.1/29"} {
		if got := h.gateway(id, want); got != "198.19.10.1/29" {
			t.Fatalf("repeat gateway %q = %s", want, got)
		}
	}
	var got []string
	for range 5 {
		got = append(got, h.addr(id, ""))
	}
	want := []string{"198.19.10.2/29", "198.19.10.3/29", "198.19.10.4/29", "198.19.10.5/29", "198.19.10.6/29"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("addresses = %v, want %v", got, want)
	}
	_, err := h.d.RequestAddress(&ipam.RequestAddressRequest{PoolID: id})
	wantErr(t, err, ErrExhausted, "no free address left in 198.19.10.0/29: 6 assignable addresses, 5 in use by endpoints and 1 by the gateway")

	// Releasing the gateway frees its reservation; a new gateway may be chosen.
	h.release(id, "198.19.10.1")
	if s := h.status(id); s.Gateway != "" || s.Free != 1 {
		t.Fatalf("after gateway release: %+v", s)
	}
	if got := h.gateway(id, ""); got != "198.19.10.1/29" {
		t.Fatalf("gateway after re-request = %s", got)
	}
}

func TestGatewayOutsideRangeAndRangeRespected(t *testing.T) {
	h := newHarness(t, Config{})
	id := h.pool("", "198.19.10.0/24", "198.19.10.128/25")
	if got := h.gateway(id, ""); got != "198.19.10.1/24" {
		t.Fatalf("gateway = %s", got)
	}
	r := netip.MustParsePrefix("198.19.10.128/25")
	for i := range 127 { // .128 … .254: .255 is the subnet's broadcast
		a := bare(t, h.addr(id, ""))
		if !r.Contains(a) || a == netip.MustParseAddr("198.19.10.255") {
			t.Fatalf("address %d = %s, outside --ip-range or broadcast", i, a)
		}
	}
	_, err := h.d.RequestAddress(&ipam.RequestAddressRequest{PoolID: id})
	wantErr(t, err, ErrExhausted, "no free address left in --ip-range 198.19.10.128/25 of 198.19.10.0/24: 127 assignable addresses, 127 in use by endpoints and 0 by the gateway")
	// A static address outside the range is still allowed.
	if got := h.addr(id, "198.19.10.20"); got != "198.19.10.20/24" {
		t.Fatalf("static outside range = %s", got)
	}
}

func TestGatewayInsideRange(t *testing.T) {
	h := newHarness(t, Config{})
	id := h.pool("", "198.19.10.0/24", "198.19.10.8/29")
	h.gateway(id, "198.19.10.10")
	seen := map[string]bool{}
	for range 7 { // .8 … .15 minus the gateway
		a := h.addr(id, "")
		if a == "198.19.10.10/24" || seen[a] {
			t.Fatalf("handed out %s (gateway or duplicate)", a)
		}
		seen[a] = true
	}
	_, err := h.d.RequestAddress(&ipam.RequestAddressRequest{PoolID: id})
	wantErr(t, err, ErrExhausted, "8 assignable addresses, 7 in use by endpoints and 1 by the gateway")
}

func TestStaticAndAuxAddresses(t *testing.T) {
	h := newHarness(t, Config{})
	id := h.pool("", "198.19.10.0/29", "")
	h.gateway(id, "")
	if got := h.addr(id, "198.19.10.3"); got != "198.19.10.3/29" { // aux or --ip
		t.Fatalf("static = %s", got)
	}
	if got := h.addr(id, "198.19.10.2/29"); got != "198.19.10.2/29" {
		t.Fatalf("static cidr form = %s", got)
	}
	// Dynamic allocation skips both.
	if got := h.addr(id, ""); got != "198.19.10.4/29" {
		t.Fatalf("dynamic = %s", got)
	}
	if s := h.status(id); s.Allocated != 3 || s.Free != 2 {
		t.Fatalf("status = %+v", s)
	}
}

func TestGlobalSpaceAddressRepeats(t *testing.T) {
	h := newHarness(t, Config{})
	id := h.pool(GlobalAddressSpace, "198.19.10.0/24", "")
	serial := map[string]string{"com.docker.network.ipam.serial": "true"}
	gwOpts := map[string]string{requestAddressTypeKey: gatewayAddressType, "com.docker.network.ipam.serial": "true"}
	for range 2 {
		res, err := h.d.RequestAddress(&ipam.RequestAddressRequest{PoolID: id, Options: gwOpts})
		if err != nil || res.Address != "198.19.10.1/24" {
			t.Fatalf("gateway = %v, %v", res, err)
		}
	}
	res, err := h.d.RequestAddress(&ipam.RequestAddressRequest{PoolID: id, Options: serial})
	if err != nil || res.Address != "198.19.10.2/24" {
		t.Fatalf("task address = %v, %v", res, err)
	}
	// The same address asked for again (a manager that is also a worker, or a
	// restarted allocator) is accepted and not counted twice.
	for range 2 {
		res, err := h.d.RequestAddress(&ipam.RequestAddressRequest{PoolID: id, Address: "198.19.10.2", Options: serial})
		if err != nil || res.Address != "198.19.10.2/24" {
			t.Fatalf("repeat = %v, %v", res, err)
		}
	}
	if s := h.status(id); s.Allocated != 1 {
		t.Fatalf("status after repeats = %+v", s)
	}
	if got := h.addr(id, ""); got != "198.19.10.3/24" {
		t.Fatalf("next = %s", got)
	}
}

func TestExhaustSlash30(t *testing.T) {
	h := newHarness(t, Config{})
	id := h.pool("", "198.19.10.0/30", "")
	h.gateway(id, "")
	if got := h.addr(id, ""); got != "198.19.10.2/30" {
		t.Fatalf("only address = %s", got)
	}
	for range 2 {
		_, err := h.d.RequestAddress(&ipam.RequestAddressRequest{PoolID: id})
		wantErr(t, err, ErrExhausted, "no free address left in 198.19.10.0/30: 2 assignable addresses, 1 in use by endpoints and 1 by the gateway; remove an endpoint or recreate the network with a larger --subnet or --ip-range")
	}
	h.release(id, "198.19.10.2")
	if got := h.addr(id, ""); got != "198.19.10.2/30" {
		t.Fatalf("after release = %s", got)
	}
}

func TestExhaustSlash29WithRange(t *testing.T) {
	h := newHarness(t, Config{})
	id := h.pool("", "198.19.10.0/29", "198.19.10.4/30")
	h.gateway(id, "")
	var got []string
	for range 3 { // .4 .5 .6; .7 is the subnet's broadcast
		got = append(got, h.addr(id, ""))
	}
	if fmt.Sprint(got) != "[198.19.10.4/29 198.19.10.5/29 198.19.10.6/29]" {
		t.Fatalf("addresses = %v", got)
	}
	_, err := h.d.RequestAddress(&ipam.RequestAddressRequest{PoolID: id})
	wantErr(t, err, ErrExhausted, "no free address left in --ip-range 198.19.10.4/30 of 198.19.10.0/29: 3 assignable addresses, 3 in use")
	// Space outside the range is not used for dynamic allocation.
	if s := h.status(id); s.Capacity != 3 || s.Free != 0 {
		t.Fatalf("status = %+v", s)
	}
}

func TestWrapAroundReuse(t *testing.T) {
	h := newHarness(t, Config{})
	id := h.pool("", "198.19.10.0/29", "")
	h.gateway(id, "")
	h.addr(id, "") // .2
	h.addr(id, "") // .3
	h.release(id, "198.19.10.2")
	// The cursor moves on: a just-released address is not reused at once.
	if got := h.addr(id, ""); got != "198.19.10.4/29" {
		t.Fatalf("after release = %s, want .4", got)
	}
	h.addr(id, "") // .5
	h.addr(id, "") // .6
	// Wrap around to the released .2.
	if got := h.addr(id, ""); got != "198.19.10.2/29" {
		t.Fatalf("wrap-around = %s, want .2", got)
	}
	h.release(id, "198.19.10.5")
	if got := h.addr(id, ""); got != "198.19.10.5/29" {
		t.Fatalf("reuse = %s, want .5", got)
	}
}

func TestReleaseAddressIdempotent(t *testing.T) {
	h := newHarness(t, Config{})
	id := h.pool("", "198.19.10.0/24", "")
	a := h.addr(id, "")
	for _, r := range []ipam.ReleaseAddressRequest{
		{PoolID: id, Address: a}, // CIDR form
		{PoolID: id, Address: bare(t, a).String()},
		{PoolID: id, Address: "198.19.10.200"}, // never allocated
		{PoolID: id, Address: "198.19.10.0"},   // network address
		{PoolID: id, Address: "198.19.99.1"},   // outside the pool
		{PoolID: "grapevine-local/198.19.99.0/24", Address: "198.19.99.1"},
	} {
		if err := h.d.ReleaseAddress(&r); err != nil {
			t.Fatalf("ReleaseAddress(%+v): %v", r, err)
		}
	}
	if s := h.status(id); s.Allocated != 0 {
		t.Fatalf("status = %+v", s)
	}
	err := h.d.ReleaseAddress(&ipam.ReleaseAddressRequest{PoolID: id, Address: "nope"})
	wantErr(t, err, ErrInvalid, `invalid address "nope"`)
}

func TestRestartKeepsEverything(t *testing.T) {
	h := newHarness(t, Config{DefaultPool: netip.MustParsePrefix("198.18.0.0/16")})
	local := h.pool("", "198.19.10.0/24", "198.19.10.0/26")
	global := h.pool(GlobalAddressSpace, "198.19.10.0/24", "")
	h.pool(GlobalAddressSpace, "198.19.10.0/24", "")
	auto, err := h.d.RequestPool(&ipam.RequestPoolRequest{})
	if err != nil {
		t.Fatal(err)
	}
	h.gateway(local, "198.19.10.62")
	h.gateway(global, "")
	held := map[string]bool{}
	for range 20 {
		held[h.addr(local, "")] = true
	}
	held[h.addr(local, "198.19.10.100")] = true
	for _, a := range []string{"198.19.10.3/24", "198.19.10.7/24"} {
		h.release(local, a)
		delete(held, a)
	}
	h.addr(global, "")
	before := h.d.Status()
	h.restart()
	after := h.d.Status()
	if fmt.Sprintf("%+v", before) != fmt.Sprintf("%+v", after) {
		t.Fatalf("status changed across restart:\nbefore %+v\nafter  %+v", before, after)
	}
	// The cursor survived: allocation continues at .21, never reusing held ones.
	if got := h.addr(local, ""); got != "198.19.10.21/24" {
		t.Fatalf("first address after restart = %s, want .21", got)
	}
	for range 40 { // the rest of the range, wrapping to .3 and .7
		a := h.addr(local, "")
		if held[a] || a == "198.19.10.62/24" {
			t.Fatalf("handed out %s twice (or the gateway) after restart", a)
		}
		held[a] = true
	}
	if got := h.gateway(local, ""); got != "198.19.10.62/24" {
		t.Fatalf("gateway after restart = %s", got)
	}
	if _, err := h.d.RequestAddress(&ipam.RequestAddressRequest{PoolID: local, Address: "198.19.10.100"}); !errors.Is(err, ErrConflict) {
		t.Fatalf("static address lost across restart: %v", err)
	}
	// A second auto request after restart does not return the held auto pool.
	auto2, err := h.d.RequestPool(&ipam.RequestPoolRequest{})
	if err != nil || auto2.Pool == auto.Pool {
		t.Fatalf("auto pool after restart = %+v, %v (first was %s)", auto2, err, auto.Pool)
	}
}

func TestConcurrentRequests(t *testing.T) {
	h := newHarness(t, Config{})
	id := h.pool("", "198.19.8.0/22", "")
	h.gateway(id, "")
	const workers, each = 8, 60
	var (
		mu   sync.Mutex
		seen = map[string]bool{}
		wg   sync.WaitGroup
		errs = make(chan error, workers)
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				res, err := h.d.RequestAddress(&ipam.RequestAddressRequest{PoolID: id})
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				dup := seen[res.Address]
				seen[res.Address] = true
				mu.Unlock()
				if dup || res.Address == "198.19.8.1/22" {
					errs <- fmt.Errorf("worker %d handed %s twice or the gateway", w, res.Address)
					return
				}
				if i%3 == 0 {
					mu.Lock()
					delete(seen, res.Address)
					mu.Unlock()
					if err := h.d.ReleaseAddress(&ipam.ReleaseAddressRequest{PoolID: id, Address: res.Address}); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if s := h.status(id); s.Allocated != len(seen) {
		t.Fatalf("allocated %d, held %d", s.Allocated, len(seen))
	}
	h.restart()
	if s := h.status(id); s.Allocated != len(seen) {
		t.Fatalf("after restart allocated %d, held %d", s.Allocated, len(seen))
	}
}
