//go:build e2e

// Package e2e holds grapevine's end-to-end tests: real dockerd hosts, each in its own
// network namespace, made by scripts/harness.sh, with the plugin built from this
// checkout. Tests assert what a user of Docker sees.
//
// Run with: go test -tags e2e -race -count=1 -v ./e2e/   (root, Debian; `make e2e`)
//
// GV_E2E_HOSTS selects the suite: 1 (default) runs the single-host tests on h1;
// 3 (or more) runs the cluster tests: hosts h1..hN peer with each other using one
// GOSSIP_KEY, plus one outsider host h(N+1) that lists them as PEERS but has a
// different key; the Swarm tests run there too (the SCOPE=global case on a run of
// its own). GV_E2E_KEEP=1 leaves the hosts up after the run for inspection (tear
// down with scripts/harness.sh down RUN). PLUGIN_DIR chooses the plugin directory
// (default build/plugin, built from this checkout unless GV_E2E_NO_BUILD=1).
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// suite is the state of the one harness run shared by all tests of the package.
type suite struct {
	repo    string // repository root
	harness string // path of scripts/harness.sh
	run     string // the harness RUN prefix
	hosts   int    // hosts of the suite: h1..h<hosts>
	// outsider is the extra host with a wrong GOSSIP_KEY in the cluster suite ("" in
	// the single-host suite).
	outsider  string
	pluginDir string // the plugin directory (config.json, rootfs/)

	// extraRuns are harness runs that single tests brought up (upRun); a signal
	// tears them down too.
	extraMu   sync.Mutex
	extraRuns map[string]bool
}

var s suite

const (
	lanAddr     = "198.18.0.200"
	cmdTimeout  = 2 * time.Minute
	pluginName  = "grapevine:latest"
	image       = "gvtest/busybox:latest"
	linkPrefix  = "gv"
	ruleComment = "grapevine:"
)

func TestMain(m *testing.M) {
	os.Exit(mainWithHarness(m))
}

func mainWithHarness(m *testing.M) (code int) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "e2e: must run as root (real dockerd hosts in network namespaces)")
		return 1
	}
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	s.repo = filepath.Dir(wd)
	s.harness = filepath.Join(s.repo, "scripts", "harness.sh")
	s.hosts = 1
	if v := os.Getenv("GV_E2E_HOSTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 16 {
			fmt.Fprintf(os.Stderr, "e2e: GV_E2E_HOSTS=%q: want a number 1..16\n", v)
			return 1
		}
		s.hosts = n
	}
	s.run = fmt.Sprintf("e%06x", os.Getpid()&0xffffff)
	s.pluginDir = os.Getenv("PLUGIN_DIR")
	if s.pluginDir == "" {
		s.pluginDir = filepath.Join(s.repo, "build", "plugin")
		os.Setenv("PLUGIN_DIR", s.pluginDir) // for the harness
	}

	if os.Getenv("GV_E2E_NO_BUILD") != "1" {
		build := exec.Command(filepath.Join(s.repo, "scripts", "build-plugin.sh"))
		build.Env = append(os.Environ(), "OUT="+s.pluginDir)
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: building the plugin failed: %v\n%s", err, out)
			return 1
		}
	}

	n := s.hosts
	var upEnv []string
	if s.hosts > 1 {
		// the cluster suite: one key for h1..hN, another for the outsider
		n = s.hosts + 1
		s.outsider = fmt.Sprintf("h%d", n)
		upEnv = []string{
			fmt.Sprintf("MESH=%d", s.hosts),
			"PLUGIN_SETTINGS=GOSSIP_KEY=" + gossipKey,
			"PLUGIN_SETTINGS_" + s.outsider + "=GOSSIP_KEY=" + wrongGossipKey,
		}
	}
	return withRun(m.Run, s.run, n, upEnv)
}

// Gossip keys of the cluster suite (base64 of 16 bytes).
const (
	gossipKey      = "Z3JhcGV2aW5lLWUyZS0xNg==" // "grapevine-e2e-16"
	wrongGossipKey = "d3Jvbmcta2V5LTE2Ynl0ZQ==" // "wrong-key-16byte"
)

