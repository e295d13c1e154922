package dataplane

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Isolated networks.
//
// br_netfilter sends every frame a bridge forwards through the iptables chains
// and conntrack of the bridge's network namespace. The host namespace holds
// Docker's NAT rules and grapevine's own, so a bridge there loses 17–33 % of
// its throughput to netfilter (docs/dataplane.md; measured again by
// `make bench`). With IsolateNetworks, each bridge lives in a network
// namespace of its own that holds no rules at all, with the VXLAN device and
// the bridge ends of the endpoints' veths:
//
//	host namespace                      namespace pinned at DIR/<bridge>
//	  gvu-ID (gateway address, MAC) ──── gvi-ID ─┐
//	  container ends of the veths        gve-…  ─┤ bridge <bridge> (no address)
//	  VXLAN UDP socket               ◄── gvx-…  ─┘ (made here, then moved)
//
// The uplink veth gvu-/gvi- puts the gateway address in the host namespace,
// where routing, egress NAT and published ports work as before: firewall rules
// name the uplink wherever the driver says "bridge". Frames between
// containers, local or across the overlay, never leave the isolated
// namespace, where br_netfilter is switched off (it holds no rules to apply).
// A VXLAN device keeps the UDP socket of the namespace it was
// created in, so it is made in the host namespace and then moved.
//
// The namespace is pinned by bind mounts of its nsfs file on DIR/<bridge>
// for each pin directory; it lives while any pin does. For a pin to outlive
// the plugin, its directory must be a shared mount whose peer is outside the
// plugin: the plugin's PropagatedMount (kept across a plugin crash, unmounted
// by `docker plugin disable`) and its state directory when the host shares it
// (kept across disable and upgrade). Deleting the bridge removes every pin,
// and with the last one the namespace and everything in it.

// space is one isolated network namespace and the netlink handle acting in it.
type space struct {
	bridge string // the bridge it holds; also the pin's file name
	fd     netns.NsHandle
	nl     *netlink.Handle
}

func (s *space) close() {
	s.nl.Close()
	_ = s.fd.Close()
}

