package ipv4pkt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
)

const (
	protoUDP  = 17
	udpHeader = 8
	// maxUDPPayload is the largest payload one IPv4 datagram carries.
	maxUDPPayload = 0xffff - ipv4.HeaderLen - udpHeader
)

// UDP builds an IPv4 UDP datagram from src to dst carrying payload, both
// checksums filled in, TTL 64, no options.
func UDP(src, dst netip.AddrPort, payload []byte) ([]byte, error) {
	if !src.Addr().Is4() || !dst.Addr().Is4() {
		return nil, fmt.Errorf("ipv4pkt: udp datagram from %s to %s: both addresses must be IPv4", src, dst)
	}
	if len(payload) > maxUDPPayload {
		return nil, fmt.Errorf("ipv4pkt: udp payload of %d bytes: at most %d fit one datagram", len(payload), maxUDPPayload)
	}
	udpLen := udpHeader + len(payload)
	h := ipv4.Header{Version: ipv4.Version, Len: ipv4.HeaderLen, TotalLen: ipv4.HeaderLen + udpLen,
		TTL: 64, Protocol: protoUDP, Src: net.IP(src.Addr().AsSlice()), Dst: net.IP(dst.Addr().AsSlice())}
	hdr, err := h.Marshal()
	if err != nil {
		return nil, fmt.Errorf("ipv4pkt: marshal header: %w", err)
	}
	binary.BigEndian.PutUint16(hdr[10:], Checksum(hdr))
	seg := make([]byte, udpLen)
	binary.BigEndian.PutUint16(seg[0:], src.Port())
	binary.BigEndian.PutUint16(seg[2:], dst.Port())
	binary.BigEndian.PutUint16(seg[4:], uint16(udpLen))
	copy(seg[udpHeader:], payload)
	sum := udpChecksum(src.Addr(), dst.Addr(), seg)
	if sum == 0 {
		sum = 0xffff // 0 means "no checksum" in IPv4 UDP (RFC 768)
	}
	binary.BigEndian.PutUint16(seg[6:], sum)
	return append(hdr, seg...), nil
}

// udpChecksum is the UDP checksum over the pseudo header and seg (its
// checksum field zero).
func udpChecksum(src, dst netip.Addr, seg []byte) uint16 {
	pseudo := make([]byte, 0, 12+len(seg))
	s4, d4 := src.As4(), dst.As4()
	pseudo = append(pseudo, s4[:]...)
	pseudo = append(pseudo, d4[:]...)
	pseudo = append(pseudo, 0, protoUDP, byte(len(seg)>>8), byte(len(seg)))
	pseudo = append(pseudo, seg...)
	return Checksum(pseudo)
}

// Datagram is a parsed IPv4 UDP datagram; Payload aliases the packet.
type Datagram struct {
	Src, Dst netip.AddrPort
	Payload  []byte
}

// ErrNotUDP is returned by ParseUDP for a well-formed IPv4 packet of another
// protocol.
var ErrNotUDP = errors.New("ipv4pkt: not a UDP datagram")

// ParseUDP reads an IPv4 UDP datagram, whole: the header must be version 4
// with a length inside the packet, the packet no fragment, the UDP length
// inside the IP payload. Checksums are not verified: the tap reads packets
// the local stack built, whose UDP checksum may still be partial.
func ParseUDP(pkt []byte) (Datagram, error) {
	h, err := ipv4.ParseHeader(pkt)
	if err != nil {
		return Datagram{}, fmt.Errorf("ipv4pkt: header: %w", err)
	}
	switch {
	case h.Version != ipv4.Version:
		return Datagram{}, fmt.Errorf("ipv4pkt: version %d, want 4", h.Version)
	case h.Len < ipv4.HeaderLen || h.Len > len(pkt):
		return Datagram{}, fmt.Errorf("ipv4pkt: header length %d outside the %d-byte packet", h.Len, len(pkt))
	case h.TotalLen < h.Len || h.TotalLen > len(pkt):
		return Datagram{}, fmt.Errorf("ipv4pkt: total length %d outside %d..%d", h.TotalLen, h.Len, len(pkt))
	case h.Flags&ipv4.MoreFragments != 0 || h.FragOff != 0:
		return Datagram{}, errors.New("ipv4pkt: a fragment")
	case h.Protocol != protoUDP:
		return Datagram{}, ErrNotUDP
	}
	seg := pkt[h.Len:h.TotalLen]
	if len(seg) < udpHeader {
		return Datagram{}, fmt.Errorf("ipv4pkt: %d bytes after the IP header, a UDP header is 8", len(seg))
	}
	udpLen := int(binary.BigEndian.Uint16(seg[4:]))
	if udpLen < udpHeader || udpLen > len(seg) {
		return Datagram{}, fmt.Errorf("ipv4pkt: udp length %d outside 8..%d", udpLen, len(seg))
	}
	src, _ := netip.AddrFromSlice(h.Src.To4())
	dst, _ := netip.AddrFromSlice(h.Dst.To4())
	return Datagram{
		Src:     netip.AddrPortFrom(src, binary.BigEndian.Uint16(seg[0:])),
		Dst:     netip.AddrPortFrom(dst, binary.BigEndian.Uint16(seg[2:])),
		Payload: seg[udpHeader:udpLen],
	}, nil
}
