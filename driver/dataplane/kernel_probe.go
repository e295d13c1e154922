package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// The doctor's VXLAN probe.
//
// `grapevine doctor` checks the encapsulated path to each peer with real
// VXLAN frames: an ICMP echo sent through a VXLAN device of its own, with a
// reserved VNI on the VXLAN port, to the same device on the peer, whose
// kernel answers it. The device lives alone in a private network namespace
// that no file pins: the Kernel holds it open, and it vanishes with
// everything in it when the Kernel closes it (RemoveProbe, Close) or the
// process dies. Its UDP socket is the host namespace's, shared with the
// networks' VXLAN devices, so the probe crosses the host's firewall, the
// VXLAN ingress filter and the underlay exactly as the networks' frames do.
//
//	host namespace                private namespace (no pin)
//	  VXLAN UDP socket  ◄───────── gvprobe  address VTEP/32, default route,
//	                                        per peer: FDB MAC → VTEP and a
//	                                        permanent neighbour VTEP → MAC
//
// Inside the namespace each host's probe address is its own VTEP address
// and its MAC is ProbeMAC(VTEP), so every host derives every peer's from
// the VTEP alone; the namespace holds nothing else, so the addresses meet
// no route of the host. The device has no learning and no flooding entry:
// it reaches and answers only the peers EnsureProbe names.

// probeMTU is the probe device's MTU: large enough for any network's
// packets, so that the underlay path alone decides what crosses. The
// device is bound to no underlay link, which lets the kernel accept it.
const probeMTU = 65000

// ErrNoProbe: the probe device does not exist (EnsureProbe first).
var ErrNoProbe = errors.New("no probe device on this host")

// ErrProbeLost: no answer to a probe came back in time.
var ErrProbeLost = errors.New("no answer")

// ProbeSpec is the probe device as the driver wants it.
type ProbeSpec struct {
	VNI   uint32     // the reserved probe VNI
	Port  int        // the VXLAN UDP port
	Local netip.Addr // this host's VTEP (IPv4): the device's source and address
	// Peers are the VTEPs of the members the probe reaches and answers.
	Peers []netip.Addr
}

// ProbeMAC is the MAC of the probe device of the host whose VTEP is vtep:
// locally administered, unicast, 02:76 and the address's four bytes.
func ProbeMAC(vtep netip.Addr) net.HardwareAddr {
	a := vtep.As4()
	return net.HardwareAddr{0x02, 0x76, a[0], a[1], a[2], a[3]}
}

// probeSpace is the probe's private namespace and what is programmed in it.
type probeSpace struct {
	fd    netns.NsHandle
	nl    *netlink.Handle
	spec  ProbeSpec           // the device's VNI, port and local address
	peers map[netip.Addr]bool // peers whose entries are written
}

func (p *probeSpace) close() {
	p.nl.Close()
	_ = p.fd.Close()
}

func validateProbe(spec ProbeSpec) error {
	if spec.VNI == 0 || spec.VNI > 1<<24-1 {
		return fmt.Errorf("probe: vni %d outside 1..16777215", spec.VNI)
	}
	if spec.Port <= 0 || spec.Port > 65535 {
		return fmt.Errorf("probe: udp port %d outside 1..65535", spec.Port)
	}
	if !spec.Local.Is4() {
		return fmt.Errorf("probe: local vtep %v is not an IPv4 address", spec.Local)
	}
	for _, p := range spec.Peers {
		if !p.Is4() {
			return fmt.Errorf("probe: peer vtep %v is not an IPv4 address", p)
		}
	}
	return nil
}

// EnsureProbe implements Dataplane: it creates the probe's namespace and
// device when missing, recreates the device when its VNI, port or address
// differ, and makes its entries match spec.Peers exactly.
func (k *Kernel) EnsureProbe(spec ProbeSpec) error {
	if err := validateProbe(spec); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return errors.New("probe: data plane closed")
	}
	if k.probe != nil && (k.probe.spec.VNI != spec.VNI || k.probe.spec.Port != spec.Port || k.probe.spec.Local != spec.Local) {
		k.dropProbe()
	}
	if k.probe == nil {
		p, err := k.newProbe(spec)
		if err != nil {
			return err
		}
		k.probe = p
		k.log.WithFields(map[string]any{"vni": spec.VNI, "vtep": spec.Local}).Info("created the doctor's probe device")
	}
	return k.probe.syncPeers(spec)
}

// RemoveProbe implements Dataplane: closing the private namespace removes
// it with the device. Missing is success.
func (k *Kernel) RemoveProbe() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.probe != nil {
		k.dropProbe()
		k.log.Info("removed the doctor's probe device")
	}
	return nil
}

// dropProbe closes the probe's namespace. Caller holds mu.
func (k *Kernel) dropProbe() {
	if k.probe != nil {
		k.probe.close()
		k.probe = nil
	}
}

