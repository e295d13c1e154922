package main

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
)

type config struct {
	run, repo, harness string
	rounds, seconds    int
	rrCount            int
	convN, runN        int
	endpoints          []int
	gossipBenchtime    string
	gossipTimeout      time.Duration
	out, command       string
	skipGo, skipNet    bool
}

// bench holds one benchmark run: what it started (to stop it) and what it
// measured (to report it).
type bench struct {
	log    *logrus.Entry
	cfg    config
	self   string // this executable, run inside namespaces
	hosts  []host
	mu     sync.Mutex // procs and madeNS: appended by the run, read by cleanup on a signal
	procs  []*exec.Cmd
	madeNS []string
	closed bool
	start  time.Time
	load   string // /proc/loadavg when the run started

	paths []*path
	conv  []*convTarget
	runs  []*runTarget
	ipam  []ipamRow
	scale []scaleRow
	rss   []rssRow
	notes []string
}

type ipamRow struct {
	what string
	rate sample // allocations/s
}

type scaleRow struct {
	members                   int
	p50, p99, rest, churnRate sample
}

type rssRow struct {
	endpoints int
	owner     sample // MiB on the host that made the endpoints
	peer      sample // MiB on another host
}

func cmdRun(log *logrus.Entry, args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var cfg config
	var eps string
	fs.StringVar(&cfg.run, "run", "", "harness run name (scripts/harness.sh up RUN 3)")
	fs.StringVar(&cfg.repo, "repo", ".", "repository root")
	fs.IntVar(&cfg.rounds, "rounds", 3, "interleaved rounds per data path")
	fs.IntVar(&cfg.seconds, "t", 3, "seconds per iperf3 measurement")
	fs.IntVar(&cfg.rrCount, "rr", 5000, "request/response round trips per latency measurement")
	fs.IntVar(&cfg.convN, "conv", 50, "containers per network for convergence")
	fs.IntVar(&cfg.runN, "runs", 10, "docker run/rm pairs per network")
	fs.StringVar(&eps, "endpoints", "1000,5000", "endpoint counts for the plugin RSS")
	fs.StringVar(&cfg.gossipBenchtime, "gossip-benchtime", "10x", "-benchtime for gossip's BenchmarkConvergence")
	fs.DurationVar(&cfg.gossipTimeout, "gossip-timeout", 3*time.Minute, "time budget (go test -timeout) for each gossip benchmark")
	fs.StringVar(&cfg.out, "out", "docs/BENCHMARKS.md", "report file ('' = print only)")
	fs.StringVar(&cfg.command, "command", "make bench", "the command line recorded in the report")
	fs.BoolVar(&cfg.skipGo, "skip-go", false, "skip the Go benchmarks (ipam, gossip)")
	fs.BoolVar(&cfg.skipNet, "skip-net", false, "skip everything that needs the harness")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for _, f := range strings.Split(eps, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return fmt.Errorf("-endpoints entry %q is not a positive count", f)
		}
		cfg.endpoints = append(cfg.endpoints, n)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	cfg.harness = filepath.Join(cfg.repo, "scripts", "harness.sh")
	b := &bench{log: log, cfg: cfg, self: self, start: time.Now()}
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		b.load = strings.Join(strings.Fields(string(la))[:3], " ")
	}
	defer b.cleanup()
	// an interrupted run still stops its servers and removes its namespaces
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		log.Warnf("%v: cleaning up", sig)
		b.cleanup()
		os.Exit(1)
	}()

	if !cfg.skipNet {
		if cfg.run == "" {
			return fmt.Errorf("-run is empty: name the harness run (scripts/harness.sh up RUN 3)")
		}
		if b.hosts, err = loadHosts(cfg.harness, cfg.run); err != nil {
			return err
		}
		b.networkBenchmarks()
	}
	if !cfg.skipGo {
		b.goBenchmarks()
	}
	report := b.report()
	fmt.Print(report)
	if cfg.out != "" {
		if err := os.WriteFile(filepath.Join(cfg.repo, cfg.out), []byte(report), 0o644); err != nil {
			return fmt.Errorf("write report %s: %w", cfg.out, err)
		}
		log.Infof("report written to %s", cfg.out)
	}
	return nil
}

// gvSubnet is the grapevine VXLAN network's subnet: room for blocks on every host.
const gvSubnet = "198.19.16.0/20"

