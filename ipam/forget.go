package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// Forgetting hosts (see doc.go, "Forgetting a host"). The known-host set
// shrinks only by decided Paxos instances "forget/1", "forget/2", …, each
// decided in the set the ones before it left, and accepted by every known
// host that stays, each of which checks the value against its own view.

// forgetValue is the value of a forget instance: Hosts leave the known set
// and To, the proposer, takes over their blocks in every pool.
type forgetValue struct {
	Version int      `json:"version"`
	Hosts   []string `json:"hosts"`
	To      string   `json:"to"`
}

const forgetPrefix = "forget/"

func forgetInstance(n int) string { return forgetPrefix + strconv.Itoa(n) }

// parseForget returns n of "forget/<n>".
func parseForget(inst string) (int, bool) {
	rest, ok := strings.CutPrefix(inst, forgetPrefix)
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 1 || strconv.Itoa(n) != rest {
		return 0, false
	}
	return n, true
}

// decodeForget reads a forget value: hosts sorted, distinct and shaped like
// node names, none of them To.
func decodeForget(raw json.RawMessage) (forgetValue, error) {
	var v forgetValue
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, fmt.Errorf("forget value: %w", err)
	}
	if len(v.Hosts) == 0 || !validNode(v.To) || slices.Contains(v.Hosts, v.To) {
		return v, errors.New("forget value: no hosts, or the beneficiary is missing or among them")
	}
	for i, h := range v.Hosts {
		if !validNode(h) || i > 0 && v.Hosts[i-1] >= h {
			return v, fmt.Errorf("forget value: host %q is not a node name in sorted order", h)
		}
	}
	return v, nil
}

// validNode reports whether s is shaped like a node name (as gossip
// requires of record owners).
func validNode(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i, r := range s {
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !alnum && (i == 0 || r != '.' && r != '_' && r != '-') {
			return false
		}
	}
	return true
}

// forgetGen is how many forget instances this host has learned.
func (c *clusterState) forgetGen() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.forgets)
}

// aloneByAgreement reports whether forgets this host learned left it the
// only known host: then it divides pools alone even before it reaches a
// PEER (its PEERS may all be forgotten).
func (c *clusterState) aloneByAgreement() bool {
	return c.forgetGen() > 0 && len(c.knownSet()) == 1 && c.knownSet()[c.self]
}

// Forgotten lists the hosts forgotten by agreement that this host learned,
// sorted (nil without a cluster or forgets).
func (d *Driver) Forgotten() []string {
	if d.cl == nil {
		return nil
	}
	d.cl.mu.Lock()
	defer d.cl.mu.Unlock()
	if len(d.cl.forgotten) == 0 {
		return nil
	}
	return slices.Sorted(maps.Keys(d.cl.forgotten))
}

// IsForgotten reports whether node was forgotten by agreement, as far as
// this host learned (false without a cluster). A forgotten host that
// returns owns nothing and counts in no quorum; the network driver treats
// it as unreachable.
func (d *Driver) IsForgotten(node string) bool {
	return d.cl != nil && d.cl.isForgotten(node)
}

// errSelfForgotten is why a host the cluster forgot gives no address.
func (c *clusterState) errSelfForgotten() error {
	if !c.isForgotten(c.self) {
		return nil
	}
	return failf(ErrNotOwned, "the cluster forgot this host (%s) by agreement (grapevine forget): it owns no addresses and takes part in no agreement; "+
		"stop the plugin, move its state directory aside and let it join again under a new name (docs/cluster.md)", c.self)
}

// isForgotten reports whether name was forgotten by agreement.
func (c *clusterState) isForgotten(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.forgotten[name]
}