// withRun brings up harness run RUN with n hosts (env: extra environment for `up`),
// calls body, and always tears the run down again: on return, on panic and on
// SIGINT/SIGTERM. After the teardown it checks that nothing of the run is left on the
// machine (namespaces, processes, mounts, plugin directories, cgroups, iptables rules
// in the root namespace); leftovers turn the result into a failure.
func withRun(body func() int, run string, n int, env []string) (code int) {
	rootRules, rootErr := rootIptables()
	var pluginIDs []string
	down := func() {
		if os.Getenv("GV_E2E_KEEP") == "1" {
			fmt.Fprintf(os.Stderr, "e2e: GV_E2E_KEEP=1: leaving run %s up (scripts/harness.sh down %s)\n", run, run)
			return
		}
		for i := 1; i <= n; i++ {
			if out, err := exec.Command(s.harness, "plugin-id", run, fmt.Sprintf("h%d", i)).Output(); err == nil {
				pluginIDs = append(pluginIDs, strings.TrimSpace(string(out)))
			}
		}
		start := time.Now()
		out, err := exec.Command(s.harness, "down", run).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2e: harness down %s: %v\n%s", run, err, out)
			code = 1
		}
		fmt.Fprintf(os.Stderr, "e2e: run %s torn down in %v\n", run, time.Since(start).Round(time.Millisecond))
		if out, err := exec.Command(s.harness, append([]string{"leftovers", run}, pluginIDs...)...).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: run %s left things behind:\n%s", run, out)
			code = 1
		}
		if after, err := rootIptables(); rootErr == nil && err == nil && after != rootRules {
			fmt.Fprintf(os.Stderr, "e2e: iptables rules of the root namespace changed during run %s:\nbefore:\n%s\nafter:\n%s", run, rootRules, after)
			code = 1
		}
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case sig := <-sigs:
			fmt.Fprintf(os.Stderr, "e2e: %v: tearing down %s\n", sig, run)
			s.extraMu.Lock()
			for r := range s.extraRuns {
				fmt.Fprintf(os.Stderr, "e2e: tearing down %s\n", r)
				_ = exec.Command(s.harness, "down", r).Run()
			}
			s.extraMu.Unlock()
			down()
			os.Exit(2)
		case <-stop:
		}
	}()
	defer func() {
		if r := recover(); r != nil {
			down()
			panic(r)
		}
		down()
	}()

	up := exec.Command(s.harness, "up", run, strconv.Itoa(n))
	up.Env = append(os.Environ(), env...)
	up.Stdout, up.Stderr = os.Stderr, os.Stderr
	start := time.Now()
	if err := up.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: harness up %s %d: %v\n", run, n, err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "e2e: %d host(s) up as run %s in %v\n", n, run, time.Since(start).Round(time.Millisecond))
	return body()
}

// rootIptables is the root namespace's iptables ruleset without counters and comments.
func rootIptables() (string, error) {
	out, err := exec.Command("iptables-save").Output()
	if err != nil {
		return "", err
	}
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasPrefix(l, ":") {
			if i := strings.LastIndex(l, " ["); i >= 0 {
				l = l[:i]
			}
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n"), nil
}

// singleHost skips t in the cluster suite: it was written for one host.
func singleHost(t *testing.T) {
	t.Helper()
	if s.hosts != 1 {
		t.Skipf("single-host test; this is the %d-host suite (GV_E2E_HOSTS=1 runs it)", s.hosts)
	}
}

// needHosts skips t unless the suite has at least n hosts.
func needHosts(t *testing.T, n int) {
	t.Helper()
	if s.hosts < n {
		t.Skipf("needs %d hosts; run with GV_E2E_HOSTS=%d", n, n)
	}
}

// ---------------------------------------------------------------------------
// running things

func runCmd(timeout time.Duration, name string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s %s: timed out after %v: %w", name, strings.Join(args, " "), timeout, ctx.Err())
	}
	return stdout.String(), stderr.String(), err
}

// harnessCmd runs scripts/harness.sh CMD RUN args….
func harnessCmd(cmd string, args ...string) (string, string, error) {
	return runCmd(cmdTimeout, s.harness, append([]string{cmd, s.run}, args...)...)
}

