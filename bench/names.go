package main

import (
	"fmt"
	"math"
	"net/netip"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The names part: names across hosts (docs/names.md) on real Docker hosts,
// side by side with Docker's own resolver in the same run.
//
//   - availability: per new container on h1, the time from `docker run`
//     returning to its name resolving on h2 (through the container's
//     resolver, 127.0.0.11), next to the time its address answers (the
//     convergence prober), both probed at once;
//   - lookups: A queries from containers on h2, one at a time, the series
//     alternating in slices within each round (as the latency figures do):
//     a cross-host and a same-host name on the grapevine network (grapevine's
//     tap answers both), a same-host name on a Docker bridge network (Docker's
//     resolver answers it: the peer), an upstream name from the grapevine
//     network and from the bridge network, and the upstream queries sent
//     straight to the upstream address, bypassing Docker's resolver, which
//     tells the resolvers' share apart.

const (
	upstreamDNS   = "198.18.0.254" // every harness dockerd has --dns=198.18.0.254
	dockerDNS     = "127.0.0.11"
	nbridgeNet    = "gvb-nbridge"
	namesWarmup   = 50
	namesResolveT = 15 * time.Second
)

// dnsSeries is one kind of lookup: from a namespace, to a resolver, for a
// name that must resolve to want.
type dnsSeries struct {
	id, label string
	ns        string
	resolver  netip.AddrPort
	name      string
	want      netip.Addr
	p50, p99  sample // ms, one entry per round

	fd     int
	q      *dnsQuery
	times  []float64
	failed bool
}

// namesRun is the names part's setup and figures.
type namesRun struct {
	na        string // why the part could not run
	prefix    string // container names of this run start with it
	cli, brcl container
	db, loc   container
	brloc     container         // a same-host name on the bridge network
	started   map[host][]string // containers to remove, by host
	avail     struct {
		name, addr             sample // ms per container
		nameBefore, addrBefore int    // ready when `docker run` returned
		nameGaps               []float64
		nameEarly, addrEarly   []float64 // ms before the return that a sample answered at 0 was answered
		nameMeanGaps           []float64 // µs between name queries after t0
		addrRes                float64   // µs, the address probe's worst uncertainty
	}
	series []*dnsSeries
}

// namesBenchmarks runs the names part; gv is grapevine's overlay (nil: made
// here).
func (b *bench) namesBenchmarks(gv *path) {
	h1, h2 := b.hosts[0], b.hosts[1]
	nr := &namesRun{prefix: "gvbn" + strconv.FormatInt(time.Now().Unix()%(36*36*36), 36), started: map[host][]string{}}
	b.names = nr
	if gv == nil {
		gv = b.setupGrapevine(false)
	}
	if gv.na != "" {
		nr.na = "grapevine network unusable: " + gv.na
		return
	}
	stop, err := b.startUpstream()
	if err != nil {
		nr.na = short(err)
		return
	}
	defer stop()
	defer b.removeNamesContainers(nr)
	if err := b.namesContainers(nr, h1, h2); err != nil {
		nr.na = short(err)
		return
	}
	b.log.Info("names: availability")
	b.namesAvailability(nr, h1)
	b.log.Info("names: lookups")
	nr.series = namesSeries(nr)
	for r := range b.cfg.rounds {
		b.lookupRound(nr.series, r)
		for _, s := range nr.series {
			b.log.WithField("series", s.id).WithField("round", r+1).Infof("p50 %s p99 %s ms", last(s.p50), last(s.p99))
		}
	}
}

// startUpstream serves the hosts' upstream DNS address from the LAN
// machine and waits until it answers; stop removes it again.
func (b *bench) startUpstream() (stop func(), err error) {
	env, err := runCmd(30*time.Second, b.cfg.harness, "env", b.cfg.run)
	if err != nil {
		return nil, err
	}
	lan := ""
	for _, m := range exportRE.FindAllStringSubmatch(env, -1) {
		if m[1] == "GV_LAN_NETNS" {
			lan = "/run/netns/" + m[2]
		}
	}
	if lan == "" {
		return nil, fmt.Errorf("harness run %s names no LAN machine (GV_LAN_NETNS)", b.cfg.run)
	}
	if _, err := inNS(10*time.Second, lan, "ip", "addr", "replace", upstreamDNS+"/24", "dev", "eth0"); err != nil {
		return nil, err
	}
	stop = func() { _, _ = inNS(10*time.Second, lan, "ip", "addr", "del", upstreamDNS+"/24", "dev", "eth0") }
	if err := b.startProc(lan, b.self, "dns-upstream", upstreamDNS+":53"); err != nil {
		stop()
		return nil, err
	}
	// from h2's own namespace, straight to the server
	resolver := netip.AddrPortFrom(netip.MustParseAddr(upstreamDNS), 53)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := lookupOnce(b.hosts[1].netns, resolver, upstreamName, upstreamAnswer)
		if err == nil {
			return stop, nil
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("the upstream DNS server on the LAN machine does not answer h2: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// startProc starts a long-running command in the namespace at ns; cleanup
// stops it.
func (b *bench) startProc(ns string, args ...string) error {
	cmd := exec.Command("nsenter", append([]string{"--net=" + ns, "--"}, args...)...)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s in %s: %w", args[0], ns, err)
	}
	b.mu.Lock()
	b.procs = append(b.procs, cmd)
	b.mu.Unlock()
	return nil
}

// lookupOnce resolves name from the namespace at ns through resolver.
func lookupOnce(ns string, resolver netip.AddrPort, name string, want netip.Addr) (time.Duration, error) {
	type result struct {
		d   time.Duration
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		fd, err := dnsSocket(ns, resolver)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer unix.Close(fd)
		q, err := newDNSQuery(name)
		if err != nil {
			ch <- result{err: err}
			return
		}
		d, reply, err := exchange(fd, q, make([]byte, 4096))
		if err == nil {
			var has bool
			if _, has, err = checkAnswer(reply, want); err == nil && !has {
				err = fmt.Errorf("%s did not resolve to %s through %s", name, want, resolver)
			}
		}
		ch <- result{d, err}
	}()
	r := <-ch
	return r.d, r.err
}

// namesContainers starts the part's fixed containers: the name holders
// (db on h1, loc on h2), the clients on h2 (on the grapevine network and
// on a Docker bridge network made here), and waits until both names
// resolve on h2.
func (b *bench) namesContainers(nr *namesRun, h1, h2 host) error {
	if _, err := h2.dockerCmd(time.Minute, "network", "create", nbridgeNet); err != nil && !exists(err) {
		return err
	}
	start := func(h host, net, name string) (container, error) {
		var extra []string
		if name != "" {
			extra = []string{"--name", name}
		}
		c, err := startContainer(h, net, extra...)
		if err == nil {
			nr.started[h] = append(nr.started[h], c.id)
		}
		return c, err
	}
	var err error
	if nr.db, err = start(h1, "gvb-vxlan", nr.prefix+"db"); err != nil {
		return err
	}
	if nr.loc, err = start(h2, "gvb-vxlan", nr.prefix+"loc"); err != nil {
		return err
	}
	if nr.cli, err = start(h2, "gvb-vxlan", ""); err != nil {
		return err
	}
	if nr.brcl, err = start(h2, nbridgeNet, ""); err != nil {
		return err
	}
	if nr.brloc, err = start(h2, nbridgeNet, nr.prefix+"brloc"); err != nil {
		return err
	}
	resolver := netip.AddrPortFrom(netip.MustParseAddr(dockerDNS), 53)
	for _, c := range []struct {
		from, name string
		ip         string
	}{{nr.cli.netns, nr.prefix + "db", nr.db.ip}, {nr.cli.netns, nr.prefix + "loc", nr.loc.ip}, {nr.brcl.netns, nr.prefix + "brloc", nr.brloc.ip}} {
		name, want := c.name, netip.MustParseAddr(c.ip)
		deadline := time.Now().Add(namesResolveT)
		for {
			_, err := lookupOnce(c.from, resolver, name, want)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s does not resolve on h2 within %v: %w", name, namesResolveT, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

func (b *bench) removeNamesContainers(nr *namesRun) {
	for h, ids := range nr.started {
		if _, err := h.dockerCmd(5*time.Minute, append([]string{"rm", "-f"}, ids...)...); err != nil {
			b.log.Warnf("names: remove containers on %s: %v", h.name, err)
		}
	}
	if _, err := b.hosts[1].dockerCmd(time.Minute, "network", "rm", nbridgeNet); err != nil {
		b.log.Warnf("names: remove %s: %v", nbridgeNet, err)
	}
}

// namesAvailability starts cfg.namesN containers on h1, each with a fresh
// address and name, and probes from cli on h2, at once, the name (through
// 127.0.0.11) and the address (ARP and ICMP, probe.go), both from before
// `docker run` is called.
func (b *bench) namesAvailability(nr *namesRun, h1 host) {
	ips, err := b.ownedAddrs(h1, gvSubnet, b.cfg.convN+b.cfg.namesN)
	if err != nil {
		nr.avail.name.na, nr.avail.addr.na = short(err), short(err)
		return
	}
	if len(ips) >= b.cfg.convN+b.cfg.namesN {
		ips = ips[b.cfg.convN:] // not the convergence part's addresses
	}
	pr, err := newProber(nr.cli.netns)
	if err != nil {
		nr.avail.name.na, nr.avail.addr.na = short(err), short(err)
		return
	}
	defer pr.close()
	resolver := netip.AddrPortFrom(netip.MustParseAddr(dockerDNS), 53)
	for i := range b.cfg.namesN {
		if i >= len(ips) {
			nr.avail.name.na = fmt.Sprintf("only %d fresh addresses available on %s", len(ips), h1.name)
			nr.avail.addr.na = nr.avail.name.na
			return
		}
		if err := b.availabilitySample(nr, h1, pr, resolver, ips[i], fmt.Sprintf("%s%d", nr.prefix, i)); err != nil {
			nr.avail.name.na, nr.avail.addr.na = short(err), short(err)
			return
		}
	}
}

// availabilitySample is one container of namesAvailability.
func (b *bench) availabilitySample(nr *namesRun, h1 host, pr *prober, resolver netip.AddrPort, ip, name string) error {
	dst := netip.MustParseAddr(ip)
	if r := pr.probeNow(dst, 20*time.Millisecond); r.err == nil {
		return fmt.Errorf("%s answered before its container existed: the probe cannot measure this network", ip)
	}
	addrStart, addrRes := pr.start(dst, 10*time.Second)
	nameStart := make(chan time.Time, 1)
	nameRes := make(chan probeResult, 1)
	go func() { nameRes <- nameProbe(nr.cli.netns, resolver, name, dst, nameStart, 10*time.Second) }()
	id, err := h1.dockerCmd(2*time.Minute, "run", "-d", "--name", name, "--network", "gvb-vxlan", "--ip", ip, image, "sleep", "1000000")
	t0 := time.Now()
	if err != nil {
		addrStart <- time.Time{}
		nameStart <- time.Time{}
		<-addrRes
		<-nameRes
		return err
	}
	nr.started[h1] = append(nr.started[h1], id)
	addrStart <- t0
	nameStart <- t0
	ra, rn := <-addrRes, <-nameRes
	av := &nr.avail
	for _, x := range []struct {
		r      probeResult
		s      *sample
		before *int
		early  *[]float64
	}{{ra, &av.addr, &av.addrBefore, &av.addrEarly}, {rn, &av.name, &av.nameBefore, &av.nameEarly}} {
		if x.r.err != nil {
			b.log.WithField("container", name).Warnf("names availability: %v", x.r.err)
			x.s.add(10000)
			continue
		}
		x.s.add(x.r.value())
		if x.r.value() == 0 {
			*x.before++
			*x.early = append(*x.early, float64(x.r.t0.Sub(x.r.answered).Microseconds())/1000)
		}
	}
	b.log.WithField("container", name).Infof("names availability: name %.2f ms (%v), address %.2f ms (%v)", rn.value(), rn.err, ra.value(), ra.err)
	if ra.err == nil && ra.value() > 0 {
		av.addrRes = max(av.addrRes, float64(ra.gap.Nanoseconds())/1000)
	}
	if rn.err == nil && rn.value() > 0 {
		av.nameGaps = append(av.nameGaps, float64(rn.gap.Nanoseconds())/1000)
	}
	if rn.err == nil && rn.sent > 1 {
		av.nameMeanGaps = append(av.nameMeanGaps, float64(rn.meanGap.Nanoseconds())/1000)
	}
	return nil
}

// namesSeries are the lookup series, all from h2.
func namesSeries(nr *namesRun) []*dnsSeries {
	docker := netip.AddrPortFrom(netip.MustParseAddr(dockerDNS), 53)
	up := netip.AddrPortFrom(netip.MustParseAddr(upstreamDNS), 53)
	db, loc, brloc := netip.MustParseAddr(nr.db.ip), netip.MustParseAddr(nr.loc.ip), netip.MustParseAddr(nr.brloc.ip)
	return []*dnsSeries{
		{id: "cross", label: "cross-host name, grapevine network (grapevine's tap answers in the container's namespace)", ns: nr.cli.netns, resolver: docker, name: nr.prefix + "db", want: db},
		{id: "local", label: "same-host name, grapevine network (the tap answers it too: every host publishes its own names)", ns: nr.cli.netns, resolver: docker, name: nr.prefix + "loc", want: loc},
		{id: "brlocal", label: "same-host name, Docker bridge network (Docker's resolver answers; no grapevine on the path)", ns: nr.brcl.netns, resolver: docker, name: nr.prefix + "brloc", want: brloc},
		{id: "gvup", label: "upstream name, grapevine network (the tap passes it on; Docker's resolver forwards it)", ns: nr.cli.netns, resolver: docker, name: upstreamName, want: upstreamAnswer},
		{id: "brup", label: "upstream name, Docker bridge network (Docker's resolver forwards)", ns: nr.brcl.netns, resolver: docker, name: upstreamName, want: upstreamAnswer},
		{id: "gvupdirect", label: "upstream name sent straight to " + upstreamDNS + " from the grapevine network (no resolver in between; a tapped container's UDP skips grapevine's redirect)", ns: nr.cli.netns, resolver: up, name: upstreamName, want: upstreamAnswer},
		{id: "brupdirect", label: "upstream name sent straight to " + upstreamDNS + " from a Docker bridge network (no resolver in between)", ns: nr.brcl.netns, resolver: up, name: upstreamName, want: upstreamAnswer},
	}
}

// lookupRound measures every series once: namesWarmup unrecorded lookups,
// then cfg.dnsQ recorded ones cut into latencyChunks slices that alternate
// between the series (order rotating by round); each series gets this
// round's p50 and p99, or a miss.
func (b *bench) lookupRound(series []*dnsSeries, round int) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var live []*dnsSeries
		for i := range series {
			s := series[(i+round)%len(series)]
			s.times, s.failed, s.fd = nil, false, -1
			if err := s.open(); err != nil {
				b.log.WithField("series", s.id).Warnf("names lookups: %v", err)
				continue
			}
			live = append(live, s)
		}
		defer func() {
			for _, s := range series {
				if s.fd >= 0 {
					unix.Close(s.fd)
				}
			}
		}()
		per := max(1, b.cfg.dnsQ/latencyChunks)
		for c := 0; c < latencyChunks && len(live) > 0; c++ {
			var next []*dnsSeries
			for _, s := range live {
				t, err := lookups(s.fd, s.q, s.want, per)
				s.times = append(s.times, t...)
				if err != nil {
					s.failed = true
					b.log.WithField("series", s.id).WithField("round", round+1).Warnf("names lookups: %v", err)
					continue
				}
				next = append(next, s)
			}
			live = next
		}
		for _, s := range series {
			if s.failed || len(s.times) == 0 {
				s.p50.miss()
				s.p99.miss()
				continue
			}
			s.p50.add(median(s.times))
			s.p99.add(quantile(s.times, .99))
		}
	}()
	<-done
}

// open makes the series' socket and warms it up.
func (s *dnsSeries) open() error {
	fd, err := dnsSocket(s.ns, s.resolver)
	if err != nil {
		return err
	}
	s.fd = fd
	if s.q, err = newDNSQuery(s.name); err != nil {
		return err
	}
	if _, err := lookups(fd, s.q, s.want, namesWarmup); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	return nil
}

// seriesByID finds a series of the names part.
func (nr *namesRun) seriesByID(id string) *dnsSeries {
	for _, s := range nr.series {
		if s.id == id {
			return s
		}
	}
	return nil
}

// pairedDiff is a−b for two figures measured round by round: the median
// of the differences of the rounds both measured, with their count (0 when
// none: then the difference of the medians).
func pairedDiff(a, b *sample) (float64, int) {
	var d []float64
	if len(a.vals) == len(b.vals) {
		for i := range a.vals {
			if x, y := a.vals[i], b.vals[i]; !math.IsNaN(x) && !math.IsNaN(y) {
				d = append(d, x-y)
			}
		}
	}
	if len(d) == 0 {
		return a.median() - b.median(), 0
	}
	return median(d), len(d)
}

// labelCell keeps a series' label readable in a table cell.
func labelCell(s string) string { return strings.ReplaceAll(s, "|", "/") }

// reportNames writes the names part's section.
func (b *bench) reportNames(p printer) {
	nr := b.names
	if nr == nil {
		return
	}
	p("## Names across hosts (3-host cluster, from h2)\n\n")
	if nr.na != "" {
		p("Not measured: %s.\n\n", nr.na)
		return
	}
	av := &nr.avail
	p("### Availability: `docker run --name N` on h1 returns → N resolves on h2, next to its address answering\n\n")
	p("Each sample is one new container on h1 with a fresh name and `--ip` (%d). From a container on h2, two probes run at once from before `docker run` is called: "+
		"the name probe, a thread of gvbench in that container's namespace sending A queries for the name to 127.0.0.11 (Docker's resolver, as the container's own lookups go) one at a time, "+
		"every %v before `docker run` returns and back to back after; and the address probe of the convergence part (ARP, then ICMP echo every %v after the return). "+
		"A sample is the send time of the first query answered with the address (of the first answered echo request) minus the return of `docker run`, 0 when sent before the return. ",
		b.cfg.namesN, nameProbeSlow, probeFast)
	if len(av.nameMeanGaps) > 0 {
		p("Name queries after the return went out every %.0f µs (median over samples; each is a full lookup through Docker's resolver and the plugin)", median(av.nameMeanGaps))
		if len(av.nameGaps) > 0 {
			p(", and the worst time between an answered query and the one before it was %.0f µs", maxOf(av.nameGaps))
		}
		p("; the address probe's worst uncertainty %.0f µs. ", av.addrRes)
	}
	p("Before the return the name probe asks every %v and the address probe every %v, which bounds how precisely \"answered before\" is known. p50 is the median, p99 nearest-rank (with %d samples, the largest).\n\n", nameProbeSlow, probeSlow, b.cfg.namesN)
	p("| what answers on h2 | containers | ready when `docker run` returned | p50 ms | p99 ms | min–max ms |\n|---|---|---|---|---|---|\n")
	for _, x := range []struct {
		what   string
		s      *sample
		before int
		early  []float64
	}{{"the name (A query through 127.0.0.11)", &av.name, av.nameBefore, av.nameEarly}, {"the address (ICMP echo)", &av.addr, av.addrBefore, av.addrEarly}} {
		before := strconv.Itoa(x.before)
		if len(x.early) > 0 {
			before += fmt.Sprintf(" (answered probe sent a median %.1f ms before)", median(x.early))
		}
		p("| %s | %d | %s | %s | %s | %s |\n", x.what, len(x.s.got()), before, pctCell(x.s, .5), pctCell(x.s, .99), rangeCell(x.s))
	}
	p("\n### Lookups: one A query at a time, ms\n\n")
	p("Per round (%d rounds) and series: %d unrecorded lookups, then %d recorded ones in %d slices that alternate between the series (order rotating by round), from a UDP socket in the client container's namespace on a locked thread of gvbench; "+
		"every reply is checked (NOERROR with the expected address). The upstream server (gvbench dns-upstream) runs on the LAN machine at %s, the hosts' `--dns`. "+
		"Cells are the median over the rounds of each round's p50 (p99) with min–max.\n\n",
		b.cfg.rounds, namesWarmup, b.cfg.dnsQ, latencyChunks, upstreamDNS)
	p("| series | p50 ms | p99 ms |\n|---|---|---|\n")
	for _, s := range nr.series {
		p("| %s | %s | %s |\n", labelCell(s.label), s.p50.cell("%.3f"), s.p99.cell("%.3f"))
	}
	p("\n")
	nr.reportFloor(p)
}

// reportFloor says what the tap saves and costs: Docker's own forwarding
// (the bridge network's upstream lookup, no grapevine on its path), which a
// cross-host name paid before the tap answered it in the container, and
// Docker's answer to a same-host name next to the tap's.
func (nr *namesRun) reportFloor(p printer) {
	brlocal, brup, local := nr.seriesByID("brlocal"), nr.seriesByID("brup"), nr.seriesByID("local")
	if brlocal == nil || brup == nil || local == nil || naOf(&brlocal.p99, &brup.p99, &local.p99) != "" {
		return
	}
	r, _ := pairedRatio(&brup.p99, &brlocal.p99)
	p("Docker's own forwarding, with no grapevine on the path (the bridge network's upstream lookup), took p50 %.3f ms and p99 %.3f ms, %.2f × Docker's same-host p99 (paired by round): "+
		"the floor of any name Docker's resolver forwards, and so of a cross-host name answered behind it. The tap answers before Docker's resolver sees the query; "+
		"a same-host name took p50 %.3f ms through the tap on the grapevine network and %.3f ms from Docker's resolver on the bridge network.\n\n",
		brup.p50.median(), brup.p99.median(), r, local.p50.median(), brlocal.p50.median())
}

func maxOf(v []float64) float64 {
	m := math.Inf(-1)
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

// crossTarget compares with Docker's embedded DNS answering a local name
// where grapevine is not on the path.
const crossTarget = "cross-host lookup p99 ≤ 1.5 × Docker's same-host (bridge network)"

// namesTargets adds the names part's targets.
func (b *bench) namesTargets(t *targetRows) {
	nr := b.names
	if nr == nil {
		return
	}
	if nr.na != "" {
		for _, n := range []string{"name available on h2: p99 no later than the address", crossTarget, "upstream lookup p50 ≤ Docker bridge + 0.2 ms"} {
			t.add(n, "n/a ("+nr.na+")", "n/a")
		}
		return
	}
	av := &nr.avail
	if na := naOf(&av.name, &av.addr); na != "" {
		t.add("name available on h2: p99 no later than the address", na, "n/a")
	} else {
		n, a := quantile(av.name.vals, .99), quantile(av.addr.vals, .99)
		res := "met"
		if n > a {
			res = fmt.Sprintf("**missed** by %.2f ms", n-a)
		}
		t.add("name available on h2: p99 no later than the address", fmt.Sprintf("%.2f vs %.2f ms", n, a), res)
	}
	cross, brlocal := nr.seriesByID("cross"), nr.seriesByID("brlocal")
	if cross != nil && brlocal != nil {
		t.rel(crossTarget, &cross.p99, &brlocal.p99, 1.5, true)
	}
	gvup, brup := nr.seriesByID("gvup"), nr.seriesByID("brup")
	if gvup != nil && brup != nil {
		if na := naOf(&gvup.p50, &brup.p50); na != "" {
			t.add("upstream lookup p50 ≤ Docker bridge + 0.2 ms", na, "n/a")
		} else {
			d, _ := pairedDiff(&gvup.p50, &brup.p50)
			res := fmt.Sprintf("met (%.3f ms headroom)", 0.2-d)
			if d > 0.2 {
				res = fmt.Sprintf("**missed** by %.3f ms", d-0.2)
			}
			t.add("upstream lookup p50 ≤ Docker bridge + 0.2 ms", fmt.Sprintf("%+.3f ms", d), res)
		}
	}
}
