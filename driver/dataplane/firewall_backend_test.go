package dataplane

import (
	"strings"
	"testing"
)

func TestChooseBackend(t *testing.T) {
	const nft, legacy = 0, 1
	tests := []struct {
		name      string
		n, l      shape
		wantIndex int
	}{
		{"both empty", shape{}, shape{}, nft},
		{"docker on legacy", shape{rules: 40}, shape{rules: 12, docker: true}, legacy},
		{"docker on nft", shape{rules: 12, docker: true}, shape{rules: 40}, nft},
		{"more rules on legacy", shape{rules: 3}, shape{rules: 9}, legacy},
		{"a tie", shape{rules: 5}, shape{rules: 5}, nft},
		{"legacy unusable", shape{rules: 1}, shape{rules: 50, docker: true, err: errString("no ip_tables")}, nft},
		{"nft unusable", shape{err: errString("no nf_tables")}, shape{}, legacy},
	}
	for _, tc := range tests {
		if got := chooseBackend(tc.n, tc.l); got != tc.wantIndex {
			t.Errorf("%s: chooseBackend = %d, want %d", tc.name, got, tc.wantIndex)
		}
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// dockerChainsWith makes the start of Docker's filter chains with the
// given iptables binary.
func dockerChainsWith(t *testing.T, ipt string) {
	t.Helper()
	run(t, ipt, "-N", "DOCKER-USER")
	run(t, ipt, "-N", "DOCKER")
	run(t, ipt, "-A", "FORWARD", "-j", "DOCKER-USER")
}

// TestBackendOfDocker: on each backend in turn, grapevine writes where
// Docker's chains are and leaves the other backend alone, whether Docker's
// rules were there before grapevine started or appeared later.
func TestBackendOfDocker(t *testing.T) {
	for _, mode := range []string{backendNFT, backendLegacy} {
		other := map[string]string{backendNFT: backendLegacy, backendLegacy: backendNFT}[mode]
		t.Run(mode+" before start", func(t *testing.T) {
			enterNewNS(t)
			// the other backend has more rules, but not Docker's
			for i := range 5 {
				run(t, "iptables-"+other, "-A", "INPUT", "-s", "198.18.9."+string(rune('1'+i)), "-j", "ACCEPT")
			}
			dockerChainsWith(t, "iptables-"+mode)
			k, err := NewKernel(testLog(t))
			if err != nil {
				t.Fatal(err)
			}
			defer k.Close()
			if k.xt.mode != mode {
				t.Fatalf("backend %s, want %s (Docker's)", k.xt.mode, mode)
			}
			checkBackend(t, k, mode, other)
		})
		t.Run(mode+" after start", func(t *testing.T) {
			enterNewNS(t)
			k, err := NewKernel(testLog(t))
			if err != nil {
				t.Fatal(err)
			}
			defer k.Close()
			if err := k.SyncFirewall(testFirewall()); err != nil {
				t.Fatal(err)
			}
			dockerChainsWith(t, "iptables-"+mode)
			checkBackend(t, k, mode, other)
		})
	}
}

// checkBackend syncs and checks that grapevine's rules are in mode's tables
// only, after Docker's jump, and that RemoveFirewall clears them.
func checkBackend(t *testing.T, k *Kernel, mode, other string) {
	t.Helper()
	if err := k.SyncFirewall(testFirewall()); err != nil {
		t.Fatalf("SyncFirewall: %v", err)
	}
	in := run(t, "iptables-"+mode+"-save")
	if !strings.Contains(in, "-A FORWARD -j DOCKER-USER\n-A FORWARD -m comment --comment grapevine -j GRAPEVINE-FORWARD") {
		t.Errorf("iptables-%s-save has no grapevine jump after DOCKER-USER:\n%s", mode, in)
	}
	if out := run(t, "iptables-"+other+"-save"); strings.Contains(out, "GRAPEVINE") {
		t.Errorf("grapevine wrote to iptables-%s, where Docker's rules are not:\n%s", other, out)
	}
	if err := k.RemoveFirewall(); err != nil {
		t.Fatal(err)
	}
	if in := run(t, "iptables-"+mode+"-save"); strings.Contains(in, "GRAPEVINE") {
		t.Errorf("iptables-%s after RemoveFirewall:\n%s", mode, in)
	}
}
