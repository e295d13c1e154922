package main

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
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
	namesN, dnsQ       int
	endpoints          []int
	gossipSizes        []gossipSize
	gossipTimeout      time.Duration
	out, command       string
	parts              map[string]bool // which parts run (allParts)
	paths              map[string]bool // which data paths, by id (allPaths)
}

// allParts are the parts of a run, in the order they run (-parts).
var allParts = []string{"dataplane", "convergence", "run", "names", "socket", "go"}

// allPaths are the data paths by short id and report name (-paths); the
// convergence and run parts measure the two overlays among them.
var allPaths = []struct{ id, name string }{
	{"underlay", "underlay"},
	{"kvx", "kernel VXLAN (hand-programmed)"},
	{"kvxdocker", "kernel VXLAN + Docker's container NAT rules"},
	{"overlay", "Docker overlay"},
	{"gv", "grapevine vxlan"},
	{"gvenc", "grapevine encrypted (WireGuard)"},
	{"dmacvlan", "Docker macvlan"},
	{"gmacvlan", "grapevine macvlan"},
}

// parseParts reads a -parts value: a comma list of allParts, or "all".
func parseParts(v string) (map[string]bool, error) {
	out := map[string]bool{}
	for _, f := range strings.Split(v, ",") {
		f = strings.ToLower(strings.TrimSpace(f))
		if f == "all" {
			for _, p := range allParts {
				out[p] = true
			}
			continue
		}
		if !slices.Contains(allParts, f) {
			return nil, fmt.Errorf("-parts entry %q is not a part: want a comma list of %s (or all)", f, strings.Join(allParts, ","))
		}
		out[f] = true
	}
	return out, nil
}

// parsePaths reads a -paths value: a comma list of path ids or report
// names (case-insensitive), or "all"; the result is keyed by id.
func parsePaths(v string) (map[string]bool, error) {
	out := map[string]bool{}
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		if strings.EqualFold(f, "all") {
			for _, p := range allPaths {
				out[p.id] = true
			}
			continue
		}
		found := false
		for _, p := range allPaths {
			if strings.EqualFold(f, p.id) || strings.EqualFold(f, p.name) {
				out[p.id], found = true, true
			}
		}
		if !found {
			var ids []string
			for _, p := range allPaths {
				ids = append(ids, p.id)
			}
			return nil, fmt.Errorf("-paths entry %q is not a data path: want a comma list of %s (or their report names, or all)", f, strings.Join(ids, ","))
		}
	}
	return out, nil
}

// everything reports whether every part and every data path runs.
func (c config) everything() bool {
	return len(c.parts) == len(allParts) && len(c.paths) == len(allPaths)
}

// needsHarness reports whether any selected part runs on the harness hosts.
func (c config) needsHarness() bool {
	return c.parts["dataplane"] || c.parts["convergence"] || c.parts["run"] || c.parts["names"] || c.parts["socket"]
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

	brNetfilter string // bridge-nf-call-iptables as read in each host's namespace

	paths []*path
	conv  []*convTarget
	runs  []*runTarget
	ipam  []ipamRow
	scale []scaleRow
	rss   []rssRow
	names *namesRun
	notes []string

	goTook  time.Duration // the whole Go part
	goTimes []string      // what each go test of it took
}

type ipamRow struct {
	what string
	rate sample // allocations/s
}

type scaleRow struct {
	members                   int
	benchtime                 string // go test -benchtime: puts measured
	p50, p99, rest, churnRate sample
	churnFrom                 string // "" = BenchmarkConvergence, else the benchmark that measured churnRate
}

type rssRow struct {
	endpoints int
	owner     memSample // on the host that made the endpoints
	peer      memSample // on another host
}

// memSample is a process's resident memory in MiB (see procMem).
type memSample struct {
	rss, anon, file, shmem sample
}

func (m *memSample) setNA(why string) {
	m.rss.na, m.anon.na, m.file.na, m.shmem.na = why, why, why, why
}

