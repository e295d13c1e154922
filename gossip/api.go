package gossip

// Replicated is the part of a Cluster that its consumers (ipam, driver) use:
// this node's identity, membership, and the replicated records. Consumers
// depend on this interface, not on *Cluster, so their tests can run several
// instances over an in-memory network (package gossiptest).
type Replicated interface {
	// LocalName is this node's name: the Owner of the records it writes.
	LocalName() string
	// Joined reports whether this node has reached at least one of its PEERS
	// (always true with no PEERS configured).
	Joined() bool
	// HasPeers reports whether PEERS were configured: a node with none is a
	// cluster of one.
	HasPeers() bool
	// Members lists every known member, this node included, with its state.
	Members() []Member
	Put(kind, key string, value []byte) error
	Delete(kind, key string) error
	Get(kind, key string) (Record, bool)
	List(kind string) []Record
	Subscribe(kind string, fn func(old, cur *Record))
	OnNodeEvent(fn func(Member, EventType))
	// Consumer is this Replicated with a delivery queue of its own for
	// Subscribe and OnNodeEvent, so that its callbacks never wait behind
	// another consumer's (see Cluster.Consumer).
	Consumer(name string) Replicated
	// RegisterValidator adds a check every record of kind received from
	// a peer must pass before it is stored, relayed or handed to
	// subscribers (see Cluster.RegisterValidator). Register before
	// Subscribe.
	RegisterValidator(kind string, fn func(r Record) error)
}

var _ Replicated = (*Cluster)(nil)

// LocalName is this node's name (Config.NodeName after defaults).
func (c *Cluster) LocalName() string { return c.cfg.NodeName }

// HasPeers reports whether PEERS were configured.
func (c *Cluster) HasPeers() bool { return len(c.peers) > 0 }
