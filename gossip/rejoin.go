package gossip

import (
	"context"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Healing partitions and prompt exchanges after them.
//
// memberlist gossips to a dead member only for GossipToTheDeadTime and then
// forgets it, so after a long partition between two groups of several
// members each neither side ever contacts the other again. rejoinLoop
// therefore keeps joining (one TCP push/pull each) the PEERS entries and the
// failed members this node remembers, as long as they are not alive.
//
// A member coming back alive, on either side of a healed partition, carries
// records the other side has not seen; broadcasts of them were lost, and the
// next periodic push/pull may be PushPullInterval away. pushPullLoop runs a
// push/pull with such a member at once (memberlist's only way to push/pull
// with a chosen member is Join, which on an already known member is exactly
// a push/pull), and with a random member shortly after this node joins, so
// that members that joined together do not miss each other until the next
// periodic push/pull.

const (
	// maxRejoinTargets bounds the failed members remembered for rejoining.
	maxRejoinTargets = 1024
	// rejoinBatch is how many addresses one rejoin round contacts at most.
	rejoinBatch = 3
	// pushPullBurst and pushPullRefill rate-limit triggered push/pulls:
	// a burst of 8, then one per second.
	pushPullBurst  = 8
	pushPullRefill = time.Second
	// maxPendingPushPulls bounds the triggered push/pulls waiting for a
	// token; beyond it triggers are dropped (periodic push/pull remains).
	maxPendingPushPulls = 16
	// pushPullFanIn is about how many members push/pull with a member
	// that comes back: a member with k other alive members does so with
	// probability pushPullFanIn/k (always when k < pushPullFanIn), so in
	// small clusters every member does, and a large cluster does not
	// stampede one returning host.
	pushPullFanIn = 8
	// maxPushPullWindows caps the consecutive exchanges of one triggered
	// push/pull, run when the local state spans several PushPullBudget
	// windows.
	maxPushPullWindows = 4
	// maxJoinSettle caps the delay of the push/pull with a random member
	// after this node joins.
	maxJoinSettle = 2 * time.Second
)

// rejoinTarget is a failed member's last address.
type rejoinTarget struct {
	addr  string
	since time.Time
}

// rejoinSet remembers failed (not gracefully left) members by name, at
// most limit of them, forgetting the oldest failure first. c.mu guards it.
type rejoinSet struct {
	limit   int
	targets map[string]rejoinTarget
}

func newRejoinSet(limit int) rejoinSet {
	return rejoinSet{limit: limit, targets: make(map[string]rejoinTarget)}
}

func (s *rejoinSet) add(name, addr string, now time.Time) {
	if _, known := s.targets[name]; !known && len(s.targets) >= s.limit {
		oldest, first := "", true
		var at time.Time
		for n, t := range s.targets {
			if first || t.since.Before(at) {
				oldest, at, first = n, t.since, false
			}
		}
		delete(s.targets, oldest)
	}
	s.targets[name] = rejoinTarget{addr: addr, since: now}
}

func (s *rejoinSet) remove(name string) { delete(s.targets, name) }

func (s *rejoinSet) has(name string) bool { _, ok := s.targets[name]; return ok }

// rejoinLoop runs a rejoin round every RejoinInterval (±20 %).
func (c *Cluster) rejoinLoop() {
	defer c.wg.Done()
	for {
		wait := c.cfg.RejoinInterval
		wait += time.Duration((rand.Float64()*0.4 - 0.2) * float64(wait))
		t := time.NewTimer(wait)
		select {
		case <-c.stop:
			t.Stop()
			return
		case <-t.C:
		}
		c.rejoin()
	}
}

// rejoin contacts up to rejoinBatch addresses, concurrently (an unreachable
// one costs up to TCPTimeout), among the PEERS and remembered failed members
// that are not alive now.
func (c *Cluster) rejoin() {
	targets := c.rejoinCandidates()
	if len(targets) == 0 {
		return
	}
	ml := c.ml.Load()
	var wg sync.WaitGroup
	for _, addr := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.stats.rejoinAttempts.Add(1)
			l := c.log.WithField("addr", addr)
			if _, err := ml.Join([]string{addr}); err != nil {
				l.WithError(err).Debug("rejoin attempt failed; retrying next round")
				return
			}
			l.Info("contacted a failed member or PEERS entry again; partitions merge")
		}()
	}
	wg.Wait()
}

