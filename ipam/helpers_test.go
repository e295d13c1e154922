package ipam

import (
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/ipam"
	"go.etcd.io/bbolt"
)

// harness owns a bbolt file and the Driver on it, and can restart the Driver
// on the same file.
type harness struct {
	t    testing.TB
	path string
	db   *bbolt.DB
	cfg  Config
	d    *Driver
}

// testPool is the Config.DefaultPool of tests that set none.
var testPool = netip.MustParsePrefix("100.127.0.0/16")

// withTestPool returns cfg with DefaultPool set to testPool when it is zero.
func withTestPool(cfg Config) Config {
	if !cfg.DefaultPool.IsValid() {
		cfg.DefaultPool = testPool
	}
	return cfg
}

func newHarness(t testing.TB, cfg Config) *harness {
	t.Helper()
	h := &harness{t: t, path: filepath.Join(t.TempDir(), "state.db"), cfg: cfg}
	h.open()
	t.Cleanup(func() {
		if h.db != nil {
			_ = h.db.Close()
		}
	})
	return h
}

func (h *harness) open() {
	h.t.Helper()
	db, err := bbolt.Open(h.path, 0o600, nil)
	if err != nil {
		h.t.Fatalf("open bbolt: %v", err)
	}
	db.NoSync = true // tests reopen in-process; the file contents are what count
	h.db = db
	cfg := withTestPool(h.cfg)
	cfg.DB = db
	d, err := New(cfg)
	if err != nil {
		h.t.Fatalf("New: %v", err)
	}
	h.d = d
}

// restart closes the DB and builds a new Driver from the same file.
func (h *harness) restart() {
	h.t.Helper()
	if err := h.db.Close(); err != nil {
		h.t.Fatalf("close bbolt: %v", err)
	}
	h.db = nil
	h.open()
}

func (h *harness) pool(space, p, sub string) string {
	h.t.Helper()
	res, err := h.d.RequestPool(&ipam.RequestPoolRequest{AddressSpace: space, Pool: p, SubPool: sub})
	if err != nil {
		h.t.Fatalf("RequestPool(%s %s %s): %v", space, p, sub, err)
	}
	return res.PoolID
}

func (h *harness) gateway(id, want string) string {
	h.t.Helper()
	res, err := h.d.RequestAddress(&ipam.RequestAddressRequest{PoolID: id, Address: want,
		Options: map[string]string{requestAddressTypeKey: gatewayAddressType}})
	if err != nil {
		h.t.Fatalf("gateway request %q: %v", want, err)
	}
	return res.Address
}

// endpointOpts are the options of an endpoint's address request: Docker adds
// the endpoint's MAC because GetCapabilities answers RequiresMACAddress.
func endpointOpts() map[string]string {
	return map[string]string{macAddressKey: "02:42:c6:13:0a:05"}
}

// addr requests an endpoint's address (want: its --ip, or "" for any).
func (h *harness) addr(id, want string) string {
	h.t.Helper()
	res, err := h.d.RequestAddress(&ipam.RequestAddressRequest{PoolID: id, Address: want, Options: endpointOpts()})
	if err != nil {
		h.t.Fatalf("RequestAddress(%s, %q): %v", id, want, err)
	}
	return res.Address
}

// aux reserves an --aux-address as Docker does: nil options.
func (h *harness) aux(id, want string) string {
	h.t.Helper()
	res, err := h.d.RequestAddress(&ipam.RequestAddressRequest{PoolID: id, Address: want})
	if err != nil {
		h.t.Fatalf("aux RequestAddress(%s, %q): %v", id, want, err)
	}
	return res.Address
}

func (h *harness) release(id, a string) {
	h.t.Helper()
	if err := h.d.ReleaseAddress(&ipam.ReleaseAddressRequest{PoolID: id, Address: a}); err != nil {
		h.t.Fatalf("ReleaseAddress(%s, %s): %v", id, a, err)
	}
}

func (h *harness) status(id string) PoolStatus {
	h.t.Helper()
	for _, s := range h.d.Status() {
		if s.PoolID == id {
			return s
		}
	}
	h.t.Fatalf("pool %s not in Status", id)
	return PoolStatus{}
}

// wantErr checks err against a substring and a kind.
func wantErr(t testing.TB, err error, kind error, sub string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want error containing %q, got nil", sub)
	}
	if !strings.Contains(err.Error(), sub) {
		t.Fatalf("error %q does not contain %q", err, sub)
	}
	if kind != nil && !errors.Is(err, kind) {
		t.Fatalf("error %q is not %v", err, kind)
	}
}

// bare strips the prefix length from an answer.
func bare(t testing.TB, cidr string) netip.Addr {
	t.Helper()
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		t.Fatalf("answer %q is not a CIDR: %v", cidr, err)
	}
	return p.Addr()
}
