package dataplane

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// keepalive keeps every peer's handshake fresh (and its age meaningful in
// `grapevine status`) even while an encrypted network is idle.
const keepalive = 25 * time.Second

// tunnelDevice is a running WireGuard: the kernel's or wireguard-go.
type tunnelDevice interface {
	mode() string
	configure(cfg wgtypes.Config) error
	peers() ([]wgtypes.Peer, error)
	// close stops a userspace device (its TUN link goes with it); the
	// kernel's link stays until deleted.
	close()
}

// tunnelState is the tunnel this Kernel runs and the spec last applied.
type tunnelState struct {
	dev  tunnelDevice
	spec TunnelSpec
}

// EnsureTunnel implements Dataplane: it makes the WireGuard interface
// (kernel WireGuard where the kernel has it, else wireguard-go over TUN),
// configures its key and peers (only what changed, so sessions survive),
// and routes the encrypted VXLAN port into it, or nowhere.
func (k *Kernel) EnsureTunnel(spec TunnelSpec) error {
	if err := validateTunnel(spec); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	l, err := k.tunnelLink(spec)
	if err != nil {
		return err
	}
	if err := k.configureTunnel(spec); err != nil {
		return err
	}
	if err := k.setMTU(k.nl, l, spec.MTU); err != nil {
		return err
	}
	if err := k.setUp(k.nl, l); err != nil {
		return err
	}
	// decrypted frames arrive from a peer's VTEP, which the main table
	// routes through the underlay, on a link without an address: strict
	// and loose reverse-path filtering both drop them (WireGuard itself
	// checks each frame's source against the peer's allowed IP)
	if err := writeSysctl("/proc/sys/net/ipv4/conf/"+spec.Name+"/rp_filter", "0"); err != nil {
		return fmt.Errorf("tunnel %s: reverse-path filter off: %w", spec.Name, err)
	}
	if err := k.ensureAddrRoutes(l.Attrs().Index, tunnelAddrs(spec)); err != nil {
		return fmt.Errorf("tunnel %s: %w", spec.Name, err)
	}
	return k.removeLegacyRouting(l.Attrs().Index)
}

// addrRoute is the main table's /32 route of a peer's address into the
// tunnel link.
func addrRoute(link int, a netip.Addr) *netlink.Route {
	return &netlink.Route{
		LinkIndex: link,
		Table:     unix.RT_TABLE_MAIN,
		Dst:       &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)},
		Scope:     netlink.SCOPE_LINK,
	}
}

// ensureAddrRoutes makes the main table's routes through the tunnel link
// exactly a /32 per address of want: missing ones are added, others on the
// link deleted. Caller holds mu.
func (k *Kernel) ensureAddrRoutes(link int, want []netip.Addr) error {
	have, err := k.nl.RouteListFiltered(unix.AF_INET, &netlink.Route{LinkIndex: link, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list the routes of the link: %w", err)
	}
	keep := map[netip.Addr]bool{}
	var errs []error
	for _, r := range have {
		a, ok := routeHost(r)
		if ok && !keep[a] && slices.Contains(want, a) {
			keep[a] = true
			continue
		}
		if err := k.nl.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route %v: %w", r.Dst, err))
		}
	}
	for _, a := range want {
		if keep[a] {
			continue
		}
		if err := k.nl.RouteReplace(addrRoute(link, a)); err != nil {
			errs = append(errs, fmt.Errorf("route %v/32 into the link: %w", a, err))
		}
	}
	return errors.Join(errs...)
}

// routeHost returns the address of a /32 IPv4 route.
func routeHost(r netlink.Route) (netip.Addr, bool) {
	if r.Dst == nil {
		return netip.Addr{}, false
	}
	if ones, bits := r.Dst.Mask.Size(); ones != 32 || bits != 32 {
		return netip.Addr{}, false
	}
	a, ok := netip.AddrFromSlice(r.Dst.IP.To4())
	return a, ok
}

