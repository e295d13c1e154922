//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"grapevine/driver"
	"grapevine/plugin"
)

// Ports of encrypted networks (plugin/tunnelkey.go): WireGuard between
// hosts, and the VXLAN port of earlier versions, which must never appear on
// the underlay either.
const (
	wgPort       = 51820
	encVXLANPort = 4792
)

// encPrefix is the encrypted network's subnet: no IPv4 packet from or to
// one of its addresses may cross the underlay in clear.
var encPrefix = netip.MustParsePrefix("198.19.70.0/24")

// capture counts what crosses one link of a host's namespace: frames
// holding a run of each watched payload byte, UDP datagrams by destination
// port, and IPv4 packets from or to an address of encPrefix, bare or inside
// VXLAN.
type capture struct {
	mu      sync.Mutex
	markers map[byte]int
	udp     map[uint16]int
	clear   int
	stop    chan struct{}
	done    chan error
}

// startCapture reads every frame on link in host's namespace (AF_PACKET,
// both directions) until stopCapture.
func startCapture(t *testing.T, host, link string, watch ...byte) *capture {
	t.Helper()
	c := &capture{markers: map[byte]int{}, udp: map[uint16]int{}, stop: make(chan struct{}), done: make(chan error, 1)}
	var fd int
	err := inNetns(netnsPath(host), func() (err error) {
		fd, err = packetSocket(link)
		return err
	})
	if err != nil {
		t.Fatalf("capture on %s %s: %v", host, link, err)
	}
	// The socket stays in the host's namespace whichever thread reads it.
	go func() {
		defer unix.Close(fd)
		c.done <- c.read(fd, watch)
	}()
	return c
}

// packetSocket opens an AF_PACKET socket bound to link in the calling
// thread's network namespace, with a short read timeout.
func packetSocket(link string) (int, error) {
	ifc, err := net.InterfaceByName(link)
	if err != nil {
		return -1, err
	}
	all := int(htons(unix.ETH_P_ALL))
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, all)
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifc.Index}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *capture) read(fd int, watch []byte) error {
	buf := make([]byte, 65536)
	for {
		select {
		case <-c.stop:
			return nil
		default:
		}
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		c.count(buf[:n], watch)
	}
}

// count records one Ethernet frame.
func (c *capture) count(f []byte, watch []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range watch {
		if bytes.Contains(f, bytes.Repeat([]byte{b}, 32)) {
			c.markers[b]++
		}
	}
	if carriesSubnet(f, encPrefix) {
		c.clear++
	}
	// IPv4 (no VLAN) carrying UDP
	if len(f) >= 14+20+8 && binary.BigEndian.Uint16(f[12:]) == 0x0800 && f[14+9] == unix.IPPROTO_UDP {
		ihl := int(f[14]&0x0f) * 4
		if len(f) >= 14+ihl+4 {
			c.udp[binary.BigEndian.Uint16(f[14+ihl+2:])]++
		}
	}
}

// vxlanPorts are the UDP ports whose payload is a VXLAN frame here: the
// plugin's VXLAN port in the harness and that of earlier encrypted networks.
var vxlanPorts = []uint16{4789, encVXLANPort}

// carriesSubnet reports whether Ethernet frame f carries IPv4 (no VLAN) from or to
// an address of p, in its own header or in that of a VXLAN frame it carries.
func carriesSubnet(f []byte, p netip.Prefix) bool {
	if len(f) < 14+20 || binary.BigEndian.Uint16(f[12:]) != 0x0800 {
		return false
	}
	ip := f[14:]
	src, dst := netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
	if p.Contains(src) || p.Contains(dst) {
		return true
	}
	ihl := int(ip[0]&0x0f) * 4
	if ip[9] != unix.IPPROTO_UDP || len(ip) < ihl+8+8 {
		return false
	}
	if !slices.Contains(vxlanPorts, binary.BigEndian.Uint16(ip[ihl+2:])) {
		return false
	}
	return carriesSubnet(ip[ihl+8+8:], p) // UDP and VXLAN headers, then the inner frame
}

