package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// dockerNATChain is where dockerd writes the DNAT rules of its published ports.
const dockerNATChain = "DOCKER"

// PortInUse reports whether hostIP:port/proto is already taken on this host by
// something other than grapevine: a socket that prevents binding there, or a
// DNAT rule of Docker's own (bridge network) published ports. grapevine's DNAT
// rules live in its own chain and are not counted.
func (k *Kernel) PortInUse(proto Proto, hostIP netip.Addr, port uint16) (bool, string, error) {
	if port == 0 {
		return false, "", errors.New("check host port: port 0 cannot be published")
	}
	if hostIP.IsValid() && !hostIP.Is4() {
		return false, "", fmt.Errorf("check host port %d: host address %v is not IPv4 (grapevine programs IPv4 only)", port, hostIP)
	}
	if !hostIP.IsValid() {
		hostIP = netip.IPv4Unspecified()
	}
	if busy, why, err := probeSocket(proto, hostIP, port); err != nil || busy {
		return busy, why, err
	}

	text, err := k.xt.save("nat")
	if err != nil {
		return false, "", fmt.Errorf("check docker's published ports for %s %s:%d: %w", proto, hostIP, port, err)
	}
	for _, r := range parseSave(text).rules[dockerNATChain] {
		if dnatConflicts(splitRule(r), proto, hostIP, port) {
			return true, fmt.Sprintf("docker publishes %s port %d (nat rule %q)", proto, port, r), nil
		}
	}
	return false, "", nil
}

// probeSocket tries to bind hostIP:port for proto in this namespace and releases
// it at once. EADDRINUSE means something holds the port.
func probeSocket(proto Proto, hostIP netip.Addr, port uint16) (bool, string, error) {
	addr := netip.AddrPortFrom(hostIP, port)
	var err error
	switch proto {
	case TCP:
		var l net.Listener
		if l, err = net.Listen("tcp4", addr.String()); err == nil {
			err = l.Close()
		}
	case UDP:
		var c net.PacketConn
		if c, err = net.ListenPacket("udp4", addr.String()); err == nil {
			err = c.Close()
		}
	case SCTP:
		err = probeSCTP(addr)
	default:
		return false, "", fmt.Errorf("check host port %d: protocol %d is not tcp, udp or sctp", port, proto)
	}
	switch {
	case err == nil:
		return false, "", nil
	case errors.Is(err, unix.EADDRINUSE):
		return true, fmt.Sprintf("a socket on this host already uses %s %s", proto, addr), nil
	case errors.Is(err, unix.EADDRNOTAVAIL):
		return false, "", fmt.Errorf("check host port %s %s: %s is not an address of this host; publish on one of its addresses or on all (-p %d:…): %w",
			proto, addr, hostIP, port, err)
	}
	return false, "", fmt.Errorf("check host port %s %s by binding it: %w", proto, addr, err)
}

// probeSCTP binds an SCTP socket. A kernel without SCTP cannot have anything
// listening on an SCTP port, so that is reported as free.
func probeSCTP(addr netip.AddrPort) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
	if errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.ESOCKTNOSUPPORT) || errors.Is(err, unix.EAFNOSUPPORT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open sctp socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fmt.Errorf("set SO_REUSEADDR on sctp socket: %w", err)
	}
	return unix.Bind(fd, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()})
}

// dnatConflicts reports whether the rule (arguments after "-A CHAIN") DNATs
// proto traffic for hostIP:port. A rule without a destination covers every host
// address; an unspecified hostIP collides with every destination.
func dnatConflicts(args []string, proto Proto, hostIP netip.Addr, port uint16) bool {
	var (
		isDNAT, protoOK, portOK, dstOK = false, false, false, true
		negate                         bool
	)
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "!" {
			negate = true
			continue
		}
		next := ""
		if i+1 < len(args) {
			next = args[i+1]
		}
		switch a {
		case "-j":
			isDNAT = next == "DNAT"
			i++
		case "-p":
			protoOK = !negate && next == proto.String()
			i++
		case "--dport", "--destination-port":
			portOK = !negate && portInRange(next, port)
			i++
		case "-d", "--destination":
			if !negate && !hostIP.IsUnspecified() {
				p, err := netip.ParsePrefix(next)
				if err != nil {
					if a, err2 := netip.ParseAddr(next); err2 == nil {
						p, err = netip.PrefixFrom(a, a.BitLen()), nil
					}
				}
				dstOK = err == nil && p.Contains(hostIP)
			}
			i++
		}
		negate = false
	}
	return isDNAT && protoOK && portOK && dstOK
}

// portInRange parses "N" or "A:B" and reports whether port is inside.
func portInRange(s string, port uint16) bool {
	lo, hi, isRange := strings.Cut(s, ":")
	l, err := strconv.ParseUint(lo, 10, 16)
	if err != nil {
		return false
	}
	h := l
	if isRange {
		if h, err = strconv.ParseUint(hi, 10, 16); err != nil {
			return false
		}
	}
	return uint64(port) >= l && uint64(port) <= h
}
