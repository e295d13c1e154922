package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"grapevine/internal/unixhttp"
	"grapevine/plugin"
)

// pluginClient talks to a grapevine plugin socket the way dockerd does: JSON
// POSTs to /IpamDriver.* and /NetworkDriver.* over HTTP on a unix socket.
type pluginClient struct {
	sock string
	hc   *http.Client
}

func newPluginClient(sock string) *pluginClient {
	tr := unixhttp.Transport(sock)
	tr.MaxIdleConnsPerHost = 64
	return &pluginClient{sock: sock, hc: &http.Client{Transport: tr, Timeout: 60 * time.Second}}
}

// call POSTs req to path and decodes the answer into resp; an "Err" or
// "Error" field in the answer, or a non-200 status, is an error.
func (c *pluginClient) call(path string, req, resp any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("%s: encode request: %w", path, err)
	}
	r, err := c.hc.Post("http://plugin"+path, "application/vnd.docker.plugins.v1.2+json", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s on %s: %w", path, c.sock, err)
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return fmt.Errorf("%s: read answer: %w", path, err)
	}
	var e struct{ Err, Error string }
	_ = json.Unmarshal(b, &e)
	if r.StatusCode != http.StatusOK || e.Err != "" || e.Error != "" {
		return fmt.Errorf("%s: status %d: %s", path, r.StatusCode, bytes.TrimSpace(b))
	}
	if resp != nil {
		if err := json.Unmarshal(b, resp); err != nil {
			return fmt.Errorf("%s: decode answer %q: %w", path, b, err)
		}
	}
	return nil
}

func randomID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (c *pluginClient) requestPool(subnet string) (poolID string, err error) {
	var resp struct{ PoolID, Pool string }
	err = c.call("/IpamDriver.RequestPool", map[string]any{"AddressSpace": "grapevine-local", "Pool": subnet, "Options": map[string]string{}}, &resp)
	return resp.PoolID, err
}

func (c *pluginClient) releasePool(poolID string) error {
	return c.call("/IpamDriver.ReleasePool", map[string]string{"PoolID": poolID}, nil)
}

func (c *pluginClient) requestAddress(poolID string, gateway bool) (string, error) {
	opts := map[string]string{}
	if gateway {
		opts["RequestAddressType"] = "com.docker.network.gateway"
	}
	var resp struct{ Address string }
	err := c.call("/IpamDriver.RequestAddress", map[string]any{"PoolID": poolID, "Address": "", "Options": opts}, &resp)
	return resp.Address, err
}

func (c *pluginClient) releaseAddress(poolID, addr string) error {
	ip, _, _ := net.ParseCIDR(addr)
	a := addr
	if ip != nil {
		a = ip.String()
	}
	return c.call("/IpamDriver.ReleaseAddress", map[string]string{"PoolID": poolID, "Address": a}, nil)
}

// ipamRate measures RequestAddress answers per second through the socket,
// with `workers` concurrent callers making n requests in all, then releases
// what it got. The pool is a /16 of its own.
func (c *pluginClient) ipamRate(subnet string, n, workers int) (float64, error) {
	pool, err := c.requestPool(subnet)
	if err != nil {
		return 0, err
	}
	defer func() { _ = c.releasePool(pool) }()
	addrs := make([]string, n)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += workers {
				a, err := c.requestAddress(pool, false)
				if err != nil {
					errs <- err
					return
				}
				addrs[i] = a
			}
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	dupErr := distinctAddrs(subnet, addrs)
	for _, a := range addrs {
		if err := c.releaseAddress(pool, a); err != nil {
			return 0, err
		}
	}
	if dupErr != nil {
		return 0, dupErr
	}
	return float64(n) / elapsed.Seconds(), nil
}

// distinctAddrs checks that the answers to RequestAddress in a pool of
// subnet are addresses in it, none handed out twice: a rate of wrong
// answers is no figure.
func distinctAddrs(subnet string, addrs []string) error {
	pfx, err := netip.ParsePrefix(subnet)
	if err != nil {
		return fmt.Errorf("ipam rate: subnet %q: %w", subnet, err)
	}
	seen := make(map[netip.Addr]int, len(addrs))
	for i, a := range addrs {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			return fmt.Errorf("ipam rate: answer %d %q is not an address with a prefix length: %w", i+1, a, err)
		}
		if !pfx.Contains(p.Addr()) {
			return fmt.Errorf("ipam rate: answer %d %s lies outside the pool %s", i+1, a, subnet)
		}
		if j, dup := seen[p.Addr()]; dup {
			return fmt.Errorf("ipam rate: %s handed out twice (answers %d and %d)", p.Addr(), j+1, i+1)
		}
		seen[p.Addr()] = i
	}
	return nil
}

