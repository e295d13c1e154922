package gossip

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Bounds on what a received record may claim. Every member holds the key,
// but a member may be buggy or compromised: these bounds keep one member
// from freezing, flooding or rewriting the state of the others.
const (
	// MaxClockAhead is how far a received record's version may be ahead of
	// this node's Lamport clock; a record further ahead is refused (and
	// does not move the clock).
	//
	// Why 2^32: honest clocks differ only by the writes one side of a
	// partition made that the other has not seen yet (the clock is the
	// highest version seen plus one per own write). Even a 500-host fleet
	// starting a container per host per second for the whole partition
	// takes 99 days to write 2^32 records, so no honest record is ever
	// refused. A forger, on the other hand, moves a clock by at most 2^32
	// per accepted record, so pushing it to MaxVersion (where this node
	// stops writing) takes 2^30 forged records accepted one after another:
	// hours of sustained flooding by a member that holds the key, which
	// rotating the key ends. No value a peer sends can make a clock wrap.
	MaxClockAhead uint64 = 1 << 32
	// MaxVersion is the highest version any node writes or accepts: the
	// clock stops there (Put and Delete fail with ErrClockExhausted)
	// instead of wrapping to 0, which would freeze every existing key.
	MaxVersion uint64 = 1 << 62
	// MaxOwnerLen is the longest node name (record owner).
	MaxOwnerLen = 128

	// refusalLogInterval is how often one (peer, cause) pair is logged:
	// once when first seen, then at most once per interval with the count
	// since, so a flooding peer cannot flood the log.
	refusalLogInterval = 10 * time.Minute
	// maxRefusalPairs bounds the (peer, cause) pairs tracked: owners are
	// chosen by the sender, so further pairs are counted under
	// peerOther.
	maxRefusalPairs = 1024

	peerUnknown = "(unknown)" // an undecodable message: no owner to name
	peerInvalid = "(invalid)" // an owner that is not a node name
	peerOther   = "(other)"   // past maxRefusalPairs
)

// RefusalCause says why a received (or stored) record was refused.
type RefusalCause string

// Refusal causes, as counted by RefusalStats.
const (
	// CauseMalformed: the message could not be decoded.
	CauseMalformed RefusalCause = "malformed"
	// CauseBadRecord: empty or oversized kind, key or owner, an owner that
	// is not a node name, or a record over MaxRecordBytes.
	CauseBadRecord RefusalCause = "bad-record"
	// CauseVersion: a version beyond the local clock + MaxClockAhead or
	// beyond MaxVersion.
	CauseVersion RefusalCause = "version"
	// CauseNotOwner: a key of an owner-keyed kind not in its writer's name
	// (see OwnerKeyed).
	CauseNotOwner RefusalCause = "not-owner"
	// CauseImpersonation: a record in this node's name, newer than what
	// this node wrote (it keeps everything it wrote in its DB).
	CauseImpersonation RefusalCause = "impersonation"
	// CauseWriterCap: the writer already holds Config.MaxRecordsPerWriter
	// records or Config.MaxBytesPerWriter bytes.
	CauseWriterCap RefusalCause = "writer-cap"
	// CauseValidator: a consumer's validator refused it.
	CauseValidator RefusalCause = "validator"
)

// Refusal counts the records refused from one peer for one cause. The peer
// is the record's owner: gossip is relayed, so the owner named inside the
// authenticated record is the only writer identity there is.
type Refusal struct {
	Peer  string       `json:"peer"`
	Cause RefusalCause `json:"cause"`
	Count uint64       `json:"count"`
}

// validName reports whether s is shaped like a node name: 1 to MaxOwnerLen
// bytes of letters, digits, '.', '_' and '-', starting with a letter or a
// digit (hostnames, and the plugin's "<hostname>-<hex>").
func validName(s string) bool {
	if s == "" || len(s) > MaxOwnerLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '-') {
			return false
		}
	}
	return true
}

// checkRecord applies the checks every received or stored record must pass,
// whatever its kind.
func checkRecord(r *Record) (RefusalCause, error) {
	switch {
	case r.Kind == "" || len(r.Kind) > MaxKindLen:
		return CauseBadRecord, fmt.Errorf("kind of %d bytes, want 1-%d", len(r.Kind), MaxKindLen)
	case r.Key == "" || len(r.Key) > MaxKeyLen:
		return CauseBadRecord, fmt.Errorf("key of %d bytes, want 1-%d", len(r.Key), MaxKeyLen)
	case !validName(r.Owner):
		return CauseBadRecord, fmt.Errorf("owner %.32q is not a node name", r.Owner)
	case r.Deleted && r.Value != nil:
		return CauseBadRecord, errors.New("tombstone with a value")
	case 2+encodedLen(r) > MaxRecordBytes:
		return CauseBadRecord, fmt.Errorf("record of %d bytes, more than %d", 2+encodedLen(r), MaxRecordBytes)
	case r.Version > MaxVersion:
		return CauseVersion, fmt.Errorf("version %d beyond the highest version %d", r.Version, MaxVersion)
	}
	return "", nil
}

