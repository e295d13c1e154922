//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// upstreamAddr is the hosts' resolver: the harness gives every dockerd
// --dns=198.18.0.254; the test serves it from the LAN machine.
const upstreamAddr = "198.18.0.254"

// TestNamesAcrossHosts: containers on a grapevine network resolve the names
// and aliases of containers on other hosts, on their own network only;
// other names still reach the hosts' resolver, over UDP and TCP, unchanged;
// a removed container's name goes.
func TestNamesAcrossHosts(t *testing.T) {
	needHosts(t, 3)
	hosts := clusterHosts()[:3]
	for _, h := range hosts {
		checkClean(t, h)
	}
	for _, h := range hosts {
		waitMembers(t, 30*time.Second, h, hosts)
	}
	serveUpstream(t)
	for _, h := range hosts {
		createNetwork(t, h, "nm", "--subnet", "198.19.61.0/24")
		createNetwork(t, h, "nm2", "--subnet", "198.19.62.0/24")
	}
	db := removableCtr(t, "h1", "nm", "db")
	cli := startCtr(t, "h2", "nm", "cli")
	pid := containerPID(t, "h2", cli.id)

	start := time.Now()
	eventually(t, 15*time.Second, "db answers on h2", func() error { return wantA(pid, "db.", db.ip) })
	t.Logf("db answered on h2 %v after docker run returned on h1", time.Since(start).Round(time.Millisecond))
	mustDocker(t, "h2", "exec", cli.id, "ping", "-c1", "-W2", "db")
	if out := mustDocker(t, "h2", "exec", cli.id, "nslookup", "db"); !strings.Contains(out, db.ip) {
		t.Errorf("nslookup db on h2 lacks %s:\n%s", db.ip, out)
	}
	if out, stderr, err := harnessCmd("status", "h2"); err != nil || !strings.Contains(out, "NAMES") || !strings.Contains(out, " db="+db.ip) {
		t.Errorf("grapevine status on h2 does not show db=%s under NAMES (%v: %s):\n%s", db.ip, err, stderr, out)
	}
	if m, err := dnsIn(pid, "udp", "db.", dns.TypeAAAA); err != nil || m.Rcode != dns.RcodeSuccess || len(m.Answer) != 0 {
		t.Errorf("AAAA db: %v, %v; want NOERROR with no data", m, err)
	}

	t.Run("alias held on two hosts", func(t *testing.T) {
		w1 := startCtr(t, "h1", "nm", "w1", "--network-alias", "web")
		w3 := startCtr(t, "h3", "nm", "w3", "--network-alias", "web")
		eventually(t, 15*time.Second, "web answers both holders", func() error { return wantA(pid, "web.", w1.ip, w3.ip) })
		firsts := map[string]bool{}
		for range 4 {
			if m, err := dnsIn(pid, "udp", "web.", dns.TypeA); err == nil && len(m.Answer) > 0 {
				firsts[m.Answer[0].(*dns.A).A.String()] = true
			}
		}
		if len(firsts) != 2 {
			t.Errorf("the first answer for web never changed over 4 queries: %v", firsts)
		}
		eventually(t, 15*time.Second, "w3 by container name", func() error { return wantA(pid, "w3.", w3.ip) })

		// h3 cut off: once h2 declares it dead its names go, and come back
		// when it returns
		mustHarness(t, "partition", "h3")
		healed := false
		t.Cleanup(func() {
			if !healed {
				_, _, _ = harnessCmd("heal")
			}
		})
		start := time.Now()
		eventually(t, 60*time.Second, "w3's alias gone with h3", func() error { return wantA(pid, "web.", w1.ip) })
		t.Logf("h3's names gone on h2 %v after the partition command returned (it takes seconds to cut every pair)", time.Since(start).Round(time.Millisecond))
		mustHarness(t, "heal")
		healed = true
		eventually(t, 60*time.Second, "w3's alias back with h3", func() error { return wantA(pid, "web.", w1.ip, w3.ip) })
	})

	t.Run("another network does not see it", func(t *testing.T) {
		other := startCtr(t, "h2", "nm2", "other")
		m, err := dnsIn(containerPID(t, "h2", other.id), "udp", "db.", dns.TypeA)
		if err != nil || m.Rcode != dns.RcodeNameError {
			t.Errorf("db from network nm2: %v, %v; want the upstream's NXDOMAIN", m, err)
		}
	})

	t.Run("upstream names unchanged over udp and tcp", func(t *testing.T) {
		if err := wantA(pid, "up.example.", "198.18.5.5"); err != nil {
			t.Error(err)
		}
		// over UDP the upstream truncates: the flag and the records that fit
		// come back as sent; over TCP the whole answer
		m, err := dnsIn(pid, "udp", "big.example.", dns.TypeTXT)
		if err != nil || !m.Truncated || len(m.Answer) == 0 || len(m.Answer) >= bigRecords {
			t.Errorf("udp TXT big.example: %v, %v; want the upstream's truncated answer", m, err)
		}
		m, err = dnsIn(pid, "tcp", "big.example.", dns.TypeTXT)
		if err != nil || len(m.Answer) != bigRecords {
			t.Errorf("tcp TXT big.example: %v, %v; want the upstream's %d records", m, err, bigRecords)
		}
	})

	t.Run("plugin down: only cross-host names stop", func(t *testing.T) {
		rules := mustInHost(t, "h2", "iptables", "-w", "-t", "nat", "-S", "GRAPEVINE-NAMES")
		checkLease(t, rules)
		t.Cleanup(func() { _, _, _ = docker("h2", "plugin", "enable", "--timeout", "30", pluginName) })
		// Many redirected queries first: conntrack then holds entries whose
		// ports later queries repeat (checked after the plugin is back).
		if lost := lostQueries(pid, "db.", 600); lost != 0 {
			t.Errorf("%d of 600 lookups of db lost before the restart", lost)
		}
		mustDocker(t, "h2", "plugin", "disable", "-f", pluginName)
		if out, _, err := inHost("h2", "iptables", "-w", "-t", "nat", "-S"); err != nil || strings.Contains(out, "GRAPEVINE-NAMES") {
			t.Errorf("after disable the names redirect is still there (%v):\n%s", err, out)
		}
		if err := wantA(pid, "up.example.", "198.18.5.5"); err != nil {
			t.Errorf("upstream name with the plugin disabled: %v", err)
		}
		if m, err := dnsIn(pid, "udp", "db.", dns.TypeA); err != nil || m.Rcode != dns.RcodeNameError {
			t.Errorf("db with the plugin disabled: %v, %v; want the upstream's NXDOMAIN", m, err)
		}
		mustDocker(t, "h2", "plugin", "enable", "--timeout", "30", pluginName)
		eventually(t, 30*time.Second, "db answers again on h2", func() error { return wantA(pid, "db.", db.ip) })
		// The restarted resolver listens on other ports; a query repeating
		// an earlier one's ports must not follow its stale conntrack entry
		// to the old port (seen: 12 of 300 lost before the plugin deleted
		// those entries).
		if lost := lostQueries(pid, "db.", 300); lost != 0 {
			t.Errorf("%d of 300 lookups of db lost after the plugin came back", lost)
		}
	})

	t.Run("lookup latency", func(t *testing.T) {
		loc := startCtr(t, "h2", "nm", "loc")
		eventually(t, 15*time.Second, "loc answers on h2", func() error { return wantA(pid, "loc.", loc.ip) })
		cross, err := timeQueries(pid, "db.", 50)
		if err != nil {
			t.Fatal(err)
		}
		local, err := timeQueries(pid, "loc.", 50)
		if err != nil {
			t.Fatal(err)
		}
		up, err := timeQueries(pid, "up.example.", 50)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("A lookups from h2, 50 each: cross-host name %s; same-host name %s; upstream name (the tap passes it on, Docker forwards it) %s",
			quantiles(cross), quantiles(local), quantiles(up))
	})

	t.Run("docker bridge network is the control", func(t *testing.T) {
		mustDocker(t, "h2", "network", "create", "--subnet", "198.19.63.0/24", "nmbridge")
		t.Cleanup(func() { _, _, _ = docker("h2", "network", "rm", "nmbridge") })
		local := startCtr(t, "h2", "nmbridge", "local")
		probe := startCtr(t, "h2", "nmbridge", "probe")
		ppid := containerPID(t, "h2", probe.id)
		if err := wantA(ppid, "local.", local.ip); err != nil {
			t.Errorf("same-host name on Docker's bridge: %v", err)
		}
		if m, err := dnsIn(ppid, "udp", "db.", dns.TypeA); err != nil || m.Rcode != dns.RcodeNameError {
			t.Errorf("db from Docker's bridge network: %v, %v; want NXDOMAIN", m, err)
		}
		if up, err := timeQueries(ppid, "up.example.", 50); err != nil {
			t.Error(err)
		} else {
			t.Logf("upstream name from Docker's bridge network (no grapevine on the path), 50 lookups: %s", quantiles(up))
		}
	})

	mustDocker(t, "h1", "rm", "-f", db.id)
	start = time.Now()
	eventually(t, 15*time.Second, "db gone on h2", func() error {
		m, err := dnsIn(pid, "udp", "db.", dns.TypeA)
		if err != nil {
			return err
		}
		if m.Rcode != dns.RcodeNameError {
			return fmt.Errorf("db still answers: %v", m.Answer)
		}
		return nil
	})
	t.Logf("db gone on h2 %v after docker rm -f returned on h1", time.Since(start).Round(time.Millisecond))
}

