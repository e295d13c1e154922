//go:build e2e

package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRogueMember runs a rogue member, built from grapevine's own gossip
// package and holding the cluster's GOSSIP_KEY, on the LAN machine. It
// forges an endpoint record for the network's gateway address, one with MAC
// 00:00:00:00:00:00, and a block record giving itself another host's block.
// Every host refuses all three where it uses them and counts the refusals in
// `grapevine status`; no host's FDB or neighbour entries, pools or blocks
// change, and new containers still get distinct addresses and ping each other.
func TestRogueMember(t *testing.T) {
	needHosts(t, 3)
	hosts := clusterHosts()
	for _, h := range hosts {
		checkClean(t, h)
	}
	const (
		nw     = "rogue"
		subnet = "198.19.37.0/24"
		zeroIP = "198.19.37.250"
	)
	rogueBin := buildRogue(t)
	for _, h := range hosts {
		waitMembers(t, 30*time.Second, h, hosts)
	}
	netIDs := map[string]string{}
	for _, h := range hosts {
		netIDs[h] = createNetwork(t, h, nw, "--subnet", subnet)
	}
	var cs []ctr
	for _, h := range hosts {
		cs = append(cs, startCtr(t, h, nw, nw+"-"+h))
	}
	fullMesh(t, 20*time.Second, cs)
	gateway := networkGateway(t, hosts[0], netIDs[hosts[0]])
	before := map[string]hostView{}
	for _, h := range hosts {
		before[h] = viewOf(t, h, netIDs[h], subnet, cs)
	}

	victim := hosts[1]
	startRogue(t, rogueBin, "-addr", lanAddr, "-peers", strings.Join(hostAddrs(hosts), ","),
		"-key", gossipKey, "-subnet", subnet, "-gateway", gateway, "-zero-ip", zeroIP, "-victim", victim)

	// the gateway and block refusals show the rogue's records arrived
	waitRefused(t, hosts, before, 30*time.Second, "reserved_address", "block_not_owner")
	// the peer worker programs within a second: give it time to err
	time.Sleep(3 * time.Second)
	for _, h := range hosts {
		after := viewOf(t, h, netIDs[h], subnet, cs)
		checkUnchanged(t, h, before[h], after, gateway)
	}
	waitRefused(t, hosts, before, 10*time.Second, "mac_not_unicast")

	var more []ctr
	for _, h := range hosts {
		more = append(more, startCtr(t, h, nw, nw+"-more-"+h))
	}
	all := append(append([]ctr(nil), cs...), more...)
	distinct(t, all)
	for _, c := range all {
		if c.ip == gateway || c.ip == zeroIP {
			t.Errorf("%s got an address the rogue announced", c)
		}
	}
	fullMesh(t, 20*time.Second, all)
	for _, h := range hosts {
		after := viewOf(t, h, netIDs[h], subnet, nil)
		if !reflect.DeepEqual(before[h].blocks, after.blocks) {
			t.Errorf("%s: blocks changed after new allocations:\nbefore %v\nafter  %v", h, before[h].blocks, after.blocks)
		}
		if lines := fdbTowards(after.fdb, lanAddr); len(lines) > 0 {
			t.Errorf("%s: FDB entries towards the rogue %s: %v", h, lanAddr, lines)
		}
	}
}

// waitRefused waits until every host counts more refusals of each cause than
// before.
func waitRefused(t *testing.T, hosts []string, before map[string]hostView, timeout time.Duration, causes ...string) {
	t.Helper()
	for _, h := range hosts {
		eventually(t, timeout, h+" counts refusals "+strings.Join(causes, ", "), func() error {
			st, raw, err := trustStatusOf(h)
			if err != nil {
				return err
			}
			var missing []string
			for _, cause := range causes {
				if st.Refused[cause] <= before[h].refused[cause] {
					missing = append(missing, cause)
				}
			}
			if len(missing) > 0 {
				return fmt.Errorf("refusals not counted: %v\n%s", missing, raw)
			}
			return nil
		})
	}
}

// hostView is what a rogue member must not change on a host.
type hostView struct {
	fdb, neigh []string          // the network's VXLAN device
	owned      []string          // the pool's blocks this host owns
	blocks     []string          // every block of the pool: "first-last owner"
	refused    map[string]uint64 // refusal counts by cause
}

// viewOf reads host's kernel and IPAM state of the network; with cs, it
// first waits until every remote container of cs is programmed.
func viewOf(t *testing.T, host, netID, subnet string, cs []ctr) hostView {
	t.Helper()
	dev := vxlanDev(t, host, netID)
	var remote []ctr
	for _, c := range cs {
		if c.host != host {
			remote = append(remote, c)
		}
	}
	var v hostView
	eventually(t, 20*time.Second, host+" programmed and its pool divided", func() error {
		if missing, err := unprogrammed(host, dev, remote); err != nil || len(missing) > 0 {
			return fmt.Errorf("unprogrammed %v: %v", missing, err)
		}
		st, raw, err := trustStatusOf(host)
		if err != nil {
			return err
		}
		v = hostView{refused: st.Refused}
		for _, p := range st.Pools {
			if p.Pool != subnet {
				continue
			}
			v.owned = p.Owned
			for _, b := range p.Blocks {
				v.blocks = append(v.blocks, b.First+"-"+b.Last+" "+b.Owner)
			}
		}
		if len(v.blocks) == 0 || len(v.owned) == 0 {
			return fmt.Errorf("no blocks of %s yet:\n%s", subnet, raw)
		}
		sort.Strings(v.blocks)
		if v.fdb, err = fdbEntries(host, dev); err != nil {
			return err
		}
		v.neigh, err = neighEntries(host, dev)
		return err
	})
	return v
}

