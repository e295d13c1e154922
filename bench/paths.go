package main

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// path is one data path between two hosts: a client namespace and a server
// namespace reachable at addr.
type path struct {
	name   string
	anchor string // the path this one is compared with ("" = none)
	client string // netns path
	server string // netns path
	addr   string // the server's address
	na     string // why the path cannot be measured
	tcp1   sample // Gbit/s
	tcp4   sample // Gbit/s
	udp    sample // kpps received
	rttP50 sample // µs
	rttP99 sample // µs
}

const (
	iperfPort = "5201"
	echoPort  = "7007"
)

// startServers starts iperf3 and the latency echo server in the server
// namespace and checks that the client reaches them.
func (b *bench) startServers(p *path) {
	for _, args := range [][]string{
		{"iperf3", "-s", "-p", iperfPort},
		{b.self, "udp-echo", ":" + echoPort},
	} {
		cmd := exec.Command("nsenter", append([]string{"--net=" + p.server, "--"}, args...)...)
		if err := cmd.Start(); err != nil {
			p.na = fmt.Sprintf("cannot start %s: %v", args[0], err)
			return
		}
		b.mu.Lock()
		b.procs = append(b.procs, cmd)
		b.mu.Unlock()
	}
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if _, err = inNS(5*time.Second, p.client, b.self, "udp-rr", p.addr+":"+echoPort, "10"); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	p.na = "no answer from the server side within 10 s"
	b.log.WithField("path", p.name).Warnf("path unusable: %v", err)
}

func (b *bench) setupUnderlay(h1, h2 host) *path {
	return &path{name: "underlay", client: h1.netns, server: h2.netns, addr: h2.addr}
}

// setupKernelVXLAN programs, by hand, what a perfect VXLAN control plane
// amounts to (docs/dataplane.md): per host a namespace holding a
// bridge and a VXLAN device (made in the host namespace, so its UDP socket
// lives there, then moved: the layout Docker's overlay uses, which keeps the
// bridge out of br_netfilter's way), a "container" namespace on a veth, and
// static FDB and neighbour entries for the other side.
func (b *bench) setupKernelVXLAN(hosts []host) *path {
	return b.handVXLAN(hosts, kvxSpec{name: pathName("kvx"), tag: "b", vni: 7701, octet: 77})
}

// setupKernelVXLANDocker is the same path with, in both "container"
// namespaces, the NAT rules Docker puts in every container on a user-defined
// network for its embedded DNS server (127.0.0.11): with a nat table present,
// conntrack handles every packet of the container, on any network driver.
// It tells that cost apart from the network path's.
func (b *bench) setupKernelVXLANDocker(hosts []host) *path {
	p := b.handVXLAN(hosts, kvxSpec{name: pathName("kvxdocker"), tag: "d", vni: 7702, octet: 78, dockerRules: true})
	p.anchor = pathName("kvx")
	return p
}

// dockerDNSRules are the embedded-DNS rules of a Docker 20.10 container
// (iptables -t nat -S inside one; the ports vary per container).
var dockerDNSRules = [][]string{
	{"-N", "DOCKER_OUTPUT"},
	{"-N", "DOCKER_POSTROUTING"},
	{"-A", "OUTPUT", "-d", "127.0.0.11/32", "-j", "DOCKER_OUTPUT"},
	{"-A", "POSTROUTING", "-d", "127.0.0.11/32", "-j", "DOCKER_POSTROUTING"},
	{"-A", "DOCKER_OUTPUT", "-d", "127.0.0.11/32", "-p", "tcp", "-m", "tcp", "--dport", "53", "-j", "DNAT", "--to-destination", "127.0.0.11:38277"},
	{"-A", "DOCKER_OUTPUT", "-d", "127.0.0.11/32", "-p", "udp", "-m", "udp", "--dport", "53", "-j", "DNAT", "--to-destination", "127.0.0.11:57684"},
	{"-A", "DOCKER_POSTROUTING", "-s", "127.0.0.11/32", "-p", "tcp", "-m", "tcp", "--sport", "38277", "-j", "SNAT", "--to-source", ":53"},
	{"-A", "DOCKER_POSTROUTING", "-s", "127.0.0.11/32", "-p", "udp", "-m", "udp", "--sport", "57684", "-j", "SNAT", "--to-source", ":53"},
}

