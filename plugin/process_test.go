package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"grapevine/internal/nstest"
)

// underlay brings loopback up and makes the link ul0 (a veth, whose peer
// stays in this namespace) holding 198.18.0.1/24, the host's underlay, and a
// host route not made by grapevine: 198.19.128.0/24 dev ul0.
func underlay(t *testing.T) {
	t.Helper()
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ul0"}, PeerName: "ul0p"}); err != nil {
		t.Fatal(err)
	}
	if peer, err := netlink.LinkByName("ul0p"); err != nil || netlink.LinkSetUp(peer) != nil {
		t.Fatalf("peer of ul0: %v", err)
	}
	link, err := netlink.LinkByName("ul0")
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := netlink.ParseAddr("198.18.0.1/24")
	if err := netlink.AddrAdd(link, addr); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		t.Fatal(err)
	}
	_, dst, _ := net.ParseCIDR("198.19.128.0/24")
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst, Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatal(err)
	}
}

func testEnv(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

// socketClient calls the plugin socket as dockerd does.
type socketClient struct {
	t  *testing.T
	hc *http.Client
}

func newSocketClient(t *testing.T, sock string) *socketClient {
	return &socketClient{t: t, hc: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}}
}

// call posts req to path and decodes the answer into resp; it fails the
// test on any error answer.
func (c *socketClient) call(path string, req, resp any) {
	c.t.Helper()
	body, _ := json.Marshal(req)
	r, err := c.hc.Post("http://plugin"+path, "application/vnd.docker.plugins.v1.2+json", bytes.NewReader(body))
	if err != nil {
		c.t.Fatalf("%s: %v", path, err)
	}
	defer r.Body.Close()
	raw, _ := io.ReadAll(r.Body)
	if r.StatusCode != http.StatusOK {
		c.t.Fatalf("%s: %d %s", path, r.StatusCode, raw)
	}
	if resp != nil {
		if err := json.Unmarshal(raw, resp); err != nil {
			c.t.Fatalf("%s: answer %q: %v", path, raw, err)
		}
	}
}

// waitFor polls cond every 50 ms until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// serving runs Serve in the background and waits until its socket answers
// the status call; stop cancels it and waits for Serve to return.
func serving(t *testing.T, opts Options, env map[string]string) (status func() Status, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, opts, testEnv(env)) }()
	status = func() Status {
		t.Helper()
		raw, err := QueryStatus(context.Background(), opts.Socket)
		if err != nil {
			t.Fatalf("status: %v", err)
		}
		st, err := DecodeStatus(raw)
		if err != nil {
			t.Fatalf("status %q: %v", raw, err)
		}
		return st
	}
	waitFor(t, 30*time.Second, "the plugin socket", func() bool {
		_, err := QueryStatus(context.Background(), opts.Socket)
		return err == nil
	})
	stopped := false
	stop = func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Serve returned %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Serve still running 30 s after its context ended")
		}
	}
	t.Cleanup(stop)
	return status, stop
}

// The whole process in a namespace of its own: Serve listens, start opens
// the state and the kernel, the status reports what exists, an automatic
// pool skips a subnet a foreign host route uses (routeConflict), the
// reconcile loop repairs a bridge deleted behind the plugin's back, and a
// restart keeps the node name and the network.
func TestServeStartStatusReconcile(t *testing.T) {
	if !nstest.InOwnProcess(t) {
		return
	}
	underlay(t)
	dir := t.TempDir()
	opts := Options{Socket: filepath.Join(dir, "run", "gv.sock"), StateDir: filepath.Join(dir, "state"), ReconcileEvery: 200 * time.Millisecond}
	env := map[string]string{envAdvertise: "ul0", envPool: "198.19.128.0/17"}
	status, stop := serving(t, opts, env)

	st := status()
	if st.Node == "" || st.Underlay != "198.18.0.1 dev ul0 mtu 1500" || st.Error != "" {
		t.Fatalf("status: node %q underlay %q error %q", st.Node, st.Underlay, st.Error)
	}
	if len(st.Members) != 1 || !st.Members[0].Self || st.Members[0].Name != st.Node {
		t.Fatalf("members of a host without PEERS: %+v", st.Members)
	}
	if st.Settings[envPool] != "198.19.128.0/17" || st.Settings[envAdvertise] != "ul0" || st.Settings[envGossipKey] != "(none)" {
		t.Fatalf("settings: %v", st.Settings)
	}
	if len(st.Networks) != 0 || len(st.Pools) != 0 {
		t.Fatalf("a new host has networks %v, pools %v", st.Networks, st.Pools)
	}

	// an automatic pool: 198.19.128.0/24 is a foreign route's, so POOL's
	// second /24
	c := newSocketClient(t, opts.Socket)
	var pool struct{ PoolID, Pool string }
	c.call("/IpamDriver.RequestPool", map[string]any{"AddressSpace": "grapevine-local"}, &pool)
	if pool.Pool != "198.19.129.0/24" {
		t.Fatalf("automatic pool %q, want 198.19.129.0/24 (198.19.128.0/24 is routed to ul0)", pool.Pool)
	}
	var gw struct{ Address string }
	c.call("/IpamDriver.RequestAddress", map[string]any{"PoolID": pool.PoolID, "Options": map[string]string{"RequestAddressType": "com.docker.network.gateway"}}, &gw)
	netID := strings.Repeat("ab", 32)
	c.call("/NetworkDriver.CreateNetwork", map[string]any{
		"NetworkID": netID,
		"Options":   map[string]any{"com.docker.network.generic": map[string]string{}},
		"IPv4Data":  []map[string]any{{"AddressSpace": "grapevine-local", "Pool": pool.Pool, "Gateway": gw.Address}},
	}, nil)
	var ep struct{ Address string }
	c.call("/IpamDriver.RequestAddress", map[string]any{"PoolID": pool.PoolID, "Options": map[string]string{"com.docker.network.endpoint.macaddress": "02:42:c6:13:81:02"}}, &ep)
	c.call("/NetworkDriver.CreateEndpoint", map[string]any{"NetworkID": netID, "EndpointID": strings.Repeat("cd", 32),
		"Interface": map[string]string{"Address": ep.Address, "MacAddress": "02:42:c6:13:81:02"}}, nil)

	st = status()
	if len(st.Networks) != 1 || st.Networks[0].ID != netID || st.Networks[0].Subnet != "198.19.129.0/24" || st.Networks[0].Endpoints != 1 {
		t.Fatalf("networks after one network with one endpoint: %+v", st.Networks)
	}
	if len(st.Pools) != 1 || st.Pools[0].Pool != "198.19.129.0/24" || st.Pools[0].Allocated != 1 {
		t.Fatalf("pools after one endpoint: %+v", st.Pools)
	}

	// the reconcile loop puts back a bridge deleted behind the plugin's back
	br := bridgeOf(t, "198.19.129.1")
	if err := netlink.LinkDel(br); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the reconcile loop to recreate "+br.Attrs().Name, func() bool {
		l, err := netlink.LinkByName(br.Attrs().Name)
		return err == nil && l.Type() == "bridge"
	})

	// stopping closes the state; a restart keeps the node's name, its
	// network and its pool
	stop()
	db, err := bolt.Open(filepath.Join(opts.StateDir, "state.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("state still open after Serve returned: %v", err)
	}
	_ = db.Close()
	status2, _ := serving(t, opts, env)
	again := status2()
	if again.Node != st.Node || len(again.Networks) != 1 || again.Networks[0].ID != netID || len(again.Pools) != 1 || again.Pools[0].Allocated != 1 {
		t.Fatalf("after a restart: node %q (was %q), networks %+v, pools %+v", again.Node, st.Node, again.Networks, again.Pools)
	}
}