// ownedAddrs returns up to n addresses of subnet in blocks h owns, per the
// plugin's status on its socket, highest first, skipping the first and last
// two of each range (gateway, early allocations).
func (b *bench) ownedAddrs(h host, subnet string, n int) ([]string, error) {
	sock, err := runCmd(time.Minute, b.cfg.harness, "plugin-sock", b.cfg.run, h.name)
	if err != nil {
		return nil, err
	}
	var st struct {
		Pools []struct {
			Pool  string   `json:"pool"`
			Owned []string `json:"owned"`
		} `json:"pools"`
	}
	if err := newPluginClient(sock).call("/Grapevine.Status", struct{}{}, &st); err != nil {
		return nil, err
	}
	var out []string
	for _, p := range st.Pools {
		if p.Pool != subnet {
			continue
		}
		for _, r := range p.Owned {
			first, last, ok := strings.Cut(r, "-")
			lo, err1 := netip.ParseAddr(first)
			hi, err2 := netip.ParseAddr(last)
			if !ok || err1 != nil || err2 != nil {
				return nil, fmt.Errorf("status of %s: owned range %q is not first-last", h.name, r)
			}
			lo = lo.Next().Next()
			hi = hi.Prev()
			for a := hi; a.Compare(lo) >= 0 && len(out) < n; a = a.Prev() {
				out = append(out, a.String())
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("status of %s shows no owned block in %s", h.name, subnet)
	}
	return out, nil
}

// networkBenchmarks: everything on the harness hosts.
func (b *bench) networkBenchmarks() {
	hs := b.hosts
	h1, h2 := hs[0], hs[1]
	log := b.log

	log.Info("setting up data paths")
	under := b.setupUnderlay(h1, h2)
	kvx := b.setupKernelVXLAN(hs)

	ovl, err := b.setupSwarmOverlay(hs)
	if err != nil {
		ovl.na = "swarm: " + short(err)
	} else {
		b.twoContainers(ovl, [2]string{"gvb-overlay", "gvb-overlay"}, hs, [2][]string{nil, nil})
	}

	gv := &path{name: "grapevine vxlan", anchor: kvx.name}
	gvArgs := []string{"-d", "grapevine:latest", "--ipam-driver", "grapevine:latest", "--subnet", gvSubnet, "gvb-vxlan"}
	if err := createOnHosts(hs, gvArgs...); err != nil {
		gv.na = short(err)
	} else {
		b.twoContainers(gv, [2]string{"gvb-vxlan", "gvb-vxlan"}, hs, [2][]string{nil, nil})
	}

	dmv := &path{name: "Docker macvlan", anchor: under.name}
	for i, h := range hs[:2] {
		if _, err := h.dockerCmd(time.Minute, "network", "create", "-d", "macvlan", "--subnet", "198.18.0.0/24", "--gateway", "198.18.0.1",
			"--ip-range", fmt.Sprintf("198.18.0.%d/28", 64+16*i), "-o", "parent=eth0", "gvb-dmacvlan"); err != nil {
			dmv.na = short(err)
		}
	}
	if dmv.na == "" {
		b.twoContainers(dmv, [2]string{"gvb-dmacvlan", "gvb-dmacvlan"}, hs, [2][]string{nil, nil})
	}

	gmv := &path{name: "grapevine macvlan", anchor: under.name}
	if err := createOnHosts(hs[:2], "-d", "grapevine:latest", "--ipam-driver", "grapevine:latest", "-o", "mode=macvlan", "-o", "parent=eth0",
		"--subnet", "198.18.0.0/24", "--gateway", "198.18.0.1", "--ip-range", "198.18.0.128/26", "gvb-gmacvlan"); err != nil {
		gmv.na = short(err)
	} else {
		b.twoContainers(gmv, [2]string{"gvb-gmacvlan", "gvb-gmacvlan"}, hs, [2][]string{nil, nil})
	}

	b.paths = []*path{under, kvx, ovl, gv, dmv, gmv}
	for _, p := range b.paths {
		if p.na == "" {
			b.startServers(p)
		}
		if p.na != "" {
			log.WithField("path", p.name).Warnf("not measured: %s", p.na)
		}
	}
	log.Infof("data plane: %d rounds", b.cfg.rounds)
	b.dataplaneRounds(b.paths)

	// convergence: docker run on h1, prober container on h2
	log.Info("convergence")
	gvConv := &convTarget{name: "grapevine vxlan", netA: "gvb-vxlan"}
	ovConv := &convTarget{name: "Docker overlay", netA: "gvb-overlay"}
	for i := 0; i < b.cfg.convN; i++ {
		ovConv.ips = append(ovConv.ips, fmt.Sprintf("100.100.0.%d", 100+i))
	}
	// grapevine hands each host blocks of the pool: --ip must lie in one
	// that h1 owns (from its status), highest first (dynamic allocation
	// starts low)
	if ips, err := b.ownedAddrs(h1, gvSubnet, b.cfg.convN); err != nil {
		gvConv.na = short(err)
	} else {
		gvConv.ips = ips
	}
	for _, t := range []struct {
		c    *convTarget
		p    *path
		netB string
	}{{gvConv, gv, "gvb-vxlan"}, {ovConv, ovl, "gvb-overlay"}} {
		if t.p.na != "" {
			t.c.na = "path unusable: " + t.p.na
			continue
		}
		if t.c.na != "" {
			continue
		}
		pr, err := startContainer(h2, t.netB)
		if err != nil {
			t.c.na = short(err)
			continue
		}
		t.c.prober = pr
		// retry unanswered ARP every 10 ms (default 1 s) so that the probe
		// measures the control plane, not the neighbour retry timer
		for _, kv := range []string{"net.ipv4.neigh.eth0.retrans_time_ms=10", "net.ipv4.neigh.eth0.mcast_solicit=100"} {
			if _, err := inNS(10*time.Second, pr.netns, "sysctl", "-qw", kv); err != nil {
				log.Warnf("prober sysctl %s: %v", kv, err)
			}
		}
	}
	b.conv = []*convTarget{gvConv, ovConv}
	b.convergence(b.conv, h1, b.cfg.convN)

	log.Info("docker run / rm")
	if _, err := h1.dockerCmd(time.Minute, "network", "create", "-d", "bridge", "--subnet", "198.19.251.0/24", "gvb-bridge"); err != nil {
		log.Warnf("bridge network: %v", err)
	}
	b.runs = []*runTarget{{name: "Docker bridge", net: "gvb-bridge"}, {name: "grapevine vxlan", net: "gvb-vxlan"}, {name: "Docker overlay", net: "gvb-overlay"}}
	b.runTimes(h1, b.runs, b.cfg.runN)

	log.Info("plugin socket: IPAM rate and RSS")
	b.socketBenchmarks()
}

func (b *bench) socketBenchmarks() {
	h1, h2 := b.hosts[0], b.hosts[1]
	sock1, err := runCmd(time.Minute, b.cfg.harness, "plugin-sock", b.cfg.run, h1.name)
	serial := ipamRow{what: "through the socket, 1 caller (h1)"}
	parallel := ipamRow{what: "through the socket, 16 callers (h1)"}
	if err != nil {
		serial.rate.na, parallel.rate.na = short(err), short(err)
		b.ipam = append(b.ipam, serial, parallel)
		return
	}
	c1 := newPluginClient(sock1)
	if v, err := c1.ipamRate("100.80.0.0/16", 2000, 1); err == nil {
		serial.rate.add(v)
	} else {
		serial.rate.na = short(err)
	}
	if v, err := c1.ipamRate("100.81.0.0/16", 4000, 16); err == nil {
		parallel.rate.add(v)
	} else {
		parallel.rate.na = short(err)
	}
	b.ipam = append(b.ipam, serial, parallel)

	pid := func(h host) (int, error) {
		out, err := runCmd(time.Minute, b.cfg.harness, "plugin-pid", b.cfg.run, h.name)
		if err != nil {
			return 0, err
		}
		return strconv.Atoi(out)
	}
	rssMiB := func(h host) (float64, error) {
		p, err := pid(h)
		if err != nil {
			return 0, err
		}
		kb, err := rssKB(p)
		return float64(kb) / 1024, err
	}
	row0 := rssRow{endpoints: 0}
	if v, err := rssMiB(h1); err == nil {
		row0.owner.add(v)
	} else {
		row0.owner.na = short(err)
	}
	if v, err := rssMiB(h2); err == nil {
		row0.peer.add(v)
	} else {
		row0.peer.na = short(err)
	}
	b.rss = append(b.rss, row0)
	const subnet = "198.19.96.0/19"
	n1, err := c1.createNetwork(subnet)
	if err != nil {
		for _, n := range b.cfg.endpoints {
			b.rss = append(b.rss, rssRow{endpoints: n, owner: sample{na: short(err)}, peer: sample{na: short(err)}})
		}
		return
	}
	defer func() {
		if err := n1.remove(); err != nil {
			b.log.Warnf("remove socket network on h1: %v", err)
		}
	}()
	// the same network on h2, so that h2 holds (and programs) h1's endpoints
	if sock2, err := runCmd(time.Minute, b.cfg.harness, "plugin-sock", b.cfg.run, h2.name); err == nil {
		if n2, err := newPluginClient(sock2).createNetwork(subnet); err == nil {
			defer func() { _ = n2.remove() }()
		} else {
			b.notes = append(b.notes, "RSS: the peer-side network could not be created on h2: "+short(err))
		}
	}
	for _, n := range b.cfg.endpoints {
		row := rssRow{endpoints: n}
		start := time.Now()
		if err := n1.addEndpoints(n - len(n1.endpoints)); err != nil {
			row.owner.na, row.peer.na = short(err), short(err)
			b.rss = append(b.rss, row)
			break
		}
		b.log.Infof("%d endpoints through the socket in %v", n, time.Since(start).Round(time.Millisecond))
		// a settle window for gossip to reach h2 (no observable end from here)
		time.Sleep(3 * time.Second)
		if v, err := rssMiB(h1); err == nil {
			row.owner.add(v)
		} else {
			row.owner.na = short(err)
		}
		if v, err := rssMiB(h2); err == nil {
			row.peer.add(v)
		} else {
			row.peer.na = short(err)
		}
		b.rss = append(b.rss, row)
	}
}

// goBenchmarks runs ipam's and gossip's Go benchmarks and this package's
// churn benchmark.
func (b *bench) goBenchmarks() {
	b.log.Info("go benchmarks: ipam")
	m, err := b.goBench("./ipam/", "AllocatorSlash16$|RequestAddressDurable$|RequestAddressDurableParallel$", "1s", 5*time.Minute)
	rows := []struct{ what, name string }{
		{"in process, allocator core (BenchmarkAllocatorSlash16)", "BenchmarkAllocatorSlash16"},
		{"in process, RequestAddress durable, 1 caller (BenchmarkRequestAddressDurable)", "BenchmarkRequestAddressDurable"},
		{"in process, RequestAddress durable, 32 callers (BenchmarkRequestAddressDurableParallel)", "BenchmarkRequestAddressDurableParallel"},
	}
	var ipamRows []ipamRow
	for _, r := range rows {
		row := ipamRow{what: r.what}
		m.fill(&row.rate, err, r.name, "allocs/s")
		ipamRows = append(ipamRows, row)
	}
	b.ipam = append(ipamRows, b.ipam...)

	b.log.Info("go benchmarks: gossip convergence")
	conv, convErr := b.goBench("./gossip/", "Convergence", b.cfg.gossipBenchtime, b.cfg.gossipTimeout)
	// bytes under load: gossip's own benchmark reports churn-B/member/s in
	// newer versions; this package's BenchmarkGossipChurn fills in otherwise
	var churn benchResult
	var churnErr error
	for _, n := range []int{50, 200, 500} {
		if _, ok := conv.metrics[fmt.Sprintf("BenchmarkConvergence/members=%d churn-B/member/s", n)]; !ok {
			b.log.Info("go benchmarks: gossip churn (bench/)")
			churn, churnErr = b.goBench("./bench/", "GossipChurn", "1x", b.cfg.gossipTimeout)
			break
		}
	}
	for _, n := range []int{50, 200, 500} {
		row := scaleRow{members: n}
		k := fmt.Sprintf("BenchmarkConvergence/members=%d", n)
		conv.fill(&row.p50, convErr, k, "p50-ms")
		conv.fill(&row.p99, convErr, k, "p99-ms")
		conv.fill(&row.rest, convErr, k, "B/member/s")
		if v, ok := conv.metrics[k+" churn-B/member/s"]; ok {
			row.churnRate.add(v)
		} else {
			churn.fill(&row.churnRate, churnErr, fmt.Sprintf("BenchmarkGossipChurn/members=%d", n), "churn-B/member/s")
		}
		b.scale = append(b.scale, row)
	}
}

// cleanup stops what this run started and removes the namespaces it made;
// the harness's own teardown removes containers, networks and daemons.
func (b *bench) cleanup() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.closed = true
	for _, c := range b.procs {
		if c.Process != nil {
			_ = c.Process.Kill()
			_, _ = c.Process.Wait()
		}
	}
	for _, ns := range b.madeNS {
		if _, err := runCmd(10*time.Second, "ip", "netns", "del", ns); err != nil {
			b.log.Warnf("remove namespace %s: %v", ns, err)
		}
	}
}
