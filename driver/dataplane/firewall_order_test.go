package dataplane

import (
	"slices"
	"strings"
	"testing"
)

// dockerForward makes FORWARD and Docker's chains look as dockerd 20.10 leaves
// them with docker0 and one user bridge.
func dockerForward(t *testing.T) {
	t.Helper()
	for _, c := range []string{"DOCKER", "DOCKER-USER", "DOCKER-ISOLATION-STAGE-1", "DOCKER-ISOLATION-STAGE-2"} {
		run(t, "iptables", "-N", c)
	}
	run(t, "iptables", "-P", "FORWARD", "DROP")
	for _, r := range [][]string{
		{"-j", "DOCKER-USER"},
		{"-j", "DOCKER-ISOLATION-STAGE-1"},
		{"-o", "docker0", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"},
		{"-o", "docker0", "-j", "DOCKER"},
		{"-i", "docker0", "!", "-o", "docker0", "-j", "ACCEPT"},
		{"-i", "docker0", "-o", "docker0", "-j", "ACCEPT"},
	} {
		run(t, "iptables", append([]string{"-A", "FORWARD"}, r...)...)
	}
	run(t, "iptables", "-A", "DOCKER-USER", "-j", "RETURN")
	run(t, "iptables", "-A", "DOCKER-ISOLATION-STAGE-1", "-i", "docker0", "!", "-o", "docker0", "-j", "DOCKER-ISOLATION-STAGE-2")
	run(t, "iptables", "-A", "DOCKER-ISOLATION-STAGE-1", "-j", "RETURN")
	run(t, "iptables", "-A", "DOCKER-ISOLATION-STAGE-2", "-o", "docker0", "-j", "DROP")
	run(t, "iptables", "-A", "DOCKER-ISOLATION-STAGE-2", "-j", "RETURN")
}

// dockerNetworkCreate does to FORWARD what dockerd 20.10 does when it creates
// bridge network br: the bridge's rules inserted at the top, then its two
// jumps deleted and inserted at the top again (libnetwork's ensureJumpRule).
func dockerNetworkCreate(t *testing.T, br string) {
	t.Helper()
	run(t, "iptables", "-I", "FORWARD", "-i", br, "-o", br, "-j", "ACCEPT")
	run(t, "iptables", "-I", "FORWARD", "-i", br, "!", "-o", br, "-j", "ACCEPT")
	run(t, "iptables", "-I", "FORWARD", "-o", br, "-j", "DOCKER")
	run(t, "iptables", "-I", "FORWARD", "-o", br, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT")
	for _, c := range []string{"DOCKER-ISOLATION-STAGE-1", "DOCKER-USER"} {
		run(t, "iptables", "-D", "FORWARD", "-j", c)
		run(t, "iptables", "-I", "FORWARD", "-j", c)
	}
}

// forwardTargets lists what each FORWARD rule jumps to, in order.
func forwardTargets(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, l := range ruleLines(saveTable(t, "filter"), "FORWARD") {
		out = append(out, ruleTarget(strings.TrimPrefix(l, "-A FORWARD ")))
	}
	return out
}

func TestForwardJumpStaysAfterDockers(t *testing.T) {
	_, k := newKernelNS(t)
	dockerForward(t)
	fw := testFirewall()
	want := []string{"DOCKER-USER", "DOCKER-ISOLATION-STAGE-1", chainForward, "ACCEPT", "DOCKER", "ACCEPT", "ACCEPT"}
	check := func(when string, want []string) {
		t.Helper()
		if got := forwardTargets(t); !slices.Equal(got, want) {
			t.Errorf("%s: FORWARD jumps to\n got %q\nwant %q", when, got, want)
		}
	}

	if err := k.SyncFirewall(fw); err != nil {
		t.Fatalf("SyncFirewall: %v", err)
	}
	check("first sync", want)
	writes := k.restores
	if err := k.SyncFirewall(fw); err != nil {
		t.Fatal(err)
	}
	if k.restores != writes {
		t.Errorf("a sync with everything in place ran iptables-restore %d times", k.restores-writes)
	}

	// dockerd creates a network: its new accepts land above grapevine's jump.
	dockerNetworkCreate(t, "br-0123456789ab")
	if got := forwardTargets(t); slices.Index(got, chainForward) < slices.Index(got, "ACCEPT") {
		t.Fatalf("the simulated network create did not push grapevine's jump down: %q", got)
	}
	if err := k.SyncFirewall(fw); err != nil {
		t.Fatal(err)
	}
	created := []string{"DOCKER-USER", "DOCKER-ISOLATION-STAGE-1", chainForward, "ACCEPT", "DOCKER", "ACCEPT", "ACCEPT"}
	created = append(created, want[3:]...)
	check("after docker network create", created)

	// Someone (an older grapevine) put grapevine's jump above DOCKER-USER,
	// and a second copy at the end.
	run(t, "iptables", "-I", "FORWARD", "1", "-m", "comment", "--comment", jumpComment, "-j", chainForward)
	run(t, "iptables", "-A", "FORWARD", "-m", "comment", "--comment", jumpComment, "-j", chainForward)
	if err := k.SyncFirewall(fw); err != nil {
		t.Fatal(err)
	}
	check("after jumps above DOCKER-USER and at the end", created)

	// dockerd restarts without the iptables jumps in place (flushed FORWARD):
	// grapevine's jump goes to the top, and after Docker's when they return.
	run(t, "iptables", "-F", "FORWARD")
	if err := k.SyncFirewall(fw); err != nil {
		t.Fatal(err)
	}
	check("FORWARD flushed", []string{chainForward})
	run(t, "iptables", "-I", "FORWARD", "-j", "DOCKER-ISOLATION-STAGE-1")
	run(t, "iptables", "-I", "FORWARD", "-j", "DOCKER-USER")
	check("docker's jumps back on top", []string{"DOCKER-USER", "DOCKER-ISOLATION-STAGE-1", chainForward})
	run(t, "iptables", "-D", "FORWARD", "-j", "DOCKER-ISOLATION-STAGE-1")
	run(t, "iptables", "-A", "FORWARD", "-j", "DOCKER-ISOLATION-STAGE-1")
	if err := k.SyncFirewall(fw); err != nil {
		t.Fatal(err)
	}
	check("isolation jump appended", []string{"DOCKER-USER", "DOCKER-ISOLATION-STAGE-1", chainForward})

	if err := k.RemoveFirewall(); err != nil {
		t.Fatal(err)
	}
	check("after RemoveFirewall", []string{"DOCKER-USER", "DOCKER-ISOLATION-STAGE-1"})
}

func TestPlaceAfterDocker(t *testing.T) {
	j := fwJumps[0]
	tests := []struct {
		name  string
		rules []string
		want  []string
	}{
		{"empty chain", nil, []string{"-I FORWARD 1 " + j.rule}},
		{"in place", []string{"-j DOCKER-USER", "-j DOCKER-ISOLATION-STAGE-1", j.rule, "-j ACCEPT"}, nil},
		{"alone, in place", []string{j.rule, "-i x -j ACCEPT"}, nil},
		{"above docker-user", []string{j.rule, "-j DOCKER-USER", "-j ACCEPT"},
			[]string{"-D FORWARD " + j.rule, "-I FORWARD 2 " + j.rule}},
		{"below an accept", []string{"-j DOCKER-USER", "-o br-x -j ACCEPT", j.rule},
			[]string{"-D FORWARD " + j.rule, "-I FORWARD 2 " + j.rule}},
		{"twice", []string{"-j DOCKER-USER", j.rule, j.rule},
			[]string{"-D FORWARD " + j.rule, "-D FORWARD " + j.rule, "-I FORWARD 2 " + j.rule}},
		{"foreign rule between docker's", []string{"-j DOCKER-USER", "-i lo -j ACCEPT", "-j DOCKER-ISOLATION-STAGE-1", j.rule}, nil},
	}
	for _, tc := range tests {
		if got := placeAfterDocker(j, tc.rules); !slices.Equal(got, tc.want) {
			t.Errorf("%s: placeAfterDocker = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// chainRules lists the rule text (after "-A CHAIN ") of one filter chain.
func chainRules(t *testing.T, chain string) []string {
	t.Helper()
	var out []string
	for _, l := range ruleLines(saveTable(t, "filter"), chain) {
		out = append(out, strings.TrimPrefix(l, "-A "+chain+" "))
	}
	return out
}

func TestIsolationFollowsDockersBridges(t *testing.T) {
	_, k := newKernelNS(t)
	dockerForward(t)
	fw := testFirewall()
	fw.Shims = []string{"gvh-macvlan"}
	if err := k.SyncFirewall(fw); err != nil {
		t.Fatal(err)
	}
	isoOut := func(names ...string) []string {
		out := []string{
			`-o gvb-a -m comment --comment "grapevine:aaaaaaaaaaaa" -j DROP`,
			`-o gvb-b -m comment --comment "grapevine:bbbbbbbbbbbb" -j DROP`,
		}
		for _, n := range names {
			out = append(out, "-o "+n+` -m comment --comment "grapevine:isolation" -j DROP`)
		}
		return out
	}
	isoIn := func(names ...string) []string {
		var out []string
		for _, n := range names {
			out = append(out, "-i "+n+` -m comment --comment "grapevine:isolation" -j DROP`)
		}
		return out
	}
	check := func(when string, names ...string) {
		t.Helper()
		if got, want := chainRules(t, chainIsolation), isoOut(names...); !slices.Equal(got, want) {
			t.Errorf("%s: %s\n got %q\nwant %q", when, chainIsolation, got, want)
		}
		if got, want := chainRules(t, chainIsolationIn), isoIn(names...); !slices.Equal(got, want) {
			t.Errorf("%s: %s\n got %q\nwant %q", when, chainIsolationIn, got, want)
		}
	}
	check("docker0 only", "docker0", "gvh-macvlan")

	// dockerd adds a user bridge and an --internal bridge with a custom name
	// (the rules it writes into its isolation chains), and a rule whose
	// interface name could not be a link name.
	run(t, "iptables", "-I", "DOCKER-ISOLATION-STAGE-1", "-i", "br-0123456789ab", "!", "-o", "br-0123456789ab", "-j", "DOCKER-ISOLATION-STAGE-2")
	run(t, "iptables", "-I", "DOCKER-ISOLATION-STAGE-2", "-o", "br-0123456789ab", "-j", "DROP")
	run(t, "iptables", "-I", "DOCKER-ISOLATION-STAGE-1", "-i", "secret", "!", "-d", "198.19.77.0/24", "-j", "DROP")
	run(t, "iptables", "-I", "DOCKER-ISOLATION-STAGE-1", "!", "-s", "198.19.77.0/24", "-o", "secret", "-j", "DROP")
	run(t, "iptables", "-I", "DOCKER-ISOLATION-STAGE-2", "-o", "x+", "-j", "DROP")
	if err := k.SyncFirewall(fw); err != nil {
		t.Fatal(err)
	}
	check("after docker network create", "br-0123456789ab", "docker0", "gvh-macvlan", "secret")

	// The networks go again: so do their isolation rules.
	run(t, "iptables", "-F", "DOCKER-ISOLATION-STAGE-1")
	run(t, "iptables", "-F", "DOCKER-ISOLATION-STAGE-2")
	fw.Shims = nil
	if err := k.SyncFirewall(fw); err != nil {
		t.Fatal(err)
	}
	check("docker's networks gone")

	// Without grapevine networks nothing is isolated.
	if err := k.SyncFirewall(Firewall{Shims: []string{"gvh-macvlan"}}); err != nil {
		t.Fatal(err)
	}
	if got := slices.Concat(chainRules(t, chainIsolation), chainRules(t, chainIsolationIn)); len(got) != 0 {
		t.Errorf("isolation rules without grapevine networks: %q", got)
	}
}
