package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// The latency tools use blocking system calls on one locked thread rather
// than Go's network poller, so that the figures are the kernel path's and not
// the runtime scheduler's.

// cmdUDPEcho answers every UDP datagram on PORT (":7007") with the same bytes, forever.
func cmdUDPEcho(args []string) error {
	if len(args) != 1 {
		return errors.New("udp-echo: want one argument, the listen address (e.g. :7007)")
	}
	ap, err := netip.ParseAddrPort("0.0.0.0" + args[0])
	if err != nil {
		return fmt.Errorf("udp-echo: listen address %q: want :PORT: %w", args[0], err)
	}
	runtime.LockOSThread()
	pinCPU(clientCPU) // with the client: see latencyRound
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("udp-echo: socket: %w", err)
	}
	if err := unix.Bind(s, &unix.SockaddrInet4{Port: int(ap.Port())}); err != nil {
		return fmt.Errorf("udp-echo: bind %s: %w", args[0], err)
	}
	buf := make([]byte, 2048)
	for {
		n, from, err := unix.Recvfrom(s, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return fmt.Errorf("udp-echo: read: %w", err)
		}
		_ = unix.Sendto(s, buf[:n], 0, from)
	}
}

// cmdUDPRR does N round trips of 64-byte datagrams to ADDR, one at a time,
// after 200 unrecorded warm-up trips, and prints "p50 p99" in microseconds.
func cmdUDPRR(args []string) error {
	if len(args) != 2 {
		return errors.New("udp-rr: want ADDR and N (e.g. 198.18.0.12:7007 5000)")
	}
	n, err := strconv.Atoi(args[1])
	if err != nil || n < 1 {
		return fmt.Errorf("udp-rr: N %q is not a positive count", args[1])
	}
	ap, err := netip.ParseAddrPort(args[0])
	if err != nil || !ap.Addr().Is4() {
		return fmt.Errorf("udp-rr: address %q is not IPv4:PORT", args[0])
	}
	runtime.LockOSThread()
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("udp-rr: socket: %w", err)
	}
	defer unix.Close(s)
	if err := unix.Connect(s, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err != nil {
		return fmt.Errorf("udp-rr: connect %s: %w", args[0], err)
	}
	if err := unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 1}); err != nil {
		return fmt.Errorf("udp-rr: receive timeout: %w", err)
	}
	if _, err := roundTrips(s, 200); err != nil {
		return fmt.Errorf("udp-rr: warm-up with %s: %w", args[0], err)
	}
	rtts, err := roundTrips(s, n)
	if err != nil {
		return fmt.Errorf("udp-rr: %s: %w", args[0], err)
	}
	if len(rtts) == 0 {
		return fmt.Errorf("udp-rr: no answers from %s", args[0])
	}
	fmt.Printf("%.1f %.1f\n", quantile(rtts, 0.5), quantile(rtts, 0.99))
	return nil
}

// procMem is what /proc/PID/status says of a process's resident memory,
// in KiB: VmRSS is RssAnon (heap, stacks: the Go runtime's memory) +
// RssFile (mapped files: the executable's text and bbolt's read-only mmap
// of the state file, which the kernel may drop and read again) + RssShmem.
type procMem struct {
	rss, anon, file, shmem int
}

// readProcMem reads the resident memory of pid from /proc.
func readProcMem(pid int) (procMem, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procMem{}, fmt.Errorf("read status of pid %d: %w", pid, err)
	}
	var m procMem
	found := 0
	for _, line := range splitLines(string(b)) {
		for _, f := range []struct {
			format string
			v      *int
		}{{"VmRSS: %d kB", &m.rss}, {"RssAnon: %d kB", &m.anon}, {"RssFile: %d kB", &m.file}, {"RssShmem: %d kB", &m.shmem}} {
			if _, err := fmt.Sscanf(line, f.format, f.v); err == nil {
				found++
			}
		}
	}
	if found != 4 {
		return m, fmt.Errorf("/proc/%d/status lacks VmRSS, RssAnon, RssFile or RssShmem", pid)
	}
	return m, nil
}

func splitLines(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}
