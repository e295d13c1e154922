package plugin

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"grapevine/driver/dataplane"
	"grapevine/gossip"
)

// tunnelKeyFile holds this host's WireGuard private key (standard base64,
// one line), in the state directory, readable by root only.
const tunnelKeyFile = "wireguard.key"

// TunnelPort is the encryption tunnel's UDP port between hosts
// (WireGuard's; docs/encryption.md).
const TunnelPort = 51820

// loadTunnelKey reads this host's WireGuard private key, generating and
// persisting one at the first start. A damaged file or one others can read
// is refused, naming the fix: the key is never replaced silently, as the
// other hosts know its public half.
func loadTunnelKey(stateDir string) (dataplane.Key, error) {
	path := filepath.Join(stateDir, tunnelKeyFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return createTunnelKey(path)
	}
	if err != nil {
		return dataplane.Key{}, fmt.Errorf("reading the WireGuard key %s: %w", path, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return dataplane.Key{}, fmt.Errorf("reading the WireGuard key %s: %w", path, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return dataplane.Key{}, fmt.Errorf("the WireGuard key %s is readable by others (mode %v): fix with chmod 600 %s, or delete it for a new key", path, fi.Mode().Perm(), path)
	}
	return parseTunnelKey(path, b)
}

// parseTunnelKey checks a key file's content: one base64 line of 32 bytes,
// not all zero.
func parseTunnelKey(path string, b []byte) (dataplane.Key, error) {
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	var k dataplane.Key
	if err != nil || len(raw) != dataplane.KeyLen {
		return k, fmt.Errorf("the WireGuard key %s is damaged (not %d bytes in base64): delete it and restart the plugin for a new key (the other hosts learn it by gossip)", path, dataplane.KeyLen)
	}
	copy(k[:], raw)
	if k.IsZero() {
		return k, fmt.Errorf("the WireGuard key %s is all zero: delete it and restart the plugin for a new key", path)
	}
	return k, nil
}

// createTunnelKey generates a key and writes it (0600) where loadTunnelKey
// finds it, through a temporary file so that a crash leaves no half key.
func createTunnelKey(path string) (dataplane.Key, error) {
	wk, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return dataplane.Key{}, fmt.Errorf("generating a WireGuard key: %w", err)
	}
	tmp := path + ".new"
	text := base64.StdEncoding.EncodeToString(wk[:]) + "\n"
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		return dataplane.Key{}, fmt.Errorf("writing the WireGuard key %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return dataplane.Key{}, fmt.Errorf("writing the WireGuard key %s: %w", path, err)
	}
	return dataplane.Key(wk), nil
}

// publicKey is the public half of a private key.
func publicKey(k dataplane.Key) dataplane.Key {
	return dataplane.Key(wgtypes.Key(k).PublicKey())
}

// RotatedKey is the answer to a key rotation.
type RotatedKey struct {
	PublicKey string `json:"public_key"`
}

// rotateTunnelKey replaces this host's WireGuard key: a new one is
// persisted, the tunnel takes it, and gossip announces its public half; the
// other hosts then replace the peer, and traffic resumes after one
// handshake.
func (p *process) rotateTunnelKey(stateDir string) (RotatedKey, error) {
	p.rotateMu.Lock()
	defer p.rotateMu.Unlock()
	k, err := createTunnelKey(filepath.Join(stateDir, tunnelKeyFile))
	if err != nil {
		return RotatedKey{}, err
	}
	if err := p.driver.SetTunnelKey(k); err != nil {
		return RotatedKey{}, fmt.Errorf("the new key is saved but the tunnel did not take it (the next reconcile retries): %w", err)
	}
	pub := publicKey(k)
	if err := p.cluster.SetTunnelKey(gossip.TunnelKey(pub), TunnelPort); err != nil {
		return RotatedKey{}, err
	}
	p.log.WithField("public_key", base64.StdEncoding.EncodeToString(pub[:])).Info("WireGuard key rotated")
	return RotatedKey{PublicKey: base64.StdEncoding.EncodeToString(pub[:])}, nil
}
