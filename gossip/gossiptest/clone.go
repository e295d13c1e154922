package gossiptest

import "grapevine/gossip"

// Clone returns the Config of a second node named name on an address of its
// own, as a machine cloned from name's (same node identity, another address)
// would be; pass it to Start. Like Config, it lists every other node as
// Peers. Traffic addressed to name by name keeps reaching the original;
// Kill(name) cuts off the original only; the clone stops with its Cluster's
// Shutdown.
func (n *Net) Clone(name string) gossip.Config {
	cfg := n.Config(name)
	n.mu.Lock()
	defer n.mu.Unlock()
	cfg.Transport = n.newTransportLocked(name)
	return cfg
}
