//go:build e2e

package e2e

import (
	"fmt"
	"testing"
	"time"
)

// Negative checks ("X cannot reach Y") pass whenever the probe itself breaks,
// so every one of them goes through expectIsolated: the same prober must first
// reach a control address, and the probe must end in busybox ping's own
// "no reply" verdict, never in an exec error or another exit status.

func inContainer(host, c string) prober {
	return func(cmd ...string) (string, string, error) {
		return docker(host, append([]string{"exec", c}, cmd...)...)
	}
}

func inHostNS(host string) prober {
	return func(cmd ...string) (string, string, error) { return inHost(host, cmd...) }
}

// pingOnce is the positive form: one ping to addr answered.
func pingOnce(run prober, addr string) error {
	out, stderr, err := run("busybox", "ping", "-c", "1", "-W", "1", addr)
	if err != nil {
		return fmt.Errorf("ping %s: %v: %s%s", addr, err, out, stderr)
	}
	return nil
}

// expectIsolated fails t unless who, after reaching control (polled for up
// to 20 s: the positive control, same prober), gets no reply from target.
// noRouteOK also accepts the kernel's refusal for lack of a route.
func expectIsolated(t *testing.T, who string, run prober, control, target string, noRouteOK bool) {
	t.Helper()
	eventually(t, 20*time.Second, who+" reaches "+control+" (positive control)", func() error {
		return pingOnce(run, control)
	})
	if err := pingVerdict(run, target, noRouteOK); err != nil {
		t.Errorf("%s must get no reply from %s: %v", who, target, err)
	}
}
