//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// checkPortBindings checks where the ports published by
// `-p PORT:80 -p 127.0.0.1:PORT+1:80 -p ADDR:PORT+2:80` answer, from the
// host (inHost) and from the LAN machine (inLAN), for grapevine's container
// ("grapevine", on PORT…) and Docker's bridge ("bridge", on PORT+10…, the
// control): every address, 127.0.0.1 included, for the first; the host only
// for the second; ADDR only for the third.
func checkPortBindings(t *testing.T, addr string, port int, inHost, inLAN prober) {
	t.Helper()
	type where struct {
		from string // "host" or "lan"
		addr string
		port int // grapevine's; Docker's is port+10
		want bool
	}
	p0, p1, p2 := port, port+1, port+2
	checks := []where{
		{"host", "127.0.0.1", p0, true}, {"host", addr, p0, true}, {"lan", addr, p0, true},
		{"host", "127.0.0.1", p1, true}, {"host", addr, p1, false}, {"lan", addr, p1, false},
		{"host", addr, p2, true}, {"host", "127.0.0.1", p2, false}, {"lan", addr, p2, true},
	}
	get := func(from, a string, port int) func() (string, string, error) {
		return func() (string, string, error) {
			if from == "lan" {
				return inLAN(httpGetCmd(a, port)...)
			}
			return inHost(httpGetCmd(a, port)...)
		}
	}
	for _, c := range checks {
		for _, side := range []struct {
			body string
			port int
		}{{"bridge", c.port + 10}, {"grapevine", c.port}} {
			what := fmt.Sprintf("%s: from the %s to %s:%d", side.body, c.from, c.addr, side.port)
			if c.want {
				expectHTTP(t, what, side.body, get(c.from, c.addr, side.port))
			} else {
				expectNoHTTP(t, what, side.body, get(c.from, c.addr, side.port))
			}
		}
	}
}

// publishArgs are the three bindings checkPortBindings checks, from port.
func publishArgs(addr string, port int) []string {
	return []string{"-p", fmt.Sprintf("%d:80", port), "-p", fmt.Sprintf("127.0.0.1:%d:80", port+1), "-p", fmt.Sprintf("%s:%d:80", addr, port+2)}
}

// vhost is a host of a harness run that one test brought up (upRun).
type vhost struct{ run, host string }

func (v vhost) docker(args ...string) (string, string, error) {
	sock := "unix:///run/gvtest/" + v.run + "/" + v.host + "/docker.sock"
	return runCmd(cmdTimeout, "/usr/bin/docker", append([]string{"-H", sock}, args...)...)
}

func (v vhost) mustDocker(t *testing.T, args ...string) string {
	t.Helper()
	out, stderr, err := v.docker(args...)
	if err != nil {
		t.Fatalf("docker %s on %s (run %s): %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), v.host, v.run, err, out, stderr)
	}
	return strings.TrimSpace(out)
}

func (v vhost) inHost(cmd ...string) (string, string, error) {
	return runCmd(cmdTimeout, "nsenter", append([]string{"--net=/run/netns/" + v.run + "-" + v.host, "--"}, cmd...)...)
}

func (v vhost) inLAN(cmd ...string) (string, string, error) {
	return runCmd(cmdTimeout, "nsenter", append([]string{"--net=/run/netns/" + v.run + "-lan", "--"}, cmd...)...)
}

func (v vhost) mustInHost(t *testing.T, cmd ...string) string {
	t.Helper()
	out, stderr, err := v.inHost(cmd...)
	if err != nil {
		t.Fatalf("%s in %s (run %s): %v\nstdout: %s\nstderr: %s", strings.Join(cmd, " "), v.host, v.run, err, out, stderr)
	}
	return out
}

// container runs `docker run -d args…` and removes it in t.Cleanup.
func (v vhost) container(t *testing.T, args ...string) string {
	t.Helper()
	id := v.mustDocker(t, append([]string{"run", "-d"}, args...)...)
	t.Cleanup(func() { _, _, _ = v.docker("rm", "-f", id) })
	return id
}

// web runs a busybox httpd answering body on port 80.
func (v vhost) web(t *testing.T, body string, args ...string) string {
	t.Helper()
	script := fmt.Sprintf("mkdir -p /www && echo %s > /www/index.html && exec httpd -f -p 80 -h /www", body)
	return v.container(t, append(args, image, "sh", "-c", script)...)
}

// network creates a grapevine network and removes it in t.Cleanup.
func (v vhost) network(t *testing.T, name string, args ...string) string {
	t.Helper()
	id := v.mustDocker(t, append(append([]string{"network", "create", "-d", pluginName, "--ipam-driver", pluginName}, args...), name)...)
	t.Cleanup(func() { _, _, _ = v.docker("network", "rm", name) })
	return id
}

func (v vhost) ip(t *testing.T, container, network string) string {
	t.Helper()
	return v.mustDocker(t, "inspect", "-f", `{{(index .NetworkSettings.Networks "`+network+`").IPAddress}}`, container)
}

// jumpTargets lists what the chain's rules jump to, in order, as ipt
// (iptables-nft or iptables-legacy) prints them.
func jumpTargets(t *testing.T, v vhost, ipt, table, chain string) []string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(v.mustInHost(t, ipt, "-t", table, "-S", chain), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "-A" {
			out = append(out, f[len(f)-1])
		}
	}
	return out
}

