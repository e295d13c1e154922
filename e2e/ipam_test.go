//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

func TestIPAM(t *testing.T) {
	singleHost(t)
	const h = "h1"
	checkClean(t, h)

	t.Run("subnet gateway and sequential addresses", func(t *testing.T) {
		createNetwork(t, h, "ipam1", "--subnet", "198.19.10.0/24")
		cfg := mustDocker(t, h, "network", "inspect", "-f", `{{range .IPAM.Config}}{{.Subnet}} {{end}}`, "ipam1")
		if strings.TrimSpace(cfg) != "198.19.10.0/24" {
			t.Errorf("network inspect subnet = %q, want 198.19.10.0/24", cfg)
		}
		c1 := runContainer(t, h, "--network", "ipam1", image, "sleep", "3600")
		c2 := runContainer(t, h, "--network", "ipam1", image, "sleep", "3600")
		if got := containerIP(t, h, c1, "ipam1"); got != "198.19.10.2" {
			t.Errorf("first container address = %s, want 198.19.10.2", got)
		}
		if got := containerIP(t, h, c2, "ipam1"); got != "198.19.10.3" {
			t.Errorf("second container address = %s, want 198.19.10.3", got)
		}
		gw := mustDocker(t, h, "inspect", "-f", `{{(index .NetworkSettings.Networks "ipam1").Gateway}}`, c1)
		if gw != "198.19.10.1" {
			t.Errorf("container gateway = %s, want 198.19.10.1", gw)
		}
		route := mustDocker(t, h, "exec", c1, "ip", "route")
		if !strings.Contains(route, "default via 198.19.10.1") {
			t.Errorf("container routes lack default via 198.19.10.1:\n%s", route)
		}
		c3 := runContainer(t, h, "--network", "ipam1", "--ip", "198.19.10.50", image, "sleep", "3600")
		if got := containerIP(t, h, c3, "ipam1"); got != "198.19.10.50" {
			t.Errorf("--ip 198.19.10.50 gave %s", got)
		}
		ifaddr := mustDocker(t, h, "exec", c3, "ip", "-o", "-4", "addr", "show", "eth0")
		if !strings.Contains(ifaddr, "198.19.10.50/24") {
			t.Errorf("container eth0 lacks 198.19.10.50/24: %s", ifaddr)
		}
	})

	t.Run("ip-range", func(t *testing.T) {
		createNetwork(t, h, "ipam2", "--subnet", "198.19.11.0/24", "--ip-range", "198.19.11.128/25")
		rng := netip.MustParsePrefix("198.19.11.128/25")
		for range 2 {
			c := runContainer(t, h, "--network", "ipam2", image, "sleep", "3600")
			ip := containerIP(t, h, c, "ipam2")
			a, err := netip.ParseAddr(ip)
			if err != nil || !rng.Contains(a) {
				t.Errorf("container address %q is not in --ip-range %s", ip, rng)
			}
		}
	})

	t.Run("gateway", func(t *testing.T) {
		createNetwork(t, h, "ipam3", "--subnet", "198.19.12.0/24", "--gateway", "198.19.12.254")
		cfg := mustDocker(t, h, "network", "inspect", "-f", `{{range .IPAM.Config}}{{.Gateway}}{{end}}`, "ipam3")
		if cfg != "198.19.12.254" {
			t.Errorf("network inspect gateway = %q, want 198.19.12.254", cfg)
		}
		c := runContainer(t, h, "--network", "ipam3", image, "sleep", "3600")
		if gw := mustDocker(t, h, "inspect", "-f", `{{(index .NetworkSettings.Networks "ipam3").Gateway}}`, c); gw != "198.19.12.254" {
			t.Errorf("container gateway = %s, want 198.19.12.254", gw)
		}
		if ip := containerIP(t, h, c, "ipam3"); ip == "198.19.12.254" {
			t.Errorf("container got the gateway address %s", ip)
		}
		route := mustDocker(t, h, "exec", c, "ip", "route")
		if !strings.Contains(route, "default via 198.19.12.254") {
			t.Errorf("container routes lack default via 198.19.12.254:\n%s", route)
		}
	})

	t.Run("default pool", func(t *testing.T) {
		pool := netip.MustParsePrefix("198.19.128.0/17")
		var subnets []netip.Prefix
		for _, name := range []string{"ipam4", "ipam5"} {
			createNetwork(t, h, name)
			sub := mustDocker(t, h, "network", "inspect", "-f", `{{range .IPAM.Config}}{{.Subnet}}{{end}}`, name)
			p, err := netip.ParsePrefix(sub)
			if err != nil {
				t.Fatalf("network %s: subnet %q: %v", name, sub, err)
			}
			if p.Bits() != 24 || !pool.Contains(p.Addr()) {
				t.Errorf("network %s got subnet %s, want a /24 inside POOL %s", name, p, pool)
			}
			subnets = append(subnets, p)
			c := runContainer(t, h, "--network", name, image, "sleep", "3600")
			a, err := netip.ParseAddr(containerIP(t, h, c, name))
			if err != nil || !p.Contains(a) {
				t.Errorf("container on %s got %v, outside %s", name, a, p)
			}
		}
		if len(subnets) == 2 && subnets[0].Overlaps(subnets[1]) {
			t.Errorf("two networks without --subnet got overlapping subnets %s and %s", subnets[0], subnets[1])
		}
	})
}

