package main

import (
	"math"
	"net"
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

// TestCheckAnswer: a lookup counts only a NOERROR answer holding the
// wanted address; anything that does not parse as a response is an error.
func TestCheckAnswer(t *testing.T) {
	want := netip.MustParseAddr("198.19.16.7")
	q := new(dns.Msg).SetQuestion("db.", dns.TypeA)
	reply := func(rcode int, addrs ...string) []byte {
		m := new(dns.Msg).SetReply(q)
		m.Rcode = rcode
		for _, a := range addrs {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: "db.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 10}, A: net.ParseIP(a)})
		}
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	query, _ := q.Pack()
	for _, c := range []struct {
		what    string
		b       []byte
		want    netip.Addr
		has, ok bool
	}{
		{"the address among others", reply(dns.RcodeSuccess, "198.19.16.9", "198.19.16.7"), want, true, true},
		{"another address", reply(dns.RcodeSuccess, "198.19.16.9"), want, false, true},
		{"NXDOMAIN", reply(dns.RcodeNameError), want, false, true},
		{"any address", reply(dns.RcodeSuccess, "198.18.5.5"), netip.Addr{}, true, true},
		{"a query, not a response", query, want, false, false},
		{"garbage", []byte{1, 2, 3}, want, false, false},
	} {
		id, has, err := checkAnswer(c.b, c.want)
		if has != c.has || (err == nil) != c.ok {
			t.Errorf("%s: has %v err %v; want has %v ok %v", c.what, has, err, c.has, c.ok)
		}
		if c.ok && id != q.Id {
			t.Errorf("%s: id %d, want %d", c.what, id, q.Id)
		}
	}
}

// TestPairedDiff: the forwarding overhead is the median of the per-round
// differences over the rounds both series measured.
func TestPairedDiff(t *testing.T) {
	a := sample{vals: []float64{0.50, 0.40, math.NaN(), 0.90}}
	b := sample{vals: []float64{0.20, 0.30, 0.10, 0.20}}
	d, n := pairedDiff(&a, &b)
	if n != 3 || math.Abs(d-0.3) > 1e-9 { // differences 0.3, 0.1, 0.7
		t.Errorf("pairedDiff = %v over %d rounds, want 0.3 over 3", d, n)
	}
}
