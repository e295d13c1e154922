package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"grapevine/internal/ipv4pkt"
)

// The convergence probe. It owns one OS thread inside the prober
// container's network namespace and an AF_PACKET socket on the interface
// that faces the measured network, and builds its own frames, so that
// neither Go's scheduler nor the kernel's neighbour timers (whose retries
// are whole jiffies, 1 ms at best) set its resolution:
//
//  1. ARP requests for the new address until one is answered (the
//     network's proxy ARP or the container itself), which gives its MAC;
//  2. ICMP echo requests to that MAC until one is answered, each carrying a
//     counter so that the answer names the request it answers.
//
// It starts at a slow pace (probeSlow) before `docker run` is called and
// switches to probeFast the moment `docker run` returns (t0), so that an
// address that already answered before t0 is seen as such rather than
// measured as a round trip. A sample's figure is the send time of the first
// answered echo request minus t0: the path was up when that request passed
// through it, and (apart from the last interval before it) not before. An
// answered request sent before t0 gives 0: ready when `docker run`
// returned, as far as the probe can tell.
const (
	probeSlow = time.Millisecond
	probeFast = 50 * time.Microsecond
)

// prober runs probes, one at a time, on its own thread.
type prober struct {
	reqs chan probeReq
}

type probeReq struct {
	dst     netip.Addr
	start   <-chan time.Time // t0; the zero time aborts
	timeout time.Duration    // after t0
	res     chan<- probeResult
}

// probeResult is one probe's outcome.
type probeResult struct {
	t0       time.Time
	answered time.Time     // send time of the first answered echo request
	gap      time.Duration // time since the probe before it (0 when answered before t0)
	sent     int           // probes (ARP and echo) sent after t0
	meanGap  time.Duration // mean time between probes after t0
	maxGap   time.Duration // longest time between probes after t0
	err      error
}

// value is the sample in ms: 0 when answered before t0.
func (r probeResult) value() float64 {
	if r.answered.Before(r.t0) {
		return 0
	}
	return float64(r.answered.Sub(r.t0).Nanoseconds()) / 1e6
}

// newProber starts the prober thread in the network namespace at nsPath.
func newProber(nsPath string) (*prober, error) {
	p := &prober{reqs: make(chan probeReq)}
	ready := make(chan error, 1)
	go func() {
		// The thread changes network namespace and is never unlocked: the
		// runtime ends it with the goroutine instead of reusing it.
		runtime.LockOSThread()
		t, err := openProbeThread(nsPath)
		ready <- err
		if err != nil {
			return
		}
		defer unix.Close(t.fd)
		for r := range p.reqs {
			res := t.probe(r.dst, r.start, r.timeout)
			r.res <- res
		}
	}()
	return p, <-ready
}

// close ends the prober thread.
func (p *prober) close() { close(p.reqs) }

// start begins a probe of dst; send t0 on the returned channel when
// `docker run` returns (the zero time aborts), then read the result.
func (p *prober) start(dst netip.Addr, timeout time.Duration) (chan<- time.Time, <-chan probeResult) {
	t0 := make(chan time.Time, 1)
	res := make(chan probeResult, 1)
	p.reqs <- probeReq{dst: dst, start: t0, timeout: timeout, res: res}
	return t0, res
}

// probeNow probes dst at the fast pace from now on.
func (p *prober) probeNow(dst netip.Addr, timeout time.Duration) probeResult {
	t0, res := p.start(dst, timeout)
	t0 <- time.Now()
	return <-res
}

type probeThread struct {
	fd      int
	ifindex int
	mac     net.HardwareAddr
	src     [4]byte
	id      uint16
	counter uint32
}

func openProbeThread(nsPath string) (*probeThread, error) {
	nsfd, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", nsPath, err)
	}
	defer unix.Close(nsfd)
	if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
		return nil, fmt.Errorf("enter netns %s: %w", nsPath, err)
	}
	// timers (ppoll) fire when asked, not up to 50 µs later
	if err := unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("probe thread timer slack: %w", err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return nil, fmt.Errorf("probe packet socket: %w", err)
	}
	return &probeThread{fd: fd, id: uint16(time.Now().UnixNano())}, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// bindFor binds the socket to the interface whose subnet holds dst (the
