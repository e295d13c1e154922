package dataplane

import (
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// dockerStandIn plays Docker's embedded resolver in a container namespace:
// a server on 127.0.0.11:5353 answering every A query with 198.18.0.99, and
// Docker's own NAT rules taking 127.0.0.11:53 there and back. It returns the
// number of queries it has seen.
func dockerStandIn(t *testing.T) func() int {
	t.Helper()
	run(t, "iptables", "-w", "-t", "nat", "-A", "OUTPUT", "-d", "127.0.0.11/32", "-p", "udp", "--dport", "53", "-j", "DNAT", "--to-destination", "127.0.0.11:5353")
	run(t, "iptables", "-w", "-t", "nat", "-A", "POSTROUTING", "-s", "127.0.0.11/32", "-p", "udp", "--sport", "5353", "-j", "SNAT", "--to-source", ":53")
	pc, err := net.ListenPacket("udp4", "127.0.0.11:5353")
	if err != nil {
		t.Fatalf("stand-in resolver: %v", err)
	}
	t.Cleanup(func() { pc.Close() })
	seen := make(chan struct{}, 1024)
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			seen <- struct{}{}
			var q dns.Msg
			if q.Unpack(buf[:n]) != nil || len(q.Question) != 1 {
				continue
			}
			r := new(dns.Msg).SetReply(&q)
			r.Answer = append(r.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 600}, A: net.IPv4(198, 18, 0, 99)})
			b, _ := r.Pack()
			_, _ = pc.WriteTo(b, from)
		}
	}()
	return func() int { return len(seen) }
}

// lookupA asks 127.0.0.11:53 for name's A records from conn (one socket: one
// source port for every query) and returns the addresses, or an error.
func lookupA(conn *net.UDPConn, name string) ([]string, error) {
	q := new(dns.Msg).SetQuestion(dns.Fqdn(name), dns.TypeA)
	b, err := q.Pack()
	if err != nil {
		return nil, err
	}
	if _, err := conn.WriteToUDP(b, net.UDPAddrFromAddrPort(dockerResolver())); err != nil {
		return nil, err
	}
	buf := make([]byte, 65535)
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, from, err := conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		return nil, err
	}
	if from != dockerResolver() {
		return nil, errors.New("answer from " + from.String())
	}
	var r dns.Msg
	if err := r.Unpack(buf[:n]); err != nil {
		return nil, err
	}
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out, nil
}

// tapAnswerDB answers "db." with 198.18.0.7 and nothing else.
func tapAnswerDB(query []byte) []byte {
	var q dns.Msg
	if q.Unpack(query) != nil || len(q.Question) != 1 || q.Question[0].Name != "db." {
		return nil
	}
	r := new(dns.Msg).SetReply(&q)
	r.Answer = append(r.Answer, &dns.A{Hdr: dns.RR_Header{Name: "db.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 10}, A: net.IPv4(198, 18, 0, 7)})
	b, _ := r.Pack()
	return b
}

// TestTapAnswersBeforeDocker: in a container-like namespace with Docker's
// NAT rules, the tap answers its names, passes every other query to Docker
// unchanged (also from a port whose last query the tap answered), fails
// open when its reader is gone, is taken over idempotently and leaves no
// rule behind.
func TestTapAnswersBeforeDocker(t *testing.T) {
	_, k := newKernelNS(t)
	name, ns, _ := otherNS(t)
	var dockerSeen func() int
	var conn *net.UDPConn
	inNS(t, ns, func() {
		dockerSeen = dockerStandIn(t)
		var err error
		if conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
			t.Fatal(err)
		}
	})
	defer conn.Close()
	expect := func(step, name, want string) {
		t.Helper()
		got, err := lookupA(conn, name)
		if err != nil || strings.Join(got, ",") != want {
			t.Fatalf("%s: %s answered %v, %v; want %s", step, name, got, err, want)
		}
	}
	path := filepath.Join("/run/netns", name)
	c, err := k.OpenTap(path, tapAnswerDB)
	if err != nil {
		t.Fatalf("OpenTap: %v", err)
	}
	expect("tapped", "db", "198.18.0.7")
	if n := dockerSeen(); n != 0 {
		t.Fatalf("Docker's resolver saw %d queries; the tap answered the only one", n)
	}
	expect("tapped, same port after a tap answer", "web", "198.18.0.99")
	expect("tapped, again", "db", "198.18.0.7")
	expect("tapped, again", "web", "198.18.0.99")

	// a plugin that stopped without closing: the rules stay, nobody reads the queue
	tp := c.(*tap)
	tp.cancel()
	_ = tp.nf.Close()
	expect("rules left, no reader (fail open)", "db", "198.18.0.99")

	c2, err := k.OpenTap(path, tapAnswerDB)
	if err != nil {
		t.Fatalf("OpenTap over a left tap: %v", err)
	}
	inNS(t, ns, func() {
		if n := strings.Count(run(t, "iptables-save", "-t", "raw"), "-A OUTPUT -j "+TapChain); n != 1 {
			t.Fatalf("%d jumps to %s after a second OpenTap, want 1", n, TapChain)
		}
	})
	expect("taken over", "db", "198.18.0.7")
	if err := c2.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	inNS(t, ns, func() {
		if out := run(t, "iptables-save", "-t", "raw"); strings.Contains(out, TapChain) {
			t.Fatalf("rules left after Close:\n%s", out)
		}
	})
	expect("closed", "db", "198.18.0.99")
	tp.release() // the stopped tap's socket and namespace handle
}

// TestTapRefusesNonNamespace: a path that is not a namespace is refused
// before anything is installed.
func TestTapRefusesNonNamespace(t *testing.T) {
	_, k := newKernelNS(t)
	if _, err := k.OpenTap("/proc/self/status", tapAnswerDB); err == nil || !strings.Contains(err.Error(), "not a network namespace") {
		t.Fatalf("OpenTap on a plain file: %v, want 'not a network namespace'", err)
	}
	if _, err := k.OpenTap("/run/netns/gvt-does-not-exist", tapAnswerDB); err == nil {
		t.Fatal("OpenTap on a missing path succeeded")
	}
}