// tunnelLink returns the running tunnel's link, starting the device when
// there is none (or its link was deleted under it). Caller holds mu.
func (k *Kernel) tunnelLink(spec TunnelSpec) (netlink.Link, error) {
	l, err := k.linkByName(spec.Name)
	if err != nil && !errors.Is(err, ErrLinkNotFound) {
		return nil, err
	}
	if k.tun != nil && l != nil {
		return l, nil
	}
	if k.tun != nil { // link gone: the device is useless
		k.tun.dev.close()
		k.tun = nil
	}
	var dev tunnelDevice
	switch {
	case l != nil && l.Type() == "wireguard":
		dev = kernelTunnel{name: spec.Name} // made by an earlier run
	case l != nil:
		return nil, fmt.Errorf("tunnel %s: existing link is a %s: %w", spec.Name, l.Type(), ErrIncompatibleLink)
	default:
		if dev, err = k.startTunnel(spec); err != nil {
			return nil, err
		}
	}
	k.tun = &tunnelState{dev: dev}
	if l, err = k.linkByName(spec.Name); err != nil {
		k.tun.dev.close()
		k.tun = nil
		return nil, fmt.Errorf("tunnel %s: read back: %w", spec.Name, err)
	}
	k.log.WithFields(logrus.Fields{"link": spec.Name, "mode": dev.mode()}).Info("tunnel started")
	return l, nil
}

// startTunnel creates a kernel WireGuard link, or where the kernel has no
// WireGuard, a TUN link driven by wireguard-go.
func (k *Kernel) startTunnel(spec TunnelSpec) (tunnelDevice, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name, attrs.MTU = spec.Name, spec.MTU
	kerr := k.nl.LinkAdd(&netlink.Wireguard{LinkAttrs: attrs})
	if kerr == nil {
		return kernelTunnel{name: spec.Name}, nil
	}
	k.log.WithError(kerr).Debug("no kernel WireGuard; using wireguard-go over TUN")
	t, err := tun.CreateTUN(spec.Name, spec.MTU)
	if err != nil {
		return nil, fmt.Errorf("tunnel %s: kernel WireGuard (%w) and TUN (%w): %w", spec.Name, kerr, err, ErrNoTunnel)
	}
	log := k.log.WithField("link", spec.Name)
	dev := device.NewDevice(t, conn.NewDefaultBind(), &device.Logger{
		Verbosef: func(f string, a ...any) { log.Tracef("wireguard-go: "+f, a...) },
		Errorf:   func(f string, a ...any) { log.Debugf("wireguard-go: "+f, a...) },
	})
	return userTunnel{dev: dev}, nil
}

// configureTunnel applies what differs from the spec last applied: the key,
// the port, peers added or changed, peers removed. Caller holds mu.
func (k *Kernel) configureTunnel(spec TunnelSpec) error {
	old := k.tun.spec
	if sameTunnel(old, spec) {
		return nil
	}
	// a device this Kernel has not configured yet (a kernel link left by an
	// earlier run) may hold peers that are gone: replace them all
	cfg := wgtypes.Config{ReplacePeers: old.Name == ""}
	if old.PrivateKey != spec.PrivateKey {
		key := wgtypes.Key(spec.PrivateKey)
		cfg.PrivateKey = &key
	}
	if old.ListenPort != spec.ListenPort {
		cfg.ListenPort = &spec.ListenPort
	}
	cfg.Peers = peerConfigs(old.Peers, spec.Peers)
	if err := k.tun.dev.configure(cfg); err != nil {
		return fmt.Errorf("tunnel %s: configure: %w", spec.Name, err)
	}
	k.tun.spec = spec
	return nil
}

// peerConfigs removes the peers of old that want lacks and sets every peer
// of want (an unchanged peer keeps its session).
func peerConfigs(old, want []TunnelPeer) []wgtypes.PeerConfig {
	keep := map[Key]bool{}
	for _, p := range want {
		keep[p.PublicKey] = true
	}
	var out []wgtypes.PeerConfig
	for _, p := range old {
		if !keep[p.PublicKey] {
			out = append(out, wgtypes.PeerConfig{PublicKey: wgtypes.Key(p.PublicKey), Remove: true})
		}
	}
	ka := keepalive
	for _, p := range want {
		allowed := []net.IPNet{}
		for _, a := range p.Addrs {
			allowed = append(allowed, net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)})
		}
		out = append(out, wgtypes.PeerConfig{
			PublicKey:                   wgtypes.Key(p.PublicKey),
			Endpoint:                    net.UDPAddrFromAddrPort(p.Endpoint),
			PersistentKeepaliveInterval: &ka,
			ReplaceAllowedIPs:           true,
			AllowedIPs:                  allowed,
		})
	}
	return out
}

