//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestForgetDeadMajority, on three hosts of a run of its own (forgetting is
// for good, so the suite's hosts are left alone): h2 and h3 die for good.
// h1 alone cannot give a new network's containers addresses (1 of 3 known
// hosts) nor forget them before FORGET_AFTER; then `grapevine forget`
// removes them, and h1, the remaining minority of the original hosts, runs
// a container on the new network, and fills the old one, using the blocks
// of the forgotten hosts.
func TestForgetDeadMajority(t *testing.T) {
	singleHost(t)
	run := fmt.Sprintf("f%06x", os.Getpid()&0xffffff)
	upRun(t, run, 3, "PLUGIN_SETTINGS=GOSSIP_KEY="+gossipKey+" FORGET_AFTER=5s")
	h1 := vhost{run: run, host: "h1"}

	nodes := eventuallyNodes(t, run, 3)
	// A network divided among all three, while they are alive.
	h1.network(t, "fgold", "--subnet", "198.19.26.0/28")
	first := h1.container(t, "--network", "fgold", image, "sleep", "600") // the division: a third each
	t.Logf("fgold container 1: %s", h1.ip(t, first, "fgold"))
	for _, h := range []string{"h2", "h3"} {
		if out, err := runHarness(run, "kill", h); err != nil {
			t.Fatalf("harness kill %s: %v\n%s", h, err, out)
		}
	}
	forget := append([]string{"forget", "h1"}, nodes[1:]...)
	if out, err := runHarness(run, forget...); err == nil || !strings.Contains(out, "cannot forget") {
		t.Fatalf("forget right after the hosts died: %v\n%s; want a refusal", err, out)
	} else {
		t.Logf("refused at first, as it should: %s", strings.TrimSpace(out))
	}
	// Still known: a new network's first address needs 2 of 3 hosts.
	h1.network(t, "fgnew", "--subnet", "198.19.27.0/24")
	if out, stderr, err := h1.docker("run", "-d", "--network", "fgnew", image, "sleep", "600"); err == nil {
		_, _, _ = h1.docker("rm", "-f", strings.TrimSpace(out))
		t.Fatalf("h1 got an address alone while h2 and h3 were still known: %s", out)
	} else {
		t.Logf("no address while they are known, as it should: %s", strings.TrimSpace(stderr))
	}

	var said string
	eventually(t, 60*time.Second, "grapevine forget of the dead hosts to succeed", func() error {
		out, err := runHarness(run, forget...)
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		said = out
		return nil
	})
	t.Logf("grapevine forget: %s", strings.TrimSpace(said))
	out, err := runHarness(run, "status", "h1", "--json")
	var st hostStatus
	if err != nil || json.Unmarshal([]byte(out), &st) != nil || !slices.Equal(st.Forgotten, nodes[1:]) {
		t.Fatalf("h1's status lists forgotten %v, want %v (%v)\n%s", st.Forgotten, nodes[1:], err, out)
	}
	if !strings.Contains(said, "forgot "+strings.Join(nodes[1:], ", ")) || !strings.HasSuffix(strings.TrimSpace(said), "known hosts now: "+nodes[0]) ||
		strings.Contains(said, "took over 0 ") {
		t.Fatalf("forget said %q", said)
	}

	// The minority goes on: a container on the new network, and the old
	// network's addresses beyond h1's own third (taken over).
	id := h1.container(t, "--network", "fgnew", image, "sleep", "600")
	if ip, err := netip.ParseAddr(h1.ip(t, id, "fgnew")); err != nil || !netip.MustParsePrefix("198.19.27.0/24").Contains(ip) {
		t.Fatalf("container address on fgnew: %v %v", ip, err)
	}
	for i := range 12 { // the rest of a /28 less network, broadcast and gateway (13)
		id := h1.container(t, "--network", "fgold", image, "sleep", "600")
		t.Logf("fgold container %d: %s", i+2, h1.ip(t, id, "fgold"))
	}

	t.Run("a forgotten host that comes back is fenced", func(t *testing.T) { forgottenReturns(t, run) })
}

