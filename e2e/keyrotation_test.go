//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// Keys of the rotation test (base64 of 16 bytes), besides the suite's gossipKey.
const (
	rotatedGossipKey = "Z3JhcGV2aW5lLW5ldy0xNg==" // "grapevine-new-16"
	strayGossipKey1  = "c3RyYXkta2V5LW9uZS0xNg==" // "stray-key-one-16"
	strayGossipKey2  = "c3RyYXkta2V5LXR3by0xNg==" // "stray-key-two-16"
)

// TestKeyRotation rotates GOSSIP_KEY on a live fleet with the steps of
// docs/security.md (add the new key, send with it, drop the old one; one host
// at a time with disable -f, set, enable), while containers on every host
// keep pinging each other: every pair across hosts loses at most
// maxPingLoss probes in a step and never maxPingGap in a row (a host whose
// plugin is disabled keeps its place for the grace after a graceful leave,
// docs/cluster.md). After every host's step every host sees all of them
// alive: the cluster never partitions. A host given keys that share none
// with the fleet stays out until it gets the current key back. New containers
// get distinct, reachable addresses at the end.
func TestKeyRotation(t *testing.T) {
	needHosts(t, 3)
	hosts := clusterHosts()
	for _, h := range hosts {
		checkClean(t, h)
	}
	const nw, subnet = "rot", "198.19.57.0/24"
	for _, h := range hosts {
		createNetwork(t, h, nw, "--subnet", subnet)
	}
	var cs []ctr
	for _, h := range hosts {
		cs = append(cs, startCtr(t, h, nw, nw+"-"+h))
	}
	// runs before the containers and networks go: they need enabled plugins
	t.Cleanup(func() { restoreGossipKey(t, hosts) })
	for _, h := range hosts {
		waitMembers(t, 30*time.Second, h, hosts)
	}
	fullMesh(t, 20*time.Second, cs)

	start := time.Now()
	old, next := gossipKey, rotatedGossipKey
	for _, pass := range []string{old + "," + next, next + "," + old, next} {
		for _, h := range hosts {
			step := fmt.Sprintf("%s to GOSSIP_KEY=%s", h, keyNames(pass))
			ps := startPingers(t, cs)
			setGossipKey(t, h, pass, func() {
				// the plugin is down on h: the others keep its endpoints for
				// the grace after its graceful leave, so every container,
				// h's included, still reaches every other one
				fullMesh(t, 5*time.Second, cs)
			})
			for _, o := range hosts {
				waitMembers(t, 30*time.Second, o, hosts)
			}
			fullMesh(t, 20*time.Second, cs)
			checkPingers(t, step, ps)
			t.Logf("%s: all %d hosts alive, full mesh (%v)", step, len(hosts), time.Since(start).Round(time.Millisecond))
		}
	}

	t.Run("host with no shared key stays out", func(t *testing.T) {
		stray, rest := hosts[len(hosts)-1], hosts[:len(hosts)-1]
		setGossipKey(t, stray, strayGossipKey1+","+strayGossipKey2, nil)
		for _, h := range rest {
			waitMembers(t, 30*time.Second, h, rest)
		}
		waitMembers(t, 30*time.Second, stray, []string{stray})
		st, raw, err := statusOf(stray)
		if err != nil {
			t.Fatal(err)
		}
		if st.Joined {
			t.Errorf("%s with no shared key reports joined:\n%s", stray, raw)
		}
		setGossipKey(t, stray, next, nil)
		for _, h := range hosts {
			waitMembers(t, 30*time.Second, h, hosts)
		}
		fullMesh(t, 20*time.Second, cs)
	})

	t.Run("new containers after the rotation", func(t *testing.T) {
		all := append([]ctr(nil), cs...)
		for _, h := range hosts {
			all = append(all, startCtr(t, h, nw, nw+"-new-"+h))
		}
		distinct(t, all)
		fullMesh(t, 20*time.Second, all)
		t.Logf("rotation done in %v; containers %v", time.Since(start).Round(time.Millisecond), all)
	})
}

// setGossipKey changes host's GOSSIP_KEY the documented way: disable -f, set,
// enable. during, if not nil, runs while the plugin is disabled.
func setGossipKey(t *testing.T, host, keys string, during func()) {
	t.Helper()
	mustDocker(t, host, "plugin", "disable", "-f", pluginName)
	if during != nil {
		during()
	}
	mustDocker(t, host, "plugin", "set", pluginName, "GOSSIP_KEY="+keys)
	mustDocker(t, host, "plugin", "enable", "--timeout", "30", pluginName)
}

// restoreGossipKey puts the suite's key back on every host whose plugin does
// not run with it, and waits until the hosts see each other again: the tests
// after this one share the cluster.
func restoreGossipKey(t *testing.T, hosts []string) {
	t.Helper()
	restored := func(h string) bool {
		env, _, err := docker(h, "plugin", "inspect", "-f", "{{.Enabled}} {{.Settings.Env}}", pluginName)
		return err == nil && strings.HasPrefix(env, "true ") && contains(strings.Fields(strings.Trim(env[5:], "[] \n")), "GOSSIP_KEY="+gossipKey)
	}
	parallel(hosts, func(h string) {
		if restored(h) {
			return
		}
		_, _, _ = docker(h, "plugin", "disable", "-f", pluginName)
		if _, stderr, err := docker(h, "plugin", "set", pluginName, "GOSSIP_KEY="+gossipKey); err != nil {
			t.Errorf("restoring GOSSIP_KEY on %s: %v: %s", h, err, stderr)
		}
		if _, stderr, err := docker(h, "plugin", "enable", "--timeout", "30", pluginName); err != nil {
			t.Errorf("enabling the plugin on %s: %v: %s", h, err, stderr)
		}
	})
	for _, h := range hosts {
		if !restored(h) {
			t.Errorf("%s: plugin not enabled with the suite's GOSSIP_KEY after the restore", h)
		}
		waitMembers(t, 60*time.Second, h, hosts)
	}
}

// keyNames names the keys of a GOSSIP_KEY list for the log ("old,new").
func keyNames(keys string) string {
	names := map[string]string{gossipKey: "old", rotatedGossipKey: "new"}
	var out []string
	for _, k := range strings.Split(keys, ",") {
		n, ok := names[k]
		if !ok {
			n = fmt.Sprintf("other(%.4s…)", k)
		}
		out = append(out, n)
	}
	return strings.Join(out, ",")
}
