package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"grapevine/gossip"
)

// Single-decree Paxos over replicated records (see doc.go). An instance is a
// string such as "init/198.19.10.0/24"; every node is an acceptor of every
// instance and writes only its own records: its acceptor state (kindAcc) and
// its current proposal (kindProp), both keyed "<instance>/<node>".

// ballot orders proposals: by number, then by proposer name.
type ballot struct {
	N uint64 `json:"n"`
	P string `json:"p"`
}

func (b ballot) less(o ballot) bool {
	if b.N != o.N {
		return b.N < o.N
	}
	return b.P < o.P
}

func (b ballot) zero() bool { return b.N == 0 && b.P == "" }

// accState is one node's acceptor state for one instance.
type accState struct {
	Version  int             `json:"version"`
	Promised ballot          `json:"promised"`
	Accepted ballot          `json:"accepted"`
	Value    json.RawMessage `json:"value,omitempty"`
	// Decided: Value is the instance's chosen value (learned from a
	// majority of acceptances, or from another node's decided record).
	Decided bool `json:"decided,omitempty"`
}

const (
	phasePrepare = "prepare"
	phaseAccept  = "accept"
	// phaseRequest asks the leader (the lowest-named reachable host) to
	// run the instance with Value, so that hosts needing one decision at
	// once do not duel; the requester proposes itself only if no decision
	// comes within half its wait.
	phaseRequest = "request"
)

// proposal is one node's current proposal for one instance.
type proposal struct {
	Version int             `json:"version"`
	Ballot  ballot          `json:"ballot"`
	Phase   string          `json:"phase"`
	Value   json.RawMessage `json:"value,omitempty"`
}

// errNoQuorum reports a round that timed out without a majority.
var errNoQuorum = errors.New("no majority")

// accRecords returns the acceptor states of inst by node.
func (c *clusterState) accRecords(inst string) map[string]accState {
	out := make(map[string]accState)
	prefix := inst + "/"
	for _, r := range c.r.List(kindAcc) {
		if !strings.HasPrefix(r.Key, prefix) {
			continue
		}
		node := r.Key[len(prefix):]
		if strings.Contains(node, "/") || node != r.Owner {
			continue // not an acceptor record of this instance, or not written by its node
		}
		var a accState
		if err := decodeRec(r, &a); err != nil {
			continue
		}
		out[node] = a
	}
	return out
}

// maxBallotN bounds ballot numbers: a record claiming more is ignored, so
// that no record can make the next ballot wrap around to zero.
const maxBallotN = 1 << 62

// decided returns the chosen value of inst if this node knows it: it learned
// it itself (its own acceptor record, written only after it saw the
// evidence), or a majority of every known host accepted one value under one
// ballot. One acceptor record saying "decided" is no evidence: a buggy or
// hostile host could write any value.
func (c *clusterState) decided(inst string) (json.RawMessage, bool) {
	_, v, ok := c.decision(inst)
	return v, ok
}

// decision is decided with the ballot the value was chosen under.
func (c *clusterState) decision(inst string) (ballot, json.RawMessage, bool) {
	c.accMu.Lock()
	own, err := c.ownAcc(inst)
	c.accMu.Unlock()
	if err != nil {
		c.reportDamaged(inst, err) // a majority of the others' records may still show the value
	}
	if own.Decided && len(own.Value) > 0 {
		return own.Accepted, own.Value, true
	}
	accs := c.accRecords(inst)
	known := c.knownSet()
	type vote struct {
		b ballot
		v string
	}
	count := make(map[vote]int)
	for n, a := range accs {
		if a.Accepted.zero() || len(a.Value) == 0 {
			continue
		}
		voters, need := c.votersOf(inst, a.Value, known)
		if !voters[n] {
			continue
		}
		k := vote{a.Accepted, string(a.Value)}
		if count[k]++; count[k] >= need {
			return a.Accepted, a.Value, true
		}
	}
	return ballot{}, nil, false
}