// removableCtr is startCtr for a container the test removes itself.
func removableCtr(t *testing.T, host, network, name string) ctr {
	t.Helper()
	id := mustDocker(t, host, "run", "-d", "--network", network, "--name", name, image, "sleep", "36000")
	t.Cleanup(func() { _, _, _ = docker(host, "rm", "-f", id) })
	return inspectCtr(t, host, id, name, network)
}

func containerPID(t *testing.T, host, id string) int {
	t.Helper()
	var pid int
	if _, err := fmt.Sscan(mustDocker(t, host, "inspect", "-f", "{{.State.Pid}}", id), &pid); err != nil || pid <= 0 {
		t.Fatalf("pid of %s on %s: %v", id, host, err)
	}
	return pid
}

// dnsIn asks Docker's resolver (127.0.0.11) from inside the network
// namespace of process pid.
func dnsIn(pid int, proto, name string, qtype uint16) (m *dns.Msg, err error) {
	err = inNetns(procNetns(pid), func() (err error) {
		c := &dns.Client{Net: proto, Timeout: 5 * time.Second, UDPSize: 4096}
		q := new(dns.Msg).SetQuestion(name, qtype)
		q.SetEdns0(4096, false)
		m, _, err = c.Exchange(q, "127.0.0.11:53")
		return err
	})
	return m, err
}

