package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// The names resolver's redirect: DNS queries that containers of grapevine
// networks send through their uplink (Docker's embedded resolver forwards
// the names it does not know from inside the container's namespace) are
// redirected to the resolver the plugin runs.
const (
	chainNames = "GRAPEVINE-NAMES" // nat: REDIRECT of port 53 from the networks' subnets
	// tappedSet is the ipset (hash:ip) of the addresses of containers whose
	// queries to Docker's resolver the names tap sees first: grapevine
	// names are answered there, so the UDP queries Docker forwards for
	// them (upstream names) skip the redirect and leave unchanged.
	tappedSet    = "grapevine-tapped"
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
	lines := []string{fmt.Sprintf("-A %s -p udp -m set --match-set %s src -m comment --comment %s -j RETURN", chainNames, tappedSet, namesComment)}
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
	if _, err := k.ensureAddrSet(tappedSet); err != nil {
		return fmt.Errorf("names redirect: %w", err)
	}
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
	// A restarted plugin's resolver listens on other ports: queries whose
	// ports repeat an earlier query's within conntrack's timeout would
	// follow the old entry to the dead port and be lost. Each subnet is
	// cleaned once per pair of ports.
	if k.names.UDPPort != r.UDPPort || k.names.TCPPort != r.TCPPort {
		k.namesClean = map[netip.Prefix]bool{}
	}
	var dirty []netip.Prefix
	for _, s := range r.Subnets {
		if !k.namesClean[s] {
			dirty = append(dirty, s)
		}
	}
	if err := k.dropNamesFlows(namesFlows{subnets: dirty, keep: r}); err != nil {
		return err
	}
	for _, s := range dirty {
		k.namesClean[s] = true
	}
	k.names = r
	return nil
}

// namesFlows matches conntrack entries of DNS queries from subnets that a
// names redirect sent to a port other than keep's (all redirected ones when
// keep is zero). Entries not redirected (the reply comes from port 53) never
// match.
type namesFlows struct {
	subnets []netip.Prefix
	keep    NamesRedirect
}

// MatchConntrackFlow implements netlink.CustomConntrackFilter.
func (f namesFlows) MatchConntrackFlow(fl *netlink.ConntrackFlow) bool {
	if fl.Forward.DstPort != 53 || fl.Reverse.SrcPort == 53 {
		return false
	}
	switch fl.Forward.Protocol {
	case unix.IPPROTO_UDP:
		if f.keep.UDPPort != 0 && fl.Reverse.SrcPort == f.keep.UDPPort {
			return false
		}
	case unix.IPPROTO_TCP:
		if f.keep.TCPPort != 0 && fl.Reverse.SrcPort == f.keep.TCPPort {
			return false
		}
	default:
		return false
	}
	src, ok := netip.AddrFromSlice(fl.Forward.SrcIP)
	if !ok {
		return false
	}
	src = src.Unmap()
	for _, s := range f.subnets {
		if s.Contains(src) {
			return true
		}
	}
	return false
}

// dropNamesFlows deletes the conntrack entries f matches. Caller holds k.mu.
func (k *Kernel) dropNamesFlows(f namesFlows) error {
	if len(f.subnets) == 0 {
		return nil
	}
	n, err := k.nl.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, f)
	if err != nil {
		return fmt.Errorf("names redirect: delete stale conntrack entries of redirected queries: %w", err)
	}
	if n > 0 {
		k.log.WithField("entries", n).Debug("names redirect: deleted conntrack entries pointing at an earlier resolver port")
	}
	return nil
}

