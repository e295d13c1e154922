//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// doctorCheck is one line of `grapevine doctor --json`.
type doctorCheck struct {
	Check  string `json:"check"`
	Peer   string `json:"peer"`
	Result string `json:"result"`
	Detail string `json:"detail"`
	Fix    string `json:"fix"`
}

// doctorOf runs `grapevine doctor --json [peer]` on host; failed reports
// whether it exited non-zero.
func doctorOf(host string, peer ...string) (checks []doctorCheck, raw string, failed bool, err error) {
	out, stderr, runErr := harnessCmd("doctor", append([]string{host, "--json"}, peer...)...)
	var r struct {
		Checks []doctorCheck `json:"checks"`
	}
	if jerr := json.Unmarshal([]byte(out), &r); jerr != nil {
		return nil, out, true, fmt.Errorf("grapevine doctor on %s: %v (%v): %s%s", host, runErr, jerr, out, stderr)
	}
	return r.Checks, out, runErr != nil, nil
}

// find returns the checks named check about the member on host (any
// member when host is "").
func find(checks []doctorCheck, check, host string) []doctorCheck {
	var out []doctorCheck
	for _, c := range checks {
		if c.Check == check && (host == "" || nodeHost(c.Peer) == host) {
			out = append(out, c)
		}
	}
	return out
}

// expectCheck fails unless exactly one check named check about host has
// result and its detail holds every word.
func expectCheck(checks []doctorCheck, check, host, result string, words ...string) error {
	got := find(checks, check, host)
	if len(got) != 1 {
		return fmt.Errorf("%d %q checks about %q, want 1", len(got), check, host)
	}
	c := got[0]
	if c.Result != result {
		return fmt.Errorf("%s %s: %s (%s), want %s", check, host, c.Result, c.Detail, result)
	}
	for _, w := range words {
		if !strings.Contains(c.Detail, w) {
			return fmt.Errorf("%s %s: detail %q lacks %q", check, host, c.Detail, w)
		}
	}
	return nil
}

// TestDoctor: on a healthy cluster with a VXLAN network on every host,
// doctor passes (exit 0) with an encapsulated probe and a full-size probe
// to each peer; with UDP to the VXLAN port dropped on h2 from h1 it fails
// naming the blocked port between this host and h2 (h3 still passes); with
// h2's underlay MTU lowered it names the MTU and h2, on h1 and on h2
// itself. Everything changed is restored.
func TestDoctor(t *testing.T) {
	needHosts(t, 3)
	hosts := clusterHosts()[:3]
	for _, h := range hosts {
		waitMembers(t, 60*time.Second, h, clusterHosts())
	}
	netIDs := map[string]string{}
	for _, h := range hosts {
		netIDs[h] = createNetwork(t, h, "doc", "--subnet", "198.19.70.0/24")
	}

	t.Run("healthy", func(t *testing.T) { doctorHealthy(t) })
	t.Run("drift", func(t *testing.T) { doctorDrift(t, netIDs) })
	t.Run("vxlan port blocked", func(t *testing.T) { doctorBlocked(t) })
	t.Run("underlay mtu lowered", func(t *testing.T) { doctorMTU(t) })
}

// doctorHealthy: doctor passes towards each peer; in full it fails only
// on the outsider's key.
func doctorHealthy(t *testing.T) {
	for _, p := range []string{"h2", "h3"} {
		eventually(t, 60*time.Second, "doctor h1 "+p+" to pass", func() error {
			checks, raw, failed, err := doctorOf("h1", p)
			if err != nil {
				return err
			}
			if failed {
				return fmt.Errorf("doctor h1 %s failed on a healthy cluster:\n%s", p, raw)
			}
			for _, c := range []struct{ check, word string }{{"vxlan-path", "answered"}, {"mtu", "1450 bytes"}, {"gossip", "alive"}} {
				if err := expectCheck(checks, c.check, p, "pass", c.word); err != nil {
					return err
				}
			}
			return nil
		})
	}
	// every member: only the outsider (another GOSSIP_KEY, never a
	// member) fails, as a key mismatch named by its address
	checks, raw, failed, err := doctorOf("h1")
	if err != nil {
		t.Fatal(err)
	}
	if !failed {
		t.Errorf("doctor h1 exited 0 although %s gossips with another key", s.outsider)
	}
	for _, c := range checks {
		outsiderKey := c.Check == "gossip-key" && strings.Contains(c.Detail, hostAddr(s.outsider)+" could not be decrypted, the last")
		if c.Result == "fail" && !outsiderKey {
			t.Errorf("unexpected failure: %+v", c)
		}
	}
	if err := expectCheck(checks, "gossip-key", "", "fail", hostAddr(s.outsider), "another GOSSIP_KEY"); err != nil {
		t.Errorf("%v\n%s", err, raw)
	}
	out, _, _ := harnessCmd("doctor", "h1")
	t.Logf("grapevine doctor on h1:\n%s", out)
}