// network's, not e.g. Docker's gateway bridge).
func (t *probeThread) bindFor(dst netip.Addr) error {
	ifs, err := net.Interfaces() // netlink socket made on this thread: this namespace
	if err != nil {
		return fmt.Errorf("list interfaces: %w", err)
	}
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok || ipn.IP.To4() == nil || !ipn.Contains(net.IP(dst.AsSlice())) {
				continue
			}
			if t.ifindex == ifc.Index {
				return nil
			}
			if err := unix.Bind(t.fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifc.Index}); err != nil {
				return fmt.Errorf("bind packet socket to %s: %w", ifc.Name, err)
			}
			t.ifindex, t.mac = ifc.Index, ifc.HardwareAddr
			copy(t.src[:], ipn.IP.To4())
			return nil
		}
	}
	return fmt.Errorf("no interface of the prober is on %s's subnet", dst)
}

// probe runs one probe of dst (see the package comment at probeSlow).
func (t *probeThread) probe(dst netip.Addr, start <-chan time.Time, timeout time.Duration) probeResult {
	if err := t.bindFor(dst); err != nil {
		return probeResult{err: err}
	}
	s := &probeState{
		t: t, dst: dst, d4: dst.As4(), timeout: timeout,
		buf:      make([]byte, 2048),
		sends:    map[uint32][2]time.Time{},
		interval: probeSlow,
	}
	s.drain()
	for {
		now := time.Now()
		if s.takeStart(start, now) || s.over(now) {
			return s.r
		}
		if !now.Before(s.next) {
			sent, err := s.send()
			if err != nil {
				s.r.err = err
				return s.r
			}
			now = sent
		}
		if err := s.wait(now); err != nil {
			s.r.err = err
			return s.r
		}
		s.receive()
	}
}

// probeState is one probe's progress: ARP until dst's MAC is known, then
// echo requests, slowly until the start time arrives and fast after it.
type probeState struct {
	t       *probeThread
	dst     netip.Addr
	d4      [4]byte
	timeout time.Duration
	buf     []byte

	dstMAC   net.HardwareAddr
	sends    map[uint32][2]time.Time // echo counter → its send time and the previous probe's
	lastSend time.Time
	gapSum   time.Duration
	next     time.Time
	interval time.Duration
	deadline time.Time
	r        probeResult
}

// drain drops what queued up between probes.
func (s *probeState) drain() {
	for {
		if _, _, err := unix.Recvfrom(s.t.fd, s.buf, unix.MSG_DONTWAIT); err != nil {
			return
		}
	}
}

// takeStart takes the start time once it is given (waiting for it once
// answered: nothing left to send) and switches to fast probing; true when
// the probe was aborted instead (start closed).
func (s *probeState) takeStart(start <-chan time.Time, now time.Time) bool {
	if !s.r.t0.IsZero() {
		return false
	}
	var got bool
	if !s.r.answered.IsZero() {
		s.r.t0, got = <-start, true
	} else {
		select {
		case s.r.t0 = <-start:
			got = true
		default:
		}
	}
	if !got {
		return false
	}
	if s.r.t0.IsZero() {
		s.r.err = errors.New("probe aborted")
		return true
	}
	s.interval, s.next, s.deadline = probeFast, now, s.r.t0.Add(s.timeout)
	return false
}

// over tells whether the probe has its result: answered after the start,
// or past its deadline.
func (s *probeState) over(now time.Time) bool {
	if !s.r.t0.IsZero() && !s.r.answered.IsZero() {
		if s.r.sent > 1 {
			s.r.meanGap = s.gapSum / time.Duration(s.r.sent-1)
		}
		return true
	}
	if !s.deadline.IsZero() && now.After(s.deadline) {
		s.r.err = fmt.Errorf("%s did not answer within %v", s.dst, s.timeout)
		return true
	}
	return false
}

// send sends the next frame (ARP request, or echo request once the MAC is
// known), counting gaps after the start; it returns the send time.
func (s *probeState) send() (time.Time, error) {
	t := s.t
	var frame []byte
	if s.dstMAC == nil {
		frame = t.arpRequest(s.d4)
	} else {
		t.counter++
		var err error
		if frame, err = t.echoRequest(s.dstMAC, s.d4, t.counter); err != nil {
			return time.Time{}, err
		}
	}
	if err := unix.Sendto(t.fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: t.ifindex}); err != nil && !errors.Is(err, unix.ENOBUFS) {
		return time.Time{}, fmt.Errorf("send probe: %w", err)
	}
	sent := time.Now()
	if s.dstMAC != nil {
		s.sends[t.counter] = [2]time.Time{sent, s.lastSend}
	}
	if !s.r.t0.IsZero() {
		if s.r.sent > 0 {
			g := sent.Sub(s.lastSend)
			s.gapSum += g
			s.r.maxGap = max(s.r.maxGap, g)
		}
		s.r.sent++
	}
	s.lastSend = sent
	s.next = sent.Add(s.interval)
	return sent, nil
}

