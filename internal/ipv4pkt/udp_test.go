package ipv4pkt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestUDPRoundTrip(t *testing.T) {
	src := netip.MustParseAddrPort("127.0.0.11:53")
	dst := netip.MustParseAddrPort("127.0.0.1:40000")
	payload := []byte("an answer of odd length")
	pkt, err := UDP(src, dst, payload)
	if err != nil {
		t.Fatal(err)
	}
	if Checksum(pkt[:20]) != 0 {
		t.Error("IPv4 header checksum does not verify")
	}
	if c := udpChecksum(src.Addr(), dst.Addr(), pkt[20:]); c != 0 {
		t.Errorf("UDP checksum does not verify: folded sum %#04x", c)
	}
	d, err := ParseUDP(pkt)
	if err != nil {
		t.Fatal(err)
	}
	if d.Src != src || d.Dst != dst || !bytes.Equal(d.Payload, payload) {
		t.Errorf("parsed %v -> %v %q, want %v -> %v %q", d.Src, d.Dst, d.Payload, src, dst, payload)
	}
}

func TestUDPRefusesNonIPv4(t *testing.T) {
	if _, err := UDP(netip.MustParseAddrPort("[::1]:53"), netip.MustParseAddrPort("127.0.0.1:1"), nil); err == nil {
		t.Error("an IPv6 source was accepted")
	}
}

func TestParseUDPRefusals(t *testing.T) {
	good, err := UDP(netip.MustParseAddrPort("198.18.0.1:1000"), netip.MustParseAddrPort("198.18.0.2:53"), []byte("query"))
	if err != nil {
		t.Fatal(err)
	}
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	cases := []struct {
		name string
		pkt  []byte
		want string
	}{
		{"empty", nil, "header"},
		{"short", good[:10], "header"},
		{"version 6", mut(func(b []byte) []byte { b[0] = 0x65; return b }), "version"},
		{"total length past the end", mut(func(b []byte) []byte { binary.BigEndian.PutUint16(b[2:], 200); return b }), "total length"},
		{"fragment", mut(func(b []byte) []byte { b[6] |= 0x20; return b }), "fragment"},
		{"no udp header", mut(func(b []byte) []byte { binary.BigEndian.PutUint16(b[2:], 24); return b[:24] }), "UDP header"},
		{"udp length past the end", mut(func(b []byte) []byte { binary.BigEndian.PutUint16(b[24:], 400); return b }), "udp length"},
		{"udp length under 8", mut(func(b []byte) []byte { binary.BigEndian.PutUint16(b[24:], 3); return b }), "udp length"},
	}
	for _, c := range cases {
		if _, err := ParseUDP(c.pkt); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want one naming %q", c.name, err, c.want)
		}
	}
	icmp := mut(func(b []byte) []byte { b[9] = 1; return b })
	if _, err := ParseUDP(icmp); !errors.Is(err, ErrNotUDP) {
		t.Errorf("ICMP packet: err %v, want ErrNotUDP", err)
	}
}

// FuzzParseUDP: no input panics, and whatever parses is inside the packet
// and builds back to a datagram that parses the same.
func FuzzParseUDP(f *testing.F) {
	good, _ := UDP(netip.MustParseAddrPort("127.0.0.1:5353"), netip.MustParseAddrPort("127.0.0.11:53"), []byte{0x12, 0x34, 1, 0, 0, 1})
	f.Add(good)
	f.Add([]byte{0x45, 0, 0, 20})
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseUDP(b)
		if err != nil {
			return
		}
		if len(d.Payload) > len(b) {
			t.Fatalf("payload of %d bytes from a %d-byte packet", len(d.Payload), len(b))
		}
		again, err := UDP(d.Src, d.Dst, d.Payload)
		if err != nil {
			t.Fatalf("rebuild: %v", err)
		}
		d2, err := ParseUDP(again)
		if err != nil || d2.Src != d.Src || d2.Dst != d.Dst || !bytes.Equal(d2.Payload, d.Payload) {
			t.Fatalf("rebuilt datagram parses as %+v, %v; want %+v", d2, err, d)
		}
	})
}