// stopCapture ends the capture and returns its counts; inClear is the number
// of packets from or to the encrypted subnet, plus datagrams to the VXLAN
// port of earlier versions.
func (c *capture) stopCapture(t *testing.T) (markers map[byte]int, udp map[uint16]int, inClear int) {
	t.Helper()
	close(c.stop)
	if err := <-c.done; err != nil {
		t.Fatalf("capture: %v", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.markers, c.udp, c.clear + c.udp[encVXLANPort]
}

// pingPattern has container c on host ping addr n times with payload
// bytes all equal to pattern; it reports whether any answer came.
func pingPattern(host, c, addr string, pattern byte, n int) bool {
	_, _, err := docker(host, "exec", c, "ping", "-c", fmt.Sprint(n), "-i", "0.2", "-W", "2", "-p", fmt.Sprintf("%02x", pattern), addr)
	return err == nil
}

// TestEncryptedNetwork: an encrypted network joins three hosts (full mesh)
// with the WireGuard overhead in its MTU; on the underlay, a payload marker
// sent between its containers never appears while the same kind of marker on
// a plain network does, and no packet from or to one of its addresses (nor
// to the VXLAN port of earlier versions) leaves;
// with the tunnel link deleted no clear text leaves either, and the tunnel
// comes back; a definition that disagrees on the option is refused, naming
// the host, and macvlan refuses it.
func TestEncryptedNetwork(t *testing.T) {
	needHosts(t, 3)
	hosts := clusterHosts()[:3]
	for _, h := range hosts {
		checkClean(t, h)
		waitMembers(t, 30*time.Second, h, clusterHosts())
	}
	// strict reverse-path filtering for all links, as some hosts set it:
	// decrypted frames must still be accepted
	for _, h := range hosts {
		old := strings.TrimSpace(mustInHost(t, h, "sysctl", "-n", "net.ipv4.conf.all.rp_filter"))
		mustInHost(t, h, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1")
		t.Cleanup(func() { _, _, _ = inHost(h, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter="+old) })
	}
	const enc, plain = "encnet", "plainnet"
	encSubnet, plainSubnet := encPrefix.String(), "198.19.71.0/24"
	var cs []ctr
	for _, h := range hosts {
		createNetwork(t, h, enc, "--subnet", encSubnet, "-o", "encrypted=true")
		cs = append(cs, startCtr(t, h, enc, "enc-"+h))
	}
	createNetwork(t, "h1", plain, "--subnet", plainSubnet)
	createNetwork(t, "h2", plain, "--subnet", plainSubnet)
	p1, p2 := startCtr(t, "h1", plain, "plain-h1"), startCtr(t, "h2", plain, "plain-h2")

	if got := strings.TrimSpace(mustDocker(t, "h1", "exec", cs[0].id, "cat", "/sys/class/net/eth0/mtu")); got != "1440" {
		t.Errorf("encrypted network's container MTU = %s, want 1440 (1500 - 60 WireGuard)", got)
	}
	fullMesh(t, 60*time.Second, cs)

	t.Run("doctor reports the tunnel and every peer's handshake", func(t *testing.T) {
		eventually(t, 30*time.Second, "doctor h1 to pass the tunnel checks", func() error {
			checks, raw, _, err := doctorOf("h1")
			if err != nil {
				return err
			}
			for _, p := range []string{"h2", "h3"} {
				if err := expectCheck(checks, "tunnel", p, "pass", "WireGuard handshake with "+p+"-", "s ago"); err != nil {
					return fmt.Errorf("%v\n%s", err, raw)
				}
			}
			for _, c := range find(checks, "tunnel", "") {
				if c.Peer == "" && c.Result == "pass" && strings.Contains(c.Detail, "userspace WireGuard on gvt-wireguard") && strings.Contains(c.Detail, "2 peer(s)") {
					return nil
				}
			}
			return fmt.Errorf("no passed tunnel check naming userspace WireGuard on gvt-wireguard with 2 peers:\n%s", raw)
		})
	})

	t.Run("underlay shows no payload", func(t *testing.T) {
		const encMark, plainMark = 0xa7, 0xb9
		capt := startCapture(t, "h2", "eth0", encMark, plainMark)
		encOK := pingPattern("h1", cs[0].id, cs[1].ip, encMark, 5)
		plainOK := pingPattern("h1", p1.id, p2.ip, plainMark, 5)
		markers, udp, inClear := capt.stopCapture(t)
		if !encOK || !plainOK {
			t.Fatalf("pings during the capture: encrypted answered %v, plain answered %v; want both", encOK, plainOK)
		}
		if markers[plainMark] == 0 {
			t.Errorf("the plain network's marker never crossed h2's underlay: the capture sees nothing (udp by port: %v)", udp)
		}
		if markers[encMark] != 0 || inClear != 0 {
			t.Errorf("clear text on the underlay: %d frames with the encrypted network's marker, %d packets from or to %s (or to port %d)", markers[encMark], inClear, encPrefix, encVXLANPort)
		}
		if udp[wgPort] == 0 {
			t.Errorf("no WireGuard datagram (port %d) on h2's underlay while the encrypted network carried pings: %v", wgPort, udp)
		}
	})

	t.Run("tunnel gone, nothing in clear", func(t *testing.T) {
		const mark = 0xc3
		capt := startCapture(t, "h1", "eth0", mark)
		mustInHost(t, "h1", "ip", "link", "del", "gvt-wireguard")
		pingPattern("h1", cs[0].id, cs[1].ip, mark, 5)
		markers, _, inClear := capt.stopCapture(t)
		if markers[mark] != 0 || inClear != 0 {
			t.Errorf("with the tunnel deleted, %d frames with the marker and %d packets from or to %s left h1", markers[mark], inClear, encPrefix)
		}
		eventually(t, 60*time.Second, "the tunnel is repaired and the mesh answers again", func() error {
			if !pingPattern("h1", cs[0].id, cs[1].ip, mark, 1) {
				return fmt.Errorf("%s does not answer %s", cs[1], cs[0])
			}
			return nil
		})
	})

	t.Run("plugin killed, nothing in clear, back after restart", func(t *testing.T) {
		const mark = 0xd5
		pid, err := pluginPID("h2")
		if err != nil {
			t.Fatal(err)
		}
		capt := startCapture(t, "h2", "eth0", mark)
		killed := time.Now()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill -9 %d: %v", pid, err)
		}
		pingPattern("h2", cs[1].id, cs[0].ip, mark, 5)
		markers, _, inClear := capt.stopCapture(t)
		if markers[mark] != 0 || inClear != 0 {
			t.Errorf("with the plugin down, %d frames with the marker and %d packets from or to %s left h2", markers[mark], inClear, encPrefix)
		}
		eventually(t, 90*time.Second, "the restarted plugin's tunnel carries the mesh again", func() error {
			if !pingPattern("h2", cs[1].id, cs[0].ip, mark, 1) {
				return fmt.Errorf("%s does not answer %s", cs[0], cs[1])
			}
			return nil
		})
		t.Logf("encrypted traffic from h2 answered again %.1f s after its plugin was killed", time.Since(killed).Seconds())
		fullMesh(t, 60*time.Second, cs)
	})

	t.Run("key rotation, traffic continues", func(t *testing.T) {
		old := tunnelOf(t, "h1").PublicKey
		id, stderr, err := harnessCmd("plugin-id", "h1")
		if err != nil {
			t.Fatalf("plugin id of h1: %v %s", err, stderr)
		}
		// a steady ping across the rotation, from h2 to h1
		const probes = 40
		done := make(chan string, 1)
		go func() {
			out, _, _ := docker("h2", "exec", cs[1].id, "ping", "-c", fmt.Sprint(probes), "-i", "0.1", "-W", "1", cs[0].ip)
			done <- out
		}()
		time.Sleep(time.Second)
		raw, err := plugin.RotateKey(context.Background(), "/run/docker/plugins/"+strings.TrimSpace(id)+"/grapevine.sock")
		if err != nil {
			t.Fatalf("rotate h1's key: %v", err)
		}
		var rk plugin.RotatedKey
		if err := json.Unmarshal(raw, &rk); err != nil || rk.PublicKey == "" || rk.PublicKey == old {
			t.Fatalf("rotation answered %s (%v); old key %s", raw, err, old)
		}
		res, err := parsePing(<-done)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("across h1's key rotation: %d of %d probes answered, longest gap %d probes (0.1 s apart)", res.received, res.sent, res.gap)
		if res.received < probes/2 {
			t.Errorf("only %d of %d probes answered across the rotation", res.received, res.sent)
		}
		eventually(t, 30*time.Second, "h2 and h3 use h1's new key", func() error {
			for _, h := range []string{"h2", "h3"} {
				for _, p := range tunnelOf(t, h).Peers {
					if strings.HasPrefix(p.Node, "h1-") && p.PublicKey != rk.PublicKey {
						return fmt.Errorf("%s still has %s for h1", h, p.PublicKey)
					}
				}
			}
			return nil
		})
		fullMesh(t, 60*time.Second, cs)
	})

	t.Run("mismatch refused", func(t *testing.T) {
		_, stderr, err := docker("h3", "network", "create", "-d", pluginName, "--ipam-driver", pluginName,
			"--subnet", plainSubnet, "-o", "encrypted=true", "mism")
		if err == nil {
			docker("h3", "network", "rm", "mism")
			t.Fatal("h3 created an encrypted network on a subnet h1 defines in clear")
		}
		if !strings.Contains(stderr, "host h1") && !strings.Contains(stderr, "host h2") {
			t.Errorf("refusal does not name the defining host: %s", stderr)
		}
		_, stderr, err = docker("h3", "network", "create", "-d", pluginName, "--ipam-driver", pluginName,
			"--subnet", "198.19.72.0/24", "-o", "mode=macvlan", "-o", "encrypted=true", "mism2")
		if err == nil {
			docker("h3", "network", "rm", "mism2")
			t.Fatal("a macvlan network accepted -o encrypted=true")
		}
		if !strings.Contains(stderr, "encrypted") {
			t.Errorf("macvlan refusal does not name the option: %s", stderr)
		}
	})
}

// tunnelOf reads the tunnel of host's `grapevine status --json`.
func tunnelOf(t *testing.T, host string) driver.TunnelStatus {
	t.Helper()
	out, stderr, err := harnessCmd("status", host, "--json")
	if err != nil {
		t.Fatalf("grapevine status on %s: %v: %s", host, err, stderr)
	}
	var st struct {
		Tunnel *driver.TunnelStatus `json:"tunnel"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Tunnel == nil {
		t.Fatalf("no tunnel in the status of %s (%v): %s", host, err, out)
	}
	return *st.Tunnel
}