// docker runs the Debian docker client against host (h1, h2, …).
func docker(host string, args ...string) (string, string, error) {
	return runCmd(cmdTimeout, "/usr/bin/docker", append([]string{"-H", dockerHost(host)}, args...)...)
}

// inHost runs cmd in host's network namespace (the root mount namespace's binaries).
func inHost(host string, cmd ...string) (string, string, error) {
	return runCmd(cmdTimeout, "nsenter", append([]string{"--net=" + netnsPath(host), "--"}, cmd...)...)
}

// inLAN runs cmd on the LAN machine: a namespace on the underlay without Docker.
func inLAN(cmd ...string) (string, string, error) {
	return runCmd(cmdTimeout, "nsenter", append([]string{"--net=" + netnsPath("lan"), "--"}, cmd...)...)
}

func dockerHost(host string) string {
	return "unix:///run/gvtest/" + s.run + "/" + host + "/docker.sock"
}

func netnsPath(host string) string { return "/run/netns/" + s.run + "-" + host }

// hostAddr is host's underlay address: h1 → 198.18.0.11.
func hostAddr(host string) string {
	i, err := strconv.Atoi(strings.TrimPrefix(host, "h"))
	if err != nil {
		panic("bad host name " + host)
	}
	return fmt.Sprintf("198.18.0.%d", 10+i)
}

func mustDocker(t *testing.T, host string, args ...string) string {
	t.Helper()
	out, stderr, err := docker(host, args...)
	if err != nil {
		t.Fatalf("docker %s on %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), host, err, out, stderr)
	}
	return strings.TrimSpace(out)
}

func mustInHost(t *testing.T, host string, cmd ...string) string {
	t.Helper()
	out, stderr, err := inHost(host, cmd...)
	if err != nil {
		t.Fatalf("%s in %s: %v\nstdout: %s\nstderr: %s", strings.Join(cmd, " "), host, err, out, stderr)
	}
	return out
}

// eventually polls f until it returns nil or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	eventuallyOr(t, timeout, what, f, func() string { return "" })
}

// ---------------------------------------------------------------------------
// networks and containers with cleanup

// createNetwork creates a grapevine network (driver and IPAM) on host and removes it
// in t.Cleanup, then checks that nothing of it is left in the host's kernel.
func createNetwork(t *testing.T, host, name string, args ...string) string {
	t.Helper()
	full := append([]string{"network", "create", "-d", pluginName, "--ipam-driver", pluginName}, args...)
	id := mustDocker(t, host, append(full, name)...)
	t.Cleanup(func() {
		if _, stderr, err := docker(host, "network", "rm", name); err != nil {
			t.Errorf("network rm %s on %s: %v: %s", name, host, err, stderr)
			return
		}
		assertNetworkGone(t, host, id)
	})
	return id
}

// runContainer starts a detached container (docker run -d args…) and force-removes
// it in t.Cleanup. It returns the container id.
func runContainer(t *testing.T, host string, args ...string) string {
	t.Helper()
	id := mustDocker(t, host, append([]string{"run", "-d"}, args...)...)
	t.Cleanup(func() {
		if _, stderr, err := docker(host, "rm", "-f", id); err != nil {
			t.Errorf("rm -f %s on %s: %v: %s", id, host, err, stderr)
		}
	})
	return id
}

// containerIP is the container's address on the named network.
func containerIP(t *testing.T, host, container, network string) string {
	t.Helper()
	return mustDocker(t, host, "inspect", "-f", `{{(index .NetworkSettings.Networks "`+network+`").IPAddress}}`, container)
}

// endpointID is the container's endpoint id on the named network.
func endpointID(t *testing.T, host, container, network string) string {
	t.Helper()
	return mustDocker(t, host, "inspect", "-f", `{{(index .NetworkSettings.Networks "`+network+`").EndpointID}}`, container)
}

// checkClean registers, first, a cleanup that runs after every other cleanup of the
// test: when all its networks and containers are gone, no grapevine link may remain
// on host.
func checkClean(t *testing.T, host string) {
	t.Helper()
	t.Cleanup(func() {
		if links := grapevineLinks(t, host, ""); len(links) > 0 {
			t.Errorf("grapevine links left on %s after the test: %v", host, links)
		}
	})
}

