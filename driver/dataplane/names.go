package dataplane

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The names resolver's redirect: DNS queries that containers of grapevine
// networks send through their uplink (Docker's embedded resolver forwards
// the names it does not know from inside the container's namespace) are
// redirected to the resolver the plugin runs.
const (
	chainNames   = "GRAPEVINE-NAMES" // nat: REDIRECT of port 53 from the networks' subnets
	namesComment = "grapevine-names"
	// namesLeaseLayout is the time match's --datestop form (UTC).
	namesLeaseLayout = "2006-01-02T15:04:05"
)

// NamesRedirect is the wanted redirect: queries to port 53 from Subnets go to
// UDPPort and TCPPort on the receiving interface's address. Every rule
// carries a lease (the time match's --datestop, UTC): after Until the rules
// stop matching and queries leave unchanged, so a plugin that dies without
// removing them costs only cross-host names. The holder renews it well
// before Until.
type NamesRedirect struct {
	UDPPort, TCPPort uint16
	Subnets          []netip.Prefix
	Until            time.Time
}

// namesRules renders the chain's rules in iptables-restore form.
func namesRules(r NamesRedirect) ([]string, error) {
	if r.UDPPort == 0 || r.TCPPort == 0 {
		return nil, fmt.Errorf("names redirect: UDPPort %d and TCPPort %d must both be set", r.UDPPort, r.TCPPort)
	}
	until := r.Until.UTC().Format(namesLeaseLayout)
	var lines []string
	for _, s := range r.Subnets {
		if !s.IsValid() || !s.Addr().Is4() || s != s.Masked() {
			return nil, fmt.Errorf("names redirect: subnet %s is not an IPv4 network address", s)
		}
		for _, p := range []struct {
			proto string
			port  uint16
		}{{"udp", r.UDPPort}, {"tcp", r.TCPPort}} {
			lines = append(lines, fmt.Sprintf("-A %s -s %s -p %s -m %s --dport 53 -m time --datestop %s -m comment --comment %s -j REDIRECT --to-ports %d",
				chainNames, s, p.proto, p.proto, until, namesComment, p.port))
		}
	}
	return lines, nil
}

// namesJump sends PREROUTING's packets through chainNames, first.
var namesJump = []string{"-m", "comment", "--comment", namesComment, "-j", chainNames}

// SyncNamesRedirect makes grapevine's names chain hold exactly the rules of
// r, replaced in one iptables-restore transaction, and jumps to it first
// from nat PREROUTING.
func (k *Kernel) SyncNamesRedirect(r NamesRedirect) error {
	lines, err := namesRules(r)
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	input := "*nat\n:" + chainNames + " - [0:0]\n" + strings.Join(append(lines, "COMMIT"), "\n") + "\n"
	if err := k.xt.restore(input); err != nil {
		return fmt.Errorf("names redirect: %w", err)
	}
	ok, err := k.ipt.Exists("nat", "PREROUTING", namesJump...)
	if err != nil {
		return fmt.Errorf("names redirect: look for the jump from nat PREROUTING: %w", err)
	}
	if !ok {
		if err := k.ipt.Insert("nat", "PREROUTING", 1, namesJump...); err != nil {
			return fmt.Errorf("names redirect: insert the jump into nat PREROUTING: %w", err)
		}
	}
	return nil
}

// RemoveNamesRedirect deletes the jump and the chain; absent is success.
func (k *Kernel) RemoveNamesRedirect() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for range 100 {
		ok, err := k.ipt.Exists("nat", "PREROUTING", namesJump...)
		if err != nil || !ok {
			break
		}
		if err := k.ipt.Delete("nat", "PREROUTING", namesJump...); err != nil {
			return fmt.Errorf("names redirect: delete the jump from nat PREROUTING: %w", err)
		}
	}
	if err := k.ipt.ClearAndDeleteChain("nat", chainNames); err != nil && !isNoChain(err) {
		return fmt.Errorf("names redirect: delete chain %s: %w", chainNames, err)
	}
	return nil
}

// OriginalDstUDP returns where a UDP datagram from client that the redirect
// delivered to local port port was sent: the original destination of its
// conntrack entry (found by the reply direction: from port to client).
// Acts in the calling thread's network namespace.
func OriginalDstUDP(client netip.AddrPort, port uint16) (netip.AddrPort, error) {
	flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("list conntrack entries: %w", err)
	}
	for _, f := range flows {
		if f.Forward.Protocol != unix.IPPROTO_UDP || f.Reverse.SrcPort != port || f.Forward.SrcPort != client.Port() {
			continue
		}
		src, ok := netip.AddrFromSlice(f.Forward.SrcIP)
		if !ok || src.Unmap() != client.Addr().Unmap() {
			continue
		}
		dst, ok := netip.AddrFromSlice(f.Forward.DstIP)
		if !ok {
			continue
		}
		orig := netip.AddrPortFrom(dst.Unmap(), f.Forward.DstPort)
		if orig.Port() == port {
			break // not redirected: sent to the resolver itself
		}
		return orig, nil
	}
	return netip.AddrPort{}, fmt.Errorf("no redirected conntrack entry for udp from %s to port %d", client, port)
}

// OriginalDstTCP returns the destination a redirected TCP connection was
// opened to (SO_ORIGINAL_DST), refusing one that was not redirected.
func OriginalDstTCP(c *net.TCPConn) (netip.AddrPort, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	var (
		mreq *unix.IPv6Mreq // 20 bytes: room for the struct sockaddr_in the kernel writes
		gerr error
	)
	if err := raw.Control(func(fd uintptr) {
		mreq, gerr = unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
	}); err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	if gerr != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination (SO_ORIGINAL_DST): %w", gerr)
	}
	b := mreq.Multiaddr // sockaddr_in: family, port (big endian), address
	orig := netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), binary.BigEndian.Uint16(b[2:4]))
	local, _ := netip.ParseAddrPort(c.LocalAddr().String())
	if orig.Port() == local.Port() && orig.Addr() == local.Addr().Unmap() {
		return netip.AddrPort{}, fmt.Errorf("connection from %s was not redirected: it was opened to the resolver itself", c.RemoteAddr())
	}
	return orig, nil
}
