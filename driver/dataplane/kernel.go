package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/coreos/go-iptables/iptables"
	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// dumpRetries bounds how often a netlink dump interrupted by a concurrent change
// (netlink.ErrDumpInterrupted) is repeated before the error is returned.
const dumpRetries = 5

// Kernel is the Dataplane that programs the real kernel: links, addresses,
// neighbour and FDB entries through its own netlink handle, packet-filter rules
// through the iptables binaries.
//
// Namespaces: the netlink handle is bound to the network namespace that was
// current for the calling thread when NewKernel ran, and keeps acting there from
// any goroutine. iptables commands, sysctl writes and the socket probes of
// PortInUse act in the namespace of the calling thread; in the plugin every
// thread is in the host namespace, so both are the same.
//
// Methods are safe for concurrent use; they are serialised by one mutex because
// kernel programming is quick and read-modify-write sequences must not interleave.
type Kernel struct {
	log *logrus.Entry
	nl  *netlink.Handle
	ipt *iptables.IPTables
	// xt runs iptables-save and iptables-restore of the same flavour as ipt.
	xt xtables

	mu sync.Mutex
	// applied remembers, per table, the rules last written and what iptables
	// printed for them afterwards, so that a later sync whose desired rules and
	// read-back are unchanged writes nothing even if iptables prints a rule in a
	// form other than the one written.
	applied map[string]appliedTable
	// restores counts iptables-restore runs (tests check that a repeated sync
	// writes nothing).
	restores int

	// nsDirs are where isolated networks' namespaces are pinned (none =
	// bridges stay in the Kernel's own namespace); see IsolateNetworks.
	nsDirs []string
	// spaces holds the open isolated namespaces by bridge name; where
	// remembers which one holds a link found there by name.
	spaces map[string]*space
	where  map[string]*space
	// probe is the doctor's probe namespace and device (kernel_probe.go);
	// nil when there is none.
	probe  *probeSpace
	closed bool

	// tun is the host's encryption tunnel while it runs (kernel_tunnel.go).
	tun *tunnelState
	// names is the names redirect last synced by this process
	// (dnsredirect.go); zero before the first.
	names NamesRedirect
	// namesClean: the subnets whose stale redirected DNS flows were
	// deleted for names' ports.
	namesClean map[netip.Prefix]bool
}

var _ Dataplane = (*Kernel)(nil)

// NewKernel returns a Kernel for the calling thread's current network namespace.
// It fails when netlink is unavailable or no usable iptables binary is found.
// Call Close to release the netlink sockets.
func NewKernel(log *logrus.Entry) (*Kernel, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink handle in the current network namespace: %w", err)
	}
	xt, err := findXtables()
	if err != nil {
		h.Close()
		return nil, err
	}
	ipt, err := iptables.New(iptables.IPFamily(iptables.ProtocolIPv4), iptables.Timeout(10), iptables.Path(xt.ipt))
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("run %s (the plugin rootfs must contain the iptables binaries): %w", xt.ipt, err)
	}
	log.WithField("backend", xt.mode).Info("iptables backend chosen: the one the host's rules are written with")
	return &Kernel{
		log:     log,
		nl:      h,
		ipt:     ipt,
		xt:      xt,
		applied: map[string]appliedTable{},
		spaces:  map[string]*space{},
		where:   map[string]*space{},
	}, nil
}

// Close releases the netlink handles and removes the probe device; isolated
// namespaces stay pinned. The
// Kernel must not be used afterwards.
func (k *Kernel) Close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return
	}
	k.closed = true
	k.closeTunnel()
	k.dropProbe()
	k.closeSpaces()
	k.nl.Close()
}

// linkByName returns the link of the Kernel's own namespace or an error
// wrapping ErrLinkNotFound.
func (k *Kernel) linkByName(name string) (netlink.Link, error) {
	return linkIn(k.nl, name)
}

// linkIn returns the link in h's namespace or an error wrapping
// ErrLinkNotFound.
func linkIn(h *netlink.Handle, name string) (netlink.Link, error) {
	if name == "" {
		return nil, fmt.Errorf("look up link: empty name: %w", ErrLinkNotFound)
	}
	l, err := h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return nil, fmt.Errorf("link %q: %w", name, ErrLinkNotFound)
		}
		return nil, fmt.Errorf("look up link %q: %w", name, err)
	}
	return l, nil
}

// linkList dumps all links of the Kernel's namespace.
func (k *Kernel) linkList() ([]netlink.Link, error) {
	return listIn(k.nl)
}

// listIn dumps all links of h's namespace, repeating a dump interrupted by
// concurrent changes.
func listIn(h *netlink.Handle) ([]netlink.Link, error) {
	var err error
	for range dumpRetries {
		var links []netlink.Link
		links, err = h.LinkList()
		if err == nil {
			return links, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return nil, fmt.Errorf("list links: %w", err)
}

// DeleteLink removes a link by name; a missing link is success.
func (k *Kernel) DeleteLink(name string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.deleteLink(name)
}

func (k *Kernel) deleteLink(name string) error {
	if s, err := k.openSpace(name); err != nil {
		return err
	} else if s != nil {
		// an isolated bridge: its namespace (with everything in it) and uplink
		if err := k.deleteSpace(name); err != nil {
			return err
		}
		if up, _, err := uplinkNames(name); err == nil {
			if err := deleteIn(k.nl, up); err != nil {
				return err
			}
		}
	}
	h, l, err := k.locate(name)
	if errors.Is(err, ErrLinkNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete link %q: %w", name, err)
	}
	return nil
}

// deleteIn removes the link called name in h's namespace; missing is success.
func deleteIn(h *netlink.Handle, name string) error {
	l, err := linkIn(h, name)
	if errors.Is(err, ErrLinkNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete link %q: %w", name, err)
	}
	return nil
}

// ListLinks names the links whose name starts with prefix: in the Kernel's
// namespace and in every isolated namespace, where the namespace itself
// counts as its bridge (so that one whose bridge is missing is still found
// and can be deleted). The uplinks of isolated bridges are left out.
func (k *Kernel) ListLinks(prefix string) ([]string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	links, err := k.linkList()
	if err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for _, l := range links {
		names[l.Attrs().Name] = true
	}
	bridges, err := k.pinned()
	if err != nil {
		return nil, err
	}
	for _, b := range bridges {
		names[b] = true
		if up, _, err := uplinkNames(b); err == nil {
			delete(names, up)
		}
		s, err := k.openSpace(b)
		if err != nil {
			return nil, err
		}
		if s == nil {
			delete(names, b)
			continue
		}
		inner, err := listIn(s.nl)
		if err != nil {
			return nil, fmt.Errorf("namespace of bridge %q: %w", b, err)
		}
		_, in, _ := uplinkNames(b)
		for _, l := range inner {
			if n := l.Attrs().Name; n != in {
				names[n] = true
			}
		}
	}
	var out []string
	for n := range names {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out, nil
}
