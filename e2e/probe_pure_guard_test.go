package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"grapevine/driver"
	"grapevine/plugin"
)

// TestPollReachGuards checks fullMesh's polling without containers: a round
// whose exec fails, or a list with nothing in it, never counts as reached.
func TestPollReachGuards(t *testing.T) {
	// answers behaves like the old pingAll: an empty list "succeeds".
	type call struct{ targets []string }
	fake := func(calls *[]call, results ...func([]string) ([]string, error)) reachRound {
		return func(ts []string) ([]string, error) {
			*calls = append(*calls, call{append([]string(nil), ts...)})
			if len(ts) == 0 {
				return nil, nil
			}
			r := results[min(len(*calls), len(results))-1]
			return r(ts)
		}
	}
	execFails := func([]string) ([]string, error) { return nil, errors.New("docker exec: container not running") }
	noneAnswer := func(ts []string) ([]string, error) { return ts, nil }
	allAnswer := func([]string) ([]string, error) { return nil, nil }

	t.Run("no targets", func(t *testing.T) {
		var calls []call
		if err := pollReach(time.Second, nil, fake(&calls, allAnswer)); err == nil || len(calls) != 0 {
			t.Errorf("pollReach of nothing: %v after %d rounds, want an error before any round", err, len(calls))
		}
	})
	t.Run("exec fails once, then nothing answers", func(t *testing.T) {
		var calls []call
		err := pollReach(600*time.Millisecond, []string{"198.19.20.2", "198.19.20.3"}, fake(&calls, execFails, noneAnswer))
		if err == nil {
			t.Fatalf("reachable after a failed exec although nothing ever answered (rounds %v)", calls)
		}
		for _, c := range calls {
			if len(c.targets) != 2 {
				t.Errorf("a round pinged %v, want both targets every round", c.targets)
			}
		}
		if !strings.Contains(err.Error(), "198.19.20.2 198.19.20.3") {
			t.Errorf("error %q does not name the unreached targets", err)
		}
	})
	t.Run("exec fails until the deadline", func(t *testing.T) {
		var calls []call
		err := pollReach(500*time.Millisecond, []string{"198.19.20.2"}, fake(&calls, execFails))
		if err == nil || !strings.Contains(err.Error(), "container not running") {
			t.Errorf("pollReach with only failing rounds: %v, want the exec error", err)
		}
	})
	t.Run("progress narrows the list", func(t *testing.T) {
		var calls []call
		second := func([]string) ([]string, error) { return []string{"198.19.20.3"}, nil }
		err := pollReach(5*time.Second, []string{"198.19.20.2", "198.19.20.3"}, fake(&calls, second, allAnswer))
		if err != nil || len(calls) != 2 || fmt.Sprint(calls[1].targets) != "[198.19.20.3]" {
			t.Errorf("pollReach: %v, rounds %v; want success after re-pinging only 198.19.20.3", err, calls)
		}
	})
}

// TestPingVerdict checks the classification of a negative ping with real
// exit statuses (sh stands in for docker exec + busybox ping).
func TestPingVerdict(t *testing.T) {
	sh := func(stdout, stderr string, code int) prober {
		return func(...string) (string, string, error) {
			cmd := exec.Command("sh", "-c", fmt.Sprintf("printf '%%s' '%s'; printf '%%s' '%s' >&2; exit %d", stdout, stderr, code))
			var out, errOut strings.Builder
			cmd.Stdout, cmd.Stderr = &out, &errOut
			err := cmd.Run()
			return out.String(), errOut.String(), err
		}
	}
	noReply := "PING 198.19.14.2 (198.19.14.2): 56 data bytes\n\n--- 198.19.14.2 ping statistics ---\n2 packets transmitted, 0 packets received, 100% packet loss\n"
	for _, tc := range []struct {
		name      string
		run       prober
		noRouteOK bool
		ok        bool
	}{
		{"no reply", sh(noReply, "", 1), false, true},
		{"reply", sh("2 packets transmitted, 2 packets received, 0% packet loss\n", "", 0), false, false},
		{"docker exec refused (exit 1)", sh("", "Error response from daemon: Container abc is not running", 1), false, false},
		{"exec failure (exit 126)", sh("", "OCI runtime exec failed", 126), false, false},
		{"no reply statistics with another status", sh(noReply, "", 2), false, false},
		{"no route, not accepted", sh("PING 198.18.0.200 (198.18.0.200): 56 data bytes\n", noRouteMsg, 1), false, false},
		{"no route, accepted", sh("PING 198.18.0.200 (198.18.0.200): 56 data bytes\n", noRouteMsg, 1), true, true},
	} {
		err := pingVerdict(tc.run, "198.19.14.2", tc.noRouteOK)
		if (err == nil) != tc.ok {
			t.Errorf("%s: pingVerdict = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// TestParseStatusTable reads the text status the plugin prints (the real
// PrintStatus) the way checkStatusText does.
func TestParseStatusTable(t *testing.T) {
	st := plugin.Status{
		Schema: plugin.StatusSchema, Host: "h1", Node: "h1-abc123", Joined: true,
		Members: []plugin.MemberStatus{
			{Name: "h1-abc123", Addr: "198.18.0.11:7947", VTEP: "198.18.0.11", State: "alive", Self: true},
			{Name: "h2-def456", Addr: "198.18.0.12:7947", VTEP: "198.18.0.12", State: "alive"},
			{Name: "h3-aaa", Addr: "198.18.0.13:7947", VTEP: "198.18.0.13", State: "dead"},
		},
		Networks: []driver.NetworkStatus{
			{ID: "0123456789abcdef", Mode: "vxlan", Subnet: "198.19.20.0/24", Gateway: "198.19.20.1", VNI: 9000001, MTU: 1450,
				Endpoints: 1, RemoteEndpoints: 3, RemoteUnreachable: 1, RemoteHosts: map[string]int{"h2-def456": 1, "h3-aaa": 2}},
		},
	}
	raw, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := plugin.PrintStatus(&out, raw); err != nil {
		t.Fatal(err)
	}
	peers, err := parseStatusTable(out.String(), "PEERS")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range peers.rows {
		got = append(got, peers.cell(r, "NODE")+"="+peers.cell(r, "STATE"))
	}
	if want := "h1-abc123 (this host)=alive h2-def456=alive h3-aaa=dead"; strings.Join(got, " ") != want {
		t.Errorf("PEERS %q, want %q\n%s", strings.Join(got, " "), want, out.String())
	}
	nets, err := parseStatusTable(out.String(), "NETWORKS")
	if err != nil || len(nets.rows) != 1 {
		t.Fatalf("NETWORKS %+v, %v\n%s", nets, err, out.String())
	}
	r := nets.rows[0]
	for col, want := range map[string]string{"SUBNET": "198.19.20.0/24", "LOCAL": "1", "REMOTE": "3 (1 unreachable)", "REMOTE BY HOST": "h2-def456=1 h3-aaa=2"} {
		if got := nets.cell(r, col); got != want {
			t.Errorf("NETWORKS %s = %q, want %q\n%s", col, got, want, out.String())
		}
	}
	if _, err := parseStatusTable(out.String(), "NOPE"); err == nil {
		t.Error("a missing table was found")
	}
}
