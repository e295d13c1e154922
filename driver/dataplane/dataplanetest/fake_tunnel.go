package dataplanetest

import (
	"slices"

	"grapevine/driver/dataplane"
)

// KindTunnel is the kind Fake records for the encryption tunnel's link.
const KindTunnel = "tunnel"

// EnsureTunnel implements dataplane.Dataplane: it records the spec and a
// link of kind KindTunnel (mode userspace).
func (f *Fake) EnsureTunnel(spec dataplane.TunnelSpec) error {
	defer f.lock()()
	if err := f.begin("EnsureTunnel", spec.Name); err != nil {
		return err
	}
	spec.Peers = clonePeers(spec.Peers)
	f.tunnel = &spec
	f.links[spec.Name] = &FakeLink{Name: spec.Name, Kind: KindTunnel, MTU: spec.MTU}
	return nil
}

// DeleteTunnel implements dataplane.Dataplane.
func (f *Fake) DeleteTunnel(name string) error {
	defer f.lock()()
	if err := f.begin("DeleteTunnel", name); err != nil {
		return err
	}
	f.tunnel = nil
	delete(f.links, name)
	return nil
}

// TunnelStatus implements dataplane.Dataplane: the spec's peers, none with a
// handshake.
func (f *Fake) TunnelStatus() (dataplane.TunnelStatus, bool, error) {
	defer f.lock()()
	if err := f.begin("TunnelStatus", ""); err != nil {
		return dataplane.TunnelStatus{}, false, err
	}
	if f.tunnel == nil {
		return dataplane.TunnelStatus{}, false, nil
	}
	st := dataplane.TunnelStatus{Mode: dataplane.TunnelUserspace, Name: f.tunnel.Name, ListenPort: f.tunnel.ListenPort}
	for _, p := range f.tunnel.Peers {
		st.Peers = append(st.Peers, dataplane.TunnelPeerStatus{PublicKey: p.PublicKey, Endpoint: p.Endpoint, VTEP: p.VTEP})
	}
	return st, true, nil
}

// Tunnel returns the tunnel spec last ensured (nil: none).
func (f *Fake) Tunnel() *dataplane.TunnelSpec {
	defer f.lock()()
	if f.tunnel == nil {
		return nil
	}
	s := *f.tunnel
	s.Peers = clonePeers(s.Peers)
	return &s
}

// clonePeers copies peers and their addresses.
func clonePeers(peers []dataplane.TunnelPeer) []dataplane.TunnelPeer {
	out := slices.Clone(peers)
	for i := range out {
		out[i].Addrs = slices.Clone(out[i].Addrs)
	}
	return out
}