// parseRunFlags reads the flags of `gvbench run`.
func parseRunFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var cfg config
	var eps, parts, paths, gsizes string
	var skipGo, skipNet bool
	fs.StringVar(&cfg.run, "run", "", "harness run name (scripts/harness.sh up RUN 3)")
	fs.StringVar(&cfg.repo, "repo", ".", "repository root")
	fs.IntVar(&cfg.rounds, "rounds", 4, "interleaved rounds per data path")
	fs.IntVar(&cfg.seconds, "t", 3, "seconds per iperf3 measurement")
	fs.IntVar(&cfg.rrCount, "rr", 5000, "request/response round trips per latency measurement")
	fs.IntVar(&cfg.convN, "conv", 50, "containers per network for convergence")
	fs.IntVar(&cfg.runN, "runs", 10, "docker run/rm pairs per network")
	fs.IntVar(&cfg.namesN, "names", 50, "containers for the names part's availability")
	fs.IntVar(&cfg.dnsQ, "dnsq", 1000, "lookups per series and round in the names part")
	fs.StringVar(&eps, "endpoints", "1000,5000", "endpoint counts for the plugin RSS")
	fs.StringVar(&gsizes, "gossip-sizes", "50=20x,200=10x,500=5x", "simulated cluster sizes and the -benchtime (puts measured) of gossip's BenchmarkConvergence for each")
	fs.DurationVar(&cfg.gossipTimeout, "gossip-timeout", 6*time.Minute, "time budget (go test -timeout) for each gossip size")
	fs.StringVar(&cfg.out, "out", "docs/BENCHMARKS.md", "report file ('' = print only)")
	fs.StringVar(&cfg.command, "command", "", "the command line recorded in the report (default: this one)")
	fs.StringVar(&parts, "parts", "all", "comma list of the parts to run: "+strings.Join(allParts, ","))
	fs.StringVar(&paths, "paths", "all", "comma list of the data paths to set up and measure: underlay,kvx,kvxdocker,overlay,gv,dmacvlan,gmacvlan (or their report names)")
	fs.BoolVar(&skipGo, "skip-go", false, "skip the Go benchmarks (the same as leaving go out of -parts)")
	fs.BoolVar(&skipNet, "skip-net", false, "skip everything that needs the harness (-parts go)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if cfg.command == "" {
		cfg.command = strings.Join(append([]string{"gvbench", "run"}, args...), " ")
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q: gvbench run takes flags only", fs.Args())
	}
	var err error
	if cfg.parts, err = parseParts(parts); err != nil {
		return cfg, err
	}
	if cfg.paths, err = parsePaths(paths); err != nil {
		return cfg, err
	}
	if cfg.gossipSizes, err = parseGossipSizes(gsizes); err != nil {
		return cfg, err
	}
	if skipGo {
		delete(cfg.parts, "go")
	}
	if skipNet {
		for _, p := range allParts {
			if p != "go" {
				delete(cfg.parts, p)
			}
		}
	}
	for _, f := range strings.Split(eps, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return cfg, fmt.Errorf("-endpoints entry %q is not a positive count", f)
		}
		cfg.endpoints = append(cfg.endpoints, n)
	}
	cfg.harness = filepath.Join(cfg.repo, "scripts", "harness.sh")
	return cfg, nil
}