// status asks the plugin for its `grapevine status` report.
func (c *pluginClient) status() (plugin.Status, error) {
	var st plugin.Status
	r, err := c.hc.Post("http://plugin"+plugin.StatusPath, "application/json", nil)
	if err != nil {
		return st, fmt.Errorf("status of %s: %w", c.sock, err)
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return st, fmt.Errorf("status of %s: read answer: %w", c.sock, err)
	}
	if r.StatusCode != http.StatusOK {
		return st, fmt.Errorf("status of %s: status %d: %s", c.sock, r.StatusCode, bytes.TrimSpace(b))
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("status of %s: decode %q: %w", c.sock, b, err)
	}
	return st, nil
}

// waitRemote polls the plugin's status every `every` until it holds exactly
// want endpoints of network id from other hosts, and says how long that
// took; or fails after timeout, saying how many it holds.
func (c *pluginClient) waitRemote(id string, want int, every, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	for {
		got := -1
		st, err := c.status()
		if err == nil {
			for _, n := range st.Networks {
				if n.ID == id {
					got = n.RemoteEndpoints
				}
			}
			if got == want {
				return time.Since(start), nil
			}
		}
		if time.Since(start) >= timeout {
			switch {
			case err != nil:
				return 0, fmt.Errorf("waiting %v for %d remote endpoints: %w", timeout, want, err)
			case got < 0:
				return 0, fmt.Errorf("waiting %v for %d remote endpoints: network %.12s is not in the status of %s", timeout, want, id, c.sock)
			}
			return 0, fmt.Errorf("%s holds %d of %d remote endpoints of network %.12s after %v", c.sock, got, want, id, timeout)
		}
		time.Sleep(every)
	}
}

// sockNetwork is a network created through the socket the way dockerd does:
// RequestPool, gateway RequestAddress, CreateNetwork.
type sockNetwork struct {
	c         *pluginClient
	poolID    string
	networkID string
	gateway   string
	endpoints []sockEndpoint
}

type sockEndpoint struct{ id, addr string }

func (c *pluginClient) createNetwork(subnet string) (*sockNetwork, error) {
	pool, err := c.requestPool(subnet)
	if err != nil {
		return nil, err
	}
	gw, err := c.requestAddress(pool, true)
	if err != nil {
		_ = c.releasePool(pool)
		return nil, err
	}
	n := &sockNetwork{c: c, poolID: pool, networkID: randomID(), gateway: gw}
	req := map[string]any{
		"NetworkID": n.networkID,
		"Options": map[string]any{
			"com.docker.network.enable_ipv6": false,
			"com.docker.network.generic":     map[string]string{},
		},
		"IPv4Data": []map[string]any{{"AddressSpace": "grapevine-local", "Pool": subnet, "Gateway": gw, "AuxAddresses": map[string]string{}}},
		"IPv6Data": []any{},
	}
	if err := c.call("/NetworkDriver.CreateNetwork", req, nil); err != nil {
		_ = c.releaseAddress(pool, gw)
		_ = c.releasePool(pool)
		return nil, err
	}
	return n, nil
}

// addEndpoints makes count more endpoints: RequestAddress then CreateEndpoint
// (no Join: the endpoint exists in the cluster, no container is started).
func (n *sockNetwork) addEndpoints(count int) error {
	for range count {
		addr, err := n.c.requestAddress(n.poolID, false)
		if err != nil {
			return err
		}
		id := randomID()
		req := map[string]any{
			"NetworkID":  n.networkID,
			"EndpointID": id,
			"Interface":  map[string]string{"Address": addr, "AddressIPv6": "", "MacAddress": ""},
			"Options":    map[string]any{},
		}
		if err := n.c.call("/NetworkDriver.CreateEndpoint", req, nil); err != nil {
			_ = n.c.releaseAddress(n.poolID, addr)
			return err
		}
		n.endpoints = append(n.endpoints, sockEndpoint{id, addr})
	}
	return nil
}

// remove deletes every endpoint, the network and the pool, as dockerd would.
func (n *sockNetwork) remove() error {
	var first error
	keep := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	// 8 callers at once, as dockerd removing many containers would: one at
	// a time, 5,000 endpoints take minutes of the benchmark's budget
	var mu sync.Mutex
	var wg sync.WaitGroup
	eps := make(chan sockEndpoint)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ep := range eps {
				err := n.c.call("/NetworkDriver.DeleteEndpoint", map[string]string{"NetworkID": n.networkID, "EndpointID": ep.id}, nil)
				if err == nil {
					err = n.c.releaseAddress(n.poolID, ep.addr)
				}
				mu.Lock()
				keep(err)
				mu.Unlock()
			}
		}()
	}
	for _, ep := range n.endpoints {
		eps <- ep
	}
	close(eps)
	wg.Wait()
	n.endpoints = nil
	keep(n.c.call("/NetworkDriver.DeleteNetwork", map[string]string{"NetworkID": n.networkID}, nil))
	keep(n.c.releaseAddress(n.poolID, n.gateway))
	keep(n.c.releasePool(n.poolID))
	return first
}