// legacyRoute is the route earlier versions put in their tunnel table.
func legacyRoute(link int) *netlink.Route {
	return &netlink.Route{
		LinkIndex: link,
		Table:     legacyTable,
		Dst:       &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
		Scope:     netlink.SCOPE_LINK,
	}
}

// removeLegacyRouting deletes the policy rules of earlier versions (UDP
// rules at their priorities) and, on the link (an invalid index: none),
// their tunnel table's route. Missing is success. Caller holds mu.
func (k *Kernel) removeLegacyRouting(link int) error {
	var errs []error
	if link > 0 {
		if err := k.nl.RouteDel(legacyRoute(link)); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("tunnel: delete the route of table %d: %w", legacyTable, err))
		}
	}
	rules, err := k.nl.RuleList(unix.AF_INET)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("tunnel: list rules: %w", err))...)
	}
	for _, r := range rules {
		legacy := (r.Priority == legacyRulePriority || r.Priority == legacyDropPriority) &&
			r.IPProto == unix.IPPROTO_UDP && (r.Dport != nil || r.Sport != nil)
		if !legacy {
			continue
		}
		if err := k.nl.RuleDel(&r); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("tunnel: delete rule %s of an earlier version: %w", r, err))
		}
	}
	return errors.Join(errs...)
}

// DeleteTunnel implements Dataplane: it stops the device and removes the
// link, its route and its rules. Nothing there is success.
func (k *Kernel) DeleteTunnel(name string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.tun != nil {
		k.tun.dev.close()
		k.tun = nil
	}
	var errs []error
	if err := deleteIn(k.nl, name); err != nil {
		errs = append(errs, fmt.Errorf("tunnel %s: delete link: %w", name, err))
	}
	// the routes went with the link
	return errors.Join(append(errs, k.removeLegacyRouting(0))...)
}

// TunnelStatus implements Dataplane.
func (k *Kernel) TunnelStatus() (TunnelStatus, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.tun == nil {
		return TunnelStatus{}, false, nil
	}
	s := k.tun.spec
	st := TunnelStatus{Mode: k.tun.dev.mode(), Name: s.Name, ListenPort: s.ListenPort,
		PublicKey: Key(wgtypes.Key(s.PrivateKey).PublicKey())}
	peers, err := k.tun.dev.peers()
	if err != nil {
		return st, true, fmt.Errorf("tunnel %s: read peers: %w", s.Name, err)
	}
	for _, p := range peers {
		ps := TunnelPeerStatus{PublicKey: Key(p.PublicKey), LastHandshake: p.LastHandshakeTime,
			RxBytes: uint64(max(p.ReceiveBytes, 0)), TxBytes: uint64(max(p.TransmitBytes, 0))}
		if p.Endpoint != nil {
			ps.Endpoint = p.Endpoint.AddrPort()
			ps.Endpoint = netip.AddrPortFrom(ps.Endpoint.Addr().Unmap(), ps.Endpoint.Port())
		}
		ps.VTEP = ps.Endpoint.Addr()
		st.Peers = append(st.Peers, ps)
	}
	return st, true, nil
}

// closeTunnel stops a userspace device when the plugin stops; the rules
// stay, so the encrypted networks' frames are dropped until it runs again.
// Caller holds mu.
func (k *Kernel) closeTunnel() {
	if k.tun != nil {
		k.tun.dev.close()
		k.tun = nil
	}
}

// kernelTunnel is the kernel's WireGuard, configured with wgctrl.
type kernelTunnel struct{ name string }

func (kernelTunnel) mode() string { return TunnelKernel }
func (kernelTunnel) close()       {}

func (t kernelTunnel) configure(cfg wgtypes.Config) error {
	c, err := wgctrl.New()
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	return c.ConfigureDevice(t.name, cfg)
}