// wantA checks that name's A answer is exactly addrs, in any order.
func wantA(pid int, name string, addrs ...string) error {
	m, err := dnsIn(pid, "udp", name, dns.TypeA)
	if err != nil {
		return err
	}
	var got []string
	for _, rr := range m.Answer {
		if a, ok := rr.(*dns.A); ok {
			got = append(got, a.A.String())
		}
	}
	slices.Sort(got)
	want := slices.Sorted(slices.Values(addrs))
	if !slices.Equal(got, want) {
		return fmt.Errorf("%s: rcode %s, A %v; want %v", name, dns.RcodeToString[m.Rcode], got, want)
	}
	return nil
}

const bigRecords = 30 // TXT records of big.example: well over 512 bytes

// serveUpstream runs the hosts' resolver on the LAN machine at upstreamAddr:
// up.example has A 198.18.5.5, big.example a large TXT answer (truncated
// over UDP), everything else is NXDOMAIN.
func serveUpstream(t *testing.T) {
	t.Helper()
	if _, stderr, err := inLAN("ip", "addr", "add", upstreamAddr+"/24", "dev", "eth0"); err != nil {
		t.Fatalf("add %s on the LAN machine: %v: %s", upstreamAddr, err, stderr)
	}
	t.Cleanup(func() { _, _, _ = inLAN("ip", "addr", "del", upstreamAddr+"/24", "dev", "eth0") })
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg).SetReply(q)
		qq := q.Question[0]
		switch {
		case qq.Name == "up.example." && qq.Qtype == dns.TypeA:
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP("198.18.5.5")})
		case qq.Name == "big.example." && qq.Qtype == dns.TypeTXT:
			for i := range bigRecords {
				m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: []string{fmt.Sprintf("%02d-%s", i, strings.Repeat("x", 60))}})
			}
			if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
				m.Truncate(512)
			}
		case qq.Name == "up.example.":
		default:
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
	pc, ln := listenLAN(t)
	us, ts := &dns.Server{PacketConn: pc, Handler: h}, &dns.Server{Listener: ln, Handler: h}
	go func() { _ = us.ActivateAndServe() }()
	go func() { _ = ts.ActivateAndServe() }()
	t.Cleanup(func() { _ = us.Shutdown(); _ = ts.Shutdown() })
}