// kvxSpec tells the hand-programmed VXLAN paths apart.
type kvxSpec struct {
	name        string
	tag         string // in namespace names: RUN-<tag>v1, RUN-<tag>c1 …
	vni         int
	octet       int // endpoints at 198.19.<octet>.1 and .2
	dockerRules bool
}

// kvxSide is one host's end of a hand-programmed VXLAN path.
type kvxSide struct {
	h          host
	brNS, ctNS string
	ip, mac    string
}

// nsStep is one command run inside a network namespace.
type nsStep struct {
	ns   string
	args []string
}

// handVXLAN programs a kernel VXLAN path by hand between the first two
// hosts: per side a bridge namespace and a container namespace, then
// static forwarding entries to the other side.
func (b *bench) handVXLAN(hosts []host, kv kvxSpec) *path {
	p := &path{name: kv.name}
	var sides []kvxSide
	for i, h := range hosts[:2] {
		sides = append(sides, kvxSide{
			h:    h,
			brNS: fmt.Sprintf("%s-%sv%d", b.cfg.run, kv.tag, i+1),
			ctNS: fmt.Sprintf("%s-%sc%d", b.cfg.run, kv.tag, i+1),
			ip:   fmt.Sprintf("198.19.%d.%d", kv.octet, i+1),
			mac:  fmt.Sprintf("02:%02x:00:00:00:%02x", kv.octet, i+1),
		})
	}
	for _, s := range sides {
		if err := b.buildKVXSide(s, kv); err != nil {
			p.na = err.Error()
			return p
		}
	}
	for i, s := range sides {
		if err := pointAt(s, sides[1-i]); err != nil {
			p.na = err.Error()
			return p
		}
	}
	p.client = "/run/netns/" + sides[0].ctNS
	p.server = "/run/netns/" + sides[1].ctNS
	p.addr = sides[1].ip
	return p
}

