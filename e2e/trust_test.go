//go:build e2e

package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPeersWithoutKeyRefused sets PEERS without GOSSIP_KEY through `docker
// plugin set`: the plugin gossips with nobody, refuses every call with an
// error naming GOSSIP_KEY and how to make one, and a network cannot be
// created. INSECURE_PLAINTEXT_GOSSIP=true is the only way around it, and the
// plugin then warns that gossip is in clear text.
func TestPeersWithoutKeyRefused(t *testing.T) {
	singleHost(t)
	const h = "h1"
	checkClean(t, h)
	// an underlay address nobody uses: nothing may be reached
	peers := "PEERS=198.18.0.99"
	status := func() string {
		sock := strings.TrimSpace(mustHarness(t, "plugin-sock", h))
		out, _ := exec.Command(filepath.Join(s.pluginDir, "rootfs", "grapevine"), "status", "--socket", sock).CombinedOutput()
		return string(out)
	}
	reset := func(settings ...string) {
		t.Helper()
		mustDocker(t, h, "plugin", "disable", "-f", pluginName)
		mustDocker(t, h, append([]string{"plugin", "set", pluginName}, settings...)...)
		mustDocker(t, h, "plugin", "enable", "--timeout", "30", pluginName)
	}
	t.Cleanup(func() {
		_, _, _ = docker(h, "plugin", "disable", "-f", pluginName)
		_, _, _ = docker(h, "plugin", "set", pluginName, "PEERS=", "GOSSIP_KEY=", "INSECURE_PLAINTEXT_GOSSIP=false")
		_, _, _ = docker(h, "plugin", "enable", "--timeout", "30", pluginName)
	})

	reset(peers, "GOSSIP_KEY=", "INSECURE_PLAINTEXT_GOSSIP=false")
	_, stderr, err := docker(h, "network", "create", "-d", pluginName, "--ipam-driver", pluginName, "--subnet", "198.19.34.0/24", "nokey")
	if err == nil {
		_, _, _ = docker(h, "network", "rm", "nokey")
		t.Fatalf("network create succeeded with PEERS and no GOSSIP_KEY")
	}
	// (with an unreachable PEERS a create fails anyway: the reason is what counts)
	for _, want := range []string{"GOSSIP_KEY is empty but PEERS is set", "openssl rand -base64 32", "INSECURE_PLAINTEXT_GOSSIP=true"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("network create without a key failed without saying %q: %s", want, stderr)
		}
	}
	eventually(t, 30*time.Second, "status and log name GOSSIP_KEY and how to make one", func() error {
		st := status()
		for _, want := range []string{"GOSSIP_KEY is empty but PEERS is set", "openssl rand -base64 32"} {
			if !strings.Contains(st, want) {
				return fmt.Errorf("grapevine status does not say %q:\n%s", want, st)
			}
		}
		if log := pluginLog(s.run, h, 200); !strings.Contains(log, "GOSSIP_KEY is empty but PEERS is set") {
			return fmt.Errorf("plugin log does not name GOSSIP_KEY:\n%s", log)
		}
		return nil
	})

	reset(peers, "GOSSIP_KEY=", "INSECURE_PLAINTEXT_GOSSIP=true")
	eventually(t, 30*time.Second, "the opt-in runs the plugin and warns", func() error {
		if st := status(); !strings.Contains(st, "INSECURE_PLAINTEXT_GOSSIP=true") || strings.Contains(st, "GOSSIP_KEY is empty") {
			return fmt.Errorf("status with the opt-in:\n%s", st)
		}
		if log := pluginLog(s.run, h, 200); !strings.Contains(log, "INSECURE_PLAINTEXT_GOSSIP=true: gossip is neither encrypted nor authenticated") {
			return fmt.Errorf("plugin log has no clear-text warning:\n%s", log)
		}
		return nil
	})
}
