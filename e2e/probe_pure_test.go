package e2e

// The parts of the e2e helpers that need no harness: they build without the
// e2e tag, so `make unit` checks them (probe_pure_guard_test.go) on every run.

import (
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"time"
)

// prober runs a command somewhere (a container, a host namespace, the LAN
// machine) and returns its stdout, stderr and error like runCmd.
type prober func(cmd ...string) (string, string, error)

// noReplyRe is the statistics line of a busybox ping that got no answer.
var noReplyRe = regexp.MustCompile(`(?m)^\d+ packets transmitted, 0 packets received, 100% packet loss$`)

// noRouteMsg is what busybox ping prints when the kernel has no route for
// the destination (a network without a default route).
const noRouteMsg = "ping: sendto: Network is unreachable"

// pingVerdict runs `busybox ping -c 2 -W 1 addr` through run and returns nil
// only if ping ran and got no reply: exit status 1 with its 0-received
// statistics line or, when noRouteOK, exit status 1 with the kernel's
// no-route refusal. A reply, a failed exec or any other status is an error.
func pingVerdict(run prober, addr string, noRouteOK bool) error {
	out, stderr, err := run("busybox", "ping", "-c", "2", "-W", "1", addr)
	if err == nil {
		return fmt.Errorf("ping %s got a reply:\n%s", addr, out)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		return fmt.Errorf("ping %s did not run to a verdict (want exit status 1 for no reply): %v\nstdout: %s\nstderr: %s", addr, err, out, stderr)
	}
	switch {
	case noReplyRe.MatchString(out):
		return nil
	case noRouteOK && strings.TrimSpace(stderr) == noRouteMsg:
		return nil
	}
	return fmt.Errorf("ping %s exited 1 without ping's no-reply statistics (an exec failure?):\nstdout: %s\nstderr: %s", addr, out, stderr)
}

// reachRound has a prober check the addresses in targets and returns those
// that did not answer (pingAll bound to one container).
type reachRound func(targets []string) ([]string, error)

// pollReach repeats round until every target answered, shrinking the list
// to the addresses still missing. A round that fails (exec error) retries
// the same list; an empty list is refused up front, so no round can count
// "nothing pinged" as reached. It returns nil or what was still missing at
// the deadline.
func pollReach(timeout time.Duration, targets []string, round reachRound) error {
	if len(targets) == 0 {
		return errors.New("no address to reach")
	}
	deadline := time.Now().Add(timeout)
	for {
		missing, err := round(targets)
		if err == nil && len(missing) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("cannot reach %v (last round failed: %v)", targets, err)
			}
			return fmt.Errorf("cannot reach %v", missing)
		}
		if err == nil {
			targets = missing
		} else {
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// statusTable is one table of the text `grapevine status`: its header
// cells and rows, cells split at runs of two or more spaces.
type statusTable struct {
	header []string
	rows   [][]string
}

var cellSep = regexp.MustCompile(`\s{2,}`)

// parseStatusTable finds the table titled title (a line of its own) in the
// text status and returns it; it ends at the first blank line.
func parseStatusTable(out, title string) (statusTable, error) {
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if strings.TrimSpace(l) != title {
			continue
		}
		if i+1 >= len(lines) {
			break
		}
		tb := statusTable{header: cellSep.Split(strings.TrimSpace(lines[i+1]), -1)}
		for _, r := range lines[i+2:] {
			if strings.TrimSpace(r) == "" {
				break
			}
			tb.rows = append(tb.rows, cellSep.Split(strings.TrimRight(r, " "), -1))
		}
		return tb, nil
	}
	return statusTable{}, fmt.Errorf("no %s table in the status:\n%s", title, out)
}

// cell returns the row's cell under column name ("" if the row is short).
func (tb statusTable) cell(row []string, name string) string {
	for i, h := range tb.header {
		if h == name && i < len(row) {
			return row[i]
		}
	}
	return ""
}