// grapevineLinks lists links on host whose names start with "gv" and contain sub.
func grapevineLinks(t *testing.T, host, sub string) []string {
	t.Helper()
	var names []string
	for _, ns := range append([]string{netnsPath(host)}, networkSpaces(host)...) {
		out, stderr, err := runCmd(cmdTimeout, "nsenter", "--net="+ns, "--", "ip", "-o", "link", "show")
		if err != nil {
			t.Fatalf("ip link show in %s: %v: %s", ns, err, stderr)
		}
		for _, name := range linkNames(out) {
			if strings.HasPrefix(name, linkPrefix) && strings.Contains(name, sub) {
				names = append(names, name)
			}
		}
	}
	return names
}

// linkNames parses `ip -o link show`.
func linkNames(out string) []string {
	var names []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name := strings.TrimSuffix(f[1], ":")
		if i := strings.IndexByte(name, '@'); i >= 0 {
			name = name[:i]
		}
		names = append(names, name)
	}
	return names
}

// networkSpaces lists the pins of the isolated network namespaces grapevine
// made on host (one per VXLAN network, under the plugin's propagated mount).
func networkSpaces(host string) []string {
	pins, _ := filepath.Glob("/run/gvtest/" + s.run + "/" + host + "/data/plugins/*/propagated-mount/netns/" + linkPrefix + "*")
	var out []string
	for _, p := range pins {
		// a pin whose namespace is gone is a plain file: nsenter would fail
		if _, _, err := runCmd(cmdTimeout, "nsenter", "--net="+p, "--", "true"); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// inLinkNS runs cmd in the network namespace on host that holds the link dev:
// the host's own, or a network's isolated namespace.
func inLinkNS(host, dev string, cmd ...string) (string, string, error) {
	ns := netnsPath(host)
	for _, p := range networkSpaces(host) {
		if _, _, err := runCmd(cmdTimeout, "nsenter", "--net="+p, "--", "ip", "link", "show", "dev", dev); err == nil {
			ns = p
			break
		}
	}
	return runCmd(cmdTimeout, "nsenter", append([]string{"--net=" + ns, "--"}, cmd...)...)
}

func mustInLinkNS(t *testing.T, host, dev string, cmd ...string) string {
	t.Helper()
	out, stderr, err := inLinkNS(host, dev, cmd...)
	if err != nil {
		t.Fatalf("%s in %s (namespace of %s): %v\nstdout: %s\nstderr: %s", strings.Join(cmd, " "), host, dev, err, out, stderr)
	}
	return out
}

// grapevineRules lists iptables rules (filter and nat) on host whose comment names
// the network id (first 12 characters).
func grapevineRules(t *testing.T, host, netID string) []string {
	t.Helper()
	var rules []string
	for _, table := range []string{"filter", "nat", "mangle", "raw"} {
		out := mustInHost(t, host, "iptables", "-t", table, "-S")
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, ruleComment+netID[:12]) {
				rules = append(rules, table+": "+line)
			}
		}
	}
	return rules
}

// assertNetworkGone checks that no link or rule of the network remains on host.
func assertNetworkGone(t *testing.T, host, netID string) {
	t.Helper()
	// link names carry a prefix of the network id (gvb-<id[:11]>, gvx-<id[:11]>).
	if links := grapevineLinks(t, host, netID[:11]); len(links) > 0 {
		t.Errorf("links of removed network %.12s left on %s: %v", netID, host, links)
	}
	if rules := grapevineRules(t, host, netID); len(rules) > 0 {
		t.Errorf("iptables rules of removed network %.12s left on %s:\n%s", netID, host, strings.Join(rules, "\n"))
	}
}

// ---------------------------------------------------------------------------
// traffic helpers

// httpGet sends a minimal HTTP/1.0 GET with busybox nc; run is inHost/inLAN-like.
func httpGetCmd(addr string, port int) []string {
	return []string{"sh", "-c", fmt.Sprintf(`printf 'GET / HTTP/1.0\r\n\r\n' | busybox nc -w 3 %s %d`, addr, port)}
}

