package plugin

import (
	"fmt"
	"time"

	"grapevine/driver"
)

// The doctor's checks of what rides on the paths it probes: the WireGuard
// tunnel of encrypted networks and the names taps.

// handshakeStale is WireGuard's Reject-After-Time: a session whose last
// handshake is older carries nothing. With the tunnel's persistent
// keepalive a live peer handshakes again every two minutes.
const handshakeStale = 180 * time.Second

// checkTunnel reports the WireGuard tunnel of this host's encrypted
// networks and each peer's (or only peer's) last handshake.
func (p *process) checkTunnel(r *report, peer string) {
	encrypted := 0
	for _, n := range p.driver.Status() {
		if n.Tunnel != "" {
			encrypted++
		}
	}
	tn, err := p.driver.Tunnel()
	switch {
	case err != nil:
		r.add("tunnel", "", ResultFail, "the WireGuard tunnel cannot be read: "+err.Error(), "see the plugin log")
		return
	case tn == nil && encrypted > 0:
		r.add("tunnel", "", ResultFail,
			fmt.Sprintf("%d encrypted network(s) here but no WireGuard tunnel runs: their traffic to other hosts is dropped, never sent in clear", encrypted),
			"see the plugin log for the tunnel's error; the reconcile loop makes the tunnel again (docs/encryption.md)")
		return
	case tn == nil:
		r.add("tunnel", "", ResultSkip, "no encrypted network on this host: no WireGuard tunnel", "")
		return
	}
	r.add("tunnel", "", ResultPass, fmt.Sprintf("%s WireGuard on %s, udp/%d, %d peer(s)", tn.Mode, tn.Link, tn.ListenPort, len(tn.Peers)), "")
	for _, tp := range tn.Peers {
		if peer == "" || tp.Node == peer {
			tunnelPeerCheck(r, tp)
		}
	}
}

// tunnelPeerCheck turns one tunnel peer's last handshake into a check.
func tunnelPeerCheck(r *report, tp driver.TunnelPeerStatus) {
	who := tp.Node
	if who == "" {
		who = "key " + tp.PublicKey
	}
	fix := fmt.Sprintf("allow udp to and from %s (WireGuard) between this host and %s; "+
		"both hosts need the same GOSSIP_KEY, since the public keys travel in gossip: `grapevine status` on %s shows the key this host should hold for it, %s",
		tp.Endpoint, who, who, tp.PublicKey)
	age := time.Duration(tp.HandshakeAge) * time.Second
	switch {
	case tp.HandshakeAge < 0:
		r.add("tunnel", tp.Node, ResultFail, fmt.Sprintf("no WireGuard handshake with %s (%s) yet: encrypted traffic to it is dropped", who, tp.Endpoint),
			fix+"; a peer that joined seconds ago may not have answered yet: run the doctor again")
	case age > handshakeStale:
		r.add("tunnel", tp.Node, ResultFail,
			fmt.Sprintf("the last WireGuard handshake with %s (%s) was %s ago: a session older than %s carries nothing, so encrypted traffic to it is dropped", who, tp.Endpoint, age, handshakeStale),
			fix)
	default:
		r.add("tunnel", tp.Node, ResultPass,
			fmt.Sprintf("WireGuard handshake with %s (%s) %s ago; %d bytes received, %d sent", who, tp.Endpoint, age, tp.RxBytes, tp.TxBytes), "")
	}
}

// checkNames reports the names taps: how many containers are tapped, and
// each container whose tap has failed for a while.
func (p *process) checkNames(r *report) {
	if p.names == nil {
		r.add("names", "", ResultWarn, "the names service did not start: containers resolve only their own host's names",
			"see the plugin log for why the resolver could not start (docs/names.md)")
		return
	}
	failures := p.names.TapFailures()
	if len(failures) == 0 {
		r.add("names", "", ResultPass, fmt.Sprintf("%d container(s) tapped: their queries for other hosts' names are answered in their own namespace", p.names.Tapped()), "")
		return
	}
	for _, f := range failures {
		r.add("names", "", ResultWarn,
			fmt.Sprintf("container sandbox %s not tapped for %s (%s): its queries for other hosts' names reach grapevine only through the host's redirect, on VXLAN networks only",
				f.Sandbox, time.Since(f.Since).Round(time.Second), f.Error),
			"the plugin's docker-exec-root mount must be Docker's --exec-root (docker plugin set grapevine:latest docker-exec-root.source=DIR, the plugin disabled) "+
				"and a shared mount on the host (mount --make-shared; systemd hosts share / already); docs/names.md")
	}
}
