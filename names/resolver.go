package names

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
	"github.com/sirupsen/logrus"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// Timeouts of the resolver. Docker's resolver gives up on an external
// server after a few seconds, so nothing here waits longer.
const (
	// answerTTL is the TTL of a grapevine answer: short, so that a removed
	// container's name is gone from caches within seconds.
	answerTTL     = 10
	upstreamWait  = 5 * time.Second
	tcpIdle       = 10 * time.Second
	maxUDPMessage = 65535
	// maxRelays bounds the UDP queries waiting for their upstream at once
	// (each holds a thread for up to upstreamWait): a container flooding
	// a silent address's port 53 costs other relayed queries, never the
	// plugin; grapevine names are still answered.
	maxRelays = 256
)

// answer returns the reply to a query from client when it asks for a
// grapevine name on client's network, nil when the query must go to its
// original destination. udp bounds the reply (answerIn).
func (s *Service) answer(query []byte, client netip.Addr, udp bool) []byte {
	subnet, ok := s.subnetOf(client)
	if !ok {
		return nil
	}
	return s.answerIn(query, []netip.Prefix{subnet}, udp)
}

// answerIn returns the reply to a query for a grapevine name held on the
// first of subnets that holds it (A: every holder's address, the order
// rotating; AAAA: no data), nil for any other query. An answer over UDP
// larger than the client takes (its EDNS0 buffer size, else 512 bytes) is
// truncated with TC set, so that the client asks again over TCP.
func (s *Service) answerIn(query []byte, subnets []netip.Prefix, udp bool) []byte {
	var q dns.Msg
	if err := q.Unpack(query); err != nil || q.Response || q.Opcode != dns.OpcodeQuery || len(q.Question) != 1 {
		return nil
	}
	qq := q.Question[0]
	if qq.Qclass != dns.ClassINET || (qq.Qtype != dns.TypeA && qq.Qtype != dns.TypeAAAA) {
		return nil
	}
	name := strings.TrimSuffix(strings.ToLower(qq.Name), ".")
	if CheckName(name) != nil {
		return nil
	}
	var addrs []netip.Addr
	for _, subnet := range subnets {
		if addrs = s.table.Lookup(subnet, name); len(addrs) > 0 {
			break
		}
	}
	if len(addrs) == 0 {
		return nil
	}
	reply := new(dns.Msg).SetReply(&q)
	reply.RecursionAvailable = true
	if qq.Qtype == dns.TypeA {
		for _, a := range addrs {
			reply.Answer = append(reply.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: answerTTL},
				A:   a.AsSlice(),
			})
		}
	}
	if udp {
		limit := dns.MinMsgSize
		if o := q.IsEdns0(); o != nil && o.UDPSize() > dns.MinMsgSize {
			limit = int(o.UDPSize())
		}
		reply.Truncate(limit)
	}
	b, err := reply.Pack()
	if err != nil {
		s.log.WithError(err).WithField("name", name).Warn("packing an answer")
		return nil
	}
	return b
}

func (s *Service) serveUDP() {
	defer s.wg.Done()
	buf := make([]byte, maxUDPMessage)
	for {
		n, cm, from, err := s.pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.WithError(err).Debug("resolver: udp read")
			continue
		}
		ua, ok := from.(*net.UDPAddr)
		if !ok || cm == nil {
			continue
		}
		dst, _ := netip.AddrFromSlice(cm.Dst)
		client := netip.AddrPortFrom(ua.AddrPort().Addr().Unmap(), ua.AddrPort().Port())
		pkt := append([]byte(nil), buf[:n]...)
		s.wg.Add(1)
		go s.handleUDP(pkt, client, netip.AddrPortFrom(dst.Unmap(), s.udpPort))
	}
}

