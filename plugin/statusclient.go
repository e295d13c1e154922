package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"grapevine/internal/unixhttp"
	gvipam "grapevine/ipam"
)

// The client side of `grapevine status`, `grapevine doctor`, `grapevine
// forget` and `grapevine rotate-key`: it finds the plugin's socket and asks
// it for its Status, its doctor Report, to forget hosts or to rotate its key.

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
	return query(ctx, socket, StatusPath, nil, 10*time.Second)
}

// RotateKey asks the running plugin on socket to replace its WireGuard key;
// the answer is a RotatedKey as JSON.
func RotateKey(ctx context.Context, socket string) ([]byte, error) {
	return query(ctx, socket, RotateKeyPath, nil, 10*time.Second)
}

// Forget asks the running plugin on socket to forget hosts (see
// docs/cluster.md) and returns a line saying what it did.
func Forget(ctx context.Context, socket string, hosts []string) (string, error) {
	body, err := json.Marshal(ForgetRequest{Hosts: hosts})
	if err != nil {
		return "", err
	}
	raw, err := query(ctx, socket, ForgetPath, body, 30*time.Second)
	if err != nil {
		return "", err
	}
	var res gvipam.ForgetResult
	if err := json.Unmarshal(raw, &res); err != nil {
		return "", fmt.Errorf("reading the plugin's answer: %w", err)
	}
	return fmt.Sprintf("forgot %s; took over %d of their blocks; known hosts now: %s",
		strings.Join(res.Forgotten, ", "), res.Blocks, strings.Join(res.Known, ", ")), nil
}

// doctorTimeout bounds a doctor run: a few seconds per peer whose path
// needs the MTU search.
const doctorTimeout = 3 * time.Minute

// QueryDoctor asks the running plugin on socket to examine this host and
// its paths to peer (every member when ""), and returns its Report.
func QueryDoctor(ctx context.Context, socket, peer string) (Report, error) {
	body, err := json.Marshal(DoctorRequest{Peer: peer})
	if err != nil {
		return Report{}, err
	}
	raw, err := query(ctx, socket, DoctorPath, body, doctorTimeout)
	if err != nil {
		return Report{}, err
	}
	var r Report
	if err := json.Unmarshal(raw, &r); err != nil {
		return Report{}, fmt.Errorf("the plugin's answer is not a doctor report: %w", err)
	}
	if r.Schema != DoctorSchema {
		return Report{}, fmt.Errorf("the plugin answered doctor schema %d, this grapevine reads %d: run the plugin's own binary (/grapevine in its rootfs)", r.Schema, DoctorSchema)
	}
	return r, nil
}

// query posts body (nil: none) to path on the plugin socket.
func query(ctx context.Context, socket, path string, body []byte, timeout time.Duration) ([]byte, error) {
	c := &http.Client{Transport: unixhttp.Transport(socket), Timeout: timeout}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://plugin"+path, rd)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("asking the plugin at %s: %w", socket, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the plugin's answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e errorBody
		if json.Unmarshal(answer, &e) == nil && e.Err != "" {
			return nil, errors.New(e.Err)
		}
		return nil, fmt.Errorf("plugin answered %s: %s", resp.Status, strings.TrimSpace(string(answer)))
	}
	return answer, nil
}