// bridgeOf finds the grapevine bridge holding gateway address gw.
func bridgeOf(t *testing.T, gw string) netlink.Link {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if l.Type() != "bridge" {
			continue
		}
		addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
		for _, a := range addrs {
			if a.IP.String() == gw {
				return l
			}
		}
	}
	t.Fatalf("no bridge holds %s", gw)
	return nil
}

// start fails cleanly: the state it opened is closed again.
func TestStartFailuresCloseState(t *testing.T) {
	if !nstest.InOwnProcess(t) {
		return
	}
	underlay(t)
	dir := t.TempDir()
	opts := Options{StateDir: filepath.Join(dir, "state"), ReconcileEvery: time.Minute}
	log := discardLog()

	s, err := ParseSettings(testEnv(map[string]string{envPeers: "198.18.0.2", envAdvertise: "ul9", envGossipKey: "Z3JhcGV2aW5lLXRlc3QtQQ=="}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = start(context.Background(), opts, s, log, nil)
	if err == nil || !strings.Contains(err.Error(), `PEERS is set but the address to gossip on is unknown: resolving ADVERTISE="ul9"`) {
		t.Fatalf("start with PEERS and an unknown ADVERTISE: %v", err)
	}
	db, err := bolt.Open(filepath.Join(opts.StateDir, "state.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("state left open by a failed start: %v", err)
	}
	_ = db.Close()

	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = start(context.Background(), Options{StateDir: file}, s, log, nil)
	if err == nil || !strings.Contains(err.Error(), "creating state directory "+file) {
		t.Fatalf("start with a file as state directory: %v", err)
	}

	// a good start, then close: the reconcile loop ends and the state closes
	good, _ := ParseSettings(testEnv(map[string]string{envAdvertise: "198.18.0.1"}))
	p, err := start(context.Background(), opts, good, log, nil)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	closed := make(chan struct{})
	go func() { p.close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("close did not return: the reconcile loop did not stop")
	}
	if err := p.db.View(func(*bolt.Tx) error { return nil }); !errors.Is(err, berrors.ErrDatabaseNotOpen) {
		t.Fatalf("state after close: %v", err)
	}
}

// routeConflict names foreign routes that overlap a prefix and ignores
// grapevine's own links.
func TestRouteConflict(t *testing.T) {
	if !nstest.InOwnProcess(t) {
		return
	}
	underlay(t)
	s, _ := ParseSettings(testEnv(map[string]string{envAdvertise: "ul0"}))
	p, err := start(context.Background(), Options{StateDir: t.TempDir(), ReconcileEvery: time.Minute}, s, discardLog(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	// a link of grapevine's own (a bridge's name) routing 198.19.140.0/24
	own := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "gvb-test0"}}
	if err := netlink.LinkAdd(own); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(own); err != nil {
		t.Fatal(err)
	}
	_, dst, _ := net.ParseCIDR("198.19.140.0/24")
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: own.Attrs().Index, Dst: dst, Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ pfx, want string }{
		{"198.19.128.0/25", "198.19.128.0/24 dev ul0"}, // inside the foreign route
		{"198.19.128.0/17", "198.19.128.0/24 dev ul0"}, // containing it
		{"198.18.0.0/24", "198.18.0.0/24 dev ul0"},     // the underlay's own subnet
		{"198.19.129.0/24", ""},                        // nothing there
		{"198.19.140.0/24", ""},                        // grapevine's own link
	} {
		got, err := p.routeConflict(netip.MustParsePrefix(tc.pfx))
		if err != nil || got != tc.want {
			t.Errorf("routeConflict(%s) = %q, %v; want %q", tc.pfx, got, err, tc.want)
		}
	}
}

func discardLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}