// runFails runs a container that must not start and returns docker's
// error output; the container, if created, is removed.
func runFails(t *testing.T, host, name string, args ...string) string {
	t.Helper()
	t.Cleanup(func() { _, _, _ = docker(host, "rm", "-f", name) })
	out, stderr, err := docker(host, append([]string{"run", "-d", "--name", name}, args...)...)
	if err == nil {
		t.Fatalf("docker run %s on %s succeeded (%s), want a refusal", name, host, out)
	}
	return stderr
}

// clusterTaker runs containers on a cluster network and checks each
// address: inside rng, not excluded (the gateway), and held by no other
// container it started. dock runs docker on a host (nil: the suite's hosts).
type clusterTaker struct {
	t       *testing.T
	nw      string
	rng     netip.Prefix
	exclude string
	seen    map[string]string // address → host
	dock    func(host string, args ...string) (string, string, error)
}

func (c *clusterTaker) docker(h string, args ...string) string {
	c.t.Helper()
	run := c.dock
	if run == nil {
		run = docker
	}
	out, stderr, err := run(h, args...)
	if err != nil {
		c.t.Fatalf("docker %s on %s: %v: %s", strings.Join(args, " "), h, err, stderr)
	}
	return strings.TrimSpace(out)
}

func (c *clusterTaker) take(h string) string {
	c.t.Helper()
	id := c.docker(h, "run", "-d", "--network", c.nw, image, "sleep", "3600")
	c.t.Cleanup(func() { _ = c.docker(h, "rm", "-f", id) })
	ip := c.docker(h, "inspect", "-f", `{{(index .NetworkSettings.Networks "`+c.nw+`").IPAddress}}`, id)
	if a, err := netip.ParseAddr(ip); err != nil || !c.rng.Contains(a) || ip == c.exclude {
		c.t.Fatalf("%s: container address %q outside %s or the gateway %s", h, ip, c.rng, c.exclude)
	}
	if other, dup := c.seen[ip]; dup {
		c.t.Fatalf("%s and %s both got %s", other, h, ip)
	}
	c.seen[ip] = h
	return id
}

// TestIPAMClusterSmallRange: a /29 on 3 hosts (5 addresses besides the
// gateway) is fully usable from one host although the first division
// gives it 2 or 4, a sixth container is refused saying the range is full,
// and an address freed on one host is used by another.
func TestIPAMClusterSmallRange(t *testing.T) {
	needHosts(t, 3)
	hosts := clusterHosts()
	for _, h := range hosts {
		checkClean(t, h)
		waitMembers(t, 30*time.Second, h, hosts)
	}
	const nw, subnet = "ipsmall", "198.19.90.0/29"
	for _, h := range hosts {
		createNetwork(t, h, nw, "--subnet", subnet)
	}
	tk := &clusterTaker{t: t, nw: nw, rng: netip.MustParsePrefix(subnet), exclude: "198.19.90.1", seen: map[string]string{}}
	var onH3 []string
	for range 5 {
		onH3 = append(onH3, tk.take(hosts[2]))
	}
	stderr := runFails(t, hosts[2], "ipsmall-6", "--network", nw, image, "sleep", "3600")
	if !strings.Contains(stderr, "the range is full") {
		t.Errorf("sixth container refused with %q, want it to say the range is full", stderr)
	}
	freed := containerIP(t, hosts[2], onH3[0], nw)
	mustDocker(t, hosts[2], "rm", "-f", onH3[0])
	delete(tk.seen, freed)
	c := tk.take(hosts[1])
	if ip := containerIP(t, hosts[1], c, nw); ip != freed {
		t.Errorf("%s got %s, want the address %s freed on %s", hosts[1], ip, freed, hosts[2])
	}
}

