package main

import (
	"net"
	"testing"

	"grapevine/internal/ipv4pkt"
)

// TestProbeFrames checks the prober's frames against the answers a kernel
// would send: the echo request's checksums verify, and an echo reply built
// from it (type 0, addresses swapped) is recognised with its counter, while
// one from another address or another prober is not.
func TestProbeFrames(t *testing.T) {
	pt := &probeThread{mac: net.HardwareAddr{2, 0, 0, 0, 0, 1}, src: [4]byte{198, 18, 9, 1}, id: 0x4242}
	dst := [4]byte{198, 18, 9, 2}
	dmac := net.HardwareAddr{2, 0, 0, 0, 0, 2}
	req, err := pt.echoRequest(dmac, dst, 77)
	if err != nil {
		t.Fatal(err)
	}
	if c := ipv4pkt.Checksum(req[14:34]); c != 0 {
		t.Errorf("IPv4 header checksum does not verify: %#x", c)
	}
	if c := ipv4pkt.Checksum(req[34:]); c != 0 {
		t.Errorf("ICMP checksum does not verify: %#x", c)
	}
	reply := func(from [4]byte, id byte) []byte {
		r := append([]byte(nil), req...)
		copy(r[26:30], from[:])
		copy(r[30:34], pt.src[:])
		r[34] = 0
		r[38] = id
		return r
	}
	for _, tc := range []struct {
		name  string
		frame []byte
		ok    bool
	}{
		{"reply from dst", reply(dst, 0x42), true},
		{"reply from elsewhere", reply([4]byte{198, 18, 9, 3}, 0x42), false},
		{"reply to another prober", reply(dst, 0x41), false},
		{"the request itself", req, false},
		{"short", req[:20], false},
	} {
		c, ok := pt.echoReplyFrom(tc.frame, dst)
		if ok != tc.ok || (ok && c != 77) {
			t.Errorf("%s: echoReplyFrom = %d, %v; want ok %v", tc.name, c, ok, tc.ok)
		}
	}

	arp := pt.arpRequest(dst)
	if _, ok := arpReplyFrom(arp, dst); ok {
		t.Error("the ARP request was taken for a reply")
	}
	rep := append([]byte(nil), arp...)
	rep[21] = 2 // reply
	copy(rep[22:28], dmac)
	copy(rep[28:32], dst[:])
	if mac, ok := arpReplyFrom(rep, dst); !ok || mac.String() != dmac.String() {
		t.Errorf("ARP reply from dst: %v, %v", mac, ok)
	}
	if _, ok := arpReplyFrom(rep, [4]byte{198, 18, 9, 3}); ok {
		t.Error("an ARP reply for another address was accepted")
	}
}
