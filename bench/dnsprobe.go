package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// The DNS measurement client: plain UDP queries, one outstanding at a
// time, from a socket made in a container's network namespace, on a locked
// thread with blocking system calls (as the latency tools do), so that a
// figure is the resolvers' path and not Go's scheduler.

// dnsQuery is a packed A query for name; setID gives each one its own ID.
type dnsQuery struct {
	name string
	wire []byte
	id   uint16
}

func newDNSQuery(name string) (*dnsQuery, error) {
	m := new(dns.Msg).SetQuestion(dns.Fqdn(name), dns.TypeA)
	wire, err := m.Pack()
	if err != nil {
		return nil, fmt.Errorf("pack a query for %s: %w", name, err)
	}
	return &dnsQuery{name: dns.Fqdn(name), wire: wire, id: uint16(time.Now().UnixNano())}, nil
}

// next stamps the next ID into the query and returns it.
func (q *dnsQuery) next() uint16 {
	q.id++
	q.wire[0], q.wire[1] = byte(q.id>>8), byte(q.id)
	return q.id
}

// checkAnswer reads a reply to an A query: whether it is an answer, with
// the reply's ID, and whether it holds want (any A when want is invalid).
// A reply that is not a well-formed DNS response is an error.
func checkAnswer(b []byte, want netip.Addr) (id uint16, has bool, err error) {
	var m dns.Msg
	if err := m.Unpack(b); err != nil {
		return 0, false, fmt.Errorf("reply does not parse: %w", err)
	}
	if !m.Response {
		return m.Id, false, errors.New("reply is not a response")
	}
	if m.Rcode != dns.RcodeSuccess {
		return m.Id, false, nil
	}
	for _, rr := range m.Answer {
		a, ok := rr.(*dns.A)
		if !ok {
			continue
		}
		got, ok := netip.AddrFromSlice(a.A.To4())
		if ok && (!want.IsValid() || got == want) {
			return m.Id, true, nil
		}
	}
	return m.Id, false, nil
}

// dnsSocket is a UDP socket in a container's namespace connected to a
// resolver, with a receive timeout of one second (openRR).
func dnsSocket(nsPath string, resolver netip.AddrPort) (int, error) {
	return openRR(nsPath, resolver)
}

// nameProbeWait is how long the name probe waits for an answer before it
// sends the next query: a lost datagram must not count as a name that
// was not there (a late answer is skipped by its ID).
const nameProbeWait = 50 * time.Millisecond

// exchange sends q once on fd and waits for the reply with its ID (late
// replies to earlier queries are skipped): the time it took and the reply.
func exchange(fd int, q *dnsQuery, buf []byte) (time.Duration, []byte, error) {
	id := q.next()
	start := time.Now()
	if _, err := unix.Write(fd, q.wire); err != nil {
		return 0, nil, fmt.Errorf("send query for %s: %w", q.name, err)
	}
	for {
		n, err := unix.Read(fd, buf)
		if err != nil {
			return 0, nil, fmt.Errorf("no reply for %s: %w", q.name, err)
		}
		if n >= 2 && uint16(buf[0])<<8|uint16(buf[1]) == id {
			return time.Since(start), buf[:n], nil
		}
	}
}

// lookups does n A queries for q on fd and returns their times in ms; each
// reply must be an answer holding want (any address when invalid). Lost
// replies are skipped, more than 5 in a row is an error.
func lookups(fd int, q *dnsQuery, want netip.Addr, n int) ([]float64, error) {
	buf := make([]byte, 4096)
	out := make([]float64, 0, n)
	lost := 0
	for range n {
		d, reply, err := exchange(fd, q, buf)
		if err != nil {
			if lost++; lost > 5 {
				return out, err
			}
			continue
		}
		lost = 0
		_, has, err := checkAnswer(reply, want)
		if err != nil {
			return out, fmt.Errorf("%s: %w", q.name, err)
		}
		if !has {
			return out, fmt.Errorf("%s: the reply lacks %v", q.name, want)
		}
		out = append(out, float64(d.Nanoseconds())/1e6)
	}
	return out, nil
}