// doctorDrift: h1's FDB entry for h2's container deleted by hand: the
// doctor's reconcile pass finds and repairs it (unless the periodic repair
// got there first: then delete again).
func doctorDrift(t *testing.T, netIDs map[string]string) {
	remote := startCtr(t, "h2", "doc", "docdrift")
	dev := vxlanDev(t, "h1", netIDs["h1"])
	eventually(t, 60*time.Second, "h1's doctor to report the deleted FDB entry as drift", func() error {
		l, err := fdbEntries("h1", dev)
		if err != nil {
			return err
		}
		if !hasFDB(l, remote.mac, hostAddr("h2")) {
			return fmt.Errorf("no FDB entry for %s yet", remote)
		}
		if _, stderr, err := inLinkNS("h1", dev, "bridge", "fdb", "del", remote.mac, "dev", dev, "dst", hostAddr("h2")); err != nil {
			return fmt.Errorf("bridge fdb del: %v: %s", err, stderr)
		}
		checks, raw, _, err := doctorOf("h1", "h2")
		if err != nil {
			return err
		}
		if err := expectCheck(checks, "drift", "", "warn", "peers/fdb_set 1"); err != nil {
			return fmt.Errorf("%v\n%s", err, raw)
		}
		return nil
	})
	l, err := fdbEntries("h1", dev)
	if err != nil {
		t.Fatal(err)
	}
	if !hasFDB(l, remote.mac, hostAddr("h2")) {
		t.Errorf("the FDB entry of %s is still missing after the doctor's pass: %v", remote, l)
	}

}

// doctorBlocked: UDP to the VXLAN port dropped on h2 from h1.
func doctorBlocked(t *testing.T) {
	rule := func(op string) []string {
		return []string{"iptables", "-w", "-t", "raw", op, "PREROUTING", "-s", hostAddr("h1"), "-p", "udp", "--dport", "4789",
			"-m", "comment", "--comment", "gvtest-doctor", "-j", "DROP"}
	}
	mustInHost(t, "h2", rule("-I")...)
	t.Cleanup(func() { mustInHost(t, "h2", rule("-D")...) })
	checks, raw, failed, err := doctorOf("h1")
	if err != nil {
		t.Fatal(err)
	}
	if !failed {
		t.Errorf("doctor exited 0 with the VXLAN port blocked to h2")
	}
	if err := expectCheck(checks, "vxlan-path", "h2", "fail", "VXLAN UDP port blocked between this host and h2"); err != nil {
		t.Error(err)
	}
	if err := expectCheck(checks, "vxlan-path", "h3", "pass"); err != nil {
		t.Error(err)
	}
	if err := expectCheck(checks, "gossip", "h2", "pass", "alive"); err != nil {
		t.Error(err)
	}
	if t.Failed() {
		t.Logf("doctor on h1:\n%s", raw)
	}
	// HOST limits the per-peer checks to h2
	checks, _, _, err = doctorOf("h1", "h2")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(find(checks, "vxlan-path", "h3")); n != 0 {
		t.Errorf("doctor h2 probed h3 too")
	}
	if err := expectCheck(checks, "vxlan-path", "h2", "fail", "blocked"); err != nil {
		t.Error(err)
	}

}