func (t kernelTunnel) peers() ([]wgtypes.Peer, error) {
	c, err := wgctrl.New()
	if err != nil {
		return nil, err
	}
	defer func() { _ = c.Close() }()
	d, err := c.Device(t.name)
	if err != nil {
		return nil, err
	}
	return d.Peers, nil
}

// userTunnel is wireguard-go, configured through its UAPI text protocol.
type userTunnel struct{ dev *device.Device }

func (userTunnel) mode() string { return TunnelUserspace }
func (t userTunnel) close()     { t.dev.Close() }
func (t userTunnel) configure(cfg wgtypes.Config) error {
	if err := t.dev.IpcSet(uapiText(cfg)); err != nil {
		return err
	}
	return t.dev.Up()
}

// uapiText renders cfg in wireguard-go's configuration protocol.
func uapiText(cfg wgtypes.Config) string {
	var b strings.Builder
	if cfg.PrivateKey != nil {
		fmt.Fprintf(&b, "private_key=%s\n", hex.EncodeToString(cfg.PrivateKey[:]))
	}
	if cfg.ListenPort != nil {
		fmt.Fprintf(&b, "listen_port=%d\n", *cfg.ListenPort)
	}
	if cfg.ReplacePeers {
		b.WriteString("replace_peers=true\n")
	}
	for _, p := range cfg.Peers {
		fmt.Fprintf(&b, "public_key=%s\n", hex.EncodeToString(p.PublicKey[:]))
		if p.Remove {
			b.WriteString("remove=true\n")
			continue
		}
		if p.Endpoint != nil {
			fmt.Fprintf(&b, "endpoint=%s\n", p.Endpoint)
		}
		if p.PersistentKeepaliveInterval != nil {
			fmt.Fprintf(&b, "persistent_keepalive_interval=%d\n", int(p.PersistentKeepaliveInterval.Seconds()))
		}
		if p.ReplaceAllowedIPs {
			b.WriteString("replace_allowed_ips=true\n")
		}
		for _, a := range p.AllowedIPs {
			fmt.Fprintf(&b, "allowed_ip=%s\n", a.String())
		}
	}
	return b.String()
}

func (t userTunnel) peers() ([]wgtypes.Peer, error) {
	text, err := t.dev.IpcGet()
	if err != nil {
		return nil, err
	}
	return parseUAPIPeers(text)
}

// parseUAPIPeers reads the peers of wireguard-go's configuration dump.
func parseUAPIPeers(text string) ([]wgtypes.Peer, error) {
	var out []wgtypes.Peer
	var sec, nsec int64
	flush := func() {
		if len(out) > 0 && sec != 0 {
			out[len(out)-1].LastHandshakeTime = time.Unix(sec, nsec)
		}
		sec, nsec = 0, 0
	}
	for line := range strings.Lines(text) {
		key, val, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok {
			continue
		}
		if key == "public_key" {
			flush()
			b, err := hex.DecodeString(val)
			if err != nil || len(b) != KeyLen {
				return nil, fmt.Errorf("wireguard-go peer key %q is not %d hex bytes", val, KeyLen)
			}
			out = append(out, wgtypes.Peer{PublicKey: wgtypes.Key(b)})
			continue
		}
		if len(out) == 0 {
			continue // device lines
		}
		p := &out[len(out)-1]
		n, _ := strconv.ParseInt(val, 10, 64)
		switch key {
		case "endpoint":
			if ap, err := netip.ParseAddrPort(val); err == nil {
				p.Endpoint = net.UDPAddrFromAddrPort(ap)
			}
		case "last_handshake_time_sec":
			sec = n
		case "last_handshake_time_nsec":
			nsec = n
		case "rx_bytes":
			p.ReceiveBytes = n
		case "tx_bytes":
			p.TransmitBytes = n
		case "allowed_ip":
			if _, ipn, err := net.ParseCIDR(val); err == nil {
				p.AllowedIPs = append(p.AllowedIPs, *ipn)
			}
		}
	}
	flush()
	return out, nil
}

// writeSysctl writes value to a /proc/sys file.
func writeSysctl(path, value string) error {
	return os.WriteFile(path, []byte(value), 0o644)
}
