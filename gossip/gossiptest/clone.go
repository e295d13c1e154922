package gossiptest

import (
	"net"

	"github.com/hashicorp/memberlist"

	"grapevine/gossip"
)

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
	n.nextIP++
	ip := net.IPv4(100, 64, byte(n.nextIP>>8), byte(n.nextIP))
	t := &transport{
		net: n, name: name, ip: ip, port: 7947,
		addr:    net.JoinHostPort(ip.String(), "7947"),
		packets: make(chan *memberlist.Packet, 1024),
		streams: make(chan net.Conn, 64),
	}
	n.byAddr[t.addr] = t
	cfg.Transport = t
	return cfg
}