// wait waits for answers until the next send is due.
func (s *probeState) wait(now time.Time) error {
	wait := max(s.next.Sub(now), 0)
	ts := unix.NsecToTimespec(wait.Nanoseconds())
	if _, err := unix.Ppoll([]unix.PollFd{{Fd: int32(s.t.fd), Events: unix.POLLIN}}, &ts, nil); err != nil && !errors.Is(err, unix.EINTR) {
		return fmt.Errorf("wait for answers: %w", err)
	}
	return nil
}

// receive reads every queued frame: an ARP reply gives dst's MAC (the echo
// phase starts at once), the first echo reply the answered time.
func (s *probeState) receive() {
	for {
		n, from, err := unix.Recvfrom(s.t.fd, s.buf, unix.MSG_DONTWAIT)
		if err != nil {
			return
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		f := s.buf[:n]
		if s.dstMAC == nil {
			if mac, ok := arpReplyFrom(f, s.d4); ok {
				s.dstMAC = mac
				s.next = time.Now()
			}
			continue
		}
		if c, ok := s.t.echoReplyFrom(f, s.d4); ok && s.r.answered.IsZero() {
			if at, ok := s.sends[c]; ok {
				s.r.answered, s.r.gap = at[0], at[0].Sub(at[1])
			}
		}
	}
}

func (t *probeThread) arpRequest(dst [4]byte) []byte {
	f := make([]byte, 60)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], t.mac)
	binary.BigEndian.PutUint16(f[12:], unix.ETH_P_ARP)
	binary.BigEndian.PutUint16(f[14:], 1)      // Ethernet
	binary.BigEndian.PutUint16(f[16:], 0x0800) // IPv4
	f[18], f[19] = 6, 4
	binary.BigEndian.PutUint16(f[20:], 1) // request
	copy(f[22:28], t.mac)
	copy(f[28:32], t.src[:])
	copy(f[38:42], dst[:])
	return f
}

// arpReplyFrom returns the sender MAC of an ARP reply for dst.
func arpReplyFrom(f []byte, dst [4]byte) (net.HardwareAddr, bool) {
	if len(f) < 42 || binary.BigEndian.Uint16(f[12:]) != unix.ETH_P_ARP || binary.BigEndian.Uint16(f[20:]) != 2 || [4]byte(f[28:32]) != dst {
		return nil, false
	}
	return net.HardwareAddr(append([]byte(nil), f[22:28]...)), true
}

// echoRequest is the Ethernet frame of an echo request to dst carrying
// counter (the IPv4 identification and the echo's sequence number hold its
// low 16 bits, the data its 32).
func (t *probeThread) echoRequest(dstMAC net.HardwareAddr, dst [4]byte, counter uint32) ([]byte, error) {
	data := make([]byte, 8)
	binary.BigEndian.PutUint32(data, counter)
	pkt, err := ipv4pkt.EchoRequest(ipv4pkt.Echo{Src: netip.AddrFrom4(t.src), Dst: netip.AddrFrom4(dst),
		ID: t.id, Seq: uint16(counter), Data: data, IPID: int(uint16(counter)), DF: true})
	if err != nil {
		return nil, fmt.Errorf("echo request: %w", err)
	}
	f := make([]byte, 14, 14+len(pkt))
	copy(f[0:6], dstMAC)
	copy(f[6:12], t.mac)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	return append(f, pkt...), nil
}

// echoReplyFrom returns the counter of an echo reply from dst to this prober.
func (t *probeThread) echoReplyFrom(f []byte, dst [4]byte) (uint32, bool) {
	if len(f) < 34 || binary.BigEndian.Uint16(f[12:]) != 0x0800 || f[14]>>4 != 4 || f[23] != unix.IPPROTO_ICMP || [4]byte(f[26:30]) != dst {
		return 0, false
	}
	ic := f[14+int(f[14]&0xf)*4:]
	if len(ic) < 12 || ic[0] != 0 || binary.BigEndian.Uint16(ic[4:]) != t.id {
		return 0, false
	}
	return binary.BigEndian.Uint32(ic[8:]), true
}
