package names_test

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"grapevine/gossip/gossiptest"
	"grapevine/names"
)

// BenchmarkRelay: one query at a time through the resolver to an upstream
// on loopback (the conntrack question faked), against the same query sent
// to the upstream directly: the resolver's own cost per relayed query.
func BenchmarkRelay(b *testing.B) {
	n := gossiptest.NewNet()
	obs := n.Node(b, "a", nil)
	up := upstreamB(b)
	s, err := names.Start(names.Config{
		Cluster: obs,
		Networks: func() map[string]netip.Prefix {
			return map[string]netip.Prefix{"n1": netip.MustParsePrefix("127.0.0.0/8")}
		},
		Redirect:    &redirects{},
		OriginalUDP: func(netip.AddrPort, netip.AddrPort) (netip.AddrPort, error) { return up, nil },
		OriginalTCP: func(*net.TCPConn) (netip.AddrPort, error) { return up, nil },
		Log:         gossiptest.Log("a"),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	uport, _ := s.Ports()
	for _, c := range []struct{ name, addr string }{{"direct", up.String()}, {"relayed", fmt.Sprintf("127.0.0.1:%d", uport)}} {
		b.Run(c.name, func(b *testing.B) {
			conn, err := net.Dial("udp4", c.addr)
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			q, _ := new(dns.Msg).SetQuestion("up.example.", dns.TypeA).Pack()
			buf := make([]byte, 4096)
			for b.Loop() {
				if _, err := conn.Write(q); err != nil {
					b.Fatal(err)
				}
				_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
				if _, err := conn.Read(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// upstreamB is upstream for a benchmark.
func upstreamB(b *testing.B) netip.AddrPort {
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg).SetReply(q)
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 77}, A: net.ParseIP("198.18.9.9")})
		_ = w.WriteMsg(m)
	})
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	us := &dns.Server{PacketConn: pc, Handler: h}
	go func() { _ = us.ActivateAndServe() }()
	b.Cleanup(func() { _ = us.Shutdown() })
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}
