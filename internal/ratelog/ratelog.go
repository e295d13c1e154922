// Package ratelog keeps repeated errors from flooding the log: a Limiter
// lets one line through per key (a peer and a cause) per interval and
// counts the lines it held back, for the next line of that key to report.
package ratelog

import (
	"net/netip"
	"regexp"
	"sync"
	"time"
)

// SuppressedField is the log field that carries how many lines of the same
// key were held back since the previous one.
const SuppressedField = "suppressed"

// overflowKey collects every key past the Limiter's bound, so a peer that
// varies its errors cannot grow the map (or the log) without limit.
const overflowKey = "\x00(other)"

// Limiter decides which repeated lines are logged. Safe for concurrent use.
type Limiter struct {
	interval time.Duration
	max      int
	now      func() time.Time

	mu    sync.Mutex
	slots map[string]*slot
}

type slot struct {
	logged     time.Time
	suppressed uint64
}

// New lets one line per key through every interval, remembering at most
// limit keys (older ones are forgotten first). now nil means time.Now.
func New(interval time.Duration, limit int, now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	return &Limiter{interval: interval, max: limit, now: now, slots: map[string]*slot{}}
}

// Allow reports whether a line for key may be logged now and, if so, how
// many lines of key were suppressed since the last one logged.
func (l *Limiter) Allow(key string) (bool, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	s := l.slots[key]
	if s == nil && len(l.slots) >= l.max-1 { // one slot stays for overflowKey
		l.forgetIdle(now)
		if len(l.slots) >= l.max-1 {
			key = overflowKey
			s = l.slots[key]
		}
	}
	if s == nil {
		s = &slot{}
		l.slots[key] = s
	}
	if !s.logged.IsZero() && now.Sub(s.logged) < l.interval {
		s.suppressed++
		return false, 0
	}
	n := s.suppressed
	s.logged, s.suppressed = now, 0
	return true, n
}

// forgetIdle drops keys whose last line is older than the interval and
// that held nothing back. Caller holds mu.
func (l *Limiter) forgetIdle(now time.Time) {
	for k, s := range l.slots {
		if s.suppressed == 0 && now.Sub(s.logged) >= l.interval {
			delete(l.slots, k)
		}
	}
}

var (
	peerPattern = regexp.MustCompile(`from=(\S+)|\[[0-9a-fA-F:.]+\]:\d+|\d+\.\d+\.\d+\.\d+:\d+`)
	// volatile are the parts of a message that differ between two
	// repetitions of one cause: addresses, numbers, hex.
	volatile = regexp.MustCompile(`from=\S+|\[[0-9a-fA-F:.]+\]:\d+|[0-9a-fA-F]*[0-9][0-9a-fA-F:.]*`)
)

// Peer extracts the peer's IP address from a message such as memberlist's
// "Failed to receive: … from=198.18.0.2:41234"; "" when it names none. The
// port is left out: a peer's streams come from a new port every time.
func Peer(msg string) string {
	m := peerPattern.FindStringSubmatch(msg)
	if m == nil {
		return ""
	}
	a := m[0]
	if m[1] != "" {
		a = m[1]
	}
	if ap, err := netip.ParseAddrPort(a); err == nil {
		return ap.Addr().String()
	}
	return a
}

// Cause is msg with its addresses and numbers blanked: two repetitions of
// one error from one peer have the same cause.
func Cause(msg string) string {
	return volatile.ReplaceAllString(msg, "#")
}
