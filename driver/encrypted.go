package driver

import (
	"encoding/base64"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/sirupsen/logrus"

	"grapevine/driver/dataplane"
	"grapevine/gossip"
)

// Encrypted mode is an overlay routed through WireGuard: each network is a
// bridge on every host that has it, as in VXLAN mode, but without a VXLAN
// device. Each remote endpoint's address is an allowed IP of its host's
// peer on the host's one WireGuard interface and has a /32 route into it
// (dataplane/tunnel.go); the bridge answers ARP for those addresses (proxy
// ARP), so containers keep one subnet, and the receiving host routes into
// its bridge. Each host's public key travels in its gossip metadata
// (authenticated by GOSSIP_KEY); a host that publishes none gets no route on
// an encrypted network. See docs/encryption.md.

const (
	modeEncrypted = "encrypted"
	// userEncrypted is -o encrypted=true.
	userEncrypted = "encrypted"
	// wireguardOverhead is WireGuard's outer IPv4 + UDP + its own header
	// and tag (20 + 8 + 32).
	wireguardOverhead = 60
	// encryptedOverhead is what a container packet grows by on the
	// underlay: WireGuard only (packets are routed, not bridged).
	encryptedOverhead = wireguardOverhead
)

// TunnelConfig enables encrypted networks on this host.
type TunnelConfig struct {
	// PrivateKey is this host's WireGuard key; zero refuses encrypted
	// networks.
	PrivateKey dataplane.Key
	// Port is WireGuard's UDP port.
	Port int
	// GossipKeyed: gossip is sealed with GOSSIP_KEY, so the public keys it
	// carries are authenticated. Encrypted networks are refused without it.
	GossipKeyed bool
}

// encryptedMode is the netMode of encrypted networks: vxlanMode's bridge
// and endpoints without its VXLAN device, with its own name, MTU, firewall
// and the host's tunnel.
type encryptedMode struct{ vxlanMode }

func (encryptedMode) name() string  { return modeEncrypted }
func (encryptedMode) overhead() int { return encryptedOverhead }

// prepare refuses an encrypted network this host cannot carry, then
// resolves the underlay as vxlanMode does, with WireGuard's overhead.
func (m encryptedMode) prepare(d *Driver, spec *networkSpec) error {
	switch {
	case !d.tunnel.GossipKeyed:
		return fmt.Errorf("-o %s=true needs GOSSIP_KEY: the hosts' WireGuard public keys travel in gossip, which must be authenticated (docker plugin set <plugin> GOSSIP_KEY=…, docs/security.md)", userEncrypted)
	case d.tunnel.PrivateKey.IsZero():
		return fmt.Errorf("-o %s=true is not available: this host has no WireGuard key", userEncrypted)
	}
	return m.prepareOverlay(d, spec, m.overhead())
}

// create makes the host's tunnel first (so nothing the network sends can
// leave in clear text), then the network as vxlanMode does.
func (m encryptedMode) create(d *Driver, id string, spec networkSpec) (newNetwork, error) {
	if err := d.ensureTunnel(spec.underlay); err != nil {
		return newNetwork{}, fmt.Errorf("cannot create an encrypted network: %w", err)
	}
	return d.createOverlay(m, id, spec, m.overhead())
}

func (encryptedMode) status(n *networkRecord, s *NetworkStatus) {
	s.Bridge, s.Tunnel = bridgeName(n.ID), tunnelName
}

func (encryptedMode) links(networkID string) []string {
	return []string{bridgeName(networkID)}
}

// ensure repairs the bridge and the joined endpoints' veths; the remote
// endpoints' routes are the tunnel's (ReconcilePeers).
func (m encryptedMode) ensure(d *Driver, n *networkRecord, _ *dataplane.Underlay) error {
	return m.vxlanMode.ensure(d, n, nil)
}

// firewall is vxlanMode's, plus forwarding between the bridge and the
// tunnel within the subnet.
func (m encryptedMode) firewall(d *Driver, n *networkRecord, fw *dataplane.Firewall) {
	m.vxlanMode.firewall(d, n, fw)
	fw.Networks[len(fw.Networks)-1].Tunnel = tunnelName
}

// deleted drops the network's remote endpoints from the tunnel, and
// removes the tunnel with the host's last encrypted network.
func (encryptedMode) deleted(d *Driver, n *networkRecord) error {
	if d.peers != nil {
		for k, e := range d.peers.prog {
			if e.vx == tunnelName && n.Subnet.Contains(e.ip) {
				d.peers.delProg(k)
			}
		}
	}
	return d.syncTunnel()
}

// tunnelName is the host's WireGuard interface.
var tunnelName = dataplane.TunnelName()

// hasEncrypted reports whether an encrypted network exists here. Caller
// holds mu.
func (d *Driver) hasEncrypted() bool {
	for _, n := range d.networks {
		if n.Mode == modeEncrypted {
			return true
		}
	}
	return false
}

// syncTunnel runs the tunnel while an encrypted network exists here and
// removes it otherwise. Caller holds mu.
func (d *Driver) syncTunnel() error {
	if !d.hasEncrypted() {
		if err := d.dp.DeleteTunnel(tunnelName); err != nil {
			return fmt.Errorf("remove the tunnel: %w", err)
		}
		return nil
	}
	if d.lastUnderlay == nil {
		return nil // Reconcile reports the underlay
	}
	return d.ensureTunnel(*d.lastUnderlay)
}

