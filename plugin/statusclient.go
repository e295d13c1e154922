package plugin

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"grapevine/internal/unixhttp"
)

// The client side of `grapevine status`: it finds the plugin's socket and
// asks it for its Status.

// pluginsDir is where dockerd serves plugin sockets.
const pluginsDir = "/run/docker/plugins"

// FindSocket locates the plugin socket on this host: the managed plugin's socket
// lives under /run/docker/plugins/<plugin-id>/grapevine.sock.
func FindSocket() (string, error) { return findSocket(pluginsDir) }

// findSocket looks for grapevine.sock in dir's subdirectories (managed
// plugins) and in dir itself (a plugin run by hand).
func findSocket(dir string) (string, error) {
	matches, _ := filepath.Glob(filepath.Join(dir, "*", "grapevine.sock"))
	if m, _ := filepath.Glob(filepath.Join(dir, "grapevine.sock")); len(m) == 1 {
		matches = append(matches, m...)
	}
	switch len(matches) {
	case 0:
		return "", fmt.Errorf("no grapevine socket under %s: is the plugin enabled (`docker plugin ls`)?", dir)
	case 1:
		return matches[0], nil
	}
	return "", fmt.Errorf("several grapevine sockets found (%s): choose one with --socket", strings.Join(matches, ", "))
}

// QueryStatus asks the running plugin on socket for its status as raw JSON.
func QueryStatus(ctx context.Context, socket string) ([]byte, error) {
	return callPlugin(ctx, socket, StatusPath)
}

// RotateKey asks the running plugin on socket to replace its WireGuard key;
// the answer is a RotatedKey as JSON.
func RotateKey(ctx context.Context, socket string) ([]byte, error) {
	return callPlugin(ctx, socket, RotateKeyPath)
}

// callPlugin posts an empty request to path on the plugin's socket.
func callPlugin(ctx context.Context, socket, path string) ([]byte, error) {
	c := &http.Client{Transport: unixhttp.Transport(socket), Timeout: 10 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://plugin"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("asking the plugin at %s: %w", socket, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading the plugin's answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("plugin answered %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}