// votersOf returns the hosts of known whose answers count for inst with
// value v, and how many of them must answer: a majority of every known
// host, except for a forget, which every known host that stays must
// accept (forget.go). A forget value that does not decode can never be
// chosen.
func (c *clusterState) votersOf(inst string, v json.RawMessage, known map[string]bool) (map[string]bool, int) {
	if _, ok := parseForget(inst); !ok {
		return known, len(known)/2 + 1
	}
	fv, err := decodeForget(v)
	if err != nil {
		return known, len(known) + 1
	}
	stay := make(map[string]bool, len(known))
	for n := range known {
		if !slices.Contains(fv.Hosts, n) {
			stay[n] = true
		}
	}
	return stay, len(stay)
}

// ownAcc returns this node's acceptor state for inst: the stored one, else
// (state written before the store existed) its own record. Stored state
// that cannot be read is an error. Caller holds c.accMu.
func (c *clusterState) ownAcc(inst string) (accState, error) {
	a, ok, err := c.loadAcc(inst)
	if err != nil || ok {
		return a, err
	}
	r, ok := c.r.Get(kindAcc, inst+"/"+c.self)
	if !ok || r.Owner != c.self {
		return accState{Version: recordVersion}, nil
	}
	if err := decodeRec(r, &a); err != nil {
		return accState{Version: recordVersion}, nil
	}
	return a, nil
}

// reportDamaged logs, once per instance, that this host's acceptor state
// of inst cannot be read. Called without c.accMu.
func (c *clusterState) reportDamaged(inst string, err error) {
	c.mu.Lock()
	seen := c.damaged[inst]
	c.damaged[inst] = true
	c.mu.Unlock()
	if !seen {
		c.log.WithError(err).WithField("instance", inst).Error("this host's Paxos acceptor state is damaged; it neither answers nor decides this instance")
	}
}

// putAcc persists this node's acceptor state, then publishes it: a promise
// is durable before any proposer can count it.
func (c *clusterState) putAcc(inst string, a accState) error {
	a.Version = recordVersion
	if err := c.storeAcc(inst, a); err != nil {
		return err
	}
	if err := c.r.Put(kindAcc, inst+"/"+c.self, encodeRec(a)); err != nil {
		return fmt.Errorf("writing acceptor state of %s: %w", inst, err)
	}
	return nil
}

// onProp is the acceptor: it answers another node's (or this node's)
// proposal by updating this node's acceptor record. Runs on the gossip worker.
func (c *clusterState) onProp(_, rec *gossip.Record) {
	if rec == nil || rec.Deleted || c.closed() {
		return
	}
	inst, node, ok := splitKey(rec.Key)
	if !ok || node != rec.Owner {
		return
	}
	var p proposal
	if err := decodeRec(*rec, &p); err != nil {
		return
	}
	if p.Phase == phaseRequest {
		if node != c.self && len(p.Value) > 0 && c.leader() == c.self {
			c.lead(inst, p.Value)
		}
		return
	}
	if p.Ballot.P != node || p.Ballot.N == 0 || p.Ballot.N >= maxBallotN {
		return
	}
	if c.vote != nil && !c.vote(inst) {
		return // this node does not agree to the instance (e.g. the host is not absent long enough here)
	}
	if p.Phase == phaseAccept && !c.agreesToForget(inst, p.Value, node) {
		return
	}
	c.accMu.Lock()
	defer c.accMu.Unlock()
	a, err := c.ownAcc(inst)
	if err != nil {
		c.log.WithError(err).WithFields(logrus.Fields{"instance": inst, "peer": node}).Error("refusing to answer a proposal: this host's acceptor state is damaged")
		return
	}
	switch p.Phase {
	case phasePrepare:
		if !a.Promised.less(p.Ballot) {
			return
		}
		a.Promised = p.Ballot
	case phaseAccept:
		if p.Ballot.less(a.Promised) || len(p.Value) == 0 {
			return
		}
		if a.Decided && string(p.Value) != string(a.Value) {
			return // a decided acceptor confirms its value only
		}
		a.Promised, a.Accepted, a.Value = p.Ballot, p.Ballot, p.Value
	default:
		return
	}
	if err := c.putAcc(inst, a); err != nil {
		c.log.WithError(err).WithField("instance", inst).Warn("could not answer a proposal; the proposer will retry")
	}
}