// SetNamesTapped makes the set of tapped containers' addresses hold exactly
// addrs: their UDP queries skip the redirect. Add an address only once its
// tap is open, and delete it before the tap closes.
func (k *Kernel) SetNamesTapped(addrs []netip.Addr) error {
	for _, a := range addrs {
		if !a.Is4() {
			return fmt.Errorf("names redirect: tapped address %v is not IPv4", a)
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	set, err := k.ensureAddrSet(tappedSet)
	if err != nil {
		return fmt.Errorf("names redirect: %w", err)
	}
	if _, _, err := k.fillAddrSet(set, addrs, false); err != nil {
		return fmt.Errorf("names redirect: %w", err)
	}
	return nil
}

// RemoveNamesRedirect deletes the jump, the chain and the set of tapped
// addresses; absent is success.
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
	if err := k.destroyAddrSet(tappedSet); err != nil {
		return fmt.Errorf("names redirect: %w", err)
	}
	// Without the redirect, a query repeating a redirected one's ports
	// would still follow its conntrack entry to a port nobody answers.
	if err := k.dropNamesFlows(namesFlows{subnets: k.names.Subnets}); err != nil {
		return err
	}
	k.names, k.namesClean = NamesRedirect{}, nil
	return nil
}

// Conntrack asks the kernel's connection tracking for the original
// destination of redirected datagrams over one blocking netlink socket it
// keeps open, with one reused receive buffer: a socket per question (the
// netlink package's default) costs six more system calls and a 64 KiB
// buffer on every forwarded DNS query. It acts in the network namespace it
// was made in; safe for concurrent use (questions take turns).
type Conntrack struct {
	mu  sync.Mutex
	fd  int
	seq uint32
	buf []byte
}

// conntrackTimeout bounds a question to the kernel (it answers at once).
const conntrackTimeout = time.Second

// NewConntrack opens the netlink socket in the calling thread's network
// namespace.
func NewConntrack() (*Conntrack, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("conntrack netlink socket: %w", err)
	}
	tv := unix.NsecToTimeval(conntrackTimeout.Nanoseconds())
	for _, opt := range []int{unix.SO_RCVTIMEO, unix.SO_SNDTIMEO} {
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, opt, &tv); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("conntrack netlink socket timeout: %w", err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind conntrack netlink socket: %w", err)
	}
	return &Conntrack{fd: fd, buf: make([]byte, 16<<10)}, nil
}

// Close closes the socket.
func (c *Conntrack) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
}

// OriginalDstUDP is the package's OriginalDstUDP, asked on c's socket.
func (c *Conntrack) OriginalDstUDP(client, local netip.AddrPort) (netip.AddrPort, error) {
	req, err := udpReplyQuery(client, local)
	if err != nil {
		return netip.AddrPort{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd < 0 {
		return netip.AddrPort{}, fmt.Errorf("conntrack entry of udp %s → %s: socket closed", client, local)
	}
	c.seq++
	req.Seq = c.seq
	if err := unix.Sendto(c.fd, req.Serialize(), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return netip.AddrPort{}, fmt.Errorf("conntrack entry of udp %s → %s: %w", client, local, err)
	}
	for {
		msg, err := c.receive(req.Seq)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("conntrack entry of udp %s → %s: %w", client, local, err)
		}
		if msg == nil {
			continue // an earlier question's late answer
		}
		return origFromMessages(msg, client, local)
	}
}

// receive reads one datagram and returns its messages when they answer
// seq (nil when they answer another question or do not come from the
// kernel); an error message is an error.
func (c *Conntrack) receive(seq uint32) ([][]byte, error) {
	n, from, err := unix.Recvfrom(c.fd, c.buf, 0)
	for errors.Is(err, unix.EINTR) {
		n, from, err = unix.Recvfrom(c.fd, c.buf, 0)
	}
	if err != nil {
		return nil, err
	}
	if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
		return nil, nil // not from the kernel: not an answer
	}
	msgs, err := syscall.ParseNetlinkMessage(c.buf[:n])
	if err != nil {
		return nil, fmt.Errorf("parse netlink answer: %w", err)
	}
	var out [][]byte
	for _, m := range msgs {
		if m.Header.Seq != seq {
			return nil, nil
		}
		switch m.Header.Type {
		case unix.NLMSG_ERROR:
			if len(m.Data) >= 4 {
				if errno := int32(nl.NativeEndian().Uint32(m.Data[:4])); errno != 0 {
					return nil, syscall.Errno(-errno)
				}
			}
		case unix.NLMSG_DONE:
		default:
			out = append(out, m.Data)
		}
	}
	return out, nil
}

// OriginalDstUDP returns where a UDP datagram from client, that the
// redirect delivered to local (the receiving address and the resolver's
// port), was sent: the original destination of its conntrack entry, asked
// for by its reply direction (local → client). Acts in the calling thread's
// network namespace, on a netlink socket of its own.
func OriginalDstUDP(client, local netip.AddrPort) (netip.AddrPort, error) {
	return originalDstUDP(client, local)
}