// nameProbe waits, from the namespace at nsPath, for name to resolve to
// want through the resolver: queries one at a time, every nameProbeSlow
// before t0 arrives on start (the zero time aborts) and back to back after
// it. The result's answered time is the send time of the first query whose
// reply held want (before t0: ready when `docker run` returned).
const nameProbeSlow = 2 * time.Millisecond

func nameProbe(nsPath string, resolver netip.AddrPort, name string, want netip.Addr, start <-chan time.Time, timeout time.Duration) probeResult {
	res := make(chan probeResult, 1)
	go func() {
		runtime.LockOSThread() // a blocking socket on one thread; openRR restores the namespace
		defer runtime.UnlockOSThread()
		res <- runNameProbe(nsPath, resolver, name, want, start, timeout)
	}()
	return <-res
}

func runNameProbe(nsPath string, resolver netip.AddrPort, name string, want netip.Addr, start <-chan time.Time, timeout time.Duration) probeResult {
	var r probeResult
	fd, err := dnsSocket(nsPath, resolver)
	if err != nil {
		r.err = err
		return r
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(nameProbeWait.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		r.err = fmt.Errorf("name probe receive timeout: %w", err)
		return r
	}
	q, err := newDNSQuery(name)
	if err != nil {
		r.err = err
		return r
	}
	buf := make([]byte, 4096)
	var deadline, last time.Time
	for {
		if r.t0.IsZero() {
			select {
			case r.t0 = <-start:
				if r.t0.IsZero() {
					r.err = errors.New("probe aborted")
					return r
				}
				deadline = r.t0.Add(timeout)
			default:
			}
		}
		if !r.answered.IsZero() && !r.t0.IsZero() {
			if r.sent > 1 {
				r.meanGap /= time.Duration(r.sent - 1)
			}
			return r
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			r.err = fmt.Errorf("%s did not resolve to %s within %v", name, want, timeout)
			return r
		}
		if !r.answered.IsZero() {
			// answered before t0: wait for it
			if r.t0 = <-start; r.t0.IsZero() {
				r.err = errors.New("probe aborted")
			}
			return r
		}
		if r.t0.IsZero() {
			time.Sleep(time.Until(last.Add(nameProbeSlow)))
		}
		sent := time.Now()
		_, reply, err := exchange(fd, q, buf)
		if !r.t0.IsZero() {
			if r.sent > 0 {
				g := sent.Sub(last)
				r.maxGap = max(r.maxGap, g)
				r.meanGap += g
			}
			r.sent++
		}
		prev := last
		last = sent
		if err != nil {
			continue // a lost reply: the next query
		}
		if _, has, err := checkAnswer(reply, want); err == nil && has {
			r.answered, r.gap = sent, sent.Sub(prev)
		}
	}
}

// cmdDNSUpstream serves DNS on ADDR (UDP and TCP) as the hosts' upstream
// server: up.example has A 198.18.5.5, every other name is NXDOMAIN.
func cmdDNSUpstream(args []string) error {
	if len(args) != 1 {
		return errors.New("dns-upstream: want one argument, the listen address (e.g. 198.18.0.254:53)")
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg).SetReply(q)
		if len(q.Question) == 1 && q.Question[0].Name == upstreamName && q.Question[0].Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: upstreamName, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IP(upstreamAnswer.AsSlice())})
		} else {
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
	errs := make(chan error, 2)
	for _, proto := range []string{"udp", "tcp"} {
		srv := &dns.Server{Addr: args[0], Net: proto, Handler: h}
		go func() { errs <- srv.ListenAndServe() }()
	}
	return fmt.Errorf("dns-upstream: %w", <-errs)
}

// The upstream server's one name.
const upstreamName = "up.example."

var upstreamAnswer = netip.MustParseAddr("198.18.5.5")
