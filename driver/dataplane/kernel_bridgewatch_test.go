package dataplane

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// fastWatch is the watch's timing in tests.
var fastWatch = bridgeWatch{settle: 100 * time.Millisecond, retry: 200 * time.Millisecond, giveUp: 4 * time.Second}

// lastSync waits until syncs has not changed for quiet (at most limit) and
// returns when it last changed.
func lastSync(t *testing.T, syncs *atomic.Int64, quiet, limit time.Duration) time.Time {
	t.Helper()
	n, changed := syncs.Load(), time.Now()
	for deadline := changed.Add(limit); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if m := syncs.Load(); m != n {
			n, changed = m, time.Now()
		}
		if time.Since(changed) >= quiet {
			return changed
		}
	}
	t.Fatalf("the watch still syncs (%d so far) after %v", n, limit)
	return time.Time{}
}

// startWatch runs the watch on k with a sync that rewrites fw and counts;
// the watch is stopped (and must end) in t.Cleanup.
func startWatch(t *testing.T, k *Kernel, fw Firewall) *atomic.Int64 {
	t.Helper()
	var syncs atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	done, err := k.watchBridges(ctx, fastWatch, func() {
		if err := k.SyncFirewall(fw); err != nil {
			t.Errorf("sync after a new bridge: %v", err)
		}
		syncs.Add(1)
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Errorf("the watch did not end within 5 s of its context")
		}
	})
	return &syncs
}

// addLink makes a link of the given kind ("bridge" or "veth", with its
// peer NAME-p) in the test's namespace.
func (tn *testNS) addLink(kind, name string) {
	tn.t.Helper()
	attrs := netlink.LinkAttrs{Name: name}
	var l netlink.Link = &netlink.Bridge{LinkAttrs: attrs}
	if kind == "veth" {
		l = &netlink.Veth{LinkAttrs: attrs, PeerName: name + "-p"}
	}
	if err := tn.nl.LinkAdd(l); err != nil {
		tn.t.Fatalf("add %s %s: %v", kind, name, err)
	}
}

// dockerIsolates writes what dockerd writes to its isolation chains for br.
func dockerIsolates(t *testing.T, br string) {
	t.Helper()
	run(t, "iptables", "-I", "DOCKER-ISOLATION-STAGE-1", "-i", br, "!", "-o", br, "-j", "DOCKER-ISOLATION-STAGE-2")
	run(t, "iptables", "-I", "DOCKER-ISOLATION-STAGE-2", "-o", br, "-j", "DROP")
}

// isolatedFrom reports whether grapevine's isolation chains drop br both ways.
func isolatedFrom(t *testing.T, br string) bool {
	t.Helper()
	out := `-o ` + br + ` -m comment --comment "grapevine:isolation" -j DROP`
	in := `-i ` + br + ` -m comment --comment "grapevine:isolation" -j DROP`
	return slices.Contains(chainRules(t, chainIsolation), out) && slices.Contains(chainRules(t, chainIsolationIn), in)
}

// waitIsolated polls for up to limit until grapevine isolates br.
func waitIsolated(t *testing.T, br string, limit time.Duration) error {
	t.Helper()
	for deadline := time.Now().Add(limit); ; time.Sleep(50 * time.Millisecond) {
		if isolatedFrom(t, br) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no isolation rules for %s after %v:\n%s", br, limit, ruleLines(saveTable(t, "filter"), chainIsolation, chainIsolationIn))
		}
	}
}

// TestWatchBridgesIsolatesNewDockerNetwork: dockerd makes a bridge and only
// then writes its isolation rules; grapevine's isolation follows within
// about a second, without any reconcile, and its FORWARD jump is back after
// Docker's.
func TestWatchBridgesIsolatesNewDockerNetwork(t *testing.T) {
	tn, k := newKernelNS(t)
	dockerForward(t)
	fw := testFirewall()
	if err := k.SyncFirewall(fw); err != nil {
		t.Fatal(err)
	}
	syncs := startWatch(t, k, fw)

	const br = "br-0123456789ab"
	start := time.Now()
	tn.addLink("bridge", br)
	// later than the first sync (settle): only the retry can see them
	time.Sleep(3 * fastWatch.settle)
	dockerIsolates(t, br)
	dockerNetworkCreate(t, br)
	if err := waitIsolated(t, br, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("isolated from %s %v after it appeared (%d syncs)", br, time.Since(start).Round(time.Millisecond), syncs.Load())
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		got := forwardTargets(t)
		if len(got) >= 3 && got[2] == chainForward {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("FORWARD 3 s after the bridge was isolated: %q, want GRAPEVINE-FORWARD third, after Docker's two jumps", got)
		}
	}
	// Docker's rules are there: the watch stops syncing for this bridge
	// (one more sync), long before it would give up on it.
	if last := lastSync(t, syncs, 3*fastWatch.retry, 2*fastWatch.giveUp); last.Sub(start) >= fastWatch.giveUp {
		t.Errorf("syncs went on until %v after the bridge appeared (%d), as for a bridge Docker never isolates", last.Sub(start).Round(time.Millisecond), syncs.Load())
	}
}

// TestWatchBridgesIgnoresOtherLinks: links that are not new foreign bridges
// (grapevine's own bridges, other link kinds, a bridge that existed before
// the watch and changes state) never cause a sync.
func TestWatchBridgesIgnoresOtherLinks(t *testing.T) {
	tn, k := newKernelNS(t)
	dockerForward(t)
	tn.addLink("bridge", "br-before")
	syncs := startWatch(t, k, testFirewall())

	tn.addLink("bridge", "gvb-ours")
	tn.addLink("veth", "veth0")
	before := tn.link("br-before")
	for range 3 {
		if err := tn.nl.LinkSetUp(before); err != nil {
			t.Fatal(err)
		}
		if err := tn.nl.LinkSetDown(before); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(4 * fastWatch.settle)
	if n := syncs.Load(); n != 0 {
		t.Errorf("%d syncs for links that are not new foreign bridges", n)
	}
}

// TestWatchBridgesBoundsAFlood: anyone able to make links can make many
// bridges that Docker never writes rules for; that costs a bounded number of
// syncs (one per retry period until giveUp), not one per bridge, and the
// syncs stop afterwards.
func TestWatchBridgesBoundsAFlood(t *testing.T) {
	tn, k := newKernelNS(t)
	dockerForward(t)
	syncs := startWatch(t, k, testFirewall())

	const bridges = 40
	for i := range bridges {
		tn.addLink("bridge", fmt.Sprintf("flood%d", i))
	}
	// the syncs stop after giveUp (lastSync fails otherwise)
	time.Sleep(fastWatch.giveUp)
	lastSync(t, syncs, 3*fastWatch.retry, 2*time.Second)
	n := syncs.Load()
	limit := int64(fastWatch.giveUp/fastWatch.retry) + 3
	if n == 0 || n > limit {
		t.Errorf("%d syncs for %d new bridges, want 1..%d", n, bridges, limit)
	}
	// a bridge Docker isolates later is still followed
	tn.addLink("bridge", "br-late")
	dockerIsolates(t, "br-late")
	if err := waitIsolated(t, "br-late", 3*time.Second); err != nil {
		t.Fatal(err)
	}
}
