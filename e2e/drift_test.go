//go:build e2e

package e2e

import (
	"fmt"
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

// TestVNINowInUse: another VXLAN device takes a network's VNI on the plugin's
// UDP port after the network was made (its own device deleted by hand): the
// running plugin's reconcile names the network, its device, the VNI, the port
// and the holder, and re-creates the device once the VNI is free again. A new
// network asking for a VNI already taken that way is refused with the same
// facts and leaves nothing behind.
//
// (A repeated CreateNetwork repairs the device the same way and says the
// same; it needs Docker to ask again for a network the plugin keeps, which
// Docker does only for Swarm networks after a node crash, where grapevine's
// IPAM currently refuses the repeated RequestPool first.)
func TestVNINowInUse(t *testing.T) {
	singleHost(t)
	const (
		h, subnet = "h1", "198.19.92.0/24"
		vni       = 4242
		foreign   = "vni4242" // no grapevine prefix: not an orphan to remove
	)
	checkClean(t, h)
	netID := createNetwork(t, h, "gvvni", "--subnet", subnet, "-o", fmt.Sprintf("vni=%d", vni))
	runContainer(t, h, "--network", "gvvni", image, "sleep", "3600")
	dev := vxlanDev(t, h, netID)
	pid, err := pluginPID(h)
	if err != nil {
		t.Fatal(err)
	}
	mustInLinkNS(t, h, dev, "ip", "link", "del", dev)
	addForeignVXLAN(t, h, foreign, vni)

	// one log line with every fact (the dockerd log quotes the plugin's line)
	parts := []string{
		fmt.Sprintf("network %.11s: vxlan device %s (vni %d): create vxlan ", netID, dev, vni),
		fmt.Sprintf("vni %d on udp port 4789 is used by vxlan device ", vni), foreign,
		"choose another vni (-o vni=N)",
	}
	eventuallyOr(t, reconcileWait, "the running plugin reports the vni taken", func() error {
		for _, l := range strings.Split(pluginLog(s.run, h, 200), "\n") {
			if containsAll(l, parts) {
				t.Logf("reported: %s", l)
				return nil
			}
		}
		return fmt.Errorf("no plugin log line with all of %q", parts)
	}, func() string { return "plugin log:\n" + pluginLog(s.run, h, 40) })

	mustInHost(t, h, "ip", "link", "del", foreign)
	eventually(t, reconcileWait, "the plugin re-creates "+dev+" with vni 4242", func() error {
		out, stderr, err := inLinkNS(h, dev, "ip", "-d", "link", "show", "dev", dev)
		if err != nil {
			return fmt.Errorf("%v: %s", err, stderr)
		}
		if !strings.Contains(out, fmt.Sprintf("vxlan id %d ", vni)) {
			return fmt.Errorf("%s is not vxlan id %d: %s", dev, vni, out)
		}
		return nil
	})
	if after, err := pluginPID(h); err != nil || after != pid {
		t.Errorf("the plugin process changed from %d to %d (%v): the repair must come from the running plugin", pid, after, err)
	}

	t.Run("a new network on a taken vni is refused", func(t *testing.T) {
		const vni2, foreign2 = 4243, "vni4243"
		addForeignVXLAN(t, h, foreign2, vni2)
		out, stderr, err := docker(h, "network", "create", "-d", pluginName, "--ipam-driver", pluginName,
			"--subnet", "198.19.94.0/24", "-o", fmt.Sprintf("vni=%d", vni2), "gvvni2")
		if err == nil {
			_, _, _ = docker(h, "network", "rm", "gvvni2")
			t.Fatalf("network create on vni %d held by %s succeeded (%s)", vni2, foreign2, strings.TrimSpace(out))
		}
		want := []string{
			fmt.Sprintf("vni %d is already used by another VXLAN device on UDP port 4789 on this host (Docker's overlay allocates 4096 and up); pick another -o vni", vni2),
			fmt.Sprintf(`is used by vxlan device "%s"`, foreign2),
		}
		if !containsAll(stderr, want) {
			t.Errorf("refusal %q does not say all of %q", strings.TrimSpace(stderr), want)
		}
		if _, _, err := docker(h, "network", "inspect", "gvvni2"); err == nil {
			t.Errorf("refused network gvvni2 exists")
		}
	})
}

// addForeignVXLAN adds a VXLAN device that is not grapevine's on host's
// underlay (eth0, the plugin's UDP port 4789) and removes it in t.Cleanup.
func addForeignVXLAN(t *testing.T, host, name string, vni int) {
	t.Helper()
	mustInHost(t, host, "ip", "link", "add", name, "type", "vxlan", "id", fmt.Sprint(vni), "dstport", "4789", "dev", "eth0")
	t.Cleanup(func() {
		if _, _, err := inHost(host, "ip", "link", "show", "dev", name); err == nil {
			if _, stderr, err := inHost(host, "ip", "link", "del", name); err != nil {
				t.Errorf("ip link del %s on %s: %v: %s", name, host, err, stderr)
			}
		}
	})
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
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
