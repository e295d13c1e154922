package gossip

import (
	"bytes"
	"log"
	"time"

	"github.com/sirupsen/logrus"

	"grapevine/internal/ratelog"
)

// memberlist repeats an error about an unreachable or misconfigured peer at
// every probe or push/pull; one line per peer and cause is logged every
// peerLogInterval, with the count of the lines held back.
const (
	peerLogInterval = time.Minute
	peerLogKeys     = 256
)

// memberlistWriter receives memberlist's log lines ("[LEVEL] memberlist:
// message") and re-emits them through logrus at the matching level, so
// operators filter memberlist's chatter with LOG_LEVEL like everything else.
type memberlistWriter struct {
	log     *logrus.Entry
	limiter *ratelog.Limiter // of warnings and errors
	health  *health          // told every warning and error (nil: none)
}

func newMemberlistLogger(l *logrus.Entry, h *health) *log.Logger {
	w := &memberlistWriter{log: l.WithField("component", "memberlist"), limiter: ratelog.New(peerLogInterval, peerLogKeys, nil), health: h}
	return log.New(w, "", 0)
}

// Write handles one line; it never fails.
func (w *memberlistWriter) Write(p []byte) (int, error) {
	line := bytes.TrimSpace(p)
	level := logrus.InfoLevel
	if len(line) > 0 && line[0] == '[' {
		if end := bytes.IndexByte(line, ']'); end > 0 {
			switch string(line[1:end]) {
			case "DEBUG", "TRACE":
				level = logrus.DebugLevel
			case "INFO":
				level = logrus.InfoLevel
			case "WARN":
				level = logrus.WarnLevel
			case "ERR", "ERROR":
				level = logrus.ErrorLevel
			}
			line = bytes.TrimSpace(line[end+1:])
		}
	}
	line = bytes.TrimPrefix(line, []byte("memberlist: "))
	msg := string(line)
	entry := w.log
	if level <= logrus.WarnLevel {
		peer := ratelog.Peer(msg)
		if w.health != nil {
			w.health.noteLogLine(peer, msg)
		}
		ok, suppressed := w.limiter.Allow(peer + "\x00" + ratelog.Cause(msg))
		if !ok {
			return len(p), nil
		}
		if peer != "" {
			entry = entry.WithField("peer", peer)
		}
		if suppressed > 0 {
			entry = entry.WithField(ratelog.SuppressedField, suppressed)
		}
	}
	entry.Log(level, msg)
	return len(p), nil
}
