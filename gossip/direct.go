package gossip

import (
	"math/rand/v2"

	"github.com/hashicorp/memberlist"
	"github.com/sirupsen/logrus"
)

// The fast path (Config.FanOut): own writes are sent straight to up to
// FanOut alive members, besides being queued for gossip.

// directQueueLen bounds the own writes waiting for the fast-path sender;
// beyond it writes skip the fast path (gossip still carries them).
const directQueueLen = 1024

// directPeers is the set of other alive members the fast path sends to,
// kept from memberlist's node events. Events run under memberlist's node
// lock, so the copies taken there are consistent; the *memberlist.Node
// pointers of Memberlist.Members would be read while memberlist updates
// them.
type directPeers struct {
	nodes []memberlist.Node
	index map[string]int // name → position in nodes
}

// update adds, refreshes or (alive false) removes a member. c.mu held.
func (p *directPeers) update(n *memberlist.Node, alive bool) {
	if p.index == nil {
		p.index = make(map[string]int)
	}
	i, known := p.index[n.Name]
	switch {
	case alive && known:
		p.nodes[i] = *n
	case alive:
		p.index[n.Name] = len(p.nodes)
		p.nodes = append(p.nodes, *n)
	case known:
		last := len(p.nodes) - 1
		p.nodes[i] = p.nodes[last]
		p.index[p.nodes[i].Name] = i
		p.nodes[last] = memberlist.Node{}
		p.nodes = p.nodes[:last]
		delete(p.index, n.Name)
	}
}

// pick returns every member when there are at most k, else k random ones.
// c.mu held.
func (p *directPeers) pick(k int) []memberlist.Node {
	if len(p.nodes) <= k {
		return append([]memberlist.Node(nil), p.nodes...)
	}
	out := make([]memberlist.Node, 0, k)
	for _, i := range rand.Perm(len(p.nodes))[:k] {
		out = append(out, p.nodes[i])
	}
	return out
}

// sendDirect hands an own write to the fast-path sender. It never blocks:
// when the sender is backlogged the write goes by gossip only.
func (c *Cluster) sendDirect(r *Record) {
	if c.cfg.FanOut < 0 || c.ml.Load() == nil {
		return
	}
	select {
	case c.directCh <- encodeRecordMsg(r):
	default:
		c.stats.directDropped.Add(1)
	}
}

// directLoop sends own writes, in the order they were made, to FanOut
// members each.
func (c *Cluster) directLoop() {
	defer c.wg.Done()
	for {
		select {
		case <-c.stop:
			return
		case msg := <-c.directCh:
			c.sendToPeers(msg)
		}
	}
}

func (c *Cluster) sendToPeers(msg []byte) {
	ml := c.ml.Load()
	c.mu.Lock()
	targets := c.direct.pick(c.cfg.FanOut)
	c.mu.Unlock()
	for i := range targets {
		n := &targets[i]
		// SendBestEffort writes one UDP packet (encrypted when a key is
		// set) and does not wait for an answer.
		if err := ml.SendBestEffort(n, msg); err != nil {
			c.log.WithFields(logrus.Fields{"peer": n.Name}).WithError(err).Debug("fast-path send failed; gossip will deliver the record")
			continue
		}
		c.stats.directSent.Add(1)
		c.stats.out.note(1, len(msg))
	}
}
