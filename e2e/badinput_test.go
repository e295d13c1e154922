//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestBadInput(t *testing.T) {
	singleHost(t)
	const h = "h1"
	checkClean(t, h)
	createNetwork(t, h, "good", "--subnet", "198.19.17.0/24")
	keep := runContainer(t, h, "--network", "good", "--name", "bad-keep", image, "sleep", "3600")
	peer := runContainer(t, h, "--network", "good", image, "sleep", "3600")
	keepIP := containerIP(t, h, keep, "good")
	peerIP := containerIP(t, h, peer, "good")

	netCases := []struct {
		name string
		args []string
		want []string // the error must contain one of these (case-insensitive)
	}{
		{"unknown option", []string{"--subnet", "198.19.18.0/24", "-o", "foo=bar"}, []string{"foo"}},
		{"vni not a number", []string{"--subnet", "198.19.18.0/24", "-o", "vni=abc"}, []string{"vni"}},
		{"vni out of range", []string{"--subnet", "198.19.18.0/24", "-o", "vni=99999999"}, []string{"vni"}},
		{"mtu out of range", []string{"--subnet", "198.19.18.0/24", "-o", "com.docker.network.driver.mtu=70000"}, []string{"mtu"}},
		{"subnet overlaps a grapevine network", []string{"--subnet", "198.19.17.128/25"}, []string{"198.19.17.0/24", "overlap"}},
		{"subnet overlaps the underlay route", []string{"--subnet", "198.18.0.0/24"}, []string{"198.18.0.0/24", "route"}},
	}
	for _, tc := range netCases {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, err := docker(h, append([]string{"network", "create", "-d", pluginName, "--ipam-driver", pluginName}, append(tc.args, "badnet")...)...)
			if err == nil {
				id := strings.TrimSpace(out)
				_, _, _ = docker(h, "network", "rm", "badnet")
				assertNetworkGone(t, h, id)
				t.Fatalf("network create %v succeeded, want an error naming %v", tc.args, tc.want)
			}
			assertMentions(t, stderr, tc.want)
			t.Logf("refused: %s", strings.TrimSpace(stderr))
			if _, _, err := docker(h, "network", "inspect", "badnet"); err == nil {
				t.Errorf("refused network badnet exists anyway")
			}
		})
	}

	runCases := []struct {
		name string
		ip   string
		want []string
	}{
		{"ip outside the subnet", "198.19.99.5", []string{"198.19.99.5"}},
		{"ip already taken", keepIP, []string{keepIP}},
	}
	for _, tc := range runCases {
		t.Run(tc.name, func(t *testing.T) {
			defer func() { _, _, _ = docker(h, "rm", "-f", "bad-run") }()
			_, stderr, err := docker(h, "run", "-d", "--name", "bad-run", "--network", "good", "--ip", tc.ip, image, "sleep", "3600")
			if err == nil {
				t.Fatalf("docker run --ip %s succeeded, want an error", tc.ip)
			}
			assertMentions(t, stderr, tc.want)
			t.Logf("refused: %s", strings.TrimSpace(stderr))
		})
	}

	t.Run("garbage json on the plugin socket", func(t *testing.T) {
		sock := strings.TrimSpace(mustHarness(t, "plugin-sock", h))
		client := unixHTTPClient(sock)
		for _, path := range []string{
			"/NetworkDriver.CreateNetwork", "/NetworkDriver.CreateEndpoint", "/NetworkDriver.Join",
			"/NetworkDriver.ProgramExternalConnectivity", "/NetworkDriver.DeleteNetwork",
			"/IpamDriver.RequestPool", "/IpamDriver.RequestAddress", "/IpamDriver.ReleaseAddress",
		} {
			for _, body := range []string{"{not json", `{"NetworkID": 42, "Pool": [1,2]}`, `[]`, ""} {
				status, resp, err := post(client, path, body)
				if err != nil {
					t.Errorf("POST %s %q: %v", path, body, err)
					continue
				}
				// the route's own refusal, not a 404 of a missing route: the
				// decoder's for what is not a JSON object of the call, the
				// call's own (Err and Error alike) for fields it ignores
				want := path[1:] + ": request body is not valid JSON for this call: "
				switch body {
				case "":
					want = path[1:] + ": empty request body: a JSON object is required"
				case `{"NetworkID": 42, "Pool": [1,2]}`:
					if strings.HasPrefix(path, "/IpamDriver.") && path != "/IpamDriver.RequestPool" {
						want = "" // RequestAddress and ReleaseAddress have neither field
					}
				}
				msg := pluginError(resp)
				if status != http.StatusInternalServerError || msg == "" || !strings.HasPrefix(msg, want) {
					t.Errorf("POST %s %q: status %d, error %q; want status 500 and an error starting %q (response %s)",
						path, body, status, msg, want, resp)
				}
			}
		}
		// the control: a path the plugin does not serve is a 404 without a plugin error
		if status, resp, err := post(client, "/NetworkDriver.NoSuchCall", "{}"); err != nil || status != http.StatusNotFound || hasError(resp) {
			t.Errorf("POST to a path the plugin does not serve: %v %d %s, want a plain 404", err, status, resp)
		}
		status, resp, err := post(client, "/NetworkDriver.GetCapabilities", "{}")
		if err != nil || status != http.StatusOK || !strings.Contains(resp, "Scope") {
			t.Errorf("plugin no longer answers GetCapabilities: %v %d %s", err, status, resp)
		}
	})

	t.Run("existing network and containers unchanged", func(t *testing.T) {
		if got := containerIP(t, h, keep, "good"); got != keepIP {
			t.Errorf("bad-keep address changed from %s to %s", keepIP, got)
		}
		if out, stderr, err := docker(h, "exec", keep, "ping", "-c", "1", "-W", "2", peerIP); err != nil {
			t.Errorf("containers on the existing network lost connectivity: %v\n%s%s", err, out, stderr)
		}
		sub := mustDocker(t, h, "network", "inspect", "-f", `{{range .IPAM.Config}}{{.Subnet}}{{end}}`, "good")
		if sub != "198.19.17.0/24" {
			t.Errorf("network good has subnet %q, want 198.19.17.0/24", sub)
		}
		// and the plugin still works for new work
		c := runContainer(t, h, "--network", "good", image, "sleep", "3600")
		ip := containerIP(t, h, c, "good")
		if ip == keepIP || ip == peerIP || !strings.HasPrefix(ip, "198.19.17.") {
			t.Errorf("new container got %q (existing %s, %s)", ip, keepIP, peerIP)
		}
	})
}