// IsolateNetworks makes every bridge this Kernel ensures from now on live in a
// network namespace of its own, pinned in each of dirs (created if missing).
// Call it once, before any Ensure call. Namespaces pinned there by an earlier
// process are found again by their bridge's name.
func (k *Kernel) IsolateNetworks(dirs ...string) error {
	if len(dirs) == 0 {
		return errors.New("isolate networks: no namespace directory given")
	}
	for _, dir := range dirs {
		if !filepath.IsAbs(dir) {
			return fmt.Errorf("isolate networks: namespace directory %q is not an absolute path", dir)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("isolate networks: create namespace directory: %w", err)
		}
	}
	if remounted, err := writableNetSysctls(); err != nil {
		k.log.WithError(err).Warn("/proc/sys/net stays read-only: br_netfilter cannot be turned off in isolated namespaces")
	} else if remounted {
		k.log.Info("made /proc/sys/net (only) writable in the plugin's mount namespace, for per-namespace sysctls")
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.nsDirs = slices.Clone(dirs)
	return nil
}

// pinned lists the bridges whose namespaces have a pin (possibly stale) in
// any pin directory.
func (k *Kernel) pinned() ([]string, error) {
	var out []string
	for _, dir := range k.nsDirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("list pinned network namespaces in %s: %w", dir, err)
		}
		for _, e := range entries {
			if isBridgeName(e.Name()) && !slices.Contains(out, e.Name()) {
				out = append(out, e.Name())
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// openPin opens the namespace pinned at p; nil when there is none (a stale
// pin file is removed).
func (k *Kernel) openPin(bridge, p string) (netns.NsHandle, error) {
	fd, err := netns.GetFromPath(p)
	if errors.Is(err, os.ErrNotExist) {
		return netns.None(), nil
	}
	if err != nil {
		return netns.None(), fmt.Errorf("open network namespace of bridge %q at %s: %w", bridge, p, err)
	}
	if isNetNS(fd) {
		return fd, nil
	}
	// a file left from a pin whose mount is gone: that pin is gone
	_ = fd.Close()
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return netns.None(), fmt.Errorf("remove stale namespace pin %s: %w", p, err)
	}
	return netns.None(), nil
}

// openSpace returns the namespace pinned for bridge, opening it on first use
// and pinning it again where a pin is missing, or nil when there is none.
// Caller holds mu.
func (k *Kernel) openSpace(bridge string) (*space, error) {
	if s, ok := k.spaces[bridge]; ok {
		return s, nil
	}
	fd := netns.None()
	var missing []string
	for _, dir := range k.nsDirs {
		p := filepath.Join(dir, bridge)
		f, err := k.openPin(bridge, p)
		if err != nil {
			if fd.IsOpen() {
				_ = fd.Close()
			}
			return nil, err
		}
		switch {
		case !f.IsOpen():
			missing = append(missing, p)
		case fd.IsOpen():
			_ = f.Close() // the same namespace, pinned here too
		default:
			fd = f
		}
	}
	if !fd.IsOpen() {
		return nil, nil
	}
	for _, p := range missing {
		// e.g. the propagated mount's pin after `docker plugin disable`
		if err := pinNetNS(fd, p); err != nil {
			k.log.WithError(err).WithField("link", bridge).Warn("could not pin network namespace again")
		}
	}
	h, err := netlink.NewHandleAt(fd, unix.NETLINK_ROUTE)
	if err != nil {
		_ = fd.Close()
		return nil, fmt.Errorf("open netlink in the network namespace of bridge %q: %w", bridge, err)
	}
	s := &space{bridge: bridge, fd: fd, nl: h}
	k.spaces[bridge] = s
	k.quietBridgeNetfilter(s)
	return s, nil
}

// bridgeNetfilter are the br_netfilter switches of a namespace.
var bridgeNetfilter = []string{"bridge-nf-call-iptables", "bridge-nf-call-ip6tables", "bridge-nf-call-arptables"}

// quietBridgeNetfilter turns br_netfilter off inside an isolated namespace:
// it holds no rules, and handing each bridged frame to its netfilter hooks
// costs ~7 % of the CPU of a bulk transfer (perf record across a grapevine
// path: br_nf_* and nf_hook_slow). Failure costs only that, so it is logged.
func (k *Kernel) quietBridgeNetfilter(s *space) {
	err := inNetNS(s.fd, func() error {
		for _, f := range bridgeNetfilter {
			p := "/proc/sys/net/bridge/" + f
			cur, err := os.ReadFile(p)
			if errors.Is(err, os.ErrNotExist) {
				return nil // no br_netfilter in this kernel: nothing to turn off
			}
			if err == nil && strings.TrimSpace(string(cur)) == "0" {
				continue
			}
			if err == nil {
				err = os.WriteFile(p, []byte("0\n"), 0o644)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		k.log.WithError(err).WithField("link", s.bridge).Warn("could not turn br_netfilter off in the isolated namespace; bridged frames there pass through its (empty) netfilter hooks")
	}
}

// inNetNS runs fn on a thread that is in the namespace fd for the duration.
func inNetNS(fd netns.NsHandle, fn func() error) error {
	enter := func() error {
		if err := netns.Set(fd); err != nil {
			return fmt.Errorf("enter network namespace: %w", err)
		}
		return nil
	}
	return onNetNSThread(enter, fn)
}

// onNetNSThread runs enter (which moves the calling thread into another
// network namespace) and then fn on a locked thread of its own, and moves
// the thread back. If it cannot return, the thread stays locked and dies
// with its goroutine rather than run other goroutines in the wrong
// namespace.
func onNetNSThread(enter, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("open the current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := enter(); err != nil {
			// a failed setns or unshare leaves the thread where it was
			runtime.UnlockOSThread()
			done <- err
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			done <- errors.Join(ferr, fmt.Errorf("return to the original network namespace: %w", err))
			return // thread stays locked: it exits with this goroutine
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}

// netSysctls is the only part of /proc/sys grapevine writes: the sysctls of
// the network namespace of the writing thread.
const netSysctls = "/proc/sys/net"

// writableNetSysctls makes /proc/sys/net writable when it is read-only (as in
// a managed plugin's mount namespace, where /proc/sys is a read-only bind):
// it binds /proc/sys/net onto itself and remounts that bind read-write, so
// the rest of /proc/sys (kernel, vm, fs …) stays read-only. The bind keeps
// following the writing thread's network namespace. The plugin already holds
// CAP_SYS_ADMIN and CAP_NET_ADMIN on the host's network.
func writableNetSysctls() (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(netSysctls, &st); err != nil {
		return false, fmt.Errorf("stat %s: %w", netSysctls, err)
	}
	if st.Flags&unix.ST_RDONLY == 0 {
		return false, nil
	}
	if err := unix.Mount(netSysctls, netSysctls, "", unix.MS_BIND, ""); err != nil {
		return false, fmt.Errorf("bind %s onto itself: %w", netSysctls, err)
	}
	flags := uintptr(unix.MS_REMOUNT | unix.MS_BIND)
	for _, f := range []struct{ st, ms int64 }{{unix.ST_NOSUID, unix.MS_NOSUID}, {unix.ST_NODEV, unix.MS_NODEV}, {unix.ST_NOEXEC, unix.MS_NOEXEC}} {
		if st.Flags&f.st != 0 {
			flags |= uintptr(f.ms)
		}
	}
	if err := unix.Mount("", netSysctls, "", flags, ""); err != nil {
		_ = unix.Unmount(netSysctls, unix.MNT_DETACH)
		return false, fmt.Errorf("remount %s read-write: %w", netSysctls, err)
	}
	return true, nil
}

// isNetNS reports whether fd refers to a network namespace (and not to the
// plain file a pin leaves once unmounted).
func isNetNS(fd netns.NsHandle) bool {
	var st unix.Statfs_t
	return unix.Fstatfs(int(fd), &st) == nil && st.Type == unix.NSFS_MAGIC
}

// ensureSpace returns bridge's namespace, creating and pinning it when
// missing (created reports that). Caller holds mu.
func (k *Kernel) ensureSpace(bridge string) (s *space, created bool, err error) {
	if s, err = k.openSpace(bridge); err != nil || s != nil {
		return s, false, err
	}
	p := filepath.Join(k.nsDirs[0], bridge)
	if err := pinNewNetNS(p); err != nil {
		return nil, false, fmt.Errorf("create network namespace for bridge %q: %w", bridge, err)
	}
	k.log.WithField("link", bridge).WithField("pin", p).Info("created isolated network namespace")
	if s, err = k.openSpace(bridge); err == nil && s == nil {
		err = fmt.Errorf("namespace pinned at %s vanished", p)
	}
	if err != nil {
		_ = k.deleteSpace(bridge)
		return nil, false, err
	}
	return s, true, nil
}

// deleteSpace unpins bridge's namespace everywhere, which destroys it with
// every link in it (veth pairs with both ends). Missing is success. Caller
// holds mu.
func (k *Kernel) deleteSpace(bridge string) error {
	if s, ok := k.spaces[bridge]; ok {
		s.close()
		delete(k.spaces, bridge)
		for name, w := range k.where {
			if w == s {
				delete(k.where, name)
			}
		}
	}
	var errs []error
	for _, dir := range k.nsDirs {
		if err := unpin(filepath.Join(dir, bridge)); err != nil {
			errs = append(errs, fmt.Errorf("remove network namespace of bridge %q: %w", bridge, err))
		}
	}
	return errors.Join(errs...)
}

// closeSpaces releases the handles; the pinned namespaces stay.
func (k *Kernel) closeSpaces() {
	for b, s := range k.spaces {
		s.close()
		delete(k.spaces, b)
	}
	clear(k.where)
}

// pinNewNetNS creates a network namespace and bind-mounts it on path (a new
// file).
func pinNewNetNS(path string) (err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return fmt.Errorf("create pin file: %w", err)
	}
	_ = f.Close()
	defer func() {
		if err != nil {
			_ = os.Remove(path)
		}
	}()
	enter := func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare a new network namespace: %w", err)
		}
		return nil
	}
	return onNetNSThread(enter, func() error {
		self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(self, path, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind-mount the new namespace on %s: %w", path, err)
		}
		return nil
	})
}

// pinNetNS bind-mounts the namespace fd refers to on path (a new file).
func pinNetNS(fd netns.NsHandle, path string) (err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return fmt.Errorf("create pin file: %w", err)
	}
	_ = f.Close()
	src := fmt.Sprintf("/proc/self/fd/%d", int(fd))
	if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("bind-mount the namespace on %s: %w", path, err)
	}
	return nil
}

// unpin unmounts a namespace pin and removes its file; missing is success.
func unpin(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// locate finds the link called name in the host namespace or in one of the
// isolated namespaces, and returns the handle acting where it is. A link
// not found anywhere yields an error wrapping ErrLinkNotFound. Caller holds
// mu.
func (k *Kernel) locate(name string) (*netlink.Handle, netlink.Link, error) {
	if s, ok := k.where[name]; ok {
		if l, err := linkIn(s.nl, name); err == nil {
			return s.nl, l, nil
		}
		delete(k.where, name)
	}
	l, err := linkIn(k.nl, name)
	if !errors.Is(err, ErrLinkNotFound) {
		return k.nl, l, err
	}
	bridges, perr := k.pinned()
	if perr != nil {
		return nil, nil, perr
	}
	for _, b := range bridges {
		s, serr := k.openSpace(b)
		if serr != nil {
			return nil, nil, serr
		}
		if s == nil {
			continue
		}
		if l, lerr := linkIn(s.nl, name); lerr == nil {
			k.where[name] = s
			return s.nl, l, nil
		} else if !errors.Is(lerr, ErrLinkNotFound) {
			return nil, nil, lerr
		}
	}
	return nil, nil, err
}
