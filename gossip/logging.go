package gossip

import (
	"bytes"
	"log"

	"github.com/sirupsen/logrus"
)

// memberlistWriter receives memberlist's log lines ("[LEVEL] memberlist:
// message") and re-emits them through logrus at the matching level, so
// operators filter memberlist's chatter with LOG_LEVEL like everything else.
type memberlistWriter struct {
	log *logrus.Entry
}

func newMemberlistLogger(l *logrus.Entry) *log.Logger {
	return log.New(&memberlistWriter{log: l.WithField("component", "memberlist")}, "", 0)
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
	w.log.Log(level, string(line))
	return len(p), nil
}
