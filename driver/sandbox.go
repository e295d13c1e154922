package driver

import (
	"net/netip"
	"path/filepath"
)

// maxSandboxKey bounds the sandbox key kept from a Join request (a path
// under Docker's exec root; input from the Docker socket).
const maxSandboxKey = 512

// sandboxKey is the key of a Join request kept for the names tap: an
// absolute path of bounded length, else "" (the endpoint is then not tapped;
// the names layer checks the rest where it opens the namespace).
func sandboxKey(key string) string {
	if len(key) > maxSandboxKey || !filepath.IsAbs(key) || filepath.Clean(key) != key {
		return ""
	}
	return key
}

// TapSandboxes lists the joined endpoints' sandboxes whose names queries the
// names layer taps: each sandbox key with its endpoints' addresses (address
// and subnet length) on the networks whose names are answered across hosts
// (NameNetworks).
func (d *Driver) TapSandboxes() map[string][]netip.Prefix {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string][]netip.Prefix{}
	for _, e := range d.endpoints {
		if !e.Joined || e.SandboxKey == "" {
			continue
		}
		n, ok := d.networks[e.NetworkID]
		if !ok {
			continue
		}
		out[e.SandboxKey] = append(out[e.SandboxKey], netip.PrefixFrom(e.Address.Addr(), n.Subnet.Bits()))
	}
	return out
}

// SandboxChanges signals (coalesced) that an endpoint joined or left a
// sandbox, so that the names layer taps or untaps it at once.
func (d *Driver) SandboxChanges() <-chan struct{} { return d.sandboxKick }

// kickSandboxes signals SandboxChanges without waiting.
func (d *Driver) kickSandboxes() {
	select {
	case d.sandboxKick <- struct{}{}:
	default:
	}
}
