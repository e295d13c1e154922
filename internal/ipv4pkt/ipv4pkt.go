// Package ipv4pkt builds and parses the IPv4 packets grapevine writes or
// reads whole: the ICMP echo requests that tests and benchmarks write to the
// wire themselves (packet sockets, injected VXLAN frames) and the UDP
// datagrams of the names tap (a container's DNS query as the kernel queued
// it, the answer written back on a raw socket). The ICMP message comes from
// golang.org/x/net/icmp, the header layout from golang.org/x/net/ipv4, and
// this package adds what neither does: the IPv4 header and UDP checksums and
// a strict parse of a UDP datagram.
package ipv4pkt

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// Echo describes one ICMP echo request.
type Echo struct {
	Src, Dst netip.Addr
	ID, Seq  uint16
	Data     []byte
	TTL      int  // 64 when 0
	IPID     int  // the IPv4 identification field
	DF       bool // set "don't fragment"
}

// EchoRequest returns the IPv4 packet (header and ICMP message) of e.
func EchoRequest(e Echo) ([]byte, error) {
	if !e.Src.Is4() || !e.Dst.Is4() {
		return nil, fmt.Errorf("ipv4pkt: echo request from %s to %s: both addresses must be IPv4", e.Src, e.Dst)
	}
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: int(e.ID), Seq: int(e.Seq), Data: e.Data}}
	body, err := msg.Marshal(nil)
	if err != nil {
		return nil, fmt.Errorf("ipv4pkt: marshal echo request: %w", err)
	}
	h := ipv4.Header{Version: ipv4.Version, Len: ipv4.HeaderLen, TotalLen: ipv4.HeaderLen + len(body),
		ID: e.IPID, TTL: e.TTL, Protocol: 1, Src: net.IP(e.Src.AsSlice()), Dst: net.IP(e.Dst.AsSlice())}
	if h.TTL == 0 {
		h.TTL = 64
	}
	if e.DF {
		h.Flags = ipv4.DontFragment
	}
	hdr, err := h.Marshal()
	if err != nil {
		return nil, fmt.Errorf("ipv4pkt: marshal header: %w", err)
	}
	binary.BigEndian.PutUint16(hdr[10:], Checksum(hdr))
	return append(hdr, body...), nil
}

// Checksum is the Internet checksum (RFC 1071) of b.
func Checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