// listenLAN opens UDP and TCP port 53 on upstreamAddr in the LAN machine.
func listenLAN(t *testing.T) (pc net.PacketConn, ln net.Listener) {
	t.Helper()
	err := inNetns(netnsPath("lan"), func() (err error) {
		if pc, err = net.ListenPacket("udp4", upstreamAddr+":53"); err != nil {
			return err
		}
		if ln, err = net.Listen("tcp4", upstreamAddr+":53"); err != nil {
			pc.Close()
		}
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s:53 in the LAN machine: %v", upstreamAddr, err)
	}
	return pc, ln
}

// checkLease checks that every redirect rule stops matching within the
// 90 s lease: a plugin that dies without removing them costs only
// cross-host names, and only until then.
func checkLease(t *testing.T, rules string) {
	t.Helper()
	n := 0
	for _, line := range strings.Split(rules, "\n") {
		if !strings.Contains(line, "REDIRECT") {
			continue
		}
		n++
		_, rest, ok := strings.Cut(line, "--datestop ")
		f := strings.Fields(rest)
		if !ok || len(f) == 0 {
			t.Errorf("redirect rule without a lease: %s", line)
			continue
		}
		until, err := time.Parse("2006-01-02T15:04:05", f[0])
		if err != nil || time.Until(until) > 91*time.Second || time.Until(until) < 0 {
			t.Errorf("redirect rule lease %q (%v): want within 90 s from now", f[0], err)
		}
	}
	if n == 0 {
		t.Errorf("no redirect rule in:\n%s", rules)
	}
}

// TestNamesComposeSplit: a Compose v1 project split across two hosts
// (`docker-compose` against each daemon, one service per host) reaches the
// other host's service by its service name.
func TestNamesComposeSplit(t *testing.T) {
	needHosts(t, 3)
	if _, err := exec.LookPath("docker-compose"); err != nil {
		t.Fatalf("docker-compose not installed (make deps): %v", err)
	}
	for _, h := range []string{"h1", "h2"} {
		checkClean(t, h)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "docker-compose.yml")
	if err := os.WriteFile(file, []byte(strings.ReplaceAll(composeFile, "198.19.30.0/24", "198.19.64.0/24")), 0o644); err != nil {
		t.Fatal(err)
	}
	project := "gvn" + s.run
	compose := func(h string, args ...string) {
		t.Helper()
		cmd := exec.Command("docker-compose", append([]string{"-f", file, "-p", project}, args...)...)
		cmd.Env = append(os.Environ(), "DOCKER_HOST="+dockerHost(h), "COMPOSE_INTERACTIVE_NO_CLI=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("docker-compose %v on %s: %v\n%s", args, h, err, out)
		}
	}
	t.Cleanup(func() {
		for _, h := range []string{"h1", "h2"} {
			cmd := exec.Command("docker-compose", "-f", file, "-p", project, "down", "-t", "1")
			cmd.Env = append(os.Environ(), "DOCKER_HOST="+dockerHost(h))
			_ = cmd.Run()
		}
	})
	compose("h1", "up", "-d", "web")
	compose("h2", "up", "-d", "client")
	client := project + "_client_1"
	expectHTTP(t, "client on h2 reaches web on h1 by service name", "composed", func() (string, string, error) {
		return docker("h2", "exec", client, "sh", "-c", `printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 web 80`)
	})
}

// timeQueries times n A queries for name, one after another, from inside
// the network namespace of process pid; every answer must be NOERROR with
// an address.
func timeQueries(pid int, name string, n int) (ds []time.Duration, err error) {
	err = inNetns(procNetns(pid), func() error {
		c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
		for range n {
			start := time.Now()
			m, _, err := c.Exchange(new(dns.Msg).SetQuestion(name, dns.TypeA), "127.0.0.11:53")
			if err != nil || m.Rcode != dns.RcodeSuccess || len(m.Answer) == 0 {
				return fmt.Errorf("%s: %v, %v", name, m, err)
			}
			ds = append(ds, time.Since(start))
		}
		return nil
	})
	return ds, err
}

// lostQueries sends n A queries for name, one at a time, from the network
// namespace of pid to Docker's resolver and counts those never answered
// within 1.5 s.
func lostQueries(pid int, name string, n int) (lost int) {
	err := inNetns(procNetns(pid), func() error {
		c := &dns.Client{Net: "udp", Timeout: 1500 * time.Millisecond}
		for range n {
			if _, _, err := c.Exchange(new(dns.Msg).SetQuestion(name, dns.TypeA), "127.0.0.11:53"); err != nil {
				lost++
			}
		}
		return nil
	})
	if err != nil {
		return n
	}
	return lost
}

// quantiles is "p50 X p99 Y" of ds.
func quantiles(ds []time.Duration) string {
	s := slices.Sorted(slices.Values(ds))
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return fmt.Sprintf("p50 %v p99 %v", at(0.50).Round(time.Microsecond), at(0.99).Round(time.Microsecond))
}