// checkForget returns why this host does not agree to v as the next forget
// (nil if it does): every host named is known, not this host, not alive and
// absent for ForgetAfter here; To stays; and every agreement a named host
// took part in is decided here, so that no chosen value lives only in the
// acceptor state of hosts that leave. It learns those decisions.
func (c *clusterState) checkForget(v forgetValue) error {
	known, alive := c.knownSet(), c.alive()
	if !known[v.To] {
		return fmt.Errorf("%s, which would take over the blocks, is not a known host", v.To)
	}
	for _, h := range v.Hosts {
		switch {
		case h == c.self:
			return fmt.Errorf("%s is this host, which is running", h)
		case !known[h]:
			return fmt.Errorf("%s is not a known host (known: %s)", h, strings.Join(c.knownHosts(), ", "))
		case alive[h]:
			return fmt.Errorf("%s is alive: only a host that is gone for good can be forgotten", h)
		}
		if away := c.absentFor(h); away < c.forgetAfter {
			return fmt.Errorf("%s has been absent for only %v as seen from %s; it can be forgotten in %v (FORGET_AFTER=%v)",
				h, away.Truncate(time.Second), c.self, (c.forgetAfter-away).Truncate(time.Second)+time.Second, c.forgetAfter)
		}
	}
	return c.settleAcceptedBy(v.Hosts)
}

// settleAcceptedBy learns every instance in which one of hosts accepted a
// value; one still undecided is an error naming it.
func (c *clusterState) settleAcceptedBy(hosts []string) error {
	seen := map[string]bool{}
	for _, r := range c.r.List(kindAcc) {
		inst, node, ok := splitKey(r.Key)
		if !ok || node != r.Owner || !slices.Contains(hosts, node) || seen[inst] {
			continue
		}
		var a accState
		if decodeRec(r, &a) != nil || a.Accepted.zero() || len(a.Value) == 0 {
			continue
		}
		seen[inst] = true
		b, v, ok := c.decision(inst)
		if !ok {
			return fmt.Errorf("agreement %s, in which %s took part, is not decided yet: finish it first (for init/<subnet>: create or use the network on a reachable host)", inst, node)
		}
		if _, err := c.learn(inst, b, v); err != nil {
			return fmt.Errorf("recording the decision of %s: %w", inst, err)
		}
	}
	return nil
}

// agreesToForget is the acceptor's check of a forget value at the accept
// phase (true for every other instance). The next forget is checked
// against this host's view; one this host learned already is confirmed by
// the decided-acceptor rule in onProp.
func (c *clusterState) agreesToForget(inst string, raw json.RawMessage, proposer string) bool {
	n, ok := parseForget(inst)
	if !ok || n <= c.forgetGen() {
		return true
	}
	v, err := decodeForget(raw)
	if err == nil && v.To != proposer {
		err = fmt.Errorf("the beneficiary %s is not the proposer", v.To)
	}
	if err == nil {
		err = c.checkForget(v)
	}
	if err != nil {
		c.log.WithError(err).WithFields(logrus.Fields{"instance": inst, "peer": proposer}).Warn("refusing to forget hosts")
		return false
	}
	return true
}

// ForgetResult is what Forget did.
type ForgetResult struct {
	Forgotten []string `json:"forgotten"`
	Blocks    int      `json:"blocks"` // blocks of theirs this host took over
	Known     []string `json:"known"`  // the known hosts now
}

// Forget removes hosts that are gone for good from the set of known hosts
// (so quorums shrink) and takes over their blocks, with the agreement of
// every other known host (see doc.go, "Forgetting a host").
func (d *Driver) Forget(hosts []string) (ForgetResult, error) {
	c := d.cl
	if c == nil {
		return ForgetResult{}, failf(ErrUnsupported, "this host runs without a cluster: there is no host to forget")
	}
	d.forgetMu.Lock()
	defer d.forgetMu.Unlock()
	v := forgetValue{Version: recordVersion, Hosts: slices.Compact(slices.Sorted(slices.Values(hosts))), To: c.self}
	raw, err := json.Marshal(v)
	if err != nil {
		return ForgetResult{}, err
	}
	if _, err := decodeForget(raw); err != nil {
		return ForgetResult{}, failf(ErrInvalid, "cannot forget %q: name one or more other hosts", hosts)
	}
	d.catchUpForgets()
	if err := c.checkForget(v); err != nil {
		return ForgetResult{}, failf(ErrConflict, "cannot forget %s: %v", strings.Join(v.Hosts, ", "), err)
	}
	inst := forgetInstance(c.forgetGen() + 1)
	got, err := c.propose(inst, time.Now().Add(c.agreeTimeout), func() (json.RawMessage, error) { return raw, nil })
	if err != nil {
		return ForgetResult{}, failf(ErrConflict, "cannot forget %s: every other known host must agree (each checks that they are absent for FORGET_AFTER, see its log): %v",
			strings.Join(v.Hosts, ", "), err)
	}
	taken := d.catchUpForgets()
	if string(got) != string(raw) {
		return ForgetResult{}, failf(ErrConflict, "another forget was agreed first (%s: %s); check `grapevine status` and run forget again if still needed", inst, got)
	}
	return ForgetResult{Forgotten: v.Hosts, Blocks: taken, Known: c.knownHosts()}, nil
}