// rejoinCandidates picks the addresses of a rejoin round.
func (c *Cluster) rejoinCandidates() []string {
	c.mu.Lock()
	alive := make(map[string]bool, len(c.alive)+1)
	alive[c.self.Addr.String()] = true
	for _, m := range c.alive {
		alive[m.Addr.String()] = true
	}
	var out []string
	for _, t := range c.failed.targets {
		if !alive[t.addr] {
			alive[t.addr] = true // no duplicates
			out = append(out, t.addr)
		}
	}
	c.mu.Unlock()
	for _, p := range c.peers {
		if !alive[p] && !c.peerAlive(p, alive) {
			alive[p] = true
			out = append(out, p)
		}
	}
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out[:min(len(out), rejoinBatch)]
}

// peerAlive resolves a PEERS entry naming a host and reports whether one of
// its addresses belongs to this node or an alive member. An entry that does
// not resolve counts as not alive (the join reports why).
func (c *Cluster) peerAlive(peer string, alive map[string]bool) bool {
	host, port, err := net.SplitHostPort(peer)
	if err != nil {
		return false
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return false // an IP literal: checked by the caller
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.TCPTimeout)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return false
	}
	for _, ip := range ips {
		if alive[net.JoinHostPort(ip.Unmap().String(), port)] {
			return true
		}
	}
	return false
}

// schedulePushPull asks pushPullLoop to push/pull with the named member
// ("" = a random alive member) after delay. It never blocks: c.mu is held
// and memberlist's node lock may be too.
func (c *Cluster) schedulePushPull(name string, delay time.Duration) {
	due := time.Now().Add(delay)
	if cur, ok := c.ppPending[name]; ok {
		if due.Before(cur) {
			c.ppPending[name] = due
		}
	} else if len(c.ppPending) < maxPendingPushPulls {
		c.ppPending[name] = due
	} else {
		return
	}
	select {
	case c.ppKick <- struct{}{}:
	default:
	}
}

// pushPullLoop runs the scheduled push/pulls, at most pushPullBurst at
// once and one per pushPullRefill after that.
func (c *Cluster) pushPullLoop() {
	defer c.wg.Done()
	tokens, last := float64(pushPullBurst), time.Now()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-c.ppKick:
		case <-t.C:
		}
		for {
			now := time.Now()
			tokens = min(pushPullBurst, tokens+float64(now.Sub(last))/float64(pushPullRefill))
			last = now
			var wake time.Duration
			name, ok, next := c.nextPushPull()
			switch {
			case ok && tokens >= 1:
				tokens--
				c.pushPullWith(name)
				continue
			case ok:
				wake = time.Duration((1 - tokens) * float64(pushPullRefill))
			case next > 0:
				wake = next
			default:
				wake = time.Hour
			}
			t.Reset(wake) // no stale tick survives Reset since Go 1.23
			break
		}
	}
}

// nextPushPull names a due push/pull (left pending: pushPullWith removes
// it); otherwise it returns the time until the next one (0 if none).
func (c *Cluster) nextPushPull() (name string, ok bool, next time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	for n, due := range c.ppPending {
		if !due.After(now) {
			return n, true, 0
		}
		if d := due.Sub(now); next == 0 || d < next {
			next = d
		}
	}
	return "", false, next
}

// pushPullWith exchanges state with the named member (or a random alive
// one) if it is alive, as many times as the local state has PushPullBudget
// windows (at most maxPushPullWindows), so that the whole local state
// reaches it.
func (c *Cluster) pushPullWith(name string) {
	c.mu.Lock()
	delete(c.ppPending, name)
	var addr string
	if name == "" {
		i, k := 0, rand.IntN(max(1, len(c.alive)))
		for _, m := range c.alive {
			if i == k {
				addr = m.Addr.String()
			}
			i++
		}
	} else if m, ok := c.alive[name]; ok {
		addr = m.Addr.String()
	}
	c.mu.Unlock()
	if addr == "" {
		return
	}
	ml := c.ml.Load()
	rounds := min(max(1, c.store.windowCount(c.cfg.PushPullBudget)), maxPushPullWindows)
	for range rounds {
		c.stats.triggeredPP.Add(1)
		if _, err := ml.Join([]string{addr}); err != nil {
			c.log.WithFields(logrus.Fields{"peer": name, "addr": addr}).WithError(err).
				Debug("push/pull with a returning member failed; periodic push/pull will repair")
			return
		}
	}
}