// newProbe makes the private namespace and the device in it: created from
// the host namespace (which keeps its UDP socket) straight into the new one.
// Caller holds mu.
func (k *Kernel) newProbe(spec ProbeSpec) (_ *probeSpace, err error) {
	fd, err := newPrivateNetNS()
	if err != nil {
		return nil, fmt.Errorf("probe: %w", err)
	}
	h, err := netlink.NewHandleAt(fd)
	if err != nil {
		_ = fd.Close()
		return nil, fmt.Errorf("probe: netlink handle in its namespace: %w", err)
	}
	p := &probeSpace{fd: fd, nl: h, spec: spec, peers: map[netip.Addr]bool{}}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	if err := k.createProbeDevice(spec, fd); err != nil {
		return nil, err
	}
	l, err := linkIn(h, ProbeName)
	if err != nil {
		return nil, fmt.Errorf("probe: read back: %w", err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(spec.Local.AsSlice()), Mask: net.CIDRMask(32, 32)}}
	if err := h.AddrReplace(l, addr); err != nil {
		return nil, fmt.Errorf("probe: address %s: %w", spec.Local, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("probe: set up: %w", err)
	}
	def := &netlink.Route{LinkIndex: l.Attrs().Index, Scope: netlink.SCOPE_LINK, Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}}
	if err := h.RouteReplace(def); err != nil {
		return nil, fmt.Errorf("probe: default route: %w", err)
	}
	return p, nil
}

// createProbeDevice makes the device in the host namespace, which keeps
// its UDP socket, under a name no other link of the host has (a leftover
// of a crash between the two steps is deleted first), and moves it into
// the private namespace fd. Caller holds mu.
func (k *Kernel) createProbeDevice(spec ProbeSpec, fd netns.NsHandle) error {
	if err := deleteIn(k.nl, ProbeName); err != nil {
		return fmt.Errorf("probe: remove a leftover %q from the host namespace: %w", ProbeName, err)
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = ProbeName
	attrs.MTU = probeMTU
	attrs.HardwareAddr = ProbeMAC(spec.Local)
	vx := &netlink.Vxlan{LinkAttrs: attrs, VxlanId: int(spec.VNI), Port: spec.Port, SrcAddr: net.IP(spec.Local.AsSlice())}
	if err := k.nl.LinkAdd(vx); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("probe: vni %d on udp port %d is used by %s (the probe device of a plugin process that just stopped goes within seconds): %w",
				spec.VNI, spec.Port, k.vniHolder(VXLANSpec{VNI: spec.VNI, Port: spec.Port}), ErrVNIInUse)
		}
		return fmt.Errorf("probe: create vxlan %q (vni %d, udp port %d): %w", ProbeName, spec.VNI, spec.Port, err)
	}
	l, err := linkIn(k.nl, ProbeName)
	if err == nil {
		err = k.nl.LinkSetNsFd(l, int(fd))
	}
	if err != nil {
		_ = deleteIn(k.nl, ProbeName)
		return fmt.Errorf("probe: move %q into its namespace: %w", ProbeName, err)
	}
	return nil
}

// newPrivateNetNS makes a network namespace held only by the returned
// handle.
func newPrivateNetNS() (netns.NsHandle, error) {
	fd := netns.None()
	enter := func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare a new network namespace: %w", err)
		}
		return nil
	}
	err := onNetNSThread(enter, func() error {
		h, err := netns.Get()
		if err != nil {
			return fmt.Errorf("open the new network namespace: %w", err)
		}
		fd = h
		return nil
	})
	return fd, err
}

// syncPeers writes the entries of the peers in spec that lack them and
// deletes those of the others.
func (p *probeSpace) syncPeers(spec ProbeSpec) error {
	l, err := linkIn(p.nl, ProbeName)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	want := map[netip.Addr]bool{}
	for _, v := range spec.Peers {
		if v != spec.Local {
			want[v] = true
		}
	}
	var errs []error
	for _, v := range slices.SortedFunc(func(yield func(netip.Addr) bool) {
		for a := range want {
			if !p.peers[a] && !yield(a) {
				return
			}
		}
	}, netip.Addr.Compare) {
		fdb, neigh := probeEntries(l, v)
		if err := p.nl.NeighSet(fdb); err != nil {
			errs = append(errs, fmt.Errorf("probe: fdb entry for %s: %w", v, err))
			continue
		}
		if err := p.nl.NeighSet(neigh); err != nil {
			errs = append(errs, fmt.Errorf("probe: neighbour %s: %w", v, err))
			continue
		}
		p.peers[v] = true
	}
	for v := range p.peers {
		if want[v] {
			continue
		}
		fdb, neigh := probeEntries(l, v)
		for _, n := range []*netlink.Neigh{neigh, fdb} {
			if err := p.nl.NeighDel(n); err != nil && !isMissing(err) {
				errs = append(errs, fmt.Errorf("probe: delete the entries of %s: %w", v, err))
			}
		}
		delete(p.peers, v)
	}
	return errors.Join(errs...)
}

