package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// host is one harness host: its dockerd socket, network namespace and
// underlay address.
type host struct {
	name   string // h1, h2, …
	docker string // unix://…/docker.sock
	netns  string // /run/netns/RUN-hN
	addr   string // underlay IPv4
}

var exportRE = regexp.MustCompile(`(\w+)=(\S+)`)

// loadHosts reads `harness.sh env RUN`.
func loadHosts(harness, run string) ([]host, error) {
	out, err := runCmd(30*time.Second, harness, "env", run)
	if err != nil {
		return nil, err
	}
	vars := map[string]string{}
	for _, m := range exportRE.FindAllStringSubmatch(out, -1) {
		vars[m[1]] = m[2]
	}
	n, err := strconv.Atoi(vars["GV_HOSTS"])
	if err != nil || n < 2 {
		return nil, fmt.Errorf("harness run %s has GV_HOSTS=%q: the benchmark needs at least 2 hosts (harness.sh up %s 3)", run, vars["GV_HOSTS"], run)
	}
	hosts := make([]host, n)
	for i := range hosts {
		p := fmt.Sprintf("GV_H%d_", i+1)
		hosts[i] = host{name: fmt.Sprintf("h%d", i+1), docker: vars[p+"DOCKER_HOST"], netns: "/run/netns/" + vars[p+"NETNS"], addr: vars[p+"ADDR"]}
	}
	return hosts, nil
}

// runCmd runs a command and returns its trimmed stdout; the error carries
// stderr.
func runCmd(timeout time.Duration, name string, args ...string) (string, error) {
	return runCmdEnv(timeout, nil, name, args...)
}

// runCmdEnv is runCmd with env added to this process's environment.
func runCmdEnv(timeout time.Duration, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	// on timeout kill the whole process group (`go test` leaves its test
	// binary running otherwise, holding our pipes open)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return strings.TrimSpace(stdout.String()), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// docker runs the Debian docker client against h.
func (h host) dockerCmd(timeout time.Duration, args ...string) (string, error) {
	return runCmd(timeout, "/usr/bin/docker", append([]string{"-H", h.docker}, args...)...)
}

// inNS runs a command in the network namespace at path.
func inNS(timeout time.Duration, ns string, name string, args ...string) (string, error) {
	return runCmd(timeout, "nsenter", append([]string{"--net=" + ns, "--", name}, args...)...)
}

// container is a started container: its network namespace (via its pid) and
// its address on the network it was started on.
type container struct {
	h     host
	id    string
	netns string
	ip    string
}

const image = "gvtest/busybox:latest"

// startContainer runs a sleeping container on h attached to network net.
func startContainer(h host, net string, extra ...string) (container, error) {
	args := append([]string{"run", "-d", "--network", net}, extra...)
	args = append(args, image, "sleep", "1000000")
	id, err := h.dockerCmd(2*time.Minute, args...)
	if err != nil {
		return container{}, err
	}
	return inspectContainer(h, id)
}

func inspectContainer(h host, id string) (container, error) {
	out, err := h.dockerCmd(30*time.Second, "inspect", "-f", "{{.State.Pid}} {{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", id)
	if err != nil {
		return container{}, err
	}
	f := strings.Fields(out)
	if len(f) < 2 {
		return container{}, fmt.Errorf("container %s on %s has no address (inspect said %q)", id, h.name, out)
	}
	return container{h: h, id: id, netns: "/proc/" + f[0] + "/ns/net", ip: f[1]}, nil
}

// bridgeNetfilter says whether bridged traffic passes iptables on the hosts:
// net.bridge.bridge-nf-call-iptables as read in each host's namespace (it
// exists only while br_netfilter is loaded).
func bridgeNetfilter(hs []host) string {
	var each []string
	same := true
	for i, h := range hs {
		v, err := inNS(10*time.Second, h.netns, "cat", "/proc/sys/net/bridge/bridge-nf-call-iptables")
		v = strings.TrimSpace(v)
		if err != nil {
			v = "absent (br_netfilter not loaded)"
		}
		each = append(each, h.name+" "+v)
		same = same && (i == 0 || strings.TrimPrefix(each[i], h.name) == strings.TrimPrefix(each[0], hs[0].name))
	}
	if same && len(hs) > 0 {
		return "net.bridge.bridge-nf-call-iptables, read in each host's namespace: " + strings.TrimPrefix(each[0], hs[0].name+" ") + " on every host"
	}
	return "net.bridge.bridge-nf-call-iptables, read in each host's namespace: " + strings.Join(each, ", ")
}
