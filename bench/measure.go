package main

import (
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// iperf runs one iperf3 client in p.client and returns Gbit/s (TCP) or
// received kpps (UDP, 64-byte datagrams). A busy server is retried.
func (b *bench) iperf(p *path, streams int, udp bool) (float64, error) {
	args := []string{"-c", p.addr, "-p", iperfPort, "-t", strconv.Itoa(b.cfg.seconds), "-J"}
	if runtime.NumCPU() > 1 {
		// same placement on every path: client on the first CPU, server on the last
		args = append(args, "-A", fmt.Sprintf("%d,%d", clientCPU, serverCPU()))
	}
	if udp {
		args = append(args, "-u", "-b", "0", "-l", "64")
	} else if streams > 1 {
		args = append(args, "-P", strconv.Itoa(streams))
	}
	var out string
	var err error
	for range 5 {
		out, err = inNS(time.Duration(b.cfg.seconds+30)*time.Second, p.client, "iperf3", args...)
		if err == nil {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if err != nil {
		return 0, err
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
			Sum struct {
				Seconds float64 `json:"seconds"`
				Packets float64 `json:"packets"`
				Lost    float64 `json:"lost_packets"`
			} `json:"sum"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return 0, fmt.Errorf("iperf3 JSON: %w", err)
	}
	if r.Error != "" {
		return 0, fmt.Errorf("iperf3: %s", r.Error)
	}
	if udp {
		if r.End.Sum.Seconds <= 0 {
			return 0, fmt.Errorf("iperf3 UDP: no duration in the answer")
		}
		return (r.End.Sum.Packets - r.End.Sum.Lost) / r.End.Sum.Seconds / 1000, nil
	}
	return r.End.SumReceived.BitsPerSecond / 1e9, nil
}

// dataplaneRounds measures every usable path, round after round, rotating
// the order so that drift hits all paths alike.
func (b *bench) dataplaneRounds(paths []*path) {
	var live []*path
	for _, p := range paths {
		if p.na == "" {
			live = append(live, p)
		}
	}
	// Metric-major: within a round each figure is taken on every path in
	// turn, so one figure's samples of all paths lie seconds apart and a
	// slow minute on a shared machine hits them alike.
	metrics := []struct {
		name    string
		measure func(p *path) error
	}{
		{"tcp 1 stream", func(p *path) error { return addIperf(&p.tcp1)(b.iperf(p, 1, false)) }},
		{"tcp 4 streams", func(p *path) error { return addIperf(&p.tcp4)(b.iperf(p, 4, false)) }},
		{"udp", func(p *path) error { return addIperf(&p.udp)(b.iperf(p, 1, true)) }},
	}
	for r := 0; r < b.cfg.rounds; r++ {
		for _, m := range metrics {
			for i := range live {
				p := live[(i+r)%len(live)]
				if err := m.measure(p); err != nil {
					b.log.WithField("path", p.name).WithField("round", r+1).Warnf("%s: %v", m.name, err)
				}
			}
		}
		b.latencyRound(live, r)
		for _, p := range live {
			b.log.WithField("path", p.name).WithField("round", r+1).Infof("tcp1 %v tcp4 %v udp %v rtt %v/%v",
				last(p.tcp1), last(p.tcp4), last(p.udp), last(p.rttP50), last(p.rttP99))
		}
	}
}

// addIperf returns a function that records an iperf figure in s, or a miss
// for this round, and passes the error on.
func addIperf(s *sample) func(float64, error) error {
	return func(v float64, err error) error {
		if err != nil {
			s.miss()
			return err
		}
		s.add(v)
		return nil
	}
}

func last(s sample) string {
	if len(s.vals) == 0 {
		return "-"
	}
	v := s.vals[len(s.vals)-1]
	if math.IsNaN(v) {
		return "failed"
	}
	return fmt.Sprintf("%.1f", v)
}

// convergence measures, n times, the time from `docker run -d` returning on
// A to the new container's address answering the prober container on B
// (probe.go). Each sample is a container of its own with a fresh address
// (--ip); the samples of all targets are interleaved.
type convTarget struct {
	name       string
	netA, netB string    // network name on A and on B
	prober     container // the prober's container on B
	ips        []string  // fresh addresses A may hand out, one per sample (spares at the end)
	na         string
	times      sample    // ms, one per container
	before     int       // samples answered by a probe sent before `docker run` returned
	early      []float64 // ms before the return that those probes were sent
	gaps       []float64
	meanGaps   []float64 // µs between probes after t0, mean per sample
	maxGap     float64   // µs, longest time between two probes after t0
	started    []string
}

// resolution is the worst uncertainty of t's non-zero samples in µs: the
// longest time between an answered probe and the probe before it.
func (t *convTarget) resolution() float64 {
	if len(t.gaps) == 0 {
		return 0
	}
	return slices.Max(t.gaps)
}

func (b *bench) convergence(targets []*convTarget, a host, n int) {
	probers := map[*convTarget]*prober{}
	defer func() {
		for _, p := range probers {
			p.close()
		}
	}()
	for _, t := range targets {
		if t.na != "" {
			continue
		}
		p, err := newProber(t.prober.netns)
		if err != nil {
			t.na = short(err)
			continue
		}
		probers[t] = p
	}
	for i := range n {
		for _, t := range targets {
			if t.na != "" {
				continue
			}
			if i >= len(t.ips) {
				t.na = fmt.Sprintf("only %d fresh addresses available on %s", len(t.ips), a.name)
				continue
			}
			pr := probers[t]
			ip := t.ips[i]
			dst, _ := netip.ParseAddr(ip)
			// sanity: nothing may answer for the address before its container exists
			if r := pr.probeNow(dst, 20*time.Millisecond); r.err == nil {
				t.na = fmt.Sprintf("%s answered before its container existed: the probe cannot measure this network", ip)
				continue
			}
			// probing starts (slowly) before `docker run` and speeds up when it returns
			start, res := pr.start(dst, 10*time.Second)
			id, err := a.dockerCmd(2*time.Minute, "run", "-d", "--network", t.netA, "--ip", ip, image, "sleep", "1000000")
			t0 := time.Now()
			if err != nil {
				start <- time.Time{}
				<-res
				t.na = short(err)
				continue
			}
			start <- t0
			r := <-res
			t.started = append(t.started, id)
			if r.err != nil {
				b.log.WithField("network", t.name).Warnf("convergence sample %d: %v", i, r.err)
				t.times.add(10000)
				continue
			}
			t.times.add(r.value())
			if r.value() == 0 {
				t.before++
				t.early = append(t.early, float64(r.t0.Sub(r.answered).Microseconds())/1000)
			} else {
				t.gaps = append(t.gaps, float64(r.gap.Nanoseconds())/1000)
			}
			if r.sent > 1 {
				t.meanGaps = append(t.meanGaps, float64(r.meanGap.Nanoseconds())/1000)
			}
			t.maxGap = max(t.maxGap, float64(r.maxGap.Nanoseconds())/1000)
		}
	}
	for _, t := range targets {
		if len(t.started) > 0 {
			_, _ = a.dockerCmd(5*time.Minute, append([]string{"rm", "-f"}, t.started...)...)
		}
	}
}

// runTimes measures `docker run -d` and `docker rm -f` on each network.
type runTarget struct {
	name, net string
	run, rm   sample // ms
}

func (b *bench) runTimes(h host, targets []*runTarget, n int) {
	for i := range n {
		for j := range targets {
			t := targets[(i+j)%len(targets)]
			if t.run.na != "" {
				continue
			}
			start := time.Now()
			id, err := h.dockerCmd(2*time.Minute, "run", "-d", "--network", t.net, image, "sleep", "1000000")
			if err != nil {
				t.run.na, t.rm.na = short(err), "no container"
				continue
			}
			t.run.add(float64(time.Since(start).Microseconds()) / 1000)
			start = time.Now()
			if _, err := h.dockerCmd(2*time.Minute, "rm", "-f", id); err != nil {
				t.rm.na = short(err)
				continue
			}
			t.rm.add(float64(time.Since(start).Microseconds()) / 1000)
		}
	}
}

// goBench runs `go test -bench` (with env added to the environment) and
// returns metric values by "Benchmark/sub metric"; the output is kept in
// build/bench-PKG[-SUFFIX].log.
func (b *bench) goBench(pkg, pattern, benchtime string, timeout time.Duration, env []string, suffix string) (benchResult, error) {
	// -v: skipped benchmarks print their reason only in verbose mode
	out, err := runCmdEnv(timeout+time.Minute, env, "go", "test", "-v", "-run", "^$", "-bench", pattern, "-benchtime", benchtime,
		"-timeout", timeout.String(), pkg)
	name := "bench-" + strings.Trim(strings.ReplaceAll(pkg, "/", "-"), ".-")
	if suffix != "" {
		name += "-" + suffix
	}
	logFile := filepath.Join(b.cfg.repo, "build", name+".log")
	if werr := os.WriteFile(logFile, []byte(out+"\n"+errText(err)), 0o644); werr != nil {
		b.log.Warnf("keep go test output: %v", werr)
	} else {
		b.log.WithField("package", pkg).Infof("go test output in %s", logFile)
	}
	// parse even after a failure: sizes that finished before a timeout count
	m, skipped := parseBench(out)
	return benchResult{m, skipped}, err
}

// benchResult is what one `go test -bench` printed: metrics by
// "Benchmark/sub unit" and skip reasons by benchmark name.
type benchResult struct {
	metrics map[string]float64
	skipped map[string]string
}

// fill puts the metric key of benchmark name into s, or why it is missing.
func (r benchResult) fill(s *sample, err error, name, unit string) {
	if v, ok := r.metrics[name+" "+unit]; ok {
		s.add(v)
		return
	}
	if why, ok := r.skipped[name]; ok {
		s.na = "skipped: " + why
		return
	}
	if err != nil {
		s.na = "not finished within the time budget (-gossip-timeout) or failed; see build/bench-*.log"
		return
	}
	s.na = "no " + unit + " in the go test output"
}

// parseBench turns lines like
// "BenchmarkConvergence/members=50-2  20  0 ns/op  212 p50-ms  340 p99-ms"
// into {"BenchmarkConvergence/members=50 p50-ms": 212, …}.
func parseBench(out string) (map[string]float64, map[string]string) {
	m := map[string]float64{}
	skipped := map[string]string{}
	lines := strings.Split(out, "\n")
	for i, line := range lines {
		// "--- SKIP: BenchmarkX/members=500-2" then "    file.go:12: reason"
		// (with -v the reason comes on the line before, otherwise after)
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "--- SKIP: "); ok {
			reason := "skipped"
			for _, j := range []int{i - 1, i + 1} {
				if j >= 0 && j < len(lines) && strings.HasPrefix(lines[j], "    ") && strings.Contains(lines[j], ".go:") {
					reason = strings.TrimSpace(lines[j])
					if _, r, ok := strings.Cut(reason, ": "); ok {
						reason = r
					}
					break
				}
			}
			skipped[benchName(strings.Fields(rest)[0])] = reason
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := benchName(f[0])
		for k := 2; k+1 < len(f); k += 2 {
			if v, err := strconv.ParseFloat(f[k], 64); err == nil {
				m[name+" "+f[k+1]] = v
			}
		}
	}
	return m, skipped
}

// benchName drops the -GOMAXPROCS suffix.
func benchName(name string) string {
	if i := strings.LastIndex(name, "-"); i > 0 {
		if _, err := strconv.Atoi(name[i+1:]); err == nil {
			return name[:i]
		}
	}
	return name
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