// probeEntries are the FDB entry (the peer's probe MAC behind its VTEP)
// and the neighbour entry (its probe address) of one peer.
func probeEntries(l netlink.Link, vtep netip.Addr) (fdb, neigh *netlink.Neigh) {
	mac := ProbeMAC(vtep)
	ip := net.IP(vtep.AsSlice())
	fdb = &netlink.Neigh{LinkIndex: l.Attrs().Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
		State: netlink.NUD_PERMANENT, IP: ip, HardwareAddr: mac}
	neigh = &netlink.Neigh{LinkIndex: l.Attrs().Index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
		IP: ip, HardwareAddr: mac}
	return fdb, neigh
}

// Probe bounds: the smallest IPv4 packet an echo fits in, and the largest
// a probe may be.
const (
	MinProbeSize = 28
	MaxProbeSize = probeMTU
)

// Probe implements Dataplane: one ICMP echo of size bytes (the whole IPv4
// packet, Don't Fragment set) from the probe device to peer's probe
// address, across the VXLAN path; it returns the round trip, or an error
// wrapping ErrProbeLost when no answer came within timeout.
func (k *Kernel) Probe(peer netip.Addr, size int, timeout time.Duration) (time.Duration, error) {
	if !peer.Is4() {
		return 0, fmt.Errorf("probe: peer %v is not an IPv4 address", peer)
	}
	if size < MinProbeSize || size > MaxProbeSize {
		return 0, fmt.Errorf("probe: size %d outside %d..%d", size, MinProbeSize, MaxProbeSize)
	}
	sock, err := k.probeSocket()
	if err != nil {
		return 0, err
	}
	defer unix.Close(sock)
	id, seq := uint16(unix.Getpid()^int(time.Now().UnixNano())), uint16(time.Now().UnixNano()>>10)
	req, err := echoRequest(id, seq, size-20)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if err := unix.Sendto(sock, req, 0, &unix.SockaddrInet4{Addr: peer.As4()}); err != nil {
		return 0, fmt.Errorf("probe: send %d bytes to %s: %w", size, peer, err)
	}
	if err := awaitEcho(sock, peer, id, seq, start.Add(timeout), size); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// probeSocket opens a raw ICMP socket in the probe's namespace, with Don't
// Fragment set on every packet whatever the path MTU cache says.
func (k *Kernel) probeSocket() (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.probe == nil {
		return -1, ErrNoProbe
	}
	sock := -1
	err := inNetNS(k.probe.fd, func() error {
		s, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		if err != nil {
			return fmt.Errorf("probe: raw ICMP socket (needs CAP_NET_RAW): %w", err)
		}
		sock = s
		return nil
	})
	if err != nil {
		return -1, err
	}
	if err := unix.SetsockoptInt(sock, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_PROBE); err != nil {
		unix.Close(sock)
		return -1, fmt.Errorf("probe: set Don't Fragment: %w", err)
	}
	return sock, nil
}

// echoRequest is an ICMP echo request of n bytes (header included),
// checksummed by x/net's icmp package.
func echoRequest(id, seq uint16, n int) ([]byte, error) {
	data := make([]byte, n-8)
	for i := range data {
		data[i] = byte(i + 8)
	}
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: int(id), Seq: int(seq), Data: data}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return nil, fmt.Errorf("probe: echo request: %w", err)
	}
	return b, nil
}

// awaitEcho reads the socket until peer's echo reply to id/seq, of the
// size sent, arrives or the deadline passes. Everything else is skipped.
func awaitEcho(sock int, peer netip.Addr, id, seq uint16, deadline time.Time, size int) error {
	buf := make([]byte, size+128)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("probe of %d bytes to %s: %w within the timeout", size, peer, ErrProbeLost)
		}
		fds := []unix.PollFd{{Fd: int32(sock), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("probe: wait for the answer: %w", err)
		}
		if n == 0 {
			continue
		}
		m, _, err := unix.Recvfrom(sock, buf, unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("probe: read the answer: %w", err)
		}
		if isEchoReply(buf[:m], peer, id, seq, size) {
			return nil
		}
	}
}

// isEchoReply reports whether pkt (an IPv4 packet as a raw socket reads
// it) is peer's echo reply to id/seq of size bytes.
func isEchoReply(pkt []byte, peer netip.Addr, id, seq uint16, size int) bool {
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return false
	}
	ihl := int(pkt[0]&0x0f) * 4
	if ihl < 20 || len(pkt) < ihl+8 || pkt[9] != unix.IPPROTO_ICMP {
		return false
	}
	src, _ := netip.AddrFromSlice(pkt[12:16])
	icmp := pkt[ihl:]
	return src == peer && icmp[0] == 0 && binary.BigEndian.Uint16(icmp[4:]) == id &&
		binary.BigEndian.Uint16(icmp[6:]) == seq && len(icmp) == size-20
}