// checkUnchanged compares host's state before and after the rogue's records.
func checkUnchanged(t *testing.T, host string, before, after hostView, gateway string) {
	t.Helper()
	for _, c := range []struct {
		what          string
		before, after []string
	}{
		{"FDB entries", before.fdb, after.fdb},
		{"neighbour entries", before.neigh, after.neigh},
		{"owned blocks", before.owned, after.owned},
		{"blocks", before.blocks, after.blocks},
	} {
		b, a := sorted(c.before), sorted(c.after)
		if !reflect.DeepEqual(b, a) {
			t.Errorf("%s: %s changed with the rogue member:\nbefore %v\nafter  %v", host, c.what, b, a)
		}
	}
	if lines := fdbTowards(after.fdb, lanAddr); len(lines) > 0 {
		t.Errorf("%s: FDB entries towards the rogue %s: %v", host, lanAddr, lines)
	}
	if hasNeigh(after.neigh, gateway, "") {
		t.Errorf("%s: a neighbour entry for the gateway %s: %v", host, gateway, after.neigh)
	}
	for _, b := range after.blocks {
		if strings.HasSuffix(b, " rogue-1") {
			t.Errorf("%s: the rogue owns block %s", host, b)
		}
	}
}

func sorted(s []string) []string {
	out := append([]string{}, s...)
	sort.Strings(out)
	return out
}

func hostAddrs(hosts []string) []string {
	var out []string
	for _, h := range hosts {
		out = append(out, hostAddr(h))
	}
	return out
}

// networkGateway is the gateway address host's plugin shows for the network.
func networkGateway(t *testing.T, host, netID string) string {
	t.Helper()
	st, raw, err := statusOf(host)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range st.Networks {
		if strings.HasPrefix(netID, n.ID) || strings.HasPrefix(n.ID, netID) {
			gw, _, _ := strings.Cut(n.Gateway, "/")
			if gw == "" {
				t.Fatalf("network %.12s on %s has no gateway in status:\n%s", netID, host, raw)
			}
			return gw
		}
	}
	t.Fatalf("network %.12s not in the status of %s:\n%s", netID, host, raw)
	return ""
}

// buildRogue builds e2e/internal/rogue into the test's temporary directory.
func buildRogue(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "rogue")
	out, stderr, err := runCmd(cmdTimeout, "go", "build", "-C", s.repo, "-o", bin, "./e2e/internal/rogue")
	if err != nil {
		t.Fatalf("building the rogue member: %v\n%s%s", err, out, stderr)
	}
	return bin
}

// startRogue runs the rogue member on the LAN machine until it has written its
// records ("ready"); t.Cleanup stops it (SIGTERM: it withdraws its endpoint
// records and leaves) and waits for it.
func startRogue(t *testing.T, bin string, args ...string) {
	t.Helper()
	cmd := exec.Command("nsenter", append([]string{"--net=" + netnsPath("lan"), "--", bin}, args...)...)
	errPath := filepath.Join(t.TempDir(), "rogue.stderr")
	errFile, err := os.Create(errPath)
	if err != nil {
		t.Fatal(err)
	}
	defer errFile.Close()
	cmd.Stderr = errFile
	stderr := func() string { b, _ := os.ReadFile(errPath); return string(b) }
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the rogue member: %v", err)
	}
	done := make(chan error, 1)
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	timeout := time.After(45 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("the rogue member exited before forging its records: %s", stderr())
			}
			t.Logf("rogue: %s", l)
			if l == "ready" {
				go func() {
					for range lines {
					}
				}()
				return
			}
		case <-timeout:
			t.Fatalf("the rogue member forged nothing within 45s: %s", stderr())
		}
	}
}

// trustStatus is the part of `grapevine status --json` this test reads.
type trustStatus struct {
	Refused map[string]uint64 `json:"refused"`
	Pools   []struct {
		Pool   string   `json:"pool"`
		Owned  []string `json:"owned"`
		Blocks []struct {
			First string `json:"first"`
			Last  string `json:"last"`
			Owner string `json:"owner"`
		} `json:"blocks"`
	} `json:"pools"`
}

func trustStatusOf(host string) (trustStatus, string, error) {
	out, stderr, err := harnessCmd("status", host, "--json")
	if err != nil {
		return trustStatus{}, out, fmt.Errorf("grapevine status on %s: %v: %s", host, err, stderr)
	}
	var st trustStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return trustStatus{}, out, fmt.Errorf("decoding the status of %s: %v: %s", host, err, out)
	}
	return st, out, nil
}