func assertMentions(t *testing.T, msg string, want []string) {
	t.Helper()
	low := strings.ToLower(msg)
	for _, w := range want {
		if strings.Contains(low, strings.ToLower(w)) {
			return
		}
	}
	t.Errorf("error does not name %v: %s", want, strings.TrimSpace(msg))
}

func mustHarness(t *testing.T, cmd string, args ...string) string {
	t.Helper()
	out, stderr, err := harnessCmd(cmd, args...)
	if err != nil {
		t.Fatalf("harness %s %v: %v: %s", cmd, args, err, stderr)
	}
	return out
}

func unixHTTPClient(sock string) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
		},
	}
}

func post(c *http.Client, path, body string) (int, string, error) {
	req, err := http.NewRequest(http.MethodPost, "http://plugin"+path, bytes.NewBufferString(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/vnd.docker.plugins.v1.2+json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("post %s: %w", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// hasError reports whether a plugin response carries an error (Err for the network
// driver, Error for IPAM).
func hasError(resp string) bool { return pluginError(resp) != "" }

// pluginError is the error a plugin response carries: Err (network driver) if
// set, else Error (IPAM); "" when there is none or the body is not JSON. When
// both are set they must agree, or the answer is reported as the mismatch.
func pluginError(resp string) string {
	var r struct{ Err, Error string }
	if err := json.Unmarshal([]byte(resp), &r); err != nil {
		return ""
	}
	if r.Err != "" && r.Error != "" && r.Err != r.Error {
		return fmt.Sprintf("Err %q and Error %q differ", r.Err, r.Error)
	}
	if r.Err != "" {
		return r.Err
	}
	return r.Error
}
