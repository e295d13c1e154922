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

// TestPluginSet changes a setting of the disabled plugin and checks that the plugin
// runs with it after enable.
func TestPluginSet(t *testing.T) {
	singleHost(t)
	const h = "h1"
	checkClean(t, h)
	status := func() (string, error) {
		sock := strings.TrimSpace(mustHarness(t, "plugin-sock", h))
		out, err := exec.Command(filepath.Join(s.pluginDir, "rootfs", "grapevine"), "status", "--socket", sock).CombinedOutput()
		return string(out), err
	}
	setLevel := func(level string) {
		t.Helper()
		mustDocker(t, h, "plugin", "disable", pluginName)
		if _, stderr, err := docker(h, "plugin", "set", pluginName, "LOG_LEVEL="+level); err != nil {
			_, _, _ = docker(h, "plugin", "enable", pluginName)
			t.Fatalf("plugin set LOG_LEVEL=%s: %v: %s", level, err, stderr)
		}
		mustDocker(t, h, "plugin", "enable", "--timeout", "30", pluginName)
		eventually(t, 30*time.Second, "plugin answers with LOG_LEVEL="+level, func() error {
			out, err := status()
			if err != nil {
				return fmt.Errorf("status: %v: %s", err, out)
			}
			if !strings.Contains(out, "LOG_LEVEL="+level) {
				return fmt.Errorf("status does not show LOG_LEVEL=%s:\n%s", level, out)
			}
			return nil
		})
	}
	t.Cleanup(func() {
		_, _, _ = docker(h, "plugin", "disable", pluginName)
		_, _, _ = docker(h, "plugin", "set", pluginName, "LOG_LEVEL=debug")
		_, _, _ = docker(h, "plugin", "enable", "--timeout", "30", pluginName)
	})

	// set refuses while enabled
	if _, stderr, err := docker(h, "plugin", "set", pluginName, "LOG_LEVEL=warn"); err == nil {
		t.Errorf("plugin set on an enabled plugin succeeded")
	} else if !strings.Contains(stderr, "enabled") {
		t.Logf("plugin set on an enabled plugin: %s", stderr)
	}
	setLevel("warn")
	env := mustDocker(t, h, "plugin", "inspect", "-f", "{{.Settings.Env}}", pluginName)
	if !strings.Contains(env, "LOG_LEVEL=warn") {
		t.Errorf("plugin inspect Settings.Env = %s, want LOG_LEVEL=warn", env)
	}
	// the plugin still serves networks after the change (LOG_LEVEL goes back to debug
	// in the cleanup, after this network is gone)
	createNetwork(t, h, "setnet", "--subnet", "198.19.31.0/24")
	c := runContainer(t, h, "--network", "setnet", image, "sleep", "3600")
	if ip := containerIP(t, h, c, "setnet"); !strings.HasPrefix(ip, "198.19.31.") {
		t.Errorf("container after plugin set got %q", ip)
	}
}

// TestDisableKeepsContainerLinks: `docker plugin disable -f` (what `plugin set`
// and `plugin upgrade` need while networks exist) stops the plugin, but the
// network's isolated namespace is pinned in the shared state directory too, so
// running containers keep their links and traffic while it is disabled and
// after it is enabled again.
func TestDisableKeepsContainerLinks(t *testing.T) {
	singleHost(t)
	const h = "h1"
	checkClean(t, h)
	createNetwork(t, h, "keep", "--subnet", "198.19.32.0/24")
	a := runContainer(t, h, "--network", "keep", "--ip", "198.19.32.10", image, "sleep", "3600")
	runContainer(t, h, "--network", "keep", "--ip", "198.19.32.11", image, "sleep", "3600")
	link := func() string {
		t.Helper()
		return mustDocker(t, h, "exec", a, "cat", "/sys/class/net/eth0/ifindex")
	}
	reach := func(phase string) {
		t.Helper()
		eventually(t, 30*time.Second, phase+": container to container", func() error {
			if out, stderr, err := docker(h, "exec", a, "ping", "-c", "1", "-W", "1", "198.19.32.11"); err != nil {
				return fmt.Errorf("%v: %s%s", err, out, stderr)
			}
			return nil
		})
	}
	before := link()
	reach("before")
	t.Cleanup(func() { _, _, _ = docker(h, "plugin", "enable", "--timeout", "30", pluginName) })
	mustDocker(t, h, "plugin", "disable", "-f", pluginName)
	reach("plugin disabled")
	mustDocker(t, h, "plugin", "enable", "--timeout", "30", pluginName)
	reach("enabled again")
	if after := link(); after != before {
		t.Errorf("container interface index %s after disable/enable, was %s: the link was recreated or lost", after, before)
	}
	// the plugin took the namespace over again: a new container joins it
	c := runContainer(t, h, "--network", "keep", image, "sleep", "3600")
	eventually(t, 30*time.Second, "new container reaches an old one", func() error {
		if out, stderr, err := docker(h, "exec", c, "ping", "-c", "1", "-W", "1", "198.19.32.11"); err != nil {
			return fmt.Errorf("%v: %s%s", err, out, stderr)
		}
		return nil
	})
}