// OwnerKeyed returns a validator for a kind whose keys name their writer:
// owner extracts the node name from a key, and a record (live or tombstone)
// is refused unless that name is its Owner. So a host writes, and deletes,
// only keys in its own name. Register it with RegisterValidator; a kind
// whose records another host may delete needs its own validator instead.
func OwnerKeyed(owner func(key string) (string, bool)) func(Record) error {
	return func(r Record) error {
		name, ok := owner(r.Key)
		if !ok || name != r.Owner {
			return fmt.Errorf("key %.64q of kind %s is not in the name of its writer %q: %w", r.Key, r.Kind, r.Owner, ErrNotOwner)
		}
		return nil
	}
}

// OwnerSuffix is OwnerKeyed for keys "<anything><sep><owner>", e.g.
// "198.18.0.0/16/host-1a2b3c" with sep "/" (node names never contain "/").
func OwnerSuffix(sep string) func(Record) error {
	return OwnerKeyed(func(key string) (string, bool) {
		i := strings.LastIndex(key, sep)
		if i < 0 {
			return "", false
		}
		return key[i+len(sep):], true
	})
}

// OwnerPrefix is OwnerKeyed for keys "<owner><sep><anything>".
func OwnerPrefix(sep string) func(Record) error {
	return OwnerKeyed(func(key string) (string, bool) {
		owner, _, ok := strings.Cut(key, sep)
		return owner, ok
	})
}

// OwnerIsKey is OwnerKeyed for kinds keyed by the writer's name alone, such
// as one record per host.
func OwnerIsKey() func(Record) error {
	return OwnerKeyed(func(key string) (string, bool) { return key, true })
}

// validators holds the consumers' validators by kind.
type validators struct {
	mu     sync.RWMutex
	byKind map[string][]func(Record) error
}

func (v *validators) add(kind string, fn func(Record) error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.byKind == nil {
		v.byKind = make(map[string][]func(Record) error)
	}
	v.byKind[kind] = append(v.byKind[kind], fn)
}

// check runs kind's validators on r; a panicking validator refuses.
func (v *validators) check(r *Record) (cause RefusalCause, err error) {
	v.mu.RLock()
	fns := v.byKind[r.Kind]
	v.mu.RUnlock()
	defer func() {
		if p := recover(); p != nil {
			cause, err = CauseValidator, fmt.Errorf("validator of kind %s panicked: %v", r.Kind, p)
		}
	}()
	for _, fn := range fns {
		if err := fn(*r.clone()); err != nil {
			if errors.Is(err, ErrNotOwner) {
				return CauseNotOwner, err
			}
			return CauseValidator, err
		}
	}
	return "", nil
}

// refusals counts refused records by (peer, cause) and logs each pair at
// most once per refusalLogInterval.
type refusals struct {
	log *logrus.Entry
	now func() time.Time

	mu    sync.Mutex
	pairs map[refusalKey]*refusalCount
	total uint64
}

type refusalKey struct {
	peer  string
	cause RefusalCause
}

type refusalCount struct {
	count    uint64
	unlogged uint64 // refusals since the last log line
	loggedAt time.Time
}

// note counts one refusal of r (nil for an undecodable message).
func (rf *refusals) note(r *Record, cause RefusalCause, err error) {
	k := refusalKey{peer: peerUnknown, cause: cause}
	if r != nil {
		k.peer = r.Owner
		if !validName(r.Owner) {
			k.peer = peerInvalid
		}
	}
	rf.mu.Lock()
	defer rf.mu.Unlock()
	rf.total++
	c := rf.pairs[k]
	if c == nil && len(rf.pairs) >= maxRefusalPairs {
		k.peer = peerOther
		c = rf.pairs[k]
	}
	if c == nil {
		if rf.pairs == nil {
			rf.pairs = make(map[refusalKey]*refusalCount)
		}
		c = &refusalCount{}
		rf.pairs[k] = c
	}
	c.count++
	c.unlogged++
	now := rf.now()
	if !c.loggedAt.IsZero() && now.Sub(c.loggedAt) < refusalLogInterval {
		return
	}
	l := rf.log.WithFields(logrus.Fields{"peer": k.peer, "cause": string(cause), "refused": c.unlogged, "refused_total": c.count})
	if r != nil {
		l = l.WithFields(logrus.Fields{"kind": fmt.Sprintf("%.64q", r.Kind), "key": fmt.Sprintf("%.64q", r.Key), "version": r.Version})
	}
	l.WithError(err).Warn("refused gossip record (logged once per peer and cause every 10 minutes; see RefusalStats)")
	c.loggedAt = now
	c.unlogged = 0
}

// stats returns the counts sorted by peer, then cause.
func (rf *refusals) stats() []Refusal {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	out := make([]Refusal, 0, len(rf.pairs))
	for k, c := range rf.pairs {
		out = append(out, Refusal{Peer: k.peer, Cause: k.cause, Count: c.count})
	}
	slices.SortFunc(out, func(a, b Refusal) int {
		if c := strings.Compare(a.Peer, b.Peer); c != 0 {
			return c
		}
		return strings.Compare(string(a.Cause), string(b.Cause))
	})
	return out
}

func (rf *refusals) count() uint64 {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	return rf.total
}