// forgottenReturns: h2, forgotten, comes back with its old state. Both
// doctors say so (h1 about h2, h2 about itself), h3 (forgotten, still
// dead) is skipped, and h2 gives its containers no address, saying why.
func forgottenReturns(t *testing.T, run string) {
	if out, err := runHarness(run, "revive", "h2"); err != nil {
		t.Fatalf("harness revive h2: %v\n%s", err, out)
	}
	eventually(t, 90*time.Second, "h1's doctor to fail h2 as forgotten and back", func() error {
		checks, raw, err := runDoctor(run, "h1")
		if err != nil {
			return err
		}
		if err := expectCheck(checks, "gossip", "h2", "fail", "alive at", "the cluster forgot it by agreement"); err != nil {
			return fmt.Errorf("%v\n%s", err, raw)
		}
		if err := expectCheck(checks, "gossip", "h3", "skip", "forgotten by agreement"); err != nil {
			return fmt.Errorf("%v\n%s", err, raw)
		}
		return nil
	})
	eventually(t, 60*time.Second, "h2's doctor to say that the cluster forgot it", func() error {
		checks, raw, err := runDoctor(run, "h2")
		if err != nil {
			return err
		}
		if err := expectCheck(checks, "identity", "", "fail", "the cluster forgot this host"); err != nil {
			return fmt.Errorf("%v\n%s", err, raw)
		}
		return nil
	})
	h2 := vhost{run: run, host: "h2"}
	h2.network(t, "fgold", "--subnet", "198.19.26.0/28")
	out, stderr, err := h2.docker("run", "-d", "--network", "fgold", image, "sleep", "600")
	if err == nil {
		t.Fatalf("h2, forgotten, gave a container an address: %s", out)
	}
	if !strings.Contains(stderr, "the cluster forgot this host") || !strings.Contains(stderr, "move its state directory aside") {
		t.Fatalf("h2's refusal does not say why and what to do: %s", stderr)
	}
	t.Logf("h2 refuses, as it should: %s", strings.TrimSpace(stderr))
}

// runDoctor runs `grapevine doctor --json` on host of run.
func runDoctor(run, host string) ([]doctorCheck, string, error) {
	out, stderr, _ := runCmd(cmdTimeout, s.harness, "doctor", run, host, "--json")
	var r struct {
		Checks []doctorCheck `json:"checks"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return nil, out, fmt.Errorf("grapevine doctor on %s of run %s: %v: %s%s", host, run, err, out, stderr)
	}
	return r.Checks, out, nil
}

// runHarness runs scripts/harness.sh CMD RUN args… for a run of the test's own.
func runHarness(run string, cmd ...string) (string, error) {
	out, stderr, err := runCmd(cmdTimeout, s.harness, append([]string{cmd[0], run}, cmd[1:]...)...)
	return out + stderr, err
}

// eventuallyNodes waits until h1 of run sees n members alive and returns
// their node names, h1's first, then sorted.
func eventuallyNodes(t *testing.T, run string, n int) []string {
	t.Helper()
	var nodes []string
	eventually(t, 60*time.Second, fmt.Sprintf("h1 of run %s to see %d members alive", run, n), func() error {
		out, err := runHarness(run, "status", "h1", "--json")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		var st hostStatus
		if err := json.Unmarshal([]byte(out), &st); err != nil || st.Error != "" {
			return fmt.Errorf("status of h1: %v %s", err, st.Error)
		}
		nodes = []string{st.Node}
		for _, m := range st.Members {
			if m.alive() && !m.Self {
				nodes = append(nodes, m.Name)
			}
		}
		if len(nodes) != n {
			return fmt.Errorf("alive: %v", nodes)
		}
		return nil
	})
	sort.Strings(nodes[1:])
	return nodes
}
