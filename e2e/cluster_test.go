//go:build e2e

package e2e

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestCluster runs the multi-host story on one network that exists on every host of
// the cluster, step by step: each step builds on the state the previous ones left.
func TestCluster(t *testing.T) {
	needHosts(t, 3)
	hosts := clusterHosts()
	for _, h := range hosts {
		checkClean(t, h)
	}
	const (
		nw     = "mh"
		subnet = "198.19.20.0/24"
	)

	t.Run("hostnames and membership", func(t *testing.T) {
		for _, h := range hosts {
			st, raw, err := statusOf(h)
			if err != nil {
				t.Fatal(err)
			}
			if st.Host != h || nodeHost(st.Node) != h {
				t.Errorf("%s: status shows host %q node %q, want host %s and a node named %s-…\n%s", h, st.Host, st.Node, h, h, raw)
			}
		}
		start := time.Now()
		for _, h := range hosts {
			waitMembers(t, 30*time.Second, h, hosts)
		}
		t.Logf("all %d hosts see each other alive after %v", len(hosts), time.Since(start).Round(time.Millisecond))
	})

	netIDs := map[string]string{}
	for _, h := range hosts {
		netIDs[h] = createNetwork(t, h, nw, "--subnet", subnet)
	}
	var cs []ctr
	for _, h := range hosts {
		cs = append(cs, startCtr(t, h, nw, nw+"-"+h, "--restart", "always"))
	}
	byHost := func(h string) ctr {
		for _, c := range cs {
			if c.host == h {
				return c
			}
		}
		t.Fatalf("no container on %s", h)
		return ctr{}
	}

	t.Run("distinct addresses and one gateway", func(t *testing.T) {
		distinct(t, cs)
		pfx := netip.MustParsePrefix(subnet)
		gws := map[string]string{}
		for _, c := range cs {
			if a, err := netip.ParseAddr(c.ip); err != nil || !pfx.Contains(a) {
				t.Errorf("%s: address outside %s", c, subnet)
			}
			// (a remote IPAM's gateway is not in `network inspect`; the container's is)
			gws[c.host] = mustDocker(t, c.host, "inspect", "-f", `{{(index .NetworkSettings.Networks "`+nw+`").Gateway}}`, c.id)
		}
		for h, gw := range gws {
			if gw != gws[hosts[0]] || gw == "" {
				t.Errorf("gateways differ: %v (want the same on every host)", gws)
				break
			}
			for _, c := range cs {
				if c.ip == gw {
					t.Errorf("%s holds the gateway address %s of %s", c, gw, h)
				}
			}
		}
		t.Logf("containers %v, gateway %s", cs, gws[hosts[0]])
	})

	t.Run("ping every direction", func(t *testing.T) {
		start := time.Now()
		fullMesh(t, 20*time.Second, cs)
		t.Logf("full mesh of %d containers in %v", len(cs), time.Since(start).Round(time.Millisecond))
	})

	t.Run("egress and published port on a non-first host", func(t *testing.T) {
		h := hosts[1]
		web := webServer(t, h, "from-"+h, "--network", nw, "-p", "8082:80")
		webIP := containerIP(t, h, web, nw)
		expectHTTP(t, "published port of "+h+" from the LAN", "from-"+h, func() (string, string, error) {
			return inLAN(httpGetCmd(hostAddr(h), 8082)...)
		})
		expectHTTP(t, "web server on "+h+" from a container on "+hosts[0], "from-"+h, func() (string, string, error) {
			return docker(hosts[0], append([]string{"exec", byHost(hosts[0]).id}, httpGetCmd(webIP, 80)...)...)
		})
		eventually(t, 20*time.Second, "egress from "+h+" to the LAN", func() error {
			peer, err := peerSeenByLAN(t, 9005, func() (string, string, error) {
				return docker(h, "exec", byHost(h).id, "sh", "-c", fmt.Sprintf("nc -w 2 %s 9005 </dev/null", lanAddr))
			})
			if err != nil {
				return err
			}
			if peer != hostAddr(h) {
				return fmt.Errorf("LAN saw %s, want %s (masqueraded to %s's address)", peer, hostAddr(h), h)
			}
			return nil
		})
		mustDocker(t, h, "rm", "-f", web)
	})

	t.Run("status lists peers networks blocks endpoints", func(t *testing.T) {
		type span struct {
			host       string
			first, end netip.Addr
		}
		var spans []span
		for _, h := range hosts {
			st, raw, err := statusOf(h)
			if err != nil {
				t.Fatal(err)
			}
			alive := 0
			for _, m := range st.Members {
				if m.alive() {
					alive++
				}
			}
			if alive != len(hosts) {
				t.Errorf("%s: %d members alive, want %d:\n%s", h, alive, len(hosts), raw)
			}
			found := false
			for _, n := range st.Networks {
				if n.Subnet == subnet {
					found = true
					if n.Endpoints != 1 {
						t.Errorf("%s: network %s has %d endpoints, want 1 (its one local container)", h, subnet, n.Endpoints)
					}
					if !strings.HasPrefix(n.ID, netIDs[h]) && !strings.HasPrefix(netIDs[h], n.ID) {
						t.Errorf("%s: status network id %s, docker's %s", h, n.ID, netIDs[h])
					}
				}
			}
			if !found {
				t.Errorf("%s: status lacks network %s:\n%s", h, subnet, raw)
			}
			owned := 0
			for _, p := range st.Pools {
				if p.Pool != subnet {
					continue
				}
				for _, r := range p.Owned {
					a, b, ok := strings.Cut(r, "-")
					fa, err1 := netip.ParseAddr(a)
					fb, err2 := netip.ParseAddr(b)
					if !ok || err1 != nil || err2 != nil {
						t.Errorf("%s: owned range %q is not first-last", h, r)
						continue
					}
					spans = append(spans, span{h, fa, fb})
					owned++
				}
			}
			if owned == 0 {
				t.Errorf("%s: owns no block of %s:\n%s", h, subnet, raw)
			}
		}
		sort.Slice(spans, func(i, j int) bool { return spans[i].first.Less(spans[j].first) })
		for i := 1; i < len(spans); i++ {
			if !spans[i-1].end.Less(spans[i].first) {
				t.Errorf("blocks overlap: %s owns %s-%s, %s owns %s-%s", spans[i-1].host, spans[i-1].first, spans[i-1].end, spans[i].host, spans[i].first, spans[i].end)
			}
		}
		out, stderr, err := harnessCmd("status", hosts[0])
		if err != nil {
			t.Fatalf("grapevine status (text) on %s: %v: %s", hosts[0], err, stderr)
		}
		t.Logf("grapevine status on %s:\n%s", hosts[0], out)
		checkStatusText(t, out, hosts, subnet)
	})

	t.Run("reconcile fdb and neighbours", func(t *testing.T) {
		h, remote := hosts[0], byHost(hosts[1])
		dev := vxlanDev(t, h, netIDs[h])
		vtep := hostAddr(remote.host)
		present := func(what string, want bool, check func() (bool, error)) {
			t.Helper()
			start := time.Now()
			eventually(t, 90*time.Second, what, func() error {
				ok, err := check()
				if err != nil {
					return err
				}
				if ok != want {
					return fmt.Errorf("present=%v, want %v", ok, want)
				}
				return nil
			})
			t.Logf("%s after %v", what, time.Since(start).Round(time.Millisecond))
		}
		fdbHas := func(mac, dst string) func() (bool, error) {
			return func() (bool, error) {
				l, err := fdbEntries(h, dev)
				return hasFDB(l, mac, dst), err
			}
		}
		neighHas := func(ip, mac string) func() (bool, error) {
			return func() (bool, error) {
				l, err := neighEntries(h, dev)
				return hasNeigh(l, ip, mac), err
			}
		}
		present("fdb entry of "+remote.String(), true, fdbHas(remote.mac, vtep))
		present("neighbour entry of "+remote.String(), true, neighHas(remote.ip, remote.mac))

		mustInLinkNS(t, h, dev, "bridge", "fdb", "del", remote.mac, "dev", dev, "dst", vtep)
		mustInLinkNS(t, h, dev, "ip", "neigh", "del", remote.ip, "dev", dev)
		present("deleted fdb entry restored", true, fdbHas(remote.mac, vtep))
		present("deleted neighbour entry restored", true, neighHas(remote.ip, remote.mac))

		const bogusMAC, bogusIP, bogusVTEP = "02:00:5e:00:53:01", "198.19.20.250", "198.18.0.99"
		mustInLinkNS(t, h, dev, "bridge", "fdb", "append", bogusMAC, "dev", dev, "dst", bogusVTEP, "self", "permanent")
		mustInLinkNS(t, h, dev, "ip", "neigh", "replace", bogusIP, "lladdr", bogusMAC, "dev", dev, "nud", "permanent")
		present("bogus fdb entry removed", false, fdbHas(bogusMAC, bogusVTEP))
		present("bogus neighbour entry removed", false, neighHas(bogusIP, ""))
	})

	t.Run("same subnet with another vni is refused naming the first host", func(t *testing.T) {
		const sub = "198.19.21.0/24"
		first, _, err := statusOf(hosts[0])
		if err != nil {
			t.Fatal(err)
		}
		createNetwork(t, hosts[0], "cf1", "--subnet", sub, "-o", "vni=5001")
		// the conflict kind (vni), the defining host's node and its definition
		want := fmt.Sprintf("%s is already defined on host %s as mode=vxlan vni=5001; use -o vni=5001 or omit -o vni", sub, first.Node)
		eventually(t, 15*time.Second, "conflicting network refused on "+hosts[1], func() error {
			out, stderr, err := docker(hosts[1], "network", "create", "-d", pluginName, "--ipam-driver", pluginName,
				"--subnet", sub, "-o", "vni=5002", "cf2")
			if err == nil {
				_, _, _ = docker(hosts[1], "network", "rm", "cf2")
				return fmt.Errorf("accepted (network %s)", strings.TrimSpace(out))
			}
			if !strings.Contains(stderr, want) {
				return fmt.Errorf("refusal %q does not say %q", strings.TrimSpace(stderr), want)
			}
			t.Logf("refused: %s", strings.TrimSpace(stderr))
			return nil
		})
		if _, _, err := docker(hosts[1], "network", "inspect", "cf2"); err == nil {
			t.Errorf("refused network cf2 exists on %s", hosts[1])
		}
	})

	t.Run("killed host's entries vanish from the others", func(t *testing.T) {
		dead := byHost(hosts[2])
		vtep := hostAddr(dead.host)
		others := hosts[:2]
		for _, h := range others {
			dev := vxlanDev(t, h, netIDs[h])
			eventually(t, 20*time.Second, h+" has the entries of "+dead.String(), func() error {
				f, err := fdbEntries(h, dev)
				if err != nil {
					return err
				}
				n, err := neighEntries(h, dev)
				if err != nil {
					return err
				}
				if !hasFDB(f, dead.mac, vtep) || !hasNeigh(n, dead.ip, dead.mac) {
					return fmt.Errorf("fdb %v neigh %v", f, n)
				}
				return nil
			})
		}
		mustHarness(t, "kill", dead.host)
		killed := time.Now()
		for _, h := range others {
			dev := vxlanDev(t, h, netIDs[h])
			eventually(t, 10*time.Second, "entries of killed "+dead.host+" gone from "+h, func() error {
				f, err := fdbEntries(h, dev)
				if err != nil {
					return err
				}
				n, err := neighEntries(h, dev)
				if err != nil {
					return err
				}
				if left := fdbTowards(f, vtep); len(left) > 0 || hasNeigh(n, dead.ip, "") {
					return fmt.Errorf("fdb towards %s: %v; neighbours: %v", vtep, left, n)
				}
				return nil
			})
			t.Logf("%s dropped %s's entries %v after the kill", h, dead.host, time.Since(killed).Round(time.Millisecond))
		}
		if t.Failed() {
			t.Logf("plugin log of %s:\n%s", others[0], pluginLog(s.run, others[0], 40))
		}
	})

	t.Run("host comes back and is reachable within 2s of rejoining", func(t *testing.T) {
		h := hosts[2]
		mustHarness(t, "revive", h)
		revived := time.Now()
		// ready: the others see h alive, and h's container (restart policy always)
		// runs again with its endpoint.
		var back ctr
		var rejoined time.Time
		eventually(t, 90*time.Second, h+" rejoined and its container runs", func() error {
			if rejoined.IsZero() {
				for _, o := range hosts[:2] {
					m, err := aliveMembers(o)
					if err != nil {
						return err
					}
					if !contains(m, h) {
						return fmt.Errorf("%s sees %v alive", o, m)
					}
				}
				rejoined = time.Now()
			}
			out, stderr, err := docker(h, "inspect", "-f", `{{.State.Running}} {{(index .NetworkSettings.Networks "`+nw+`").IPAddress}} {{(index .NetworkSettings.Networks "`+nw+`").MacAddress}}`, nw+"-"+h)
			if err != nil {
				return fmt.Errorf("%v: %s", err, stderr)
			}
			f := strings.Fields(out)
			if len(f) != 3 || f[0] != "true" {
				return fmt.Errorf("container state %q", out)
			}
			back = ctr{host: h, id: nw + "-" + h, name: nw + "-" + h, ip: f[1], mac: f[2]}
			return nil
		})
		ready := time.Now()
		t.Logf("%s rejoined %v after revive; its container runs as %s %v after revive",
			h, rejoined.Sub(revived).Round(time.Millisecond), back, ready.Sub(revived).Round(time.Millisecond))
		from := byHost(hosts[0])
		reach := func(limit time.Duration) (time.Duration, bool) {
			for {
				missing, err := pingAll(from.host, from.id, []string{back.ip})
				if err == nil && len(missing) == 0 {
					return time.Since(ready), true
				}
				if time.Since(ready) > limit {
					return time.Since(ready), false
				}
			}
		}
		if took, ok := reach(2 * time.Second); ok {
			t.Logf("%s reaches %s %v after it was ready", from, back, took.Round(time.Millisecond))
		} else {
			took, ok = reach(60 * time.Second)
			t.Errorf("%s did not reach %s within 2s of %s rejoining (reachable: %v after %v)\nplugin log of %s:\n%s",
				from, back, h, ok, took.Round(time.Millisecond), from.host, pluginLog(s.run, from.host, 40))
		}
		for i := range cs {
			if cs[i].host == h {
				cs[i] = back
			}
		}
		distinct(t, cs)
	})

	t.Run("fourth container after a host was stopped and restarted", func(t *testing.T) {
		h := hosts[1]
		mustHarness(t, "dockerd-restart", h)
		// the restarted host's container comes back (restart policy always)
		eventually(t, 60*time.Second, h+"'s container runs again", func() error {
			out, _, err := docker(h, "inspect", "-f", "{{.State.Running}}", nw+"-"+h)
			if err != nil || strings.TrimSpace(out) != "true" {
				return fmt.Errorf("running=%q err=%v", out, err)
			}
			return nil
		})
		for i := range cs {
			if cs[i].host == h {
				cs[i] = inspectCtr(t, h, cs[i].name, cs[i].name, nw)
			}
		}
		fourth := startCtr(t, h, nw, nw+"-4th")
		all := append(append([]ctr(nil), cs...), fourth)
		distinct(t, all)
		fullMesh(t, 20*time.Second, all)
		t.Logf("fourth container %s", fourth)
	})

	t.Run("partition, containers on both sides, heal", func(t *testing.T) {
		minority, majority := hosts[:1], hosts[1:]
		from, to := byHost(minority[0]), byHost(majority[0])
		// A pinger across the coming cut, started before it. Right after the cut the
		// minority host still holds the majority's FDB entries, so its echo requests
		// are encapsulated and must be dropped as VXLAN (the raw-table counters show
		// it). Once memberlist declares the other side dead (seconds later) the driver
		// removes their entries and the VXLAN device drops the frames itself, without
		// encapsulating them: a ping sent only after the split proves nothing about
		// the cut.
		const pingLog, pingPid = "/tmp/gv-partition-ping", "/tmp/gv-partition-ping.pid"
		mustDocker(t, from.host, "exec", "-d", from.id, "sh", "-c",
			fmt.Sprintf("echo $$ >%s; exec ping -i 0.2 -w 300 %s >%s 2>&1", pingPid, to.ip, pingLog))
		stopPinger := func() {
			_, _, _ = docker(from.host, "exec", from.id, "sh", "-c", fmt.Sprintf("kill $(cat %s)", pingPid))
		}
		defer stopPinger()
		replies := func() (int, error) {
			out, stderr, err := docker(from.host, "exec", from.id, "cat", pingLog)
			if err != nil {
				return 0, fmt.Errorf("reading the pinger's output in %s: %v: %s", from, err, stderr)
			}
			return strings.Count(out, " bytes from "+to.ip+":"), nil
		}
		eventually(t, 20*time.Second, from.String()+" pings "+to.String()+" before the partition", func() error {
			if n, err := replies(); err != nil || n < 2 {
				return fmt.Errorf("%d replies (err %v)", n, err)
			}
			return nil
		})

		mustHarness(t, "partition", minority...)
		healed := false
		defer func() {
			if !healed {
				_, _, _ = harnessCmd("heal")
			}
		}()
		// every partition rule is in place: no reply may arrive from here on
		atCut, err := replies()
		if err != nil {
			t.Fatal(err)
		}
		waitMembers(t, 60*time.Second, minority[0], minority)
		for _, h := range majority {
			waitMembers(t, 60*time.Second, h, majority)
		}
		afterSplit, err := replies()
		if err != nil {
			t.Fatal(err)
		}
		stopPinger()
		if afterSplit != atCut {
			t.Errorf("%s got %d replies from %s across the partition (%d before it)", from, afterSplit-atCut, to, atCut)
		} else {
			t.Logf("%s got %d replies from %s before the partition and none after it", from, atCut, to)
		}
		if f, err := fdbEntries(minority[0], vxlanDev(t, minority[0], netIDs[minority[0]])); err == nil {
			var left []string
			for _, h := range majority {
				left = append(left, fdbTowards(f, hostAddr(h))...)
			}
			t.Logf("%s holds %d fdb entries towards the majority after the split (a dead host's endpoints are unprogrammed)", minority[0], len(left))
		}
		if missing, err := pingAll(from.host, from.id, []string{to.ip}); err != nil || len(missing) == 0 {
			t.Errorf("container on %s still reaches %s across the partition (err %v)", minority[0], majority[0], err)
		}
		var side []ctr
		for _, h := range hosts {
			out, stderr, err := docker(h, "run", "-d", "--network", nw, "--name", "part-"+h, image, "sleep", "36000")
			if err != nil {
				t.Errorf("starting a container on %s during the partition: %v: %s", h, err, stderr)
				continue
			}
			id := strings.TrimSpace(out)
			t.Cleanup(func() { _, _, _ = docker(h, "rm", "-f", id) })
			side = append(side, inspectCtr(t, h, id, "part-"+h, nw))
		}
		t.Logf("started during the partition: %v", side)
		if len(side) != len(hosts) {
			t.Fatalf("%d containers started during the partition, want one on each of the %d hosts: %v", len(side), len(hosts), side)
		}
		for _, h := range hosts {
			out := mustHarness(t, "partition-counters", h)
			counts := map[string]int{}
			for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
				f := strings.Fields(l)
				if len(f) == 3 {
					n, _ := strconv.Atoi(f[2])
					counts[f[1]] += n
				}
			}
			// every host tried to gossip across the cut; the minority host's pinger
			// sent VXLAN across it until the majority's entries were removed
			if counts["gossip-udp"]+counts["gossip-tcp"] == 0 || (h == minority[0] && counts["vxlan"] == 0) {
				t.Errorf("%s: the partition dropped vxlan=%d gossip=%d packets; want gossip (and on %s vxlan) attempted and cut:\n%s",
					h, counts["vxlan"], counts["gossip-udp"]+counts["gossip-tcp"], minority[0], out)
			} else {
				t.Logf("%s: the partition dropped vxlan=%d gossip=%d packets", h, counts["vxlan"], counts["gossip-udp"]+counts["gossip-tcp"])
			}
		}

		mustHarness(t, "heal")
		healed = true
		start := time.Now()
		logArrivals(t, start, 60*time.Second, hosts, minority, cs, side, netIDs)
		for _, h := range hosts {
			waitMembers(t, 60*time.Second, h, hosts)
		}
		t.Logf("membership healed after %v", time.Since(start).Round(time.Millisecond))
		// every container on every host, as Docker reports them
		var all []ctr
		for _, h := range hosts {
			for _, id := range strings.Fields(mustDocker(t, h, "ps", "-q", "--filter", "network="+nw)) {
				all = append(all, inspectCtr(t, h, id, h+"/"+id[:12], nw))
			}
		}
		// exactly the containers from before the cut and those started during it
		var want, got []string
		for _, c := range append(append([]ctr(nil), cs...), side...) {
			want = append(want, c.host+" "+c.ip)
		}
		for _, c := range all {
			got = append(got, c.host+" "+c.ip)
		}
		sort.Strings(want)
		sort.Strings(got)
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("after heal Docker lists %d containers on %s: %v, want the %d from before and during the partition: %v",
				len(got), nw, got, len(want), want)
		}
		distinct(t, all)
		fullMesh(t, 30*time.Second, all)
		t.Logf("full mesh of %d containers %v after heal", len(all), time.Since(start).Round(time.Millisecond))
	})

	t.Run("host with a wrong GOSSIP_KEY stays out", func(t *testing.T) {
		o := s.outsider
		if o == "" {
			t.Skip("no outsider host in this run")
		}
		m, err := aliveMembers(o)
		if err != nil {
			t.Fatal(err)
		}
		if len(m) != 1 || m[0] != o {
			t.Errorf("%s (wrong key) sees %v alive, want only itself", o, m)
		}
		for _, h := range hosts {
			m, err := aliveMembers(h)
			if err != nil {
				t.Fatal(err)
			}
			if contains(m, o) {
				t.Errorf("%s lists %s (wrong key) as a member: %v", h, o, m)
			}
		}
		// a network and a container on the outsider: it must not hand out cluster
		// space on its own; if it does anything, nothing of it reaches the cluster.
		var oc *ctr
		if _, stderr, err := docker(o, "network", "create", "-d", pluginName, "--ipam-driver", pluginName, "--subnet", subnet, nw); err != nil {
			t.Logf("network create on %s refused: %s", o, strings.TrimSpace(stderr))
		} else {
			t.Cleanup(func() { _, _, _ = docker(o, "network", "rm", nw) })
			out, stderr, err := docker(o, "run", "-d", "--network", nw, image, "sleep", "36000")
			if err != nil {
				t.Logf("docker run on %s refused: %s", o, strings.TrimSpace(stderr))
			} else {
				id := strings.TrimSpace(out)
				t.Cleanup(func() { _, _, _ = docker(o, "rm", "-f", id) })
				c := inspectCtr(t, o, id, "outsider", nw)
				oc = &c
			}
		}
		var clusterCtrs []ctr
		for _, h := range hosts {
			for _, id := range strings.Fields(mustDocker(t, h, "ps", "-q", "--filter", "network="+nw)) {
				clusterCtrs = append(clusterCtrs, inspectCtr(t, h, id, h+"/"+id[:12], nw))
			}
		}
		if oc != nil {
			t.Logf("%s started %s", o, *oc)
			for _, c := range clusterCtrs {
				if c.ip == oc.ip {
					t.Errorf("%s (outside the cluster) handed out %s, which %s holds", o, oc.ip, c)
				}
			}
			from := byHost(hosts[0])
			expectIsolated(t, from.String(), inContainer(from.host, from.id), byHost(hosts[1]).ip, oc.ip, false)
		}
		for _, h := range hosts {
			dev := vxlanDev(t, h, netIDs[h])
			f, err := fdbEntries(h, dev)
			if err != nil {
				t.Fatal(err)
			}
			if left := fdbTowards(f, hostAddr(o)); len(left) > 0 {
				t.Errorf("%s has fdb entries towards the outsider %s: %v", h, o, left)
			}
			if oc != nil {
				n, err := neighEntries(h, dev)
				if err != nil {
					t.Fatal(err)
				}
				if hasNeigh(n, oc.ip, oc.mac) {
					t.Errorf("%s has a neighbour entry for the outsider's %s", h, *oc)
				}
			}
		}
	})
}

func contains(list []string, v string) bool {
	return slices.Contains(list, v)
}
