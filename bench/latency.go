package main

import (
	"fmt"
	"net/netip"
	"runtime"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// latencyChunks is how many slices each path's round trips of one round are
// cut into; the slices of all paths alternate, so that a slow second on the
// shared machine costs every path alike (a request/response figure moves by
// tens of µs with the host's load, more than the paths differ).
const latencyChunks = 25

// rrSocket is a connected UDP socket made in a path's client namespace (a
// socket keeps its namespace wherever the thread using it is).
type rrSocket struct {
	p      *path
	fd     int
	rtts   []float64
	failed bool // a trip failed in this round: the round is a miss
}

// openRR makes a UDP socket in the namespace at nsPath connected to dst.
// The calling goroutine must be locked to its thread.
func openRR(nsPath string, dst netip.AddrPort) (int, error) {
	orig, err := netns.Get()
	if err != nil {
		return -1, fmt.Errorf("open the current network namespace: %w", err)
	}
	defer orig.Close()
	target, err := netns.GetFromPath(nsPath)
	if err != nil {
		return -1, fmt.Errorf("open network namespace %s: %w", nsPath, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return -1, fmt.Errorf("enter network namespace %s: %w", nsPath, err)
	}
	fd, serr := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err := netns.Set(orig); err != nil {
		// the thread is in the wrong namespace: let it die with the goroutine
		return -1, fmt.Errorf("return to the original network namespace: %w", err)
	}
	if serr != nil {
		return -1, fmt.Errorf("socket in %s: %w", nsPath, serr)
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("connect %s: %w", dst, err)
	}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 1}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("receive timeout: %w", err)
	}
	return fd, nil
}

// roundTrips does n request/response trips of 64 bytes on fd, one at a time,
// and returns their times in µs. Lost answers are skipped, more than 20 in a
// row is an error.
func roundTrips(fd, n int) ([]float64, error) {
	buf := make([]byte, 64)
	in := make([]byte, 2048)
	out := make([]float64, 0, n)
	lost := 0
	for range n {
		start := time.Now()
		if _, err := unix.Write(fd, buf); err != nil {
			return out, fmt.Errorf("send: %w", err)
		}
		if _, err := unix.Read(fd, in); err != nil {
			if lost++; lost > 20 {
				return out, fmt.Errorf("the server stopped answering: %w", err)
			}
			continue
		}
		lost = 0
		out = append(out, float64(time.Since(start).Nanoseconds())/1000)
	}
	return out, nil
}

// latencyRound measures every path's request/response time in this round:
// rrCount trips per path after 200 unrecorded warm-up trips, cut into
// latencyChunks slices that alternate between the paths (order rotating by
// round), and adds each path's p50 and p99 to its samples; a path whose
// trips failed in this round gets a miss for it.
func (b *bench) latencyRound(paths []*path, round int) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // blocking syscalls and setns: one thread, locked
		pinCPU(clientCPU)
		var socks []*rrSocket
		defer func() {
			for _, s := range socks {
				unix.Close(s.fd)
			}
		}()
		for i := range paths {
			p := paths[(i+round)%len(paths)]
			dst, err := netip.ParseAddrPort(p.addr + ":" + echoPort)
			if err != nil {
				b.log.WithField("path", p.name).Warnf("latency: server address: %v", err)
				continue
			}
			fd, err := openRR(p.client, dst)
			if err != nil {
				b.log.WithField("path", p.name).Warnf("latency: %v", err)
				continue
			}
			s := &rrSocket{p: p, fd: fd}
			if _, err := roundTrips(fd, 200); err != nil {
				unix.Close(fd)
				b.log.WithField("path", p.name).Warnf("latency warm-up: %v", err)
				continue
			}
			socks = append(socks, s)
		}
		per := max(1, b.cfg.rrCount/latencyChunks)
		live := socks
		for c := 0; c < latencyChunks && len(live) > 0; c++ {
			var next []*rrSocket
			for _, s := range live {
				rtts, err := roundTrips(s.fd, per)
				s.rtts = append(s.rtts, rtts...)
				if err != nil {
					s.failed = true
					b.log.WithField("path", s.p.name).WithField("round", round+1).Warnf("latency: %v", err)
					continue
				}
				next = append(next, s)
			}
			live = next
		}
		recordLatency(paths, socks)
	}()
	<-done
}

// recordLatency adds one round's p50 and p99 to every path: from its
// socket's trips, or a miss when it has no socket or a trip failed.
func recordLatency(paths []*path, socks []*rrSocket) {
	measured := make(map[*path]*rrSocket)
	for _, s := range socks {
		if !s.failed && len(s.rtts) > 0 {
			measured[s.p] = s
		}
	}
	for _, p := range paths {
		s := measured[p]
		if s == nil {
			p.rttP50.miss()
			p.rttP99.miss()
			continue
		}
		p.rttP50.add(median(s.rtts))
		p.rttP99.add(quantile(s.rtts, 0.99))
	}
}

// Placement. iperf3's client runs on the first CPU and its server on the
// last, for every path. The request/response client and its echo server both
// run on the first CPU: a trip then costs the path's own processing, while
// across CPUs it also costs waking an idle vCPU of this VM, which varies by
// tens of µs from one run to the next, more than the paths differ.
const clientCPU = 0

func serverCPU() int { return runtime.NumCPU() - 1 }

// pinCPU binds the calling thread to cpu; machines with one CPU are left
// alone. Failure only costs stability, so it is ignored.
func pinCPU(cpu int) {
	if runtime.NumCPU() < 2 {
		return
	}
	var set unix.CPUSet
	set.Set(cpu)
	_ = unix.SchedSetaffinity(0, &set)
}
