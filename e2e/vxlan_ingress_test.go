//go:build e2e

package e2e

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"grapevine/internal/ipv4pkt"
)

// vxlanFrame builds a VXLAN datagram's payload: the VXLAN header with vni and
// an Ethernet frame carrying an IPv4 ICMP echo request from src to dst.
func vxlanFrame(t *testing.T, vni uint32, dstMAC, srcMAC net.HardwareAddr, src, dst netip.Addr, seq uint16) []byte {
	t.Helper()
	ip, err := ipv4pkt.EchoRequest(ipv4pkt.Echo{Src: src, Dst: dst, ID: 0x6776, Seq: seq, Data: []byte("grapevine-inject")})
	if err != nil {
		t.Fatal(err)
	}
	vx := make([]byte, 8)
	vx[0] = 0x08 // VNI present
	binary.BigEndian.PutUint32(vx[4:], vni<<8)
	return slices.Concat(vx, dstMAC, srcMAC, []byte{0x08, 0x00}, ip)
}

// echoesReceived reads the ICMP echo requests container c on host has
// received (InEchos of its /proc/net/snmp).
func echoesReceived(t *testing.T, host, c string) int {
	t.Helper()
	out := mustDocker(t, host, "exec", c, "cat", "/proc/net/snmp")
	var names, values []string
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, "Icmp: ") {
			continue
		}
		if names == nil {
			names = strings.Fields(l)
		} else {
			values = strings.Fields(l)
		}
	}
	if i := slices.Index(names, "InEchos"); i >= 0 && i < len(values) {
		n, err := strconv.Atoi(values[i])
		if err == nil {
			return n
		}
	}
	t.Fatalf("no InEchos in the container's /proc/net/snmp:\n%s", out)
	return 0
}

// sendUDPFromNetns sends one datagram to dst from a socket opened inside the
// network namespace at nsPath.
func sendUDPFromNetns(nsPath string, dst netip.AddrPort, payload []byte) error {
	return inNetns(nsPath, func() error {
		c, err := net.ListenPacket("udp4", ":0")
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.WriteTo(payload, net.UDPAddrFromAddrPort(dst))
		return err
	})
}

// vxlanIngressOf reads the filter from host's `grapevine status --json`.
func vxlanIngressOf(t *testing.T, host string) (port int, peers []string, dropped uint64) {
	t.Helper()
	out, stderr, err := harnessCmd("status", host, "--json")
	if err != nil {
		t.Fatalf("grapevine status on %s: %v: %s", host, err, stderr)
	}
	var st struct {
		VXLAN *struct {
			Port    int      `json:"port"`
			Peers   []string `json:"peers"`
			Dropped uint64   `json:"dropped_frames"`
		} `json:"vxlan_ingress"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("decode status of %s: %v: %s", host, err, out)
	}
	if st.VXLAN == nil {
		return 0, nil, 0
	}
	return st.VXLAN.Port, st.VXLAN.Peers, st.VXLAN.Dropped
}

// TestVXLANIngressOnlyFromMembers: a machine that is not a member (the LAN
// machine, and the outsider host with the wrong key) sends VXLAN frames with
// the network's VNI, addressed to a container, to a member host: the container
// receives nothing and the host counts the drops. The same frame sent from a
// member's VTEP address is the positive control: it arrives.
func TestVXLANIngressOnlyFromMembers(t *testing.T) {
	needHosts(t, 3)
	hosts := clusterHosts()[:2]
	for _, h := range hosts {
		checkClean(t, h)
		waitMembers(t, 30*time.Second, h, clusterHosts())
	}
	const nw, subnet = "vxin", "198.19.60.0/24"
	netIDs := map[string]string{}
	for _, h := range hosts {
		netIDs[h] = createNetwork(t, h, nw, "--subnet", subnet)
	}
	netID := netIDs["h1"]
	sink := runContainer(t, "h1", "--network", nw, image, "sleep", "3600")
	cip := netip.MustParseAddr(containerIP(t, "h1", sink, nw))
	cmac, err := net.ParseMAC(mustDocker(t, "h1", "inspect", "-f", `{{(index .NetworkSettings.Networks "`+nw+`").MacAddress}}`, sink))
	if err != nil {
		t.Fatal(err)
	}
	var vni uint32
	st, _, err := statusOf("h1")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range st.Networks {
		if n.ID == netID {
			vni = uint32(n.VNI)
		}
	}
	if vni == 0 {
		t.Fatalf("no VNI for network %.12s in h1's status", netID)
	}
	port, peers, _ := vxlanIngressOf(t, "h1")
	if port != 4789 || !slices.Contains(peers, hostAddr("h2")) || slices.Contains(peers, lanAddr) {
		t.Fatalf("h1's VXLAN ingress filter: port %d peers %v, want 4789 with h2's VTEP %s and not the LAN machine", port, peers, hostAddr("h2"))
	}

	dst := netip.AddrPortFrom(netip.MustParseAddr(hostAddr("h1")), 4789)
	srcMAC, _ := net.ParseMAC("02:00:c6:13:3c:fa")
	inner := netip.MustParseAddr("198.19.60.250")
	seq := uint16(0)
	send := func(from, nsPath string) {
		t.Helper()
		for range 3 {
			seq++
			if err := sendUDPFromNetns(nsPath, dst, vxlanFrame(t, vni, cmac, srcMAC, inner, cip, seq)); err != nil {
				t.Fatalf("send from %s: %v", from, err)
			}
		}
	}

	_, _, before := vxlanIngressOf(t, "h1")
	echoes := echoesReceived(t, "h1", sink)
	attackers := map[string]string{"the LAN machine": netnsPath("lan")}
	if s.outsider != "" {
		attackers["the outsider host "+s.outsider] = netnsPath(s.outsider)
	}
	for name, ns := range attackers {
		send(name, ns)
	}
	time.Sleep(2 * time.Second)
	if got := echoesReceived(t, "h1", sink); got != echoes {
		t.Errorf("the container received %d echo requests from non-members' VXLAN frames", got-echoes)
	}
	// the positive control: from a member's VTEP the same frame is delivered
	send("member h2", netnsPath("h2"))
	eventually(t, 10*time.Second, "the member's frames reach the container", func() error {
		if got := echoesReceived(t, "h1", sink); got < echoes+3 {
			return fmt.Errorf("%d echo requests received, want %d", got-echoes, 3)
		}
		return nil
	})
	_, _, after := vxlanIngressOf(t, "h1")
	if want := before + uint64(3*len(attackers)); after < want {
		t.Errorf("h1 counted %d dropped frames (%d before), want at least %d", after, before, want)
	}
}
