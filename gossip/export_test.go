package gossip

import (
	"sync/atomic"
	"time"
)

// This file exports internals to the external tests (package gossip_test),
// which run clusters on gossiptest's in-memory network: gossiptest imports
// gossip, so only an external test package can use it.

// SameVersion reports whether a and b are the same write.
func SameVersion(a, b *Record) bool { return sameVersion(a, b) }

// Newer reports whether a replaces b.
func Newer(a, b *Record) bool { return newer(a, b) }

// MaxLocalState is the largest push/pull state c has produced, in bytes.
func (c *Cluster) MaxLocalState() int64 { return c.stats.maxLocalState.Load() }

// FakeClock is a settable clock shared by a test's nodes (Config.Now).
type FakeClock struct{ off atomic.Int64 }

// Now is the fake time: the real time plus every Advance so far.
func (f *FakeClock) Now() time.Time { return time.Now().Add(time.Duration(f.off.Load())) }

// Advance moves the fake time forward by d.
func (f *FakeClock) Advance(d time.Duration) { f.off.Add(int64(d)) }

// PushPullWith makes c exchange its full membership (and a window of
// records) with the members at addrs now, as a join does, instead of at
// its next push/pull. BenchmarkConvergence uses it to form large clusters
// quickly: members that joined at the same moment can miss each other's
// announcements until their next push/pull, up to a minute later.
func (c *Cluster) PushPullWith(addrs ...string) error {
	_, err := c.ml.Load().Join(addrs)
	return err
}

// SetCrashPoint makes c call fn after persisting each own write and before
// storing or sending it; fn returning false stops the write there, as if
// the process died at that instant. Set it before c writes anything.
func (c *Cluster) SetCrashPoint(fn func(Record) bool) { c.crashPoint = fn }
