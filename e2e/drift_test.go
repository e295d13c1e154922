//go:build e2e

package e2e

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// reconcileWait bounds how long a running plugin takes to repair drift: its
// reconcile loop runs every 30 s.
const reconcileWait = 75 * time.Second

// TestFirewallRepairedWhileRunning deletes grapevine rules (one in the filter
// table, the network's masquerade rule) behind a running plugin's back and
// waits for the same plugin process to put back exactly the rules it had.
func TestFirewallRepairedWhileRunning(t *testing.T) {
	singleHost(t)
	const h, subnet = "h1", "198.19.91.0/24"
	checkClean(t, h)
	netID := createNetwork(t, h, "drift", "--subnet", subnet)
	c := runContainer(t, h, "--network", "drift", image, "sleep", "3600")
	before := grapevineRules(t, h, netID)
	slices.Sort(before)
	var filter, masq string
	for _, r := range before {
		switch {
		case filter == "" && strings.HasPrefix(r, "filter: -A GRAPEVINE"):
			filter = r
		case strings.HasPrefix(r, "nat: ") && strings.Contains(r, "MASQUERADE") && strings.Contains(r, subnet):
			masq = r
		}
	}
	if filter == "" || masq == "" {
		t.Fatalf("want a filter rule in a GRAPEVINE chain and a masquerade rule for %s among:\n%s", subnet, strings.Join(before, "\n"))
	}
	pid, err := pluginPID(h)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{filter, masq} {
		deleteRule(t, h, r)
	}
	start := time.Now()
	eventually(t, reconcileWait, "the running plugin restores the deleted rules", func() error {
		now := grapevineRules(t, h, netID)
		slices.Sort(now)
		if !slices.Equal(now, before) {
			return fmt.Errorf("rules now:\n%s\nwant:\n%s", strings.Join(now, "\n"), strings.Join(before, "\n"))
		}
		return nil
	})
	t.Logf("deleted rules restored after %v", time.Since(start).Round(time.Millisecond))
	if after, err := pluginPID(h); err != nil || after != pid {
		t.Errorf("the plugin process changed from %d to %d (%v): the repair must come from the running plugin", pid, after, err)
	}
	// and the restored masquerade rule works
	eventually(t, 20*time.Second, "egress to the LAN after the repair", func() error {
		peer, err := peerSeenByLAN(t, 9006, func() (string, string, error) {
			return docker(h, "exec", c, "sh", "-c", fmt.Sprintf("nc -w 2 %s 9006 </dev/null", lanAddr))
		})
		if err != nil {
			return err
		}
		if peer != hostAddr(h) {
			return fmt.Errorf("LAN saw %s, want %s", peer, hostAddr(h))
		}
		return nil
	})
}

// deleteRule deletes one rule as grapevineRules lists it ("table: -A CHAIN …")
// from host; the shell undoes iptables-save's quoting of comments.
func deleteRule(t *testing.T, host, rule string) {
	t.Helper()
	table, spec, ok := strings.Cut(rule, ": -A ")
	if !ok {
		t.Fatalf("rule %q is not \"table: -A …\"", rule)
	}
	mustInHost(t, host, "sh", "-c", "iptables -t "+table+" -D "+spec)
}

