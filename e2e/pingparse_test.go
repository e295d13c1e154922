package e2e

// Reading a continuous ping's output needs no harness: this file builds
// without the e2e tag, so `make unit` checks it (TestParsePing).

import (
	"fmt"
	"regexp"
	"strconv"
)

// pingResult is what one pinger saw.
type pingResult struct {
	sent, received int
	gap            int // longest run of probes without a reply
}

var (
	pingSeqRe     = regexp.MustCompile(`bytes from [0-9.]+: seq=(\d+)`)
	pingSummaryRe = regexp.MustCompile(`(\d+) packets transmitted, (\d+) packets received`)
)

// parsePing reads busybox ping's output: the replies' sequence numbers and
// the summary it prints when interrupted.
func parsePing(out string) (pingResult, error) {
	m := pingSummaryRe.FindStringSubmatch(out)
	if m == nil {
		return pingResult{}, fmt.Errorf("no summary in ping output %q", out)
	}
	var r pingResult
	r.sent, _ = strconv.Atoi(m[1])
	r.received, _ = strconv.Atoi(m[2])
	next := 0 // the sequence number expected next
	for _, sm := range pingSeqRe.FindAllStringSubmatch(out, -1) {
		seq, _ := strconv.Atoi(sm[1])
		if seq < next {
			continue // a duplicate
		}
		r.gap = max(r.gap, seq-next)
		next = seq + 1
	}
	r.gap = max(r.gap, r.sent-next)
	if r.sent < 2 {
		return r, fmt.Errorf("ping sent %d probes: nothing measured", r.sent)
	}
	return r, nil
}