// catchUpForgets applies, in order, every forget decided after those this
// host learned, and returns how many blocks this host took over.
func (d *Driver) catchUpForgets() int {
	d.learnMu.Lock()
	defer d.learnMu.Unlock()
	c := d.cl
	taken := 0
	for {
		inst := forgetInstance(c.forgetGen() + 1)
		b, raw, ok := c.decision(inst)
		if !ok {
			return taken
		}
		v, err := decodeForget(raw)
		if err != nil {
			d.log.WithError(err).WithField("instance", inst).Error("a decided forget does not decode; later forgets are not applied")
			return taken
		}
		if _, err := c.learn(inst, b, raw); err != nil {
			d.log.WithError(err).WithField("instance", inst).Warn("could not record a learned forget")
		}
		c.mu.Lock()
		c.forgets = append(c.forgets, v)
		for _, h := range v.Hosts {
			c.forgotten[h] = true
		}
		c.mu.Unlock()
		taken += d.applyForget(v)
		if slices.Contains(v.Hosts, c.self) {
			d.log.WithField("instance", inst).Error("the cluster forgot this host: it takes part in no agreement and its blocks were taken over; move the state directory aside and let it join under a new name")
		} else {
			d.log.WithFields(logrus.Fields{"instance": inst, "hosts": v.Hosts, "to": v.To, "known": c.knownHosts()}).Warn("hosts forgotten by agreement: quorums no longer count them")
		}
	}
}

// applyForget hands the forgotten hosts' blocks of every decided pool to
// v.To: its block records (the beneficiary writes them, marked reclaimed;
// the others accept them by forgetAllows), then every host refreshes its
// view. It returns how many blocks this host took over.
func (d *Driver) applyForget(v forgetValue) int {
	c := d.cl
	taken := 0
	for _, subnet := range c.decidedSubnets() {
		bs, ok := c.blocks(subnet)
		if !ok {
			continue
		}
		if v.To == c.self {
			d.own.Lock()
			for _, b := range bs {
				if !slices.Contains(v.Hosts, b.owner) {
					continue
				}
				if err := c.putBlock(subnet, b.span, c.self, true); err != nil {
					d.log.WithError(err).WithField("subnet", subnet).Error("could not take over a block of a forgotten host")
					continue
				}
				taken++
			}
			d.own.Unlock()
		}
		d.mu.Lock()
		d.refreshLocked(subnet)
		d.mu.Unlock()
	}
	c.saveLedgers()
	c.kick()
	return taken
}

// decidedSubnets lists the pools whose first division this host knows.
func (c *clusterState) decidedSubnets() []netip.Prefix {
	var out []netip.Prefix
	for _, r := range c.r.List(kindAcc) {
		inst, _, ok := splitKey(r.Key)
		if !ok || !strings.HasPrefix(inst, "init/") {
			continue
		}
		s, err := netip.ParsePrefix(strings.TrimPrefix(inst, "init/"))
		if err != nil || slices.Contains(out, s) {
			continue
		}
		if _, ok := c.decided(inst); ok {
			out = append(out, s)
		}
	}
	return out
}

// forgetAllows reports whether cd is the beneficiary of a forget this host
// learned, taking over a block all of which a forgotten host owns.
func (c *clusterState) forgetAllows(l *ledger, cd blockCand) bool {
	c.mu.Lock()
	forgets := slices.Clone(c.forgets)
	c.mu.Unlock()
	for _, v := range forgets {
		if v.To != cd.writer {
			continue
		}
		for _, h := range v.Hosts {
			if owned, newest := l.covered(cd.s, h); owned && cd.version > newest {
				return true
			}
		}
	}
	return false
}
