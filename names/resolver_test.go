package names_test

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"runtime/pprof"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"grapevine/driver/dataplane"
	"grapevine/gossip/gossiptest"
	"grapevine/names"
)

// redirects records what the Service asked of the kernel.
type redirects struct {
	mu      sync.Mutex
	synced  []dataplane.NamesRedirect
	removed int
}

func (r *redirects) SyncNamesRedirect(nr dataplane.NamesRedirect) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.synced = append(r.synced, nr)
	return nil
}

func (r *redirects) RemoveNamesRedirect() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removed++
	return nil
}

// upstream is a DNS server on loopback that answers every A query with
// 198.18.9.9 and TXT queries with an answer larger than 512 bytes; it
// stands for the server a redirected query was sent to.
func upstream(t *testing.T) netip.AddrPort {
	t.Helper()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg).SetReply(q)
		switch q.Question[0].Qtype {
		case dns.TypeA:
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 77}, A: net.ParseIP("198.18.9.9")})
		case dns.TypeTXT:
			for i := range 20 {
				m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 77}, Txt: []string{fmt.Sprintf("%02d-%s", i, bytes.Repeat([]byte("x"), 60))}})
			}
		default:
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	us, ts := &dns.Server{PacketConn: pc, Handler: h}, &dns.Server{Listener: ln, Handler: h}
	go func() { _ = us.ActivateAndServe() }()
	go func() { _ = ts.ActivateAndServe() }()
	t.Cleanup(func() { _ = us.Shutdown(); _ = ts.Shutdown() })
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
}

