package gossip

import (
	"io"
	"os"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// Helpers of the internal tests (store, codec, config). Cluster tests are
// external (package gossip_test) and run on gossiptest's network.

// testLog returns a logger; set GOSSIP_TEST_LOG=debug to see it on stderr.
// testPort is the gossip port of nodes that never start.
const testPort = 7947

func testLog(name string) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.SetLevel(logrus.PanicLevel)
	if lv, err := logrus.ParseLevel(os.Getenv("GOSSIP_TEST_LOG")); err == nil {
		l.SetOutput(os.Stderr)
		l.SetLevel(lv)
	}
	return l.WithField("node", name)
}

// waitFor polls cond every few milliseconds until it holds or the deadline
// passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// put writes an own record into a store that has no DB behind it, as
// Cluster.Put does without the persisting step.
func (s *store) put(kind, key string, value []byte) (*Record, bool, error) {
	r, err := s.preparePut(kind, key, value)
	if err != nil || r == nil {
		return nil, false, err
	}
	return r, s.install(r), nil
}

// del deletes like put.
func (s *store) del(kind, key string) (*Record, bool, error) {
	r, err := s.prepareDel(kind, key)
	if err != nil || r == nil {
		return nil, false, err
	}
	return r, s.install(r), nil
}
