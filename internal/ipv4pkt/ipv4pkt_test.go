package ipv4pkt

import (
	"net/netip"
	"testing"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// The packet parses back with x/net (header and message), and both
// checksums verify: a checksum over a header or message that carries its
// own correct checksum is 0.
func TestEchoRequestRoundTrip(t *testing.T) {
	src, dst := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.19.0.2")
	pkt, err := EchoRequest(Echo{Src: src, Dst: dst, ID: 0x6776, Seq: 9, Data: []byte("grapevine"), IPID: 5, DF: true})
	if err != nil {
		t.Fatal(err)
	}
	h, err := ipv4.ParseHeader(pkt)
	if err != nil {
		t.Fatal(err)
	}
	if h.Src.String() != "198.18.0.1" || h.Dst.String() != "198.19.0.2" || h.TTL != 64 || h.Protocol != 1 || h.Flags != ipv4.DontFragment || h.TotalLen != len(pkt) || h.ID != 5 {
		t.Fatalf("header %+v", h)
	}
	if c := Checksum(pkt[:h.Len]); c != 0 {
		t.Fatalf("header checksum does not verify: residue %#x", c)
	}
	if c := Checksum(pkt[h.Len:]); c != 0 {
		t.Fatalf("icmp checksum does not verify: residue %#x", c)
	}
	m, err := icmp.ParseMessage(1, pkt[h.Len:])
	if err != nil {
		t.Fatal(err)
	}
	e, ok := m.Body.(*icmp.Echo)
	if m.Type != ipv4.ICMPTypeEcho || !ok || e.ID != 0x6776 || e.Seq != 9 || string(e.Data) != "grapevine" {
		t.Fatalf("message %+v body %+v", m, m.Body)
	}
}

// Odd lengths pad with a zero byte; known value from RFC 1071's example.
func TestChecksum(t *testing.T) {
	if got := Checksum([]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}); got != ^uint16(0xddf2) {
		t.Fatalf("RFC 1071 example: %#x, want %#x", got, ^uint16(0xddf2))
	}
	if Checksum([]byte{0xab}) != Checksum([]byte{0xab, 0x00}) {
		t.Fatal("odd length is not padded with zero")
	}
}

func TestEchoRequestRefusesIPv6(t *testing.T) {
	if _, err := EchoRequest(Echo{Src: netip.MustParseAddr("::1"), Dst: netip.MustParseAddr("198.18.0.1")}); err == nil {
		t.Fatal("IPv6 source accepted")
	}
}
