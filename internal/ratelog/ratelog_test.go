package ratelog

import (
	"fmt"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestLimiterOneLinePerKeyPerInterval(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	l := New(time.Minute, 8, c.now)
	if ok, n := l.Allow("peer-a/cause"); !ok || n != 0 {
		t.Fatalf("first line: %v, %d; want logged with nothing suppressed", ok, n)
	}
	for range 5 {
		c.t = c.t.Add(time.Second)
		if ok, _ := l.Allow("peer-a/cause"); ok {
			t.Fatal("a repeat within the interval was let through")
		}
	}
	if ok, _ := l.Allow("peer-b/cause"); !ok {
		t.Fatal("another peer's line was held back by peer-a's")
	}
	c.t = c.t.Add(time.Minute)
	if ok, n := l.Allow("peer-a/cause"); !ok || n != 5 {
		t.Fatalf("after the interval: %v, %d; want logged, reporting 5 suppressed", ok, n)
	}
}

// A hostile peer that makes every error unique (new addresses, new text)
// is bounded: past max keys, its lines share one slot, and one line per
// interval gets out.
func TestLimiterBoundedAgainstVaryingKeys(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	l := New(time.Minute, 16, c.now)
	logged := 0
	for i := range 10000 {
		if ok, _ := l.Allow(fmt.Sprintf("198.18.%d.%d:7947/cause-%d", i/256, i%256, i)); ok {
			logged++
		}
	}
	if len(l.slots) > 16 {
		t.Errorf("%d keys remembered, want at most 16", len(l.slots))
	}
	if logged > 16 {
		t.Errorf("%d lines logged in one interval, want at most 16 (15 keys and the overflow slot)", logged)
	}
	// Once the interval passes, idle keys make room for new ones.
	c.t = c.t.Add(2 * time.Minute)
	if ok, _ := l.Allow("fresh"); !ok {
		t.Error("a new key was held back after the old ones went idle")
	}
}

func TestPeerAndCause(t *testing.T) {
	for _, tc := range []struct{ msg, peer, cause string }{
		{"Failed to receive: No installed keys could decrypt the message from=198.18.0.2:7947",
			"198.18.0.2", "Failed to receive: No installed keys could decrypt the message #"},
		{"Push/Pull with h2-ab12 failed: dial tcp 198.18.0.3:7947: connect: connection refused",
			"198.18.0.3", "Push/Pull with h#-# failed: dial tcp # connect: connection refused"},
		{"Failed fallback TCP ping: io: read/write on closed pipe", "", "Failed fallback TCP ping: io: read/write on closed pipe"},
		{"Got ping for unexpected node h3 from=[fd00::3]:7947", "fd00::3", "Got ping for unexpected node h# #"},
	} {
		if got := Peer(tc.msg); got != tc.peer {
			t.Errorf("Peer(%q) = %q, want %q", tc.msg, got, tc.peer)
		}
		if got := Cause(tc.msg); got != tc.cause {
			t.Errorf("Cause(%q) = %q, want %q", tc.msg, got, tc.cause)
		}
	}
	// The same error from two addresses has one cause, two peers.
	a := "Failed to receive: EOF from=198.18.0.2:7947"
	b := "Failed to receive: EOF from=198.18.0.9:7947"
	if Cause(a) != Cause(b) || Peer(a) == Peer(b) {
		t.Errorf("causes %q, %q; peers %q, %q", Cause(a), Cause(b), Peer(a), Peer(b))
	}
}