// buildKVXSide makes s's namespaces (recorded for cleanup) and wires its
// VXLAN device, bridge and container end.
func (b *bench) buildKVXSide(s kvxSide, kv kvxSpec) error {
	cmds := [][]string{
		{"ip", "netns", "add", s.brNS},
		{"ip", "netns", "add", s.ctNS},
	}
	for _, c := range cmds {
		if _, err := runCmd(10*time.Second, c[0], c[1:]...); err != nil {
			return err
		}
		b.mu.Lock()
		b.madeNS = append(b.madeNS, c[3])
		b.mu.Unlock()
	}
	for _, st := range kvxSideSteps(s, kv) {
		if _, err := inNS(10*time.Second, st.ns, st.args[0], st.args[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// kvxSideSteps are the commands that wire one side, in order.
func kvxSideSteps(s kvxSide, kv kvxSpec) []nsStep {
	br := "/run/netns/" + s.brNS
	ct := "/run/netns/" + s.ctNS
	steps := []nsStep{
		{s.h.netns, []string{"ip", "link", "add", "gvbvx", "type", "vxlan", "id", strconv.Itoa(kv.vni), "local", s.h.addr, "dstport", "8472", "nolearning", "proxy"}},
		{s.h.netns, []string{"ip", "link", "set", "gvbvx", "netns", br}},
		{br, []string{"ip", "link", "set", "lo", "up"}},
		{br, []string{"ip", "link", "add", "br0", "type", "bridge"}},
		{br, []string{"ip", "link", "set", "br0", "mtu", "1450", "up"}},
		{br, []string{"ip", "link", "set", "gvbvx", "mtu", "1450", "master", "br0", "up"}},
		{br, []string{"ip", "link", "add", "eth0", "netns", ct, "mtu", "1450", "type", "veth", "peer", "name", "vc", "mtu", "1450"}},
		{br, []string{"ip", "link", "set", "vc", "master", "br0", "up"}},
		{ct, []string{"ip", "link", "set", "lo", "up"}},
		{ct, []string{"ip", "link", "set", "eth0", "address", s.mac}},
		{ct, []string{"ip", "addr", "add", s.ip + "/24", "dev", "eth0"}},
		{ct, []string{"ip", "link", "set", "eth0", "up"}},
	}
	if kv.dockerRules {
		for _, r := range dockerDNSRules {
			steps = append(steps, nsStep{ct, append([]string{"iptables", "-t", "nat"}, r...)})
		}
	}
	return steps
}

// pointAt adds s's static forwarding and neighbour entries for o.
func pointAt(s, o kvxSide) error {
	br := "/run/netns/" + s.brNS
	for _, args := range [][]string{
		{"bridge", "fdb", "replace", o.mac, "dev", "gvbvx", "dst", o.h.addr, "self", "permanent"},
		{"bridge", "fdb", "replace", o.mac, "dev", "gvbvx", "master", "static"},
		{"ip", "neigh", "replace", o.ip, "lladdr", o.mac, "dev", "gvbvx", "nud", "permanent"},
	} {
		if _, err := inNS(10*time.Second, br, args[0], args[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// setupSwarmOverlay forms a Swarm of all hosts and an attachable overlay.
func (b *bench) setupSwarmOverlay(hosts []host) (*path, error) {
	p := &path{name: "Docker overlay", anchor: "kernel VXLAN (hand-programmed)"}
	m := hosts[0]
	// a harness that an earlier (partial) run left in a swarm is reused
	if st, err := m.dockerCmd(time.Minute, "info", "-f", "{{.Swarm.LocalNodeState}}"); err == nil && st == "active" {
		if _, err := m.dockerCmd(time.Minute, "network", "create", "-d", "overlay", "--attachable", "--subnet", "100.100.0.0/24", "gvb-overlay"); err != nil && !exists(err) {
			return p, err
		}
		return p, nil
	}
	if _, err := m.dockerCmd(time.Minute, "swarm", "init", "--advertise-addr", m.addr, "--listen-addr", m.addr+":2377",
		"--default-addr-pool", "100.96.0.0/12", "--default-addr-pool-mask-length", "24"); err != nil {
		return p, err
	}
	token, err := m.dockerCmd(time.Minute, "swarm", "join-token", "-q", "worker")
	if err != nil {
		return p, err
	}
	for _, h := range hosts[1:] {
		if _, err := h.dockerCmd(time.Minute, "swarm", "join", "--advertise-addr", h.addr, "--listen-addr", h.addr+":2377", "--token", token, m.addr+":2377"); err != nil {
			return p, err
		}
	}
	if _, err := m.dockerCmd(time.Minute, "network", "create", "-d", "overlay", "--attachable", "--subnet", "100.100.0.0/24", "gvb-overlay"); err != nil {
		return p, err
	}
	return p, nil
}

// twoContainers starts a container on each of the first two hosts on the
// network called net on that host (name per host may differ) and makes the
// path between them.
func (b *bench) twoContainers(p *path, nets [2]string, hosts []host, extra [2][]string) {
	var cs [2]container
	for i := range cs {
		c, err := startContainer(hosts[i], nets[i], extra[i]...)
		if err != nil {
			p.na = short(err)
			return
		}
		cs[i] = c
	}
	if cs[0].ip == cs[1].ip {
		p.na = fmt.Sprintf("%s and %s both handed out %s: addresses are not yet shared across hosts", hosts[0].name, hosts[1].name, cs[0].ip)
		return
	}
	p.client, p.server, p.addr = cs[0].netns, cs[1].netns, cs[1].ip
}

// createOnHosts creates a network of the same name on each host.
func createOnHosts(hosts []host, args ...string) error {
	for _, h := range hosts {
		if _, err := h.dockerCmd(time.Minute, append([]string{"network", "create"}, args...)...); err != nil && !exists(err) {
			return err
		}
	}
	return nil
}

// exists reports whether a `docker network create` failed because an
// earlier run on the same harness made the network already.
func exists(err error) bool {
	return strings.Contains(err.Error(), "already exists")
}

// short keeps the interesting last part of a long command error.
func short(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, "Error response from daemon: "); i >= 0 {
		s = s[i+len("Error response from daemon: "):]
	}
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return strings.ReplaceAll(s, "|", "/")
}