// ensureTunnel makes the tunnel with a peer per member that can carry
// encrypted networks. Caller holds mu.
func (d *Driver) ensureTunnel(u dataplane.Underlay) error {
	mtu := u.MTU
	if mtu <= 0 {
		mtu = defaultMTU
	}
	spec := dataplane.TunnelSpec{
		Name:       tunnelName,
		PrivateKey: d.tunnel.PrivateKey,
		ListenPort: d.tunnel.Port,
		MTU:        mtu - wireguardOverhead,
		Peers:      d.tunnelPeers(),
	}
	if err := d.dp.EnsureTunnel(spec); err != nil {
		return fmt.Errorf("tunnel %s: %w", tunnelName, err)
	}
	d.lastUnderlay = &u
	return nil
}

// tunnelPeers lists a peer per reachable member that publishes a key, at
// its own gossip address, with the addresses of its endpoints programmed
// on encrypted networks. A key or VTEP already taken by another member is
// skipped (logged): WireGuard routes by them. Caller holds mu.
func (d *Driver) tunnelPeers() []dataplane.TunnelPeer {
	if d.peers == nil {
		return nil
	}
	addrs := map[netip.Addr][]netip.Addr{} // vtep → endpoint addresses
	for _, k := range slices.Sorted(maps.Keys(d.peers.prog)) {
		if e := d.peers.prog[k]; e.vx == tunnelName {
			addrs[e.vtep] = append(addrs[e.vtep], e.ip)
		}
	}
	var out []dataplane.TunnelPeer
	keys := map[gossip.TunnelKey]string{}
	vteps := map[netip.Addr]string{}
	for _, name := range slices.Sorted(maps.Keys(d.peers.members)) {
		m := d.peers.members[name]
		vtep, cause := d.hostVTEP(name)
		if m.Self || cause != "" || m.Meta.TunnelKey.IsZero() || !vtep.Is4() {
			continue
		}
		if other, dup := keys[m.Meta.TunnelKey]; dup {
			d.log.WithFields(logrus.Fields{"peer": name, "other": other}).Warn("peer publishes the WireGuard key of another member: not a tunnel peer")
			continue
		}
		if other, dup := vteps[vtep]; dup {
			d.log.WithFields(logrus.Fields{"peer": name, "other": other}).Warn("peer has the VTEP of another member: not a tunnel peer")
			continue
		}
		keys[m.Meta.TunnelKey], vteps[vtep] = name, name
		out = append(out, dataplane.TunnelPeer{
			PublicKey: dataplane.Key(m.Meta.TunnelKey),
			Endpoint:  netip.AddrPortFrom(vtep, uint16(m.Meta.TunnelPort)),
			VTEP:      vtep,
			Addrs:     addrs[vtep],
		})
	}
	return out
}

// encryptedPeer reports whether node's endpoints may be programmed on an
// encrypted network: it publishes a WireGuard key. Caller holds mu.
func (d *Driver) encryptedPeer(node string) bool {
	m, ok := d.peers.members[node]
	return ok && !m.Meta.TunnelKey.IsZero()
}

// TunnelStatus is the encryption tunnel as `grapevine status` shows it.
type TunnelStatus struct {
	Mode       string             `json:"mode"`
	Link       string             `json:"link"`
	PublicKey  string             `json:"public_key"`
	ListenPort int                `json:"listen_port"`
	Peers      []TunnelPeerStatus `json:"peers"`
}

// TunnelPeerStatus is one peer of the tunnel. HandshakeAge is in seconds,
// -1 before the first handshake.
type TunnelPeerStatus struct {
	Node         string `json:"node"`
	PublicKey    string `json:"public_key"`
	Endpoint     string `json:"endpoint"`
	HandshakeAge int64  `json:"handshake_age_seconds"`
	RxBytes      uint64 `json:"rx_bytes"`
	TxBytes      uint64 `json:"tx_bytes"`
}

// Tunnel reports the running tunnel (nil: none runs).
func (d *Driver) Tunnel() (*TunnelStatus, error) {
	st, ok, err := d.dp.TunnelStatus()
	if err != nil || !ok {
		return nil, err
	}
	d.mu.Lock()
	byKey := map[dataplane.Key]string{}
	if d.peers != nil {
		for name, m := range d.peers.members {
			byKey[dataplane.Key(m.Meta.TunnelKey)] = name
		}
	}
	d.mu.Unlock()
	out := &TunnelStatus{Mode: st.Mode, Link: st.Name, PublicKey: keyText(st.PublicKey), ListenPort: st.ListenPort, Peers: []TunnelPeerStatus{}}
	for _, p := range st.Peers {
		age := int64(-1)
		if !p.LastHandshake.IsZero() {
			age = int64(time.Since(p.LastHandshake).Seconds())
		}
		out.Peers = append(out.Peers, TunnelPeerStatus{Node: byKey[p.PublicKey], PublicKey: keyText(p.PublicKey),
			Endpoint: p.Endpoint.String(), HandshakeAge: age, RxBytes: p.RxBytes, TxBytes: p.TxBytes})
	}
	return out, nil
}

func keyText(k dataplane.Key) string { return base64.StdEncoding.EncodeToString(k[:]) }

// SetTunnelKey makes k this host's WireGuard private key (a rotation):
// the running tunnel takes it at once.
func (d *Driver) SetTunnelKey(k dataplane.Key) error {
	if k.IsZero() {
		return fmt.Errorf("tunnel key rotation: the new key is zero")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.tunnel.PrivateKey = k
	if !d.hasEncrypted() {
		return nil
	}
	return d.syncTunnel()
}
