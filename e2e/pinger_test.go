//go:build e2e

package e2e

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
)

// Bounds on the continuous pings between containers through one step of a
// rolling settings change (one host's disable -f, set, enable, and the wait
// until every host sees every other alive; a probe every 0.2 s, about 15 s
// and 75 probes a step). Nothing on the data path changes in a step: the
// disabled host's kernel state stays, the other hosts keep its entries and
// VTEP for the grace after its graceful leave, and the restarted plugin keeps
// the other hosts' entries until it is in contact again. So no probe should
// be lost; the bounds leave room for one probe lost at the cut-off when a
// pinger is stopped and for a scheduling stall of a loaded test machine, and
// are far below what a removal costs (the whole time the plugin is down:
// 15 probes or more in a row).
const (
	maxPingGap  = 3 // probes lost in a row (0.6 s)
	maxPingLoss = 4 // probes lost in a step, per pair
)

// pinger is a ping running in container from towards container to, started
// in the background by startPingers.
type pinger struct{ from, to ctr }

func (p pinger) files() (log, pid string) {
	return "/tmp/gv-ping-" + p.to.ip + ".log", "/tmp/gv-ping-" + p.to.ip + ".pid"
}

// startPingers starts a ping every 0.2 s from every container to every
// container on another host.
func startPingers(t *testing.T, cs []ctr) []pinger {
	t.Helper()
	var ps []pinger
	for _, from := range cs {
		for _, to := range cs {
			if from.host != to.host {
				ps = append(ps, pinger{from: from, to: to})
			}
		}
	}
	for _, p := range ps {
		log, pid := p.files()
		mustDocker(t, p.from.host, "exec", "-d", p.from.id, "sh", "-c",
			fmt.Sprintf("echo $$ >%s; exec ping -i 0.2 %s >%s 2>&1", pid, p.to.ip, log))
	}
	return ps
}

// stop interrupts the pinger and returns what it saw.
func (p pinger) stop() (pingResult, error) {
	log, pid := p.files()
	script := fmt.Sprintf(`kill -INT $(cat %[2]s); while kill -0 $(cat %[2]s) 2>/dev/null; do sleep 0.05; done; cat %[1]s; rm -f %[1]s %[2]s`, log, pid)
	out, stderr, err := docker(p.from.host, "exec", p.from.id, "sh", "-c", script)
	if err != nil {
		return pingResult{}, fmt.Errorf("stopping the ping of %s to %s: %v: %s", p.from, p.to, err, stderr)
	}
	return parsePing(out)
}

// checkPingers stops the pingers and fails t if a pair lost more probes
// than the bounds allow during step.
func checkPingers(t *testing.T, step string, ps []pinger) {
	t.Helper()
	var mu sync.Mutex
	var lines, failures []string
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := p.stop()
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				failures = append(failures, err.Error())
			case r.sent-r.received > maxPingLoss || r.gap > maxPingGap:
				failures = append(failures, fmt.Sprintf("%s → %s lost %d of %d probes, %d in a row (bounds %d, %d in a row)",
					p.from, p.to, r.sent-r.received, r.sent, r.gap, maxPingLoss, maxPingGap))
			default:
				lines = append(lines, fmt.Sprintf("%s→%s %d/%d", p.from.host, p.to.host, r.sent-r.received, r.sent))
			}
		}()
	}
	wg.Wait()
	sort.Strings(lines)
	sort.Strings(failures)
	t.Logf("%s: probes lost/sent per pair: %s", step, strings.Join(lines, ", "))
	if len(failures) > 0 {
		t.Errorf("%s: containers did not keep talking:\n%s", step, strings.Join(failures, "\n"))
	}
}