// learn records v as the chosen value of inst in this node's acceptor record
// (so that any later proposer adopts it) and reports whether it was new here.
func (c *clusterState) learn(inst string, b ballot, v json.RawMessage) (bool, error) {
	c.accMu.Lock()
	defer c.accMu.Unlock()
	a, err := c.ownAcc(inst)
	if err != nil {
		return false, err
	}
	if a.Decided {
		return false, nil
	}
	a.Decided, a.Accepted, a.Value = true, b, v
	return true, c.putAcc(inst, a)
}

// quorum returns the majority of all hosts this node knows of, and that count.
func (c *clusterState) quorum() (need, known int) {
	known = len(c.knownHosts())
	return known/2 + 1, known
}

// propose runs Paxos for inst until a value is chosen or the deadline passes,
// proposing mine() when no acceptor has accepted anything yet. It returns the
// chosen value, which may be another proposer's.
func (c *clusterState) propose(inst string, deadline time.Time, mine func() (json.RawMessage, error)) (_ json.RawMessage, err error) {
	defer observe(c.observeAgreement, time.Now(), &err)
	// One proposer per instance on this node: concurrent requests wait
	// for the first one's outcome instead of duelling with it.
	unlock := c.lockInstance(inst)
	defer unlock()
	if _, forget := parseForget(inst); !forget { // the operator's host runs a forget itself
		if v, decided, err := c.askLeader(inst, deadline, mine); decided || err != nil {
			return v, err
		}
	}
	var last tally
	for attempt := 0; ; attempt++ {
		if v, ok := c.decided(inst); ok {
			return v, nil
		}
		if attempt > 0 || c.othersProposing(inst) {
			c.backOff(inst, attempt, deadline)
			if v, ok := c.decided(inst); ok {
				return v, nil
			}
			if time.Now().After(deadline) {
				return nil, c.noQuorum(inst, last)
			}
		}
		v, end, t, err := c.round(inst, deadline, mine)
		last = t
		switch {
		case err != nil:
			return nil, err
		case end == waitPending:
			return nil, c.noQuorum(inst, last)
		case end == waitReached:
			return v, nil
		}
		// Pre-empted, or decided meanwhile: the next attempt tells which.
	}
}

// askLeader makes this host defer to the leader: while another host leads,
// it asks the leader to run inst with mine() (again every second, in case
// it missed the request or restarted) and waits for the decision, so that
// proposers do not duel. decided is false once this host is the leader.
func (c *clusterState) askLeader(inst string, deadline time.Time, mine func() (json.RawMessage, error)) (v json.RawMessage, decided bool, err error) {
	for seq := uint64(1); ; seq++ {
		leader := c.leader()
		if leader == c.self {
			return nil, false, nil
		}
		v, err := mine()
		if err != nil {
			return nil, false, err
		}
		if err := c.putProp(inst, proposal{Ballot: ballot{N: seq}, Phase: phaseRequest, Value: v}); err != nil {
			return nil, false, err
		}
		if c.waitUntil(deadline, time.Second, func() bool { _, ok := c.decided(inst); return ok || c.leader() != leader }) {
			if v, ok := c.decided(inst); ok {
				return v, true, nil
			}
			continue // the leader changed
		}
		if !time.Now().Before(deadline) {
			need, known := c.quorum()
			return nil, false, fmt.Errorf("the leader %s (%s) did not reach a decision within %v; %d of %d known hosts are needed for %s: %w",
				leader, c.reachability(leader, c.alive()), c.agreeTimeout, need, known, inst, errNoQuorum)
		}
	}
}

// backOff waits a random while, longer with each attempt, so that duelling
// proposers let one win; a decision ends the wait at once.
func (c *clusterState) backOff(inst string, attempt int, deadline time.Time) {
	wait := time.Duration(rand.Int64N(int64(50*time.Millisecond)*int64(min(attempt+1, 8)))) + 10*time.Millisecond
	c.waitUntil(deadline, wait, func() bool { _, ok := c.decided(inst); return ok })
}

