package ipam

import (
	"errors"
	"io"
	"net/netip"
	"sync"
	"testing"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/sirupsen/logrus"
	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

func TestNewConfigErrors(t *testing.T) {
	db, err := bbolt.Open(t.TempDir()+"/x.db", 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"nil db", Config{}, "DB is nil"},
		{"no pool", Config{DB: db}, "Config.DefaultPool invalid Prefix: want an IPv4 network address"},
		{"host bits", Config{DB: db, DefaultPool: netip.MustParsePrefix("198.18.0.1/16")}, "Config.DefaultPool 198.18.0.1/16"},
		{"ipv6", Config{DB: db, DefaultPool: netip.MustParsePrefix("fd00::/64")}, "Config.DefaultPool fd00::/64"},
		{"too small", Config{DB: db, DefaultPool: netip.MustParsePrefix("198.18.0.0/31")}, "Config.DefaultPool 198.18.0.0/31"},
		{"too large", Config{DB: db, DefaultPool: netip.MustParsePrefix("198.0.0.0/7")}, "Config.DefaultPool 198.0.0.0/7"},
		{"len shorter than pool", Config{DB: db, DefaultPool: netip.MustParsePrefix("198.18.0.0/16"), DefaultPrefixLen: 12}, "Config.DefaultPrefixLen /12 does not fit Config.DefaultPool"},
		{"len too long", Config{DB: db, DefaultPool: netip.MustParsePrefix("198.18.0.0/16"), DefaultPrefixLen: 31}, "Config.DefaultPrefixLen /31 does not fit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			wantErr(t, err, nil, tc.want)
		})
	}
}

func TestCapabilitiesAndSpaces(t *testing.T) {
	h := newHarness(t, Config{})
	c, err := h.d.GetCapabilities()
	if err != nil || !c.RequiresMACAddress || c.RequiresRequestReplay {
		t.Fatalf("capabilities = %+v, %v", c, err)
	}
	s, err := h.d.GetDefaultAddressSpaces()
	if err != nil || s.LocalDefaultAddressSpace != LocalAddressSpace || s.GlobalDefaultAddressSpace != GlobalAddressSpace {
		t.Fatalf("address spaces = %+v, %v", s, err)
	}
}

func TestRequestPoolErrors(t *testing.T) {
	h := newHarness(t, Config{})
	h.pool(LocalAddressSpace, "198.19.10.0/24", "")
	h.pool(GlobalAddressSpace, "198.19.20.0/24", "")
	tests := []struct {
		name string
		req  ipam.RequestPoolRequest
		kind error
		want string
	}{
		{"ipv6", ipam.RequestPoolRequest{V6: true}, ErrUnsupported, "does not support IPv6 yet"},
		{"unknown space", ipam.RequestPoolRequest{AddressSpace: "default", Pool: "198.19.30.0/24"}, ErrInvalid, `unknown address space "default"`},
		{"garbage subnet", ipam.RequestPoolRequest{Pool: "10.0.0/24"}, ErrInvalid, `invalid --subnet "10.0.0/24"`},
		{"ipv6 subnet", ipam.RequestPoolRequest{Pool: "fd00::/64"}, ErrUnsupported, "--subnet fd00::/64 is not IPv4"},
		{"host bits", ipam.RequestPoolRequest{Pool: "198.19.30.5/24"}, ErrInvalid, "--subnet 198.19.30.5/24 has host bits set: use 198.19.30.0/24"},
		{"too large", ipam.RequestPoolRequest{Pool: "198.0.0.0/7"}, ErrInvalid, "--subnet 198.0.0.0/7: a /7 is not allowed; use a prefix length from /8 to /30"},
		{"too small", ipam.RequestPoolRequest{Pool: "198.19.30.0/31"}, ErrInvalid, "a /31 is not allowed"},
		{"range outside", ipam.RequestPoolRequest{Pool: "198.19.30.0/24", SubPool: "198.19.31.0/25"}, ErrInvalid, "--ip-range 198.19.31.0/25 is not inside --subnet 198.19.30.0/24"},
		{"range larger", ipam.RequestPoolRequest{Pool: "198.19.30.0/24", SubPool: "198.19.30.0/23"}, ErrInvalid, "--ip-range 198.19.30.0/23 is not inside --subnet 198.19.30.0/24"},
		{"range larger masked", ipam.RequestPoolRequest{Pool: "198.19.31.0/24", SubPool: "198.19.30.0/23"}, ErrInvalid, "is not inside --subnet"},
		{"range host bits", ipam.RequestPoolRequest{Pool: "198.19.30.0/24", SubPool: "198.19.30.1/25"}, ErrInvalid, "--ip-range 198.19.30.1/25 has host bits set: use 198.19.30.0/25"},
		{"range garbage", ipam.RequestPoolRequest{Pool: "198.19.30.0/24", SubPool: "x"}, ErrInvalid, `invalid --ip-range "x"`},
		{"range without subnet", ipam.RequestPoolRequest{SubPool: "198.19.30.0/25"}, ErrInvalid, "--ip-range 198.19.30.0/25 needs --subnet"},
		{"unknown option", ipam.RequestPoolRequest{Pool: "198.19.30.0/24", Options: map[string]string{"com.docker.network.x": "1", "size": "2"}}, ErrInvalid, `unknown --ipam-opt "size"`},
		{"local overlap", ipam.RequestPoolRequest{Pool: "198.19.0.0/16"}, ErrConflict, "--subnet 198.19.0.0/16 overlaps 198.19.10.0/24 of another grapevine network (pool grapevine-local/198.19.10.0/24)"},
		{"local identical", ipam.RequestPoolRequest{AddressSpace: LocalAddressSpace, Pool: "198.19.10.0/24"}, ErrConflict, "overlaps 198.19.10.0/24"},
		{"local identical with range", ipam.RequestPoolRequest{Pool: "198.19.10.0/24", SubPool: "198.19.10.0/25"}, ErrConflict, "overlaps 198.19.10.0/24"},
		{"global overlap", ipam.RequestPoolRequest{AddressSpace: GlobalAddressSpace, Pool: "198.19.20.0/25"}, ErrConflict, "overlaps 198.19.20.0/24"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(h.d.Status())
			_, err := h.d.RequestPool(&tc.req)
			wantErr(t, err, tc.kind, tc.want)
			if after := len(h.d.Status()); after != before {
				t.Fatalf("failed request changed the pool count %d -> %d", before, after)
			}
		})
	}
}

