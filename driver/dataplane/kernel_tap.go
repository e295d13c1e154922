package dataplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"strings"
	"sync"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/mdlayher/netlink"
	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"grapevine/internal/ipv4pkt"
)

// The names tap: in a container's network namespace, the UDP queries the
// container sends to Docker's embedded resolver (127.0.0.11:53) are offered
// to grapevine first. The raw table's OUTPUT hook, which runs before
// conntrack and before Docker's own DNAT of 127.0.0.11:53 to its resolver's
// port, queues them to the plugin (NFQUEUE); the plugin answers a grapevine
// name itself (the answer written on a raw socket, from 127.0.0.11:53, and
// the query dropped) and lets every other query go on to Docker unchanged.
// --queue-bypass makes the queue fail open: while no plugin listens, the
// kernel passes the queries to Docker as if the rule were not there.
const (
	// TapChain is the raw-table chain in a tapped container's namespace.
	TapChain = "GRAPEVINE-TAP"
	// TapQueue is the queue number (queues are per namespace).
	TapQueue = 53
	// TapMark marks the tap's answers (SO_MARK of its raw socket); the
	// chain leaves them untracked, so they neither make a conntrack entry
	// that a later query from the same port would match as a reply (it
	// would then miss Docker's DNAT) nor meet Docker's SNAT.
	TapMark = 0x47760035
	// tapQueueLen bounds the queries waiting for the plugin; past it the
	// kernel passes further queries to Docker (fail open).
	tapQueueLen = 256
)

// dockerResolver is Docker's embedded resolver's address in every container
// on a user-defined network.
func dockerResolver() netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 11}), 53)
}

// tapRules are the chain's rules, as iptables-restore input for the raw table.
func tapRules() string {
	r := dockerResolver()
	return strings.Join([]string{
		"*raw",
		":" + TapChain + " - [0:0]",
		fmt.Sprintf("-A %s -s %s/32 -p udp -m udp --sport %d -m mark --mark %#x -m comment --comment grapevine-tap -j CT --notrack", TapChain, r.Addr(), r.Port(), TapMark),
		fmt.Sprintf("-A %s -d %s/32 -p udp -m udp --dport %d -m comment --comment grapevine-tap -j NFQUEUE --queue-num %d --queue-bypass", TapChain, r.Addr(), r.Port(), TapQueue),
		"COMMIT",
		"",
	}, "\n")
}

// TapAnswer returns the answer to a DNS query, or nil to pass the query on
// to Docker's resolver. It must be quick: the container's query waits.
type TapAnswer func(query []byte) []byte

// tap is one container namespace's open tap.
type tap struct {
	path   string
	ns     netns.NsHandle
	nf     *nfqueue.Nfqueue
	raw    int // raw IPv4 socket in the namespace, for the answers
	answer TapAnswer
	xt     xtables
	log    *logrus.Entry
	cancel context.CancelFunc
	once   sync.Once
}

// OpenTap taps the DNS queries of the network namespace at nsPath (a
// container's sandbox): it installs the chain (idempotently: a tap left by a
// plugin that stopped is taken over), opens the queue and the answer socket
// there, and answers each query with answer. Close removes the rules while
// the namespace is still the one at nsPath and releases the namespace.
func (k *Kernel) OpenTap(nsPath string, answer TapAnswer) (io.Closer, error) {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("open the namespace %s: %w", nsPath, err)
	}
	if !isNetNS(ns) {
		ns.Close()
		return nil, fmt.Errorf("%s is not a network namespace", nsPath)
	}
	t := &tap{path: nsPath, ns: ns, raw: -1, answer: answer, xt: k.xt, log: k.log.WithField("sandbox", nsPath)}
	if err := t.open(); err != nil {
		t.release()
		return nil, err
	}
	return t, nil
}