// round runs one ballot of this host: prepare, then accept. The value is
// the one chosen when end is waitReached; waitPending means the deadline
// passed in either phase (t counts the answers of the last one).
func (c *clusterState) round(inst string, deadline time.Time, mine func() (json.RawMessage, error)) (v json.RawMessage, end quorumWait, t tally, err error) {
	b := ballot{N: c.maxBallot(inst).N + 1, P: c.self}
	if err := c.putProp(inst, proposal{Ballot: b, Phase: phasePrepare}); err != nil {
		return nil, waitPending, tally{}, err
	}
	// Phase 1: a majority of all known hosts promise b (for a forget:
	// every host that stays by this host's value).
	var qv json.RawMessage
	if _, forget := parseForget(inst); forget {
		if qv, err = mine(); err != nil {
			return nil, waitPending, tally{}, err
		}
	}
	end, promised, t := c.awaitQuorum(inst, b, qv, deadline, func(a accState) bool { return a.Promised == b })
	if end == waitPreempted {
		c.log.WithFields(logrus.Fields{"instance": inst, "ballot": b.N}).Debug("proposal pre-empted by a higher ballot; retrying")
	}
	if end != waitReached {
		return nil, end, t, nil
	}
	if v, err = valueFor(promised, mine); err != nil {
		return nil, waitPending, t, err
	}
	if err := c.putProp(inst, proposal{Ballot: b, Phase: phaseAccept, Value: v}); err != nil {
		return nil, waitPending, t, err
	}
	// Phase 2: a majority of all known hosts accept b.
	if end, _, t = c.awaitQuorum(inst, b, v, deadline, func(a accState) bool { return a.Accepted == b }); end != waitReached {
		return nil, end, t, nil
	}
	if _, err := c.learn(inst, b, v); err != nil {
		return nil, waitPending, t, err
	}
	c.log.WithFields(logrus.Fields{"instance": inst, "ballot": b.N, "acceptors": t.got, "known": t.known}).Info("agreement reached")
	return v, waitReached, t, nil
}

// valueFor is the value to propose once a majority promised: the one
// accepted under the highest ballot among the promises, else mine().
func valueFor(promised map[string]accState, mine func() (json.RawMessage, error)) (json.RawMessage, error) {
	var (
		best  ballot
		value json.RawMessage
	)
	for _, a := range promised {
		if len(a.Value) > 0 && !a.Accepted.zero() && (value == nil || best.less(a.Accepted)) {
			best, value = a.Accepted, a.Value
		}
	}
	if value != nil {
		return value, nil
	}
	return mine()
}

// quorumWait is how a wait for a majority's answers to one ballot ended.
type quorumWait int

const (
	waitPending   quorumWait = iota // no majority yet; returned by awaitQuorum: the deadline passed
	waitReached                     // a majority of every known host answered the ballot
	waitPreempted                   // so many promised a higher ballot that no majority is left for it
	waitDecided                     // this host learned the instance's value meanwhile
)

// tally counts the answers to one ballot: got, of the need (a majority)
// among the known hosts.
type tally struct{ got, need, known int }

// awaitQuorum waits until a majority of every known host answered b
// (answered tells one acceptor state that did), the ballot is pre-empted,
// the instance is decided, or the deadline passes. It returns the answers.
func (c *clusterState) awaitQuorum(inst string, b ballot, v json.RawMessage, deadline time.Time, answered func(accState) bool) (quorumWait, map[string]accState, tally) {
	var (
		end quorumWait
		yes map[string]accState
		t   tally
	)
	c.waitUntil(deadline, 0, func() bool {
		if _, ok := c.decided(inst); ok {
			end = waitDecided
			return true
		}
		end, yes, t = c.countAnswers(inst, b, v, answered)
		return end != waitPending
	})
	return end, yes, t
}

