//go:build e2e

package e2e

import (
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// tapChain is the raw-table chain the plugin puts in a tapped container's
// namespace.
const tapChain = "GRAPEVINE-TAP"

// tappedRe finds a non-zero count of tapped containers in `grapevine status`.
var tappedRe = regexp.MustCompile(`; [1-9][0-9]* containers tapped\)`)

// tapJumps counts the jumps to the tap's chain in the raw table's OUTPUT
// chain of process pid's namespace, under either iptables backend.
func tapJumps(pid int) (int, error) {
	n, read := 0, 0
	for _, bin := range []string{"iptables-nft", "iptables-legacy"} {
		out, err := exec.Command("nsenter", "-t", strconv.Itoa(pid), "-n", bin, "-w", "-t", "raw", "-S", "OUTPUT").CombinedOutput()
		if err != nil {
			continue
		}
		read++
		n += strings.Count(string(out), "-j "+tapChain)
	}
	if read == 0 {
		return 0, fmt.Errorf("no iptables backend could read the raw table of process %d", pid)
	}
	return n, nil
}

// wantTapJumps waits until pid's namespace has n jumps to the tap's chain.
func wantTapJumps(t *testing.T, what string, pid, n int) {
	t.Helper()
	eventually(t, 15*time.Second, what, func() error {
		got, err := tapJumps(pid)
		if err != nil {
			return err
		}
		if got != n {
			return fmt.Errorf("%d jumps to %s in the namespace of process %d, want %d", got, tapChain, pid, n)
		}
		return nil
	})
}

// untap deletes the jump to the tap's chain in pid's namespace, as a
// container with NET_ADMIN could.
func untap(t *testing.T, pid int) {
	t.Helper()
	for _, bin := range []string{"iptables-nft", "iptables-legacy"} {
		_ = exec.Command("nsenter", "-t", strconv.Itoa(pid), "-n", bin, "-w", "-t", "raw", "-D", "OUTPUT", "-j", tapChain).Run()
	}
	if n, err := tapJumps(pid); err != nil || n != 0 {
		t.Fatalf("the tap's jump is still in the namespace of %d (%d, %v)", pid, n, err)
	}
}

// flushRedirect empties the host's names redirect, the other way a
// grapevine name is answered: what answers then is the tap alone. The
// plugin writes it back at its next renewal.
func flushRedirect(t *testing.T, host string) {
	t.Helper()
	mustInHost(t, host, "iptables", "-w", "-t", "nat", "-F", "GRAPEVINE-NAMES")
}

// TestNamesTap: a container's queries to Docker's resolver are offered to
// grapevine first, in the container's namespace: a cross-host name is
// answered there (without the host's redirect; a container whose tap is
// removed then gets the upstream's NXDOMAIN), a same-host name still by
// Docker, also while the plugin is dead (the tap fails open); names work on
// a macvlan network too; the tap goes with the container's last grapevine
// network while it runs on.
func TestNamesTap(t *testing.T) {
	needHosts(t, 2)
	all := clusterHosts()
	hosts := all[:2]
	for _, h := range all {
		checkClean(t, h)
		waitMembers(t, 30*time.Second, h, all)
	}
	serveUpstream(t)
	for _, h := range hosts {
		createNetwork(t, h, "nt", "--subnet", "198.19.64.0/24")
		createNetwork(t, h, "nt2", "--subnet", "198.19.65.0/24")
	}
	db := startCtr(t, "h1", "nt", "tdb")
	cli := startCtr(t, "h2", "nt", "tcli")
	pid := containerPID(t, "h2", cli.id)
	wantTapJumps(t, "cli tapped", pid, 1)
	eventually(t, 15*time.Second, "tdb answers on h2", func() error { return wantA(pid, "tdb.", db.ip) })
	if out, stderr, err := harnessCmd("status", "h2"); err != nil || !tappedRe.MatchString(out) {
		t.Errorf("grapevine status on h2 does not count a tapped container (%v: %s):\n%s", err, stderr, out)
	}
	if checks, raw, _, err := doctorOf("h2"); err != nil {
		t.Error(err)
	} else if err := expectCheck(checks, "names", "", "pass", "container(s) tapped"); err != nil {
		t.Errorf("grapevine doctor on h2: %v\n%s", err, raw)
	}

	t.Run("answered in the container, not by the host's redirect", func(t *testing.T) {
		ctl := startCtr(t, "h2", "nt", "tctl")
		cpid := containerPID(t, "h2", ctl.id)
		wantTapJumps(t, "control tapped", cpid, 1)
		untap(t, cpid)
		flushRedirect(t, "h2")
		if err := wantA(pid, "tdb.", db.ip); err != nil {
			t.Errorf("tapped container, redirect flushed: %v", err)
		}
		if m, err := dnsIn(pid, "udp", "tdb.", dns.TypeAAAA); err != nil || m.Rcode != dns.RcodeSuccess || len(m.Answer) != 0 {
			t.Errorf("tapped container, AAAA tdb: %v, %v; want NOERROR with no data", m, err)
		}
		if err := wantA(pid, "up.example.", "198.18.5.5"); err != nil {
			t.Errorf("tapped container, upstream name: %v", err)
		}
		flushRedirect(t, "h2")
		if m, err := dnsIn(cpid, "udp", "tdb.", dns.TypeA); err != nil || m.Rcode != dns.RcodeNameError {
			t.Errorf("untapped control, redirect flushed: %v, %v; want the upstream's NXDOMAIN", m, err)
		}
	})

	t.Run("lookup latency", func(t *testing.T) {
		loc := startCtr(t, "h2", "nt", "tloc")
		eventually(t, 15*time.Second, "tloc answers on h2", func() error { return wantA(pid, "tloc.", loc.ip) })
		cross, err := timeQueries(pid, "tdb.", 50)
		if err != nil {
			t.Fatal(err)
		}
		local, err := timeQueries(pid, "tloc.", 50)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("A lookups from h2, 50 each: cross-host name (tap) %s; same-host name (also answered by the tap) %s", quantiles(cross), quantiles(local))
	})

	t.Run("plugin killed: Docker still answers, the tap is taken over", func(t *testing.T) {
		loc := startCtr(t, "h2", "nt", "tloc2")
		eventually(t, 15*time.Second, "tloc2 answers on h2", func() error { return wantA(pid, "tloc2.", loc.ip) })
		ppid, err := pluginPID("h2")
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(ppid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill -9 %d: %v", ppid, err)
		}
		if n, err := tapJumps(pid); err != nil || n != 1 {
			t.Errorf("with the plugin dead the tap's jump count is %d (%v), want it left in place (1)", n, err)
		}
		if err := wantA(pid, "tloc2.", loc.ip); err != nil {
			t.Errorf("same-host name with the plugin dead (the queue must fail open): %v", err)
		}
		eventually(t, 90*time.Second, "the restarted plugin answers tdb again", func() error { return wantA(pid, "tdb.", db.ip) })
		wantTapJumps(t, "one jump after the takeover", pid, 1)
	})

	t.Run("macvlan network: names across hosts through the tap", func(t *testing.T) {
		for _, h := range hosts {
			createNetwork(t, h, "ntm", "-o", "mode=macvlan", "-o", "parent=eth0",
				"--subnet", "198.18.0.0/24", "--ip-range", "198.18.0.160/28", "--gateway", "198.18.0.254")
		}
		mdb := startCtr(t, "h1", "ntm", "tmdb")
		mcli := startCtr(t, "h2", "ntm", "tmcli")
		mpid := containerPID(t, "h2", mcli.id)
		wantTapJumps(t, "macvlan container tapped", mpid, 1)
		eventually(t, 15*time.Second, "tmdb answers on h2's macvlan container", func() error { return wantA(mpid, "tmdb.", mdb.ip) })
		if err := wantA(mpid, "up.example.", "198.18.5.5"); err != nil {
			t.Errorf("upstream name from the macvlan container: %v", err)
		}
		if m, err := dnsIn(mpid, "udp", "tdb.", dns.TypeA); err != nil || m.Rcode != dns.RcodeNameError {
			t.Errorf("tdb (network nt) from the macvlan network: %v, %v; want the upstream's NXDOMAIN", m, err)
		}
	})

	t.Run("internal network: names across hosts, nothing from outside", func(t *testing.T) {
		for _, h := range hosts {
			createNetwork(t, h, "nti", "--internal", "--subnet", "198.19.67.0/24")
		}
		idb := startCtr(t, "h1", "nti", "tidb")
		icli := startCtr(t, "h2", "nti", "ticli")
		ipid := containerPID(t, "h2", icli.id)
		wantTapJumps(t, "internal-network container tapped", ipid, 1)
		eventually(t, 15*time.Second, "tidb answers on h2's internal container", func() error { return wantA(ipid, "tidb.", idb.ip) })
		if m, err := dnsIn(ipid, "udp", "up.example.", dns.TypeA); err == nil && len(m.Answer) > 0 {
			t.Errorf("an upstream name resolved on an --internal network: %v", m.Answer)
		}
	})

	t.Run("the tap goes with the last grapevine network, the container runs on", func(t *testing.T) {
		both := startCtr(t, "h2", "nt", "tboth")
		mustDocker(t, "h2", "network", "connect", "nt2", both.id)
		bpid := containerPID(t, "h2", both.id)
		wantTapJumps(t, "tboth tapped", bpid, 1)
		mustDocker(t, "h2", "network", "disconnect", "nt", both.id)
		wantTapJumps(t, "still tapped on nt2", bpid, 1)
		mustDocker(t, "h2", "network", "disconnect", "nt2", both.id)
		wantTapJumps(t, "untapped once on no grapevine network", bpid, 0)
	})
}