// handleUDP answers a grapevine name or relays the query, unchanged, to
// its original destination and the answer, unchanged, back. local is the
// address and port the query was redirected to; the reply leaves from it.
func (s *Service) handleUDP(pkt []byte, from, local netip.AddrPort) {
	defer s.wg.Done()
	if _, ok := s.subnetOf(from.Addr()); !ok {
		return // not from a grapevine network: never redirected here
	}
	reply := func(b []byte) {
		_, _ = s.pc.WriteTo(b, &ipv4.ControlMessage{Src: local.Addr().AsSlice()}, net.UDPAddrFromAddrPort(from))
	}
	if ans := s.answer(pkt, from.Addr(), true); ans != nil {
		reply(ans)
		return
	}
	select {
	case s.relays <- struct{}{}:
		defer func() { <-s.relays }()
	default:
		s.log.WithField("client", from).Debug("resolver: query dropped: maxRelays queries already wait for their upstream")
		return
	}
	orig, err := s.cfg.OriginalUDP(from, local)
	if err != nil {
		s.log.WithError(err).WithField("client", from).Debug("resolver: query dropped")
		return
	}
	if err := s.exchangeUDP(pkt, orig, reply); err != nil {
		s.log.WithError(err).WithFields(logrus.Fields{"client": from, "upstream": orig}).Debug("resolver: no answer from upstream")
	}
}

// exchangeUDP sends pkt to to and calls reply with the answer (valid only
// during the call). It uses a blocking socket of its own rather than Go's
// network poller: the handler's thread sleeps in the kernel and wakes with
// the answer, which saves the poller's registration, wake-up and
// hand-over on every forwarded query. Such a handler holds an OS thread
// while it waits: handleUDP lets at most maxRelays wait at once.
func (s *Service) exchangeUDP(pkt []byte, to netip.AddrPort, reply func([]byte)) error {
	if !to.Addr().Is4() {
		return fmt.Errorf("upstream %s: IPv4 only", to)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("upstream socket: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(upstreamWait.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("upstream socket timeout: %w", err)
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(to.Port()), Addr: to.Addr().As4()}); err != nil {
		return fmt.Errorf("connect to upstream %s: %w", to, err)
	}
	if _, err := unix.Write(fd, pkt); err != nil {
		return fmt.Errorf("send to upstream %s: %w", to, err)
	}
	bp := s.bufs.Get().(*[]byte)
	defer s.bufs.Put(bp)
	for {
		n, err := unix.Read(fd, *bp)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("answer from upstream %s: %w", to, err)
		}
		reply((*bp)[:n])
		return nil
	}
}

func (s *Service) serveTCP() {
	defer s.wg.Done()
	for {
		c, err := s.tcp.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.WithError(err).Debug("resolver: tcp accept")
			continue
		}
		s.wg.Add(1)
		go s.handleTCP(c)
	}
}

// handleTCP answers grapevine names on the connection until a query for
// another name comes; from then on it relays the connection, bytes
// unchanged, to its original destination.
func (s *Service) handleTCP(c *net.TCPConn) {
	defer s.wg.Done()
	defer c.Close()
	from, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	client := from.Addr().Unmap()
	if _, ok := s.subnetOf(client); !ok {
		return
	}
	orig, err := s.cfg.OriginalTCP(c)
	if err != nil {
		s.log.WithError(err).WithField("client", from).Debug("resolver: connection dropped")
		return
	}
	for {
		_ = c.SetReadDeadline(time.Now().Add(tcpIdle))
		msg, err := readTCPMessage(c)
		if err != nil {
			return
		}
		if ans := s.answer(msg, client, false); ans != nil {
			if _, err := c.Write(binary.BigEndian.AppendUint16(nil, uint16(len(ans)))); err != nil {
				return
			}
			if _, err := c.Write(ans); err != nil {
				return
			}
			continue
		}
		_ = c.SetReadDeadline(time.Time{})
		s.relayTCP(c, orig, msg)
		return
	}
}

func readTCPMessage(c io.Reader) ([]byte, error) {
	var l [2]byte
	if _, err := io.ReadFull(c, l[:]); err != nil {
		return nil, err
	}
	msg := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(c, msg); err != nil {
		return nil, err
	}
	return msg, nil
}

// relayTCP sends first (a query already read) and then everything else
// from c to orig, and everything back, until either side closes.
func (s *Service) relayTCP(c *net.TCPConn, orig netip.AddrPort, first []byte) {
	up, err := net.DialTimeout("tcp", orig.String(), upstreamWait)
	if err != nil {
		s.log.WithError(err).WithField("upstream", orig).Debug("resolver: upstream unreachable over tcp")
		return
	}
	defer up.Close()
	if _, err := up.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(first))), first...)); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(up, c)
		if t, ok := up.(*net.TCPConn); ok {
			_ = t.CloseWrite()
		}
		close(done)
	}()
	_, _ = io.Copy(c, up)
	_ = c.CloseWrite()
	_ = c.SetReadDeadline(time.Now()) // ends the other copy if the client lingers
	<-done
}
