package gossip

import (
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// What `grapevine doctor` reads about gossip beyond the members: when each
// member last answered a probe, and the gossip from each address that this
// host could not decrypt (another GOSSIP_KEY).

// Contact is a member's last answered probe.
type Contact struct {
	At  time.Time     `json:"at"`
	RTT time.Duration `json:"rtt_ns"`
}

// Health is gossip's own view of its peers.
type Health struct {
	// Contacts are the members' last answered probes, by node name.
	Contacts map[string]Contact `json:"contacts,omitempty"`
	// Departed is when each dead or left member was last seen going.
	Departed map[string]time.Time `json:"departed,omitempty"`
	// Undecryptable counts, by source address, gossip messages that no
	// installed key decrypts (or that came unencrypted), and
	// UndecryptableAt says when the last one arrived.
	Undecryptable   map[string]uint64    `json:"undecryptable,omitempty"`
	UndecryptableAt map[string]time.Time `json:"undecryptable_at,omitempty"`
}

// health holds what the ping delegate and the memberlist log report.
type health struct {
	mu              sync.Mutex
	contacts        map[string]Contact
	undecryptable   map[string]uint64
	undecryptableAt map[string]time.Time
}

func (h *health) contact(name string, rtt time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.contacts == nil {
		h.contacts = map[string]Contact{}
	}
	h.contacts[name] = Contact{At: time.Now(), RTT: rtt}
}

// noteLogLine counts msg (a memberlist warning or error) when it says a
// message from peer could not be decrypted.
func (h *health) noteLogLine(peer, msg string) {
	lower := strings.ToLower(msg)
	if peer == "" || (!strings.Contains(lower, "decrypt") && !strings.Contains(lower, "not encrypted")) {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.undecryptable == nil {
		h.undecryptable, h.undecryptableAt = map[string]uint64{}, map[string]time.Time{}
	}
	if _, known := h.undecryptable[peer]; !known && len(h.undecryptable) >= maxUndecryptable {
		h.forgetOldestUndecryptable()
	}
	h.undecryptable[peer]++
	h.undecryptableAt[peer] = time.Now()
}

// maxUndecryptable bounds the senders remembered: anyone can send garbage
// to the gossip port from many (spoofed) addresses.
const maxUndecryptable = 256

// forgetOldestUndecryptable drops the sender heard from least recently.
// Caller holds mu.
func (h *health) forgetOldestUndecryptable() {
	var oldest string
	for a, t := range h.undecryptableAt {
		if oldest == "" || t.Before(h.undecryptableAt[oldest]) {
			oldest = a
		}
	}
	delete(h.undecryptable, oldest)
	delete(h.undecryptableAt, oldest)
}

// pingDelegate hears memberlist's answered probes.
type pingDelegate struct{ h *health }

func (p pingDelegate) AckPayload() []byte { return nil }

func (p pingDelegate) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, _ []byte) {
	if other != nil {
		p.h.contact(other.Name, rtt)
	}
}

// Health reports gossip's view of its peers (copies).
func (c *Cluster) Health() Health {
	var out Health
	c.health.mu.Lock()
	if len(c.health.contacts) > 0 {
		out.Contacts = maps.Clone(c.health.contacts)
	}
	if len(c.health.undecryptable) > 0 {
		out.Undecryptable = maps.Clone(c.health.undecryptable)
		out.UndecryptableAt = maps.Clone(c.health.undecryptableAt)
	}
	c.health.mu.Unlock()
	c.mu.Lock()
	for name, d := range c.departed {
		if _, ok := c.alive[name]; ok {
			continue
		}
		if out.Departed == nil {
			out.Departed = map[string]time.Time{}
		}
		out.Departed[name] = d.since
	}
	c.mu.Unlock()
	return out
}