// originalDstUDP asks on a netlink socket of its own.
func originalDstUDP(client, local netip.AddrPort) (netip.AddrPort, error) {
	req, err := udpReplyQuery(client, local)
	if err != nil {
		return netip.AddrPort{}, err
	}
	msgs, err := req.Execute(unix.NETLINK_NETFILTER, 0)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("conntrack entry of udp %s → %s: %w", client, local, err)
	}
	return origFromMessages(msgs, client, local)
}

// udpReplyQuery is the conntrack question for the entry whose reply
// direction is local → client (UDP).
func udpReplyQuery(client, local netip.AddrPort) (*nl.NetlinkRequest, error) {
	if !client.Addr().Is4() || !local.Addr().Is4() {
		return nil, fmt.Errorf("original destination of %s → %s: IPv4 only", client, local)
	}
	req := nl.NewNetlinkRequest((int(netlink.ConntrackTable)<<8)|nl.IPCTNL_MSG_CT_GET, unix.NLM_F_ACK)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: unix.AF_INET, Version: nl.NFNETLINK_V0})
	tuple := nl.NewRtAttr(unix.NLA_F_NESTED|nl.CTA_TUPLE_REPLY, nil)
	ip := tuple.AddRtAttr(unix.NLA_F_NESTED|nl.CTA_TUPLE_IP, nil)
	ip.AddRtAttr(nl.CTA_IP_V4_SRC, local.Addr().AsSlice())
	ip.AddRtAttr(nl.CTA_IP_V4_DST, client.Addr().AsSlice())
	proto := tuple.AddRtAttr(unix.NLA_F_NESTED|nl.CTA_TUPLE_PROTO, nil)
	proto.AddRtAttr(nl.CTA_PROTO_NUM, []byte{unix.IPPROTO_UDP})
	proto.AddRtAttr(nl.CTA_PROTO_SRC_PORT, nl.BEUint16Attr(local.Port()))
	proto.AddRtAttr(nl.CTA_PROTO_DST_PORT, nl.BEUint16Attr(client.Port()))
	req.AddData(tuple)
	return req, nil
}

// origFromMessages reads the redirected original destination from a
// conntrack answer's messages.
func origFromMessages(msgs [][]byte, client, local netip.AddrPort) (netip.AddrPort, error) {
	for _, m := range msgs {
		if len(m) < 4 {
			continue
		}
		if orig, ok := origTuple(m[4:]); ok && orig != local {
			return orig, nil
		}
	}
	return netip.AddrPort{}, fmt.Errorf("no redirected conntrack entry for udp %s → %s", client, local)
}

// origTuple reads the destination of CTA_TUPLE_ORIG from a conntrack
// message's attributes.
func origTuple(b []byte) (netip.AddrPort, bool) {
	var (
		addr netip.Addr
		port uint16
	)
	for _, a := range attrs(b) {
		if a.Type&nl.NLA_TYPE_MASK != nl.CTA_TUPLE_ORIG {
			continue
		}
		for _, t := range attrs(a.Value) {
			for _, f := range attrs(t.Value) {
				switch {
				case t.Type&nl.NLA_TYPE_MASK == nl.CTA_TUPLE_IP && f.Type&nl.NLA_TYPE_MASK == nl.CTA_IP_V4_DST && len(f.Value) == 4:
					addr = netip.AddrFrom4([4]byte(f.Value))
				case t.Type&nl.NLA_TYPE_MASK == nl.CTA_TUPLE_PROTO && f.Type&nl.NLA_TYPE_MASK == nl.CTA_PROTO_DST_PORT && len(f.Value) == 2:
					port = binary.BigEndian.Uint16(f.Value)
				}
			}
		}
	}
	return netip.AddrPortFrom(addr, port), addr.IsValid() && port != 0
}

// attrs splits netlink attributes, stopping at the first malformed one.
func attrs(b []byte) []nl.Attribute {
	var out []nl.Attribute
	for len(b) >= 4 {
		l := int(nl.NativeEndian().Uint16(b[0:2]))
		if l < 4 || l > len(b) {
			break
		}
		out = append(out, nl.Attribute{Type: nl.NativeEndian().Uint16(b[2:4]), Value: b[4:l]})
		b = b[min((l+3)&^3, len(b)):]
	}
	return out
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
