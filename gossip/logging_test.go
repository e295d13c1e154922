package gossip

import (
	"bytes"
	"log"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"grapevine/internal/ratelog"
)

// A peer whose packets fail to decrypt at every probe gets one error line
// per interval, with its address and the count of lines held back; another
// peer's error and informational lines are not held back by it.
func TestMemberlistRepeatedPeerErrorsRateLimited(t *testing.T) {
	l := logrus.New()
	var buf bytes.Buffer
	l.SetOutput(&buf)
	l.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true})
	now := time.Unix(1000, 0)
	w := &memberlistWriter{log: logrus.NewEntry(l), limiter: ratelog.New(peerLogInterval, peerLogKeys, func() time.Time { return now })}
	ml := log.New(w, "", 0)

	const rogue = "[ERR] memberlist: failed to receive: No installed keys could decrypt the message from=198.18.0.66:%d"
	for i := range 100 {
		ml.Printf(rogue, 40000+i) // a new source port each time
	}
	ml.Print("[ERR] memberlist: failed to receive: No installed keys could decrypt the message from=198.18.0.67:7947")
	ml.Print("[INFO] memberlist: Marking b as failed")
	ml.Print("[INFO] memberlist: Marking b as failed")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines logged, want 4 (one per erring peer, two info):\n%s", len(lines), buf.String())
	}
	if !strings.Contains(lines[0], "peer=198.18.0.66") || !strings.Contains(lines[1], "peer=198.18.0.67") {
		t.Errorf("error lines lack their peer:\n%s", buf.String())
	}

	buf.Reset()
	now = now.Add(peerLogInterval)
	ml.Printf(rogue, 41000)
	if out := buf.String(); !strings.Contains(out, "suppressed=99") || !strings.Contains(out, "198.18.0.66") {
		t.Errorf("after the interval: %q, want the line with suppressed=99", out)
	}
}