// countAnswers is one look at the acceptor records of inst: the known hosts
// that answered b, and whether that is a quorum (votersOf, for value v) or
// can no longer become one.
func (c *clusterState) countAnswers(inst string, b ballot, v json.RawMessage, answered func(accState) bool) (quorumWait, map[string]accState, tally) {
	members, need := c.votersOf(inst, v, c.knownSet())
	known := len(members)
	yes := make(map[string]accState)
	higher := 0
	for n, a := range c.accRecords(inst) {
		switch {
		case !members[n]:
		case answered(a):
			yes[n] = a
		case b.less(a.Promised):
			higher++
		}
	}
	t := tally{got: len(yes), need: need, known: known}
	switch {
	case len(yes) >= need:
		return waitReached, yes, t
	case higher > known-need:
		return waitPreempted, yes, t
	}
	return waitPending, yes, t
}

func (c *clusterState) noQuorum(inst string, t tally) error {
	return fmt.Errorf("%d of %d known hosts answered within %v, %d needed (a majority of every host the cluster knows, reachable or not) for %s: %w",
		t.got, t.known, c.agreeTimeout, t.need, inst, errNoQuorum)
}

func (c *clusterState) putProp(inst string, p proposal) error {
	p.Version = recordVersion
	if err := c.r.Put(kindProp, inst+"/"+c.self, encodeRec(p)); err != nil {
		return fmt.Errorf("writing proposal for %s: %w", inst, err)
	}
	return nil
}

// maxBallot is the highest ballot seen in inst's acceptor and proposal records.
func (c *clusterState) maxBallot(inst string) ballot {
	var m ballot
	for _, a := range c.accRecords(inst) {
		for _, b := range []ballot{a.Promised, a.Accepted} {
			if m.less(b) && b.N < maxBallotN {
				m = b
			}
		}
	}
	prefix := inst + "/"
	for _, r := range c.r.List(kindProp) {
		if !strings.HasPrefix(r.Key, prefix) {
			continue
		}
		var p proposal
		if decodeRec(r, &p) == nil && m.less(p.Ballot) && p.Ballot.N < maxBallotN {
			m = p.Ballot
		}
	}
	return m
}

// lockInstance serialises this node's proposers of inst.
func (c *clusterState) lockInstance(inst string) func() {
	c.mu.Lock()
	m := c.instMu[inst]
	if m == nil {
		m = &sync.Mutex{}
		c.instMu[inst] = m
	}
	c.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// othersProposing reports whether another node has a proposal for inst.
func (c *clusterState) othersProposing(inst string) bool {
	prefix := inst + "/"
	for _, r := range c.r.List(kindProp) {
		if strings.HasPrefix(r.Key, prefix) && r.Owner != c.self {
			return true
		}
	}
	return false
}

// leader is the lowest-named reachable host that takes part in IPAM.
func (c *clusterState) leader() string {
	alive := c.alive()
	best := c.self
	for n := range alive {
		if _, ok := c.r.Get(kindHost, n); ok && n < best {
			best = n
		}
	}
	return best
}

// lead runs inst in the background on another host's request, proposing v
// unless a value was accepted already. One run per instance at a time.
func (c *clusterState) lead(inst string, v json.RawMessage) {
	if _, ok := c.decided(inst); ok {
		return
	}
	c.mu.Lock()
	if m := c.instMu[inst]; c.leading[inst] || c.stopped || m != nil && !m.TryLock() {
		c.mu.Unlock()
		return // already running here
	} else if m != nil {
		m.Unlock()
	}
	c.leading[inst] = true
	c.bg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.bg.Done()
		defer func() {
			c.mu.Lock()
			delete(c.leading, inst)
			c.mu.Unlock()
		}()
		val, err := c.propose(inst, time.Now().Add(c.agreeTimeout), func() (json.RawMessage, error) { return v, nil })
		if err != nil && c.closed() {
			return
		}
		if err != nil {
			c.log.WithError(err).WithField("instance", inst).Warn("could not lead an agreement another host asked for")
			return
		}
		if c.decidedHook != nil {
			c.decidedHook(inst, val)
		}
	}()
}