// open installs the rules and opens the answer socket in the namespace, then
// the queue, and starts handling queries.
func (t *tap) open() error {
	err := inNetNS(t.ns, func() error {
		if err := t.installRules(); err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		if err != nil {
			return fmt.Errorf("open the tap's raw socket: %w", err)
		}
		t.raw = fd
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, TapMark); err != nil {
			return fmt.Errorf("mark the tap's raw socket: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	t.nf, err = nfqueue.Open(&nfqueue.Config{
		NetNS: int(t.ns), NfQueue: TapQueue, MaxQueueLen: tapQueueLen, MaxPacketLen: 0xffff,
		Copymode: nfqueue.NfQnlCopyPacket, AfFamily: unix.AF_INET, Flags: nfqueue.NfQaCfgFlagFailOpen,
	})
	if err != nil {
		return fmt.Errorf("open the tap's queue: %w", err)
	}
	if err := t.nf.SetOption(netlink.NoENOBUFS, true); err != nil {
		return fmt.Errorf("set the tap queue's socket option: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.cancel = cancel
	if err := t.nf.RegisterWithErrorFunc(ctx, t.handle, t.readError); err != nil {
		return fmt.Errorf("bind the tap's queue %d: %w", TapQueue, err)
	}
	return nil
}

// installRules writes the chain and jumps to it first from OUTPUT unless a
// jump is there. Runs on a thread in the namespace.
func (t *tap) installRules() error {
	if err := t.xt.restore(tapRules()); err != nil {
		return fmt.Errorf("install the tap's rules: %w", err)
	}
	if t.iptables("-C", "OUTPUT", "-j", TapChain) == nil {
		return nil
	}
	if err := t.iptables("-I", "OUTPUT", "1", "-j", TapChain); err != nil {
		return fmt.Errorf("jump to the tap's chain: %w", err)
	}
	return nil
}

// removeRules deletes the jump and the chain. Runs on a thread in the
// namespace; a rule already gone is not an error.
func (t *tap) removeRules() error {
	for t.iptables("-C", "OUTPUT", "-j", TapChain) == nil {
		if err := t.iptables("-D", "OUTPUT", "-j", TapChain); err != nil {
			return err
		}
	}
	if t.iptables("-n", "-L", TapChain) != nil {
		return nil
	}
	return errors.Join(t.iptables("-F", TapChain), t.iptables("-X", TapChain))
}

func (t *tap) iptables(args ...string) error {
	cmd := exec.Command(t.xt.ipt, append([]string{"-w", "-t", "raw"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("iptables -t raw %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// handle gives each queued packet its verdict: dropped when the tap
// answered it, passed on to Docker's resolver otherwise.
func (t *tap) handle(a nfqueue.Attribute) int {
	if a.PacketID == nil {
		return 0
	}
	verdict := nfqueue.NfAccept
	if a.Payload != nil && t.answered(*a.Payload) {
		verdict = nfqueue.NfDrop
	}
	if err := t.nf.SetVerdict(*a.PacketID, verdict); err != nil {
		t.log.WithError(err).Debug("tap: verdict")
	}
	return 0
}

// answered answers pkt when it is a query to Docker's resolver that answer
// knows; false leaves the query to Docker (also when the answer cannot be
// sent).
func (t *tap) answered(pkt []byte) bool {
	q, err := ipv4pkt.ParseUDP(pkt)
	if err != nil || q.Dst != dockerResolver() {
		return false
	}
	ans := t.answer(q.Payload)
	if ans == nil {
		return false
	}
	out, err := ipv4pkt.UDP(q.Dst, q.Src, ans)
	if err != nil {
		t.log.WithError(err).Debug("tap: build the answer")
		return false
	}
	if err := unix.Sendto(t.raw, out, 0, &unix.SockaddrInet4{Addr: q.Src.Addr().As4()}); err != nil {
		t.log.WithError(err).Debug("tap: send the answer")
		return false
	}
	return true
}

// readError keeps reading after a transient error (a full socket buffer)
// and stops on any other.
func (t *tap) readError(err error) int {
	var op *netlink.OpError
	if errors.As(err, &op) && (op.Timeout() || op.Temporary()) {
		return 0
	}
	if errors.Is(err, unix.ENOBUFS) {
		return 0
	}
	t.log.WithError(err).Debug("tap: queue read stopped")
	return 1
}

// Close stops answering, removes the rules when the namespace is still the
// one at the path (a container disconnected from the network but running
// on; a stopped container's namespace goes with its last reference), and
// releases the namespace.
func (t *tap) Close() error {
	var err error
	t.once.Do(func() {
		if t.cancel != nil {
			t.cancel()
		}
		if t.stillAtPath() {
			err = inNetNS(t.ns, t.removeRules)
		}
		t.release()
	})
	return err
}

func (t *tap) release() {
	if t.nf != nil {
		_ = t.nf.Close()
	}
	if t.raw >= 0 {
		_ = unix.Close(t.raw)
	}
	_ = t.ns.Close()
}

// stillAtPath reports whether the file at the tap's path is still its
// namespace (Docker removes the file when it deletes the sandbox).
func (t *tap) stillAtPath() bool {
	var held, cur unix.Stat_t
	if unix.Fstat(int(t.ns), &held) != nil {
		return false
	}
	if unix.Stat(t.path, &cur) != nil {
		return false
	}
	return held.Dev == cur.Dev && held.Ino == cur.Ino
}