// TestVNINowInUse: a network's VXLAN device is gone while its host is down,
// and meanwhile another VXLAN device took its VNI on the same UDP port. When
// Docker asks again for the network (a Swarm network is re-created on the node
// after a daemon restart), the plugin refuses with the VNI, the port and the
// holder, and recovers once the other device is gone.
func TestVNINowInUse(t *testing.T) {
	singleHost(t)
	const (
		h       = "h1"
		subnet  = "198.19.92.0/24"
		vni     = 4242
		foreign = "vni4242" // no grapevine prefix: not an orphan to remove
	)
	checkClean(t, h)
	r := swarmRun{run: s.run, hosts: []string{h}}
	r.joinSwarm(t)
	r.mustDocker(t, h, "network", "create", "--config-only", "--ipam-driver", pluginName, "--subnet", subnet,
		"-o", fmt.Sprintf("vni=%d", vni), "gvvcfg")
	r.cleanupRetry(t, h, "network", "rm", "gvvcfg")
	r.mustDocker(t, h, "network", "create", "--scope", "swarm", "--config-from", "gvvcfg", "-d", pluginName, "gvvni")
	r.cleanupRetry(t, h, "network", "rm", "gvvni")
	r.mustDocker(t, h, "service", "create", "--detach", "--name", "gvvs", "--mode", "global",
		"--network", "gvvni", "--no-resolve-image", image, "sleep", "36000")
	r.cleanup(t, h, "service", "rm", "gvvs")
	r.tasks(t, "gvvs", "gvvni", 1)
	netID := r.mustDocker(t, h, "network", "inspect", "-f", "{{.ID}}", "gvvni")
	dev := vxlanDev(t, h, netID)

	// A killed host (unlike a stopped dockerd, which takes its Swarm tasks
	// and their networks down first) leaves the plugin's record in place, so
	// Docker's CreateNetwork after the revive is a repeat.
	mustHarness(t, "kill", h)
	removeLinkEverywhere(t, h, dev)
	mustInHost(t, h, "ip", "link", "add", foreign, "type", "vxlan", "id", fmt.Sprint(vni), "dstport", "4789", "dev", "eth0")
	removed := false
	t.Cleanup(func() {
		if !removed {
			_, _, _ = inHost(h, "ip", "link", "del", foreign)
		}
	})
	mustHarness(t, "revive", h)

	want := fmt.Sprintf("network %.12s: vni %d is now used by another VXLAN device on UDP port 4789 on this host", netID, vni)
	eventuallyOr(t, 90*time.Second, "the plugin refuses the network naming the vni", func() error {
		log := pluginLog(s.run, h, 400)
		for _, l := range strings.Split(log, "\n") {
			if strings.Contains(l, want) {
				if !strings.Contains(l, foreign) {
					return fmt.Errorf("refusal does not name the holder %s: %s", foreign, l)
				}
				t.Logf("refused: %s", l)
				return nil
			}
		}
		return fmt.Errorf("no %q in the plugin log", want)
	}, func() string {
		tasks, _, _ := r.docker(h, "service", "ps", "--no-trunc", "gvvs")
		nets, _, _ := r.docker(h, "network", "ls")
		daemon, _, _ := runCmd(cmdTimeout, "sh", "-c", fmt.Sprintf("grep -a -v 'plugin=' /run/gvtest/%s/%s/dockerd.log | grep -a -i 'error\\|warn\\|gvvni\\|network' | tail -n 40", s.run, h))
		return fmt.Sprintf("service ps:\n%s\nnetworks:\n%s\nplugin log:\n%s\ndockerd log:\n%s", tasks, nets, pluginLog(s.run, h, 60), daemon)
	})

	mustInHost(t, h, "ip", "link", "del", foreign)
	removed = true
	r.tasks(t, "gvvs", "gvvni", 1)
	vxlanDev(t, h, netID)
}

// removeLinkEverywhere deletes dev from host's namespace and from every
// network namespace pinned for host (propagated mount or state directory),
// wherever it is; it need not exist.
func removeLinkEverywhere(t *testing.T, host, dev string) {
	t.Helper()
	base := "/run/gvtest/" + s.run + "/" + host
	pins, _ := filepath.Glob(base + "/data/plugins/*/propagated-mount/netns/" + linkPrefix + "*")
	state, _ := filepath.Glob(base + "/state/netns/" + linkPrefix + "*")
	for _, ns := range append([]string{netnsPath(host)}, append(pins, state...)...) {
		if _, _, err := runCmd(cmdTimeout, "nsenter", "--net="+ns, "--", "ip", "link", "show", "dev", dev); err != nil {
			continue // not there, or a pin whose namespace is gone
		}
		if out, stderr, err := runCmd(cmdTimeout, "nsenter", "--net="+ns, "--", "ip", "link", "del", dev); err != nil {
			t.Fatalf("ip link del %s in %s: %v: %s%s", dev, ns, err, out, stderr)
		}
		t.Logf("deleted %s in %s", dev, ns)
	}
}

// eventuallyOr is eventually that adds report() to the failure message.
func eventuallyOr(t *testing.T, timeout time.Duration, what string, f func() error, report func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %v: %v\n%s", what, timeout, err, report())
		}
		time.Sleep(200 * time.Millisecond)
	}
}