func cmdRun(log *logrus.Entry, args []string) error {
	cfg, err := parseRunFlags(args)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
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

	if cfg.needsHarness() {
		if cfg.run == "" {
			return fmt.Errorf("-run is empty: name the harness run (scripts/harness.sh up RUN 3)")
		}
		if b.hosts, err = loadHosts(cfg.harness, cfg.run); err != nil {
			return err
		}
		b.networkBenchmarks()
	}
	if cfg.parts["go"] {
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

// gvEncSubnet is the encrypted grapevine network's subnet.
const gvEncSubnet = "198.19.32.0/20"

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

// pathName is the report name of the data path with short id id.
func pathName(id string) string {
	for _, p := range allPaths {
		if p.id == id {
			return p.name
		}
	}
	return id
}

// networkBenchmarks runs the selected parts that need the harness hosts,
// setting up only the data paths and networks that those parts measure:
// the overlays (Docker's and grapevine's) serve the data plane, convergence
// and `docker run` parts, the other paths only the data plane.
func (b *bench) networkBenchmarks() {
	h1, h2 := b.hosts[0], b.hosts[1]
	dp, conv, run := b.cfg.parts["dataplane"], b.cfg.parts["convergence"], b.cfg.parts["run"]
	paths, gv, ovl := b.setupPaths(dp, dp || conv || run)
	if dp {
		b.measureDataplane(paths)
	}
	if conv && (gv != nil || ovl != nil) {
		b.log.Info("convergence")
		b.convergenceBenchmarks(h1, h2, gv, ovl)
	}
	if run {
		b.runBenchmarks(h1, gv, ovl)
	}
	if b.cfg.parts["names"] {
		b.log.Info("names across hosts")
		b.namesBenchmarks(gv)
	}
	if b.cfg.parts["socket"] {
		b.log.Info("plugin socket: IPAM rate and RSS")
		b.socketBenchmarks()
	}
}

// setupPaths sets up the selected data paths: the reference ones only when
// dp (the data plane is measured), the overlays when overlays (some part
// measures them). gv and ovl are nil when not selected.
func (b *bench) setupPaths(dp, overlays bool) (paths []*path, gv, ovl *path) {
	hs := b.hosts
	want := b.cfg.paths
	needOverlay := want["overlay"] && overlays
	needGV := want["gv"] && overlays
	if dp || needOverlay || needGV {
		b.log.Info("setting up data paths and networks")
	}
	if dp && want["underlay"] {
		paths = append(paths, b.setupUnderlay(hs[0], hs[1]))
	}
	if dp && want["kvx"] {
		paths = append(paths, b.setupKernelVXLAN(hs))
	}
	if dp && want["kvxdocker"] {
		paths = append(paths, b.setupKernelVXLANDocker(hs))
	}
	if needOverlay {
		ovl = b.setupOverlay(dp)
		paths = append(paths, ovl)
	}
	if needGV {
		gv = b.setupGrapevine(dp)
		paths = append(paths, gv)
	}
	if dp && want["gvenc"] {
		paths = append(paths, b.setupGrapevineEncrypted())
	}
	if dp && want["dmacvlan"] {
		paths = append(paths, b.setupDockerMacvlan())
	}
	if dp && want["gmacvlan"] {
		paths = append(paths, b.setupGrapevineMacvlan())
	}
	return paths, gv, ovl
}

// setupOverlay creates Docker's swarm overlay, with the two containers
// when withContainers.
func (b *bench) setupOverlay(withContainers bool) *path {
	hs := b.hosts
	ovl, err := b.setupSwarmOverlay(hs)
	if err != nil {
		ovl.na = "swarm: " + short(err)
	} else if withContainers {
		b.twoContainers(ovl, [2]string{"gvb-overlay", "gvb-overlay"}, hs, [2][]string{nil, nil})
	}
	return ovl
}

// setupGrapevine creates grapevine's overlay network on every host, with
// the two containers when withContainers.
func (b *bench) setupGrapevine(withContainers bool) *path {
	hs := b.hosts
	gv := &path{name: pathName("gv"), anchor: pathName("kvx")}
	gvArgs := []string{"-d", "grapevine:latest", "--ipam-driver", "grapevine:latest", "--subnet", gvSubnet, "gvb-vxlan"}
	if err := createOnHosts(hs, gvArgs...); err != nil {
		gv.na = short(err)
	} else if withContainers {
		b.twoContainers(gv, [2]string{"gvb-vxlan", "gvb-vxlan"}, hs, [2][]string{nil, nil})
	}
	return gv
}

// setupGrapevineEncrypted creates an encrypted grapevine network on every
// host and its two containers; it is anchored to plain grapevine.
func (b *bench) setupGrapevineEncrypted() *path {
	hs := b.hosts
	enc := &path{name: pathName("gvenc"), anchor: pathName("gv")}
	if err := createOnHosts(hs, "-d", "grapevine:latest", "--ipam-driver", "grapevine:latest", "-o", "encrypted=true",
		"--subnet", gvEncSubnet, "gvb-encrypted"); err != nil {
		enc.na = short(err)
	} else {
		b.twoContainers(enc, [2]string{"gvb-encrypted", "gvb-encrypted"}, hs, [2][]string{nil, nil})
	}
	return enc
}

// setupDockerMacvlan creates Docker's macvlan network on the first two
// hosts, each with its own IP range, and its two containers.
func (b *bench) setupDockerMacvlan() *path {
	hs := b.hosts
	dmv := &path{name: pathName("dmacvlan"), anchor: pathName("underlay")}
	for i, h := range hs[:2] {
		if _, err := h.dockerCmd(time.Minute, "network", "create", "-d", "macvlan", "--subnet", "198.18.0.0/24", "--gateway", "198.18.0.1",
			"--ip-range", fmt.Sprintf("198.18.0.%d/28", 64+16*i), "-o", "parent=eth0", "gvb-dmacvlan"); err != nil && !exists(err) {
			dmv.na = short(err)
		}
	}
	if dmv.na == "" {
		b.twoContainers(dmv, [2]string{"gvb-dmacvlan", "gvb-dmacvlan"}, hs, [2][]string{nil, nil})
	}
	return dmv
}

// setupGrapevineMacvlan creates grapevine's macvlan-mode network on the
// first two hosts and its two containers.
func (b *bench) setupGrapevineMacvlan() *path {
	hs := b.hosts
	gmv := &path{name: pathName("gmacvlan"), anchor: pathName("underlay")}
	if err := createOnHosts(hs[:2], "-d", "grapevine:latest", "--ipam-driver", "grapevine:latest", "-o", "mode=macvlan", "-o", "parent=eth0",
		"--subnet", "198.18.0.0/24", "--gateway", "198.18.0.1", "--ip-range", "198.18.0.128/26", "gvb-gmacvlan"); err != nil {
		gmv.na = short(err)
	} else {
		b.twoContainers(gmv, [2]string{"gvb-gmacvlan", "gvb-gmacvlan"}, hs, [2][]string{nil, nil})
	}
	return gmv
}

// measureDataplane starts the servers on every usable path, logs the
// others, and runs the data plane rounds.
func (b *bench) measureDataplane(paths []*path) {
	b.paths = paths
	for _, p := range b.paths {
		if p.na == "" {
			b.startServers(p)
		}
		if p.na != "" {
			b.log.WithField("path", p.name).Warnf("not measured: %s", p.na)
		}
	}
	b.brNetfilter = bridgeNetfilter(b.hosts)
	b.log.Infof("data plane: %d rounds over %d paths (%s)", b.cfg.rounds, len(b.paths), b.brNetfilter)
	b.dataplaneRounds(b.paths)
}

// runBenchmarks times `docker run` / `docker rm` on h1 on a Docker bridge
// and on the overlays set up (gv, ovl: nil when not).
func (b *bench) runBenchmarks(h1 host, gv, ovl *path) {
	b.log.Info("docker run / rm")
	if _, err := h1.dockerCmd(time.Minute, "network", "create", "-d", "bridge", "--subnet", "198.19.251.0/24", "gvb-bridge"); err != nil && !exists(err) {
		b.log.Warnf("bridge network: %v", err)
	}
	b.runs = []*runTarget{{name: "Docker bridge", net: "gvb-bridge"}}
	if gv != nil {
		b.runs = append(b.runs, &runTarget{name: gv.name, net: "gvb-vxlan"})
	}
	if ovl != nil {
		b.runs = append(b.runs, &runTarget{name: ovl.name, net: "gvb-overlay"})
	}
	b.runTimes(h1, b.runs, b.cfg.runN)
}

// convergenceBenchmarks measures convergence on grapevine's overlay and
// Docker's (either may be nil: not selected): `docker run` on h1, the
// prober container on h2.
func (b *bench) convergenceBenchmarks(h1, h2 host, gv, ovl *path) {
	var targets []*convTarget
	if gv != nil {
		t := &convTarget{name: gv.name, netA: "gvb-vxlan", netB: "gvb-vxlan", na: gv.na}
		if t.na == "" {
			// grapevine hands each host blocks of the pool: --ip must lie
			// in one that h1 owns (from its status), highest first
			// (dynamic allocation starts low)
			ips, err := b.ownedAddrs(h1, gvSubnet, b.cfg.convN)
			if err != nil && !b.cfg.parts["dataplane"] {
				// without the data plane part no container holds a block
				// on h1 yet: one that stays makes h1 claim one
				if _, cerr := startContainer(h1, "gvb-vxlan"); cerr == nil {
					ips, err = b.ownedAddrs(h1, gvSubnet, b.cfg.convN)
				}
			}
			if err != nil {
				t.na = short(err)
			} else {
				t.ips = ips
			}
		} else {
			t.na = "path unusable: " + t.na
		}
		targets = append(targets, t)
	}
	if ovl != nil {
		t := &convTarget{name: ovl.name, netA: "gvb-overlay", netB: "gvb-overlay", na: ovl.na}
		if t.na != "" {
			t.na = "path unusable: " + t.na
		}
		for i := 0; i < b.cfg.convN; i++ {
			t.ips = append(t.ips, fmt.Sprintf("100.100.0.%d", 100+i))
		}
		targets = append(targets, t)
	}
	for _, t := range targets {
		if t.na != "" {
			continue
		}
		pr, err := startContainer(h2, t.netB)
		if err != nil {
			t.na = short(err)
			continue
		}
		t.prober = pr
		// retry unanswered ARP every 10 ms (default 1 s) and for long, as
		// before the prober sent its own ARP requests: harmless now, and
		// it keeps the container's own neighbour traffic out of the way
		for _, kv := range []string{"net.ipv4.neigh.eth0.retrans_time_ms=10", "net.ipv4.neigh.eth0.mcast_solicit=100"} {
			if _, err := inNS(10*time.Second, pr.netns, "sysctl", "-qw", kv); err != nil {
				b.log.Warnf("prober sysctl %s: %v", kv, err)
			}
		}
	}
	b.conv = targets
	b.convergence(b.conv, h1, b.cfg.convN)
}

// socketBenchmarks measures through h1's plugin socket: the IPAM request
// rate, then both plugins' memory as h1's endpoints grow.
func (b *bench) socketBenchmarks() {
	sock1, err := runCmd(time.Minute, b.cfg.harness, "plugin-sock", b.cfg.run, b.hosts[0].name)
	if err != nil {
		serial, parallel := ipamSocketRows()
		serial.rate.na, parallel.rate.na = short(err), short(err)
		b.ipam = append(b.ipam, serial, parallel)
		return
	}
	c1 := newPluginClient(sock1)
	b.ipamRates(c1)
	b.memoryByEndpoints(c1)
}

// ipamSocketRows are the IPAM rows measured through the socket.
func ipamSocketRows() (serial, parallel ipamRow) {
	return ipamRow{what: "through the socket, 1 caller (h1)"}, ipamRow{what: "through the socket, 16 callers (h1)"}
}

// ipamRates measures address requests per second through c1, with 1
// caller and with 16.
func (b *bench) ipamRates(c1 *pluginClient) {
	serial, parallel := ipamSocketRows()
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
}

// pluginPID is the plugin process's pid on h.
func (b *bench) pluginPID(h host) (int, error) {
	out, err := runCmd(time.Minute, b.cfg.harness, "plugin-pid", b.cfg.run, h.name)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(out)
}

// measureMem adds the plugin's memory on h (KiB) to m, or marks m not
// measured.
func (b *bench) measureMem(h host, m *memSample) {
	p, err := b.pluginPID(h)
	var pm procMem
	if err == nil {
		pm, err = readProcMem(p)
	}
	if err != nil {
		m.setNA(short(err))
		return
	}
	m.rss.add(float64(pm.rss) / 1024)
	m.anon.add(float64(pm.anon) / 1024)
	m.file.add(float64(pm.file) / 1024)
	m.shmem.add(float64(pm.shmem) / 1024)
}

// memoryByEndpoints measures the owner's (h1) and the peer's (h2) plugin
// memory with no endpoints, then at each -endpoints count added through c1
// on a network that both hosts hold.
func (b *bench) memoryByEndpoints(c1 *pluginClient) {
	h1, h2 := b.hosts[0], b.hosts[1]
	row0 := rssRow{endpoints: 0}
	b.measureMem(h1, &row0.owner)
	b.measureMem(h2, &row0.peer)
	b.rss = append(b.rss, row0)
	const subnet = "198.19.96.0/19"
	n1, err := c1.createNetwork(subnet)
	if err != nil {
		for _, n := range b.cfg.endpoints {
			row := rssRow{endpoints: n}
			row.owner.setNA(short(err))
			row.peer.setNA(short(err))
			b.rss = append(b.rss, row)
		}
		return
	}
	defer func() {
		if err := n1.remove(); err != nil {
			b.log.Warnf("remove socket network on h1: %v", err)
		}
	}()
	peer, peerNA := b.peerNetwork(h2, subnet)
	if peer != nil {
		defer func() { _ = peer.remove() }()
	}
	for _, n := range b.cfg.endpoints {
		row := rssRow{endpoints: n}
		start := time.Now()
		if err := n1.addEndpoints(n - len(n1.endpoints)); err != nil {
			row.owner.setNA(short(err))
			row.peer.setNA(short(err))
			b.rss = append(b.rss, row)
			break
		}
		b.log.Infof("%d endpoints through the socket in %v", n, time.Since(start).Round(time.Millisecond))
		b.measureMem(h1, &row.owner)
		// the peer is measured once it holds every endpoint
		if peer == nil {
			row.peer.setNA(peerNA)
		} else if took, err := peer.c.waitRemote(peer.networkID, n, 100*time.Millisecond, 2*time.Minute); err != nil {
			row.peer.setNA(short(err))
		} else {
			b.log.Infof("h2 held all %d endpoints %v later", n, took.Round(time.Millisecond))
			b.measureMem(h2, &row.peer)
		}
		b.rss = append(b.rss, row)
	}
}

// peerNetwork creates the same subnet's network on h2, so that h2 holds
// (and programs) h1's endpoints: h2's own network (its own network id), or
// nil and why not. The caller removes it.
func (b *bench) peerNetwork(h2 host, subnet string) (*sockNetwork, string) {
	sock2, err := runCmd(time.Minute, b.cfg.harness, "plugin-sock", b.cfg.run, h2.name)
	if err != nil {
		return nil, "h2's plugin socket: " + short(err)
	}
	n2, err := newPluginClient(sock2).createNetwork(subnet)
	if err != nil {
		return nil, "the peer-side network could not be created on h2: " + short(err)
	}
	return n2, ""
}

// gossipSize is one simulated cluster size and its go test -benchtime.
type gossipSize struct {
	members   int
	benchtime string
}

// parseGossipSizes reads a -gossip-sizes value: "50=20x,200=10x,500=5x".
func parseGossipSizes(v string) ([]gossipSize, error) {
	var out []gossipSize
	for _, f := range strings.Split(v, ",") {
		n, bt, ok := strings.Cut(strings.TrimSpace(f), "=")
		m, err := strconv.Atoi(n)
		if !ok || err != nil || m < 2 || !strings.HasSuffix(bt, "x") {
			return nil, fmt.Errorf("-gossip-sizes entry %q: want MEMBERS=COUNTx, e.g. 500=5x", f)
		}
		if c, err := strconv.Atoi(strings.TrimSuffix(bt, "x")); err != nil || c < 1 {
			return nil, fmt.Errorf("-gossip-sizes entry %q: the count of %q is not positive", f, bt)
		}
		out = append(out, gossipSize{m, bt})
	}
	return out, nil
}

// goBenchmarks runs ipam's and gossip's Go benchmarks and, for a size whose
// gossip run gave no figure under churn, this package's churn benchmark.
// Each gossip size runs in a go test of its own (GVBENCH_SIZES) with its
// own -benchtime and time budget: fewer puts at 500 members, and a size
// that runs out of time does not take the others with it.
func (b *bench) goBenchmarks() {
	start := time.Now()
	b.log.Info("go benchmarks: ipam")
	m, err := b.goBench("./ipam/", "AllocatorSlash16$|RequestAddressDurable$|RequestAddressDurableParallel$", "1s", 5*time.Minute, nil, "")
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
	b.goTimes = append(b.goTimes, fmt.Sprintf("ipam %v", time.Since(start).Round(time.Second)))

	for _, gs := range b.cfg.gossipSizes {
		n := gs.members
		t := time.Now()
		b.log.Infof("go benchmarks: gossip convergence, %d members, -benchtime %s", n, gs.benchtime)
		env := []string{fmt.Sprintf("GVBENCH_SIZES=%d", n)}
		conv, convErr := b.goBench("./gossip/", "^BenchmarkConvergence$", gs.benchtime, b.cfg.gossipTimeout, env, fmt.Sprint(n))
		row := scaleRow{members: n, benchtime: gs.benchtime}
		k := fmt.Sprintf("BenchmarkConvergence/members=%d", n)
		conv.fill(&row.p50, convErr, k, "p50-ms")
		conv.fill(&row.p99, convErr, k, "p99-ms")
		conv.fill(&row.rest, convErr, k, "B/member/s")
		conv.fill(&row.churnRate, convErr, k, "churn-B/member/s")
		took := fmt.Sprintf("gossip %d members %v", n, time.Since(t).Round(time.Second))
		if !row.churnRate.ok() {
			// bytes under load from this package's benchmark instead
			t = time.Now()
			b.log.Infof("go benchmarks: gossip churn (bench/), %d members", n)
			churn, churnErr := b.goBench("./bench/", "^BenchmarkGossipChurn$", "1x", b.cfg.gossipTimeout, env, fmt.Sprint(n))
			row.churnRate = sample{}
			churn.fill(&row.churnRate, churnErr, fmt.Sprintf("BenchmarkGossipChurn/members=%d", n), "churn-B/member/s")
			row.churnFrom = "BenchmarkGossipChurn"
			took += fmt.Sprintf(" + churn %v", time.Since(t).Round(time.Second))
		}
		b.goTimes = append(b.goTimes, took)
		b.scale = append(b.scale, row)
	}
	b.goTook = time.Since(start)
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