// doctorMTU: h2's underlay MTU lowered to 1400.
func doctorMTU(t *testing.T) {
	mustInHost(t, "h2", "ip", "link", "set", "eth0", "mtu", "1400")
	t.Cleanup(func() { mustInHost(t, "h2", "ip", "link", "set", "eth0", "mtu", "1500") })
	checks, raw, failed, err := doctorOf("h1")
	if err != nil {
		t.Fatal(err)
	}
	if !failed {
		t.Errorf("doctor exited 0 with h2's underlay MTU at 1400")
	}
	if err := expectCheck(checks, "mtu", "h2", "fail", "VXLAN path to h2", "but not 1450 bytes"); err != nil {
		t.Error(err)
	} else if carries := carried(find(checks, "mtu", "h2")[0].Detail); carries < 1340 || carries > 1360 {
		// 1400 − 50, and the veth admits 4 bytes more (VLAN_HLEN)
		t.Errorf("h2 carries %d bytes, want about 1350", carries)
	}
	if err := expectCheck(checks, "mtu", "h3", "pass"); err != nil {
		t.Error(err)
	}
	if t.Failed() {
		t.Logf("doctor on h1:\n%s", raw)
	}
	// h2 itself names its own underlay
	checks, raw, _, err = doctorOf("h2")
	if err != nil {
		t.Fatal(err)
	}
	local := false
	for _, c := range find(checks, "mtu", "") {
		local = local || (c.Peer == "" && c.Result == "fail" && strings.Contains(c.Detail, "eth0 has MTU 1400"))
	}
	if !local {
		t.Errorf("doctor on h2 does not name its own underlay MTU:\n%s", raw)
	}

}

// carried is the N of "carries N but not".
func carried(detail string) int {
	_, rest, _ := strings.Cut(detail, "carries ")
	var n int
	_, _ = fmt.Sscanf(rest, "%d", &n)
	return n
}

// TestDoctorSingleHost: a host without PEERS and with a VXLAN network
// passes (its path checks are skipped: no peer), and a HOST that is no
// member fails naming it.
func TestDoctorSingleHost(t *testing.T) {
	singleHost(t)
	createNetwork(t, "h1", "doc1", "--subnet", "198.19.71.0/24")
	checks, raw, failed, err := doctorOf("h1")
	if err != nil {
		t.Fatal(err)
	}
	if failed {
		t.Errorf("doctor failed on a single healthy host:\n%s", raw)
	}
	if err := expectCheck(checks, "gossip", "", "pass", "single host"); err != nil {
		t.Errorf("%v\n%s", err, raw)
	}
	checks, raw, failed, err = doctorOf("h1", "h9")
	if err != nil {
		t.Fatal(err)
	}
	if !failed || expectCheck(checks, "member", "h9", "fail", `"h9"`) != nil {
		t.Errorf("doctor h9 (no such member): exit non-zero %v\n%s", failed, raw)
	}
}

// TestProbeBehindIngressFilter: the doctor's probe VNI opens no way in. With
// h1's probe device answering h2, the LAN machine (no member) sends h1 VXLAN
// frames with the probe's VNI, addressed to h1's probe device (its MAC and
// address, both derived from the VTEP): h1's ingress filter drops every
// one, as for any VNI.
func TestProbeBehindIngressFilter(t *testing.T) {
	needHosts(t, 3)
	waitMembers(t, 60*time.Second, "h1", clusterHosts())
	for _, h := range []string{"h1", "h2"} {
		createNetwork(t, h, "docin", "--subnet", "198.19.72.0/24")
	}
	// the positive control: h1's probe device is up and answers h2's
	eventually(t, 30*time.Second, "h1's doctor to reach h2's probe", func() error {
		checks, _, _, err := doctorOf("h1", "h2")
		if err != nil {
			return err
		}
		return expectCheck(checks, "vxlan-path", "h2", "pass", "answered")
	})
	vtep := netip.MustParseAddr(hostAddr("h1"))
	a := vtep.As4()
	probeMAC := net.HardwareAddr{0x02, 0x76, a[0], a[1], a[2], a[3]}
	lanMAC, _ := net.ParseMAC("02:00:c6:12:00:c8")
	_, _, before := vxlanIngressOf(t, "h1")
	dst := netip.AddrPortFrom(vtep, 4789)
	for seq := range uint16(5) {
		if err := sendUDPFromNetns(netnsPath("lan"), dst, vxlanFrame(t, 8388607, probeMAC, lanMAC, netip.MustParseAddr(lanAddr), vtep, seq)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "h1 to drop the LAN machine's frames to its probe", func() error {
		if _, _, after := vxlanIngressOf(t, "h1"); after < before+5 {
			return fmt.Errorf("h1 counted %d dropped frames (%d before), want at least %d", after, before, before+5)
		}
		return nil
	})
}