func TestRequestPoolAccepts(t *testing.T) {
	h := newHarness(t, Config{})
	res, err := h.d.RequestPool(&ipam.RequestPoolRequest{Pool: "198.19.30.0/24", SubPool: "198.19.30.128/25",
		Options: map[string]string{"com.docker.network.ipam.serial": "true"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.PoolID != "grapevine-local/198.19.30.0/24/198.19.30.128/25" || res.Pool != "198.19.30.0/24" {
		t.Fatalf("answer = %+v", res)
	}
	// A local and a global pool may share a subnet (a manager that is also a worker).
	g := h.pool(GlobalAddressSpace, "198.19.30.0/24", "198.19.30.128/25")
	if g == res.PoolID {
		t.Fatalf("global and local pools share id %s", g)
	}
	// Extremes of the allowed prefix lengths.
	h.pool("", "100.64.0.0/10", "")
	h.pool("", "198.18.0.0/30", "")
}

func TestGlobalPoolIdempotent(t *testing.T) {
	h := newHarness(t, Config{})
	a := h.pool(GlobalAddressSpace, "198.19.40.0/24", "198.19.40.0/25")
	b := h.pool(GlobalAddressSpace, "198.19.40.0/24", "198.19.40.0/25")
	if a != b {
		t.Fatalf("identical global requests got %s and %s", a, b)
	}
	if s := h.status(a); s.Refs != 2 {
		t.Fatalf("refs = %d, want 2", s.Refs)
	}
	gw := h.gateway(a, "")
	h.restart()
	if s := h.status(a); s.Refs != 2 || s.Gateway != bare(t, gw).String() {
		t.Fatalf("after restart: %+v", s)
	}
	for i, wantLeft := range []int{1, 0, 0} {
		if err := h.d.ReleasePool(&ipam.ReleasePoolRequest{PoolID: a}); err != nil {
			t.Fatalf("release %d: %v", i, err)
		}
		if got := len(h.d.Status()); got != wantLeft {
			t.Fatalf("after release %d: %d pools, want %d", i, got, wantLeft)
		}
	}
	h.restart()
	if n := len(h.d.Status()); n != 0 {
		t.Fatalf("released pool came back after restart: %+v", h.d.Status())
	}
}

func TestReleasePoolIdempotent(t *testing.T) {
	h := newHarness(t, Config{})
	id := h.pool("", "198.19.50.0/24", "")
	h.addr(id, "")
	for _, pid := range []string{id, id, "nonsense", ""} {
		if err := h.d.ReleasePool(&ipam.ReleasePoolRequest{PoolID: pid}); err != nil {
			t.Fatalf("ReleasePool(%q): %v", pid, err)
		}
	}
	// The subnet is free again, in a fresh pool with no addresses.
	id2 := h.pool("", "198.19.50.0/24", "")
	if id2 != id {
		t.Fatalf("id changed: %s vs %s", id2, id)
	}
	if s := h.status(id2); s.Allocated != 0 || s.Gateway != "" {
		t.Fatalf("recreated pool kept state: %+v", s)
	}
	if got := h.addr(id2, ""); got != "198.19.50.1/24" {
		t.Fatalf("first address of recreated pool = %s", got)
	}
	h.restart()
	if s := h.status(id2); s.Allocated != 1 {
		t.Fatalf("after restart: %+v", s)
	}
}

func TestPoolIDRoundTrip(t *testing.T) {
	tests := []struct {
		space   string
		pool    string
		sub     string
		wantErr string
		id      string
	}{
		{space: LocalAddressSpace, pool: "198.19.0.0/16"},
		{space: GlobalAddressSpace, pool: "198.19.0.0/16", sub: "198.19.4.0/22"},
		{id: "grapevine-local/198.19.0.0", wantErr: "want address-space/subnet"},
		{id: "other/198.19.0.0/16", wantErr: "unknown address space"},
		{id: "grapevine-local/198.19.0.0/x", wantErr: "pool id"},
		{id: "grapevine-local/198.19.0.0/16/1.2.3.4/x", wantErr: "pool id"},
		{id: "grapevine-local/198.19.000.0/16", wantErr: "pool id"},
	}
	for _, tc := range tests {
		if tc.id == "" {
			var sub netip.Prefix
			if tc.sub != "" {
				sub = netip.MustParsePrefix(tc.sub)
			}
			id := makePoolID(tc.space, netip.MustParsePrefix(tc.pool), sub)
			sp, p, s, err := parsePoolID(id)
			if err != nil || sp != tc.space || p.String() != tc.pool || optPrefix(s) != tc.sub {
				t.Fatalf("parsePoolID(%s) = %s %s %s %v", id, sp, p, s, err)
			}
			continue
		}
		_, _, _, err := parsePoolID(tc.id)
		wantErr(t, err, ErrInvalid, tc.wantErr)
	}
}

func TestPersistFailureRollsBack(t *testing.T) {
	h := newHarness(t, Config{})
	id := h.pool("", "198.19.60.0/29", "")
	h.addr(id, "")
	before := h.d.Status()
	if err := h.db.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := h.d.RequestAddress(&ipam.RequestAddressRequest{PoolID: id})
	if !errors.Is(err, berrors.ErrDatabaseNotOpen) {
		t.Fatalf("RequestAddress on a closed store: %v", err)
	}
	_, err = h.d.RequestAddress(&ipam.RequestAddressRequest{PoolID: id, Address: "198.19.60.5"})
	if err == nil {
		t.Fatal("static request on a closed store succeeded")
	}
	if err := h.d.ReleaseAddress(&ipam.ReleaseAddressRequest{PoolID: id, Address: "198.19.60.1"}); err == nil {
		t.Fatal("release on a closed store succeeded")
	}
	if _, err := h.d.RequestPool(&ipam.RequestPoolRequest{Pool: "198.19.61.0/24"}); err == nil {
		t.Fatal("pool request on a closed store succeeded")
	}
	if err := h.d.ReleasePool(&ipam.ReleasePoolRequest{PoolID: id}); err == nil {
		t.Fatal("pool release on a closed store succeeded")
	}
	after := h.d.Status()
	if len(after) != 1 || after[0].Allocated != before[0].Allocated || after[0].Free != before[0].Free {
		t.Fatalf("failed calls changed memory: before %+v after %+v", before, after)
	}
	h.db = nil
	h.open()
	if s := h.status(id); s.Allocated != 1 {
		t.Fatalf("after reopen: %+v", s)
	}
}

func TestGlobalPoolConcurrentRepeats(t *testing.T) {
	l := logrus.New()
	l.SetLevel(logrus.DebugLevel)
	l.SetOutput(io.Discard)
	h := newHarness(t, Config{Log: logrus.NewEntry(l)})
	const n = 12
	var wg sync.WaitGroup
	ids := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := h.d.RequestPool(&ipam.RequestPoolRequest{AddressSpace: GlobalAddressSpace, Pool: "198.19.70.0/24"})
			if err == nil {
				ids[i] = res.PoolID
				_, err = h.d.RequestAddress(&ipam.RequestAddressRequest{PoolID: res.PoolID,
					Options: map[string]string{requestAddressTypeKey: gatewayAddressType}})
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || ids[i] != ids[0] {
			t.Fatalf("request %d: %s %v", i, ids[i], errs[i])
		}
	}
	if s := h.status(ids[0]); s.Refs != n || s.Gateway != "198.19.70.1" {
		t.Fatalf("status = %+v", s)
	}
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := h.d.ReleasePool(&ipam.ReleasePoolRequest{PoolID: ids[0]}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	h.restart()
	if n := len(h.d.Status()); n != 0 {
		t.Fatalf("%d pools left after all references were released", n)
	}
}
