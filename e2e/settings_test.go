//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"grapevine/driver"
	gvipam "grapevine/ipam"
	"grapevine/plugin"
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
	checkStatusJSON(t, h, "warn", "198.19.31.0/24")
}

// checkStatusJSON reads `grapevine status --json` of host's plugin in the
// documented schema (docs/status.md: no field it does not list) and checks
// that it shows the setting LOG_LEVEL=level (as logrus names it: "warn"
// shows as "warning") and a VXLAN network on subnet
// with one container, whose address comes from this host's pool.
func checkStatusJSON(t *testing.T, host, level, subnet string) {
	t.Helper()
	out, stderr, err := harnessCmd("status", host, "--json")
	if err != nil {
		t.Fatalf("grapevine status --json on %s: %v: %s", host, err, stderr)
	}
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	var st plugin.Status
	if err := dec.Decode(&st); err != nil {
		t.Fatalf("status of %s is not the documented schema: %v:\n%s", host, err, out)
	}
	if st.Schema != plugin.StatusSchema || st.Host == "" || st.Node == "" || !st.Joined || st.Error != "" || st.Underlay == "" {
		t.Errorf("status of %s: schema %d host %q node %q joined %v underlay %q error %q", host, st.Schema, st.Host, st.Node, st.Joined, st.Underlay, st.Error)
	}
	if !strings.HasPrefix(st.Settings["LOG_LEVEL"], level) || st.Settings["GOSSIP_KEY"] == "" {
		t.Errorf("status of %s: settings %v, want LOG_LEVEL=%s… and GOSSIP_KEY shown as set or not", host, st.Settings, level)
	}
	if len(st.Members) != 1 || !st.Members[0].Self || st.Members[0].State != "alive" || st.Members[0].Name != st.Node {
		t.Errorf("status of %s: members %+v, want only itself, alive", host, st.Members)
	}
	i := slices.IndexFunc(st.Networks, func(n driver.NetworkStatus) bool { return n.Subnet == subnet })
	if i < 0 || st.Networks[i].Mode != "vxlan" || st.Networks[i].Endpoints != 1 || st.Networks[i].VNI == 0 {
		t.Errorf("status of %s: networks %+v, want a vxlan network on %s with one endpoint", host, st.Networks, subnet)
	}
	j := slices.IndexFunc(st.Pools, func(p gvipam.PoolStatus) bool { return p.Pool == subnet })
	if j < 0 || st.Pools[j].Allocated < 1 || len(st.Pools[j].Owned) == 0 {
		t.Errorf("status of %s: pools %+v, want %s with an address allocated", host, st.Pools, subnet)
	}
	if in := st.VXLANIngress; in == nil || in.Port == 0 {
		t.Errorf("status of %s: no VXLAN ingress filter with a VXLAN network: %+v", host, in)
	}
	text, stderr, err := harnessCmd("status", host)
	if err != nil || !strings.Contains(text, "node:      "+st.Node+" (joined: true)") || !strings.Contains(text, subnet) {
		t.Errorf("text status of %s (%v: %s) disagrees with its JSON (node %s):\n%s", host, err, stderr, st.Node, text)
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