// TestIPAMClusterSlash28Over4Hosts: a /28 --ip-range holding the gateway
// (15 addresses for containers) over four hosts, a harness run of its own
// (the cluster suite's fourth host is the outsider with another key; a
// run of four hosts comes up in seconds): 15 containers created
// round-robin all get distinct addresses in the range, though the first
// division gives each host 4, and the 16th is refused saying the range is
// full.
func TestIPAMClusterSlash28Over4Hosts(t *testing.T) {
	needHosts(t, 3)
	r := swarmRun{run: fmt.Sprintf("q%06x", os.Getpid()&0xffffff), hosts: []string{"h1", "h2", "h3", "h4"}}
	upRun(t, r.run, len(r.hosts), "PLUGIN_SETTINGS=GOSSIP_KEY="+gossipKey)
	for _, h := range r.hosts {
		eventually(t, 30*time.Second, h+" sees four members alive", func() error {
			out, stderr, err := runCmd(cmdTimeout, s.harness, "status", r.run, h, "--json")
			if err != nil {
				return fmt.Errorf("%v: %s", err, stderr)
			}
			var st hostStatus
			if err := json.Unmarshal([]byte(out), &st); err != nil {
				return err
			}
			alive := 0
			for _, m := range st.Members {
				if m.alive() {
					alive++
				}
			}
			if alive != len(r.hosts) {
				return fmt.Errorf("%d members alive, want %d", alive, len(r.hosts))
			}
			return nil
		})
	}
	const nw, subnet, rng, gw = "iprr", "198.19.92.0/24", "198.19.92.16/28", "198.19.92.16"
	for _, h := range r.hosts {
		r.mustDocker(t, h, "network", "create", "-d", pluginName, "--ipam-driver", pluginName,
			"--subnet", subnet, "--ip-range", rng, "--gateway", gw, nw)
		r.cleanup(t, h, "network", "rm", nw)
	}
	tk := &clusterTaker{t: t, nw: nw, rng: netip.MustParsePrefix(rng), exclude: gw, seen: map[string]string{}, dock: r.docker}
	start := time.Now()
	for i := range 15 {
		tk.take(r.hosts[i%len(r.hosts)])
	}
	t.Logf("15 containers round-robin in %v: %v", time.Since(start).Round(time.Millisecond), tk.seen)
	_, stderr, err := r.docker(r.hosts[15%len(r.hosts)], "run", "-d", "--name", "iprr-16", "--network", nw, image, "sleep", "3600")
	r.cleanup(t, r.hosts[15%len(r.hosts)], "rm", "-f", "iprr-16")
	want := "no free address left in --ip-range " + rng + " of " + subnet + ": the range is full"
	if err == nil || !strings.Contains(stderr, want) {
		t.Errorf("16th container: %v, %q; want a refusal saying %q", err, stderr, want)
	}
}

// TestIPAMClusterAuxMismatch: a host whose --aux-address list lacks another
// host's aux address gives its containers nothing, and a host adding one
// the first host lacks cannot create the network; both errors name the
// host and the address.
func TestIPAMClusterAuxMismatch(t *testing.T) {
	needHosts(t, 3)
	hosts := clusterHosts()
	for _, h := range hosts {
		checkClean(t, h)
		waitMembers(t, 30*time.Second, h, hosts)
	}
	const nw = "ipaux"
	base := []string{"--subnet", "198.19.91.0/24", "--ip-range", "198.19.91.128/25"}
	createNetwork(t, hosts[0], nw, append(base, "--aux-address", "a=198.19.91.10", "--aux-address", "b=198.19.91.11")...)
	runContainer(t, hosts[0], "--network", nw, image, "sleep", "3600")

	createNetwork(t, hosts[1], nw, append(base, "--aux-address", "a=198.19.91.10")...)
	eventually(t, 20*time.Second, hosts[1]+" refuses containers", func() error {
		stderr := runFails(t, hosts[1], "ipaux-h2", "--network", nw, image, "sleep", "3600")
		_, _, _ = docker(hosts[1], "rm", "-f", "ipaux-h2")
		if !strings.Contains(stderr, "host "+hosts[0]) || !strings.Contains(stderr, "--aux-address 198.19.91.11, which this host's network lacks") {
			return fmt.Errorf("refused with %q, want %s and 198.19.91.11 named", stderr, hosts[0])
		}
		return nil
	})

	args := append([]string{"network", "create", "-d", pluginName, "--ipam-driver", pluginName}, base...)
	args = append(args, "--aux-address", "a=198.19.91.10", "--aux-address", "b=198.19.91.11", "--aux-address", "c=198.19.91.12", nw)
	out, stderr, err := docker(hosts[2], args...)
	if err == nil {
		_, _, _ = docker(hosts[2], "network", "rm", nw)
		t.Fatalf("%s created the network with an extra aux address (%s)", hosts[2], out)
	}
	if !strings.Contains(stderr, "--aux-address 198.19.91.12: host "+hosts[0]) {
		t.Errorf("%s: network create refused with %q, want 198.19.91.12 and %s named", hosts[2], stderr, hosts[0])
	}
	// h1 is not stopped by the others' mistakes.
	runContainer(t, hosts[0], "--network", nw, image, "sleep", "3600")
}