// httpBody returns what follows the header of an HTTP response.
func httpBody(resp string) string {
	if _, after, ok := strings.Cut(resp, "\r\n\r\n"); ok {
		return strings.TrimSpace(after)
	}
	return strings.TrimSpace(resp)
}

// webServer runs a busybox httpd serving body on port 80 inside a container.
func webServer(t *testing.T, host string, body string, args ...string) string {
	t.Helper()
	script := fmt.Sprintf("mkdir -p /www && echo %s > /www/index.html && exec httpd -f -p 80 -h /www", body)
	return runContainer(t, host, append(args, image, "sh", "-c", script)...)
}

// expectHTTP polls until an HTTP GET run by get returns body.
func expectHTTP(t *testing.T, what, body string, get func() (string, string, error)) {
	t.Helper()
	eventually(t, 20*time.Second, what, func() error {
		out, stderr, err := get()
		if err != nil {
			return fmt.Errorf("%v: %s", err, stderr)
		}
		if got := httpBody(out); got != body {
			return fmt.Errorf("body %q, want %q (response %q)", got, body, out)
		}
		return nil
	})
}

// inNetns runs fn on a thread of its own inside the network namespace at
// nsPath (a /run/netns file or /proc/PID/ns/net) and returns fn's error.
// Sockets fn opens stay in that namespace and may be used from any
// goroutine. The thread is locked and never unlocked: it ends with its
// goroutine instead of returning to the scheduler inside another namespace.
func inNetns(nsPath string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open(nsPath)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", nsPath, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// procNetns is the network namespace of process pid, for inNetns.
func procNetns(pid int) string { return fmt.Sprintf("/proc/%d/ns/net", pid) }

// listenInNetns opens a TCP listener inside the network namespace at nsPath.
func listenInNetns(nsPath, addr string) (l net.Listener, err error) {
	err = inNetns(nsPath, func() (err error) {
		l, err = net.Listen("tcp4", addr)
		return err
	})
	return l, err
}

// peerSeenByLAN starts a listener on the LAN machine, has connect() dial it, and
// returns the source address the LAN machine saw.
func peerSeenByLAN(t *testing.T, port int, connect func() (string, string, error)) (string, error) {
	t.Helper()
	l, err := listenInNetns(netnsPath("lan"), fmt.Sprintf("%s:%d", lanAddr, port))
	if err != nil {
		t.Fatalf("listen on the LAN machine: %v", err)
	}
	defer l.Close()
	type accepted struct {
		peer string
		err  error
	}
	ch := make(chan accepted, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			ch <- accepted{err: err}
			return
		}
		defer c.Close()
		host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		_, _ = c.Write([]byte("seen\n"))
		ch <- accepted{peer: host}
	}()
	out, stderr, cerr := connect()
	select {
	case a := <-ch:
		return a.peer, a.err
	case <-time.After(5 * time.Second):
		return "", fmt.Errorf("no connection reached the LAN machine (client: %v, %q, %q)", cerr, out, stderr)
	}
}

// pluginPID is the pid of host's running plugin process.
func pluginPID(host string) (int, error) {
	out, stderr, err := harnessCmd("plugin-pid", host)
	if err != nil {
		return 0, fmt.Errorf("no plugin process on %s: %v %s", host, err, stderr)
	}
	return strconv.Atoi(strings.TrimSpace(out))
}

var dportRe = regexp.MustCompile(`--dport (\d+)`)

// publishedPort finds the host port grapevine mapped for the endpoint: Docker 20.10
// cannot show a remote driver's port map (`docker port` prints nothing), so the
// DNAT rule that carries the endpoint's id in its comment is the user-visible truth.
func publishedPort(t *testing.T, host, netID, epID string) (int, error) {
	t.Helper()
	out := mustInHost(t, host, "iptables", "-t", "nat", "-S")
	tag := ruleComment + netID[:12] + ":" + epID[:12]
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, tag) && strings.Contains(line, "DNAT") {
			if m := dportRe.FindStringSubmatch(line); m != nil {
				return strconv.Atoi(m[1])
			}
		}
	}
	return 0, errors.New("no DNAT rule for endpoint " + epID[:12])
}