// TestLegacyHostWithUserlandProxy: grapevine beside Docker's bridge on a
// host whose dockerd is set up as many older installations are, unlike the
// suite's (a one-host run of its own): it writes its rules with
// iptables-legacy, and runs with userland-proxy=true (docker-proxy answers
// Docker's published ports, 127.0.0.1 included). grapevine finds Docker's
// rules in iptables-legacy and writes its own there, after Docker's jumps,
// nothing in nf_tables; published ports answer as Docker's do; isolation
// holds both ways; removing the network removes its rules.
func TestLegacyHostWithUserlandProxy(t *testing.T) {
	singleHost(t)
	v := vhost{run: fmt.Sprintf("v%06x", os.Getpid()&0xffffff), host: "h1"}
	upRun(t, v.run, 1, "USERLAND_PROXY_h1=true", "IPTABLES_h1=legacy")
	if got := jumpTargets(t, v, "iptables-legacy", "filter", "FORWARD"); len(got) == 0 || got[0] != "DOCKER-USER" {
		t.Fatalf("dockerd's FORWARD in iptables-legacy: %q; the host's Docker does not write with iptables-legacy", got)
	}
	addr := hostAddr(v.host)
	netID := v.network(t, "lgnet", "--subnet", "198.19.25.0/24")
	gweb := v.web(t, "grapevine", append([]string{"--network", "lgnet"}, publishArgs(addr, 18141)...)...)
	gcli := v.container(t, "--network", "lgnet", image, "sleep", "3600")
	bweb := v.web(t, "bridge", publishArgs(addr, 18151)...)
	bcli := v.container(t, image, "sleep", "3600")
	// the control really is Docker's userland proxy: it listens on the port
	if out := v.mustInHost(t, "ss", "-Hltnp", "sport = :18151"); !strings.Contains(out, "docker-proxy") {
		t.Fatalf("no docker-proxy listens on Docker's port 18151 (%q): the host does not run with userland-proxy=true", out)
	}

	eventually(t, 20*time.Second, "GRAPEVINE-FORWARD right after Docker's jumps in iptables-legacy", func() error {
		return grapevineAfterDocker(jumpTargets(t, v, "iptables-legacy", "filter", "FORWARD"))
	})
	if nft := v.mustInHost(t, "iptables-nft-save"); strings.Contains(nft, "GRAPEVINE") {
		t.Errorf("grapevine wrote to nf_tables on a legacy host:\n%s", nft)
	}

	checkPortBindings(t, addr, 18141, v.inHost, v.inLAN)

	gIP, bIP := v.ip(t, gweb, "lgnet"), v.ip(t, bweb, "bridge")
	exec := func(c string) prober {
		return func(cmd ...string) (string, string, error) { return v.docker(append([]string{"exec", c}, cmd...)...) }
	}
	expectIsolated(t, "grapevine container", exec(gcli), gIP, bIP, false)
	expectIsolated(t, "docker0 container", exec(bcli), bIP, gIP, false)

	// removal: the network's rules go from the legacy tables
	for _, c := range []string{gweb, gcli} {
		v.mustDocker(t, "rm", "-f", c)
	}
	v.mustDocker(t, "network", "rm", "lgnet")
	tag := ruleComment + netID[:12]
	if out := v.mustInHost(t, "iptables-legacy-save"); strings.Contains(out, tag) {
		t.Errorf("rules of the removed network %.12s remain in iptables-legacy:\n%s", netID, out)
	}
}

// TestNewDockerNetworkIsolatedPromptly: a network Docker creates is isolated
// from grapevine's within a few seconds (the new bridge triggers a firewall
// sync), both ways, and grapevine's FORWARD jump is back after Docker's;
// the periodic reconcile (30 s) is only the backstop.
func TestNewDockerNetworkIsolatedPromptly(t *testing.T) {
	singleHost(t)
	const h = "h1"
	checkClean(t, h)
	createNetwork(t, h, "fwnew", "--subnet", "198.19.26.0/24")
	gweb := webServer(t, h, "fwnew-web", "--network", "fwnew")
	gcli := runContainer(t, h, "--network", "fwnew", image, "sleep", "3600")
	gIP := containerIP(t, h, gweb, "fwnew")

	start := time.Now()
	id := mustDocker(t, h, "network", "create", "--subnet", "100.64.126.0/24", "fwnew-br")
	t.Cleanup(func() { _, _, _ = docker(h, "network", "rm", "fwnew-br") })
	br := "br-" + id[:12]
	drops := []string{"-A GRAPEVINE-ISOLATION -o " + br + " ", "-A GRAPEVINE-ISOLATION-IN -i " + br + " "}
	var took time.Duration
	eventually(t, 5*time.Second, "grapevine's isolation rules for "+br+" and its FORWARD jump after Docker's", func() error {
		rules := mustInHost(t, h, "iptables", "-S")
		for _, d := range drops {
			if !strings.Contains(rules, d) {
				return fmt.Errorf("no rule %q… in\n%s", d, rules)
			}
		}
		took = time.Since(start)
		return grapevineAfterDocker(forwardTargets(t, h))
	})
	t.Logf("isolation rules for %s %v after docker network create returned", br, took.Round(time.Millisecond))

	bweb := runContainer(t, h, "--network", "fwnew-br", image, "sleep", "3600")
	bcli := runContainer(t, h, "--network", "fwnew-br", image, "sleep", "3600")
	bIP := containerIP(t, h, bweb, "fwnew-br")
	expectIsolated(t, "grapevine container", inContainer(h, gcli), gIP, bIP, false)
	expectIsolated(t, "new bridge's container", inContainer(h, bcli), bIP, gIP, false)
}