// TestResolver: grapevine names of the client's network are answered (A
// with every holder, AAAA with no data); everything else reaches the
// original destination and comes back unchanged, over UDP and TCP.
func TestResolver(t *testing.T) {
	n := gossiptest.NewNet()
	obs := node(t, n, "a")
	b := node(t, n, "b")
	c := node(t, n, "c")
	gossiptest.Eventually(t, 10*time.Second, "3 members", func() bool { return len(obs.Members()) == 3 })
	publish(t, b, "198.19.7.5", "db", "web")
	publish(t, c, "198.19.7.6", "web")
	up := upstream(t)
	// the client is 127.0.0.1: its "network" here is 127.0.0.0/8, whose
	// names records are those of subnet for the lookup below
	rd := &redirects{}
	s, err := names.Start(names.Config{
		Cluster: obs,
		Networks: func() map[string]netip.Prefix {
			return map[string]netip.Prefix{"n1": netip.MustParsePrefix("127.0.0.0/8")}
		},
		Redirect:    rd,
		OriginalUDP: func(netip.AddrPort, netip.AddrPort) (netip.AddrPort, error) { return up, nil },
		OriginalTCP: func(*net.TCPConn) (netip.AddrPort, error) { return up, nil },
		Log:         gossiptest.Log("a"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	uport, tport := s.Ports()
	udp, tcp := fmt.Sprintf("127.0.0.1:%d", uport), fmt.Sprintf("127.0.0.1:%d", tport)
	gossiptest.Eventually(t, 10*time.Second, "redirect synced", func() bool {
		rd.mu.Lock()
		defer rd.mu.Unlock()
		return len(rd.synced) > 0
	})
	rd.mu.Lock()
	if got := rd.synced[0]; got.UDPPort != uport || got.TCPPort != tport || len(got.Subnets) != 1 || time.Until(got.Until) < time.Minute {
		t.Errorf("redirect %+v, want ports %d/%d, one subnet, a lease over a minute", got, uport, tport)
	}
	rd.mu.Unlock()

	// names records here are for subnet 198.19.7.0/24, the client's network
	// is 127.0.0.0/8: not answered, forwarded
	if a := query(t, "udp", udp, "db.", dns.TypeA); len(a.Answer) != 1 || a.Answer[0].(*dns.A).A.String() != "198.18.9.9" {
		t.Errorf("db on another network: %v, want the upstream's answer", a.Answer)
	}
	publishSubnet(t, b, "127.0.0.0/8", "127.0.0.5", "db", "web")
	publishSubnet(t, c, "127.0.0.0/8", "127.0.0.6", "web")
	gossiptest.Eventually(t, 10*time.Second, "db answers", func() bool {
		a := query(t, "udp", udp, "db.", dns.TypeA)
		return len(a.Answer) == 1 && a.Answer[0].(*dns.A).A.String() == "127.0.0.5"
	})
	gossiptest.Eventually(t, 10*time.Second, "web answers twice", func() bool { return len(query(t, "udp", udp, "web.", dns.TypeA).Answer) == 2 })
	first, second := query(t, "udp", udp, "WEB.", dns.TypeA), query(t, "tcp", tcp, "web.", dns.TypeA)
	if len(second.Answer) != 2 || first.Answer[0].String() == second.Answer[0].String() {
		t.Errorf("web: %v then %v, want both holders in rotating order", first.Answer, second.Answer)
	}
	if a := query(t, "udp", udp, "db.", dns.TypeAAAA); a.Rcode != dns.RcodeSuccess || len(a.Answer) != 0 {
		t.Errorf("AAAA db: rcode %d answers %v, want NOERROR with no data", a.Rcode, a.Answer)
	}
	if a := query(t, "udp", udp, "other.example.", dns.TypeAAAA); a.Rcode != dns.RcodeNameError {
		t.Errorf("AAAA other.example: rcode %d, want the upstream's NXDOMAIN", a.Rcode)
	}
	for _, proto := range []string{"udp", "tcp"} {
		addr := map[string]string{"udp": udp, "tcp": tcp}[proto]
		got := query(t, proto, addr, "big.example.", dns.TypeTXT)
		want := query(t, proto, up.String(), "big.example.", dns.TypeTXT)
		if len(got.Answer) != 20 || !slices.EqualFunc(got.Answer, want.Answer, func(a, b dns.RR) bool { return a.String() == b.String() }) {
			t.Errorf("%s TXT big.example: %d records, want the upstream's 20", proto, len(got.Answer))
		}
	}
	s.Close()
	rd.mu.Lock()
	if rd.removed != 1 {
		t.Errorf("Close removed the redirect %d times, want 1", rd.removed)
	}
	rd.mu.Unlock()
}

func publishSubnet(t *testing.T, c interface {
	LocalName() string
	Put(kind, key string, v []byte) error
}, sub, addr string, ns ...string) {
	t.Helper()
	p, a := netip.MustParsePrefix(sub), netip.MustParseAddr(addr)
	if err := c.Put("endpoint", p.String()+"/"+a.String(), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	v, err := names.Encode(names.Entry{Endpoint: epID, Names: ns})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Put(names.Kind, names.Key(p, a, c.LocalName()), v); err != nil {
		t.Fatal(err)
	}
}

func query(t *testing.T, proto, addr, name string, qtype uint16) *dns.Msg {
	t.Helper()
	cl := &dns.Client{Net: proto, Timeout: 3 * time.Second, UDPSize: 65535}
	m := new(dns.Msg).SetQuestion(name, qtype)
	m.SetEdns0(4096, false)
	r, _, err := cl.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s query %s to %s: %v", proto, name, addr, err)
	}
	return r
}

// stallingRedirects blocks the first renewal after the initial sync until
// released, as a slow iptables-restore does.
type stallingRedirects struct {
	mu      sync.Mutex
	calls   int
	entered chan struct{}
	release chan struct{}
}

func (r *stallingRedirects) SyncNamesRedirect(dataplane.NamesRedirect) error {
	r.mu.Lock()
	r.calls++
	n := r.calls
	r.mu.Unlock()
	if n == 2 {
		close(r.entered)
		<-r.release
	}
	return nil
}

func (r *stallingRedirects) RemoveNamesRedirect() error { return nil }

// TestRenewalDoesNotStallQueries: while the redirect's renewal is under
// way (iptables-restore takes tens of ms on a busy host), queries are
// still answered and relayed.
func TestRenewalDoesNotStallQueries(t *testing.T) {
	n := gossiptest.NewNet()
	obs := node(t, n, "a")
	up := upstream(t)
	rd := &stallingRedirects{entered: make(chan struct{}), release: make(chan struct{})}
	s, err := names.Start(names.Config{
		Cluster: obs,
		Networks: func() map[string]netip.Prefix {
			return map[string]netip.Prefix{"n1": netip.MustParsePrefix("127.0.0.0/8")}
		},
		Redirect:    rd,
		OriginalUDP: func(netip.AddrPort, netip.AddrPort) (netip.AddrPort, error) { return up, nil },
		OriginalTCP: func(*net.TCPConn) (netip.AddrPort, error) { return up, nil },
		Lease:       3 * time.Millisecond, // every refresh renews
		Log:         gossiptest.Log("a"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	defer close(rd.release)
	select {
	case <-rd.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no renewal within 10 s")
	}
	uport, _ := s.Ports()
	cl := &dns.Client{Net: "udp", Timeout: time.Second}
	r, _, err := cl.Exchange(new(dns.Msg).SetQuestion("up.example.", dns.TypeA), fmt.Sprintf("127.0.0.1:%d", uport))
	if err != nil || len(r.Answer) != 1 {
		t.Errorf("query during a renewal: %v, %v; want the upstream's answer within 1 s", r, err)
	}
}

// TestRelayFloodBounded: a container flooding a silent upstream with
// queries ties up at most maxRelays handlers (threads, since each waits on
// a blocking socket); grapevine names are still answered meanwhile.
func TestRelayFloodBounded(t *testing.T) {
	n := gossiptest.NewNet()
	obs := node(t, n, "a")
	b := node(t, n, "b")
	gossiptest.Eventually(t, 10*time.Second, "2 members", func() bool { return len(obs.Members()) == 2 })
	silent, err := net.ListenPacket("udp4", "127.0.0.1:0") // reads nothing, answers nothing
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	dead := silent.LocalAddr().(*net.UDPAddr).AddrPort()
	s, err := names.Start(names.Config{
		Cluster: obs,
		Networks: func() map[string]netip.Prefix {
			return map[string]netip.Prefix{"n1": netip.MustParsePrefix("127.0.0.0/8")}
		},
		Redirect:    &redirects{},
		OriginalUDP: func(netip.AddrPort, netip.AddrPort) (netip.AddrPort, error) { return dead, nil },
		OriginalTCP: func(*net.TCPConn) (netip.AddrPort, error) { return dead, nil },
		Log:         gossiptest.Log("a"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	uport, _ := s.Ports()
	addr := fmt.Sprintf("127.0.0.1:%d", uport)
	publishSubnet(t, b, "127.0.0.0/8", "127.0.0.5", "db")
	// until the record arrives the query goes to the silent upstream: no
	// answer, and no failure either
	short := &dns.Client{Net: "udp", Timeout: 200 * time.Millisecond}
	gossiptest.Eventually(t, 10*time.Second, "db answers", func() bool {
		a, _, err := short.Exchange(new(dns.Msg).SetQuestion("db.", dns.TypeA), addr)
		return err == nil && len(a.Answer) == 1
	})

	threads := func() int { return pprof.Lookup("threadcreate").Count() }
	before := threads()
	c, err := net.Dial("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	q, _ := new(dns.Msg).SetQuestion("up.example.", dns.TypeA).Pack()
	const flood = 1000
	for range flood {
		if _, err := c.Write(q); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Microsecond) // the socket's buffer is not the limit tested
	}
	time.Sleep(300 * time.Millisecond)
	if grown := threads() - before; grown > 300 {
		t.Errorf("%d queries to a silent upstream made %d threads, want at most about 256", flood, grown)
	}
	if a := query(t, "udp", addr, "db.", dns.TypeA); len(a.Answer) != 1 {
		t.Errorf("db during the flood: %v, want its answer", a.Answer)
	}
}

// orderedRedirects logs the redirect calls in order; the second sync
// blocks until released.
type orderedRedirects struct {
	stallingRedirects
	log []string
}

func (r *orderedRedirects) SyncNamesRedirect(nr dataplane.NamesRedirect) error {
	err := r.stallingRedirects.SyncNamesRedirect(nr)
	r.mu.Lock()
	r.log = append(r.log, "sync")
	r.mu.Unlock()
	return err
}

func (r *orderedRedirects) RemoveNamesRedirect() error {
	r.mu.Lock()
	r.log = append(r.log, "remove")
	r.mu.Unlock()
	return nil
}

// TestCloseRemovesLast: a renewal under way when the plugin stops finishes
// before Close removes the redirect, so nothing writes it back afterwards.
func TestCloseRemovesLast(t *testing.T) {
	n := gossiptest.NewNet()
	obs := node(t, n, "a")
	rd := &orderedRedirects{stallingRedirects: stallingRedirects{entered: make(chan struct{}), release: make(chan struct{})}}
	s, err := names.Start(names.Config{
		Cluster: obs,
		Networks: func() map[string]netip.Prefix {
			return map[string]netip.Prefix{"n1": netip.MustParsePrefix("127.0.0.0/8")}
		},
		Redirect: rd,
		Lease:    3 * time.Millisecond, // every refresh renews
		Log:      gossiptest.Log("a"),
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-rd.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no renewal within 10 s")
	}
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	time.Sleep(100 * time.Millisecond) // Close waits for the renewal
	close(rd.release)
	<-closed
	time.Sleep(100 * time.Millisecond) // a renewal Close did not wait for ends meanwhile
	rd.mu.Lock()
	defer rd.mu.Unlock()
	if len(rd.log) == 0 || rd.log[len(rd.log)-1] != "remove" {
		t.Errorf("redirect calls %v: the removal must come last", rd.log)
	}
}
