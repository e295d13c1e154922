//go:build e2e

package e2e

import (
	"fmt"
	"testing"
)

func TestTraffic(t *testing.T) {
	singleHost(t)
	const h = "h1"
	checkClean(t, h)
	createNetwork(t, h, "tra", "--subnet", "198.19.13.0/24")
	createNetwork(t, h, "trb", "--subnet", "198.19.14.0/24")
	a1 := runContainer(t, h, "--network", "tra", "--name", "tr-a1", image, "sleep", "3600")
	a2 := runContainer(t, h, "--network", "tra", "--name", "tr-a2", image, "sleep", "3600")
	b1 := runContainer(t, h, "--network", "trb", "--name", "tr-b1", image, "sleep", "3600")
	b2 := runContainer(t, h, "--network", "trb", "--name", "tr-b2", image, "sleep", "3600")
	a2ip := containerIP(t, h, a2, "tra")
	b1ip := containerIP(t, h, b1, "trb")
	b2ip := containerIP(t, h, b2, "trb")

	t.Run("same network by address and by name", func(t *testing.T) {
		for _, target := range []string{a2ip, "tr-a2"} {
			if out, stderr, err := docker(h, "exec", a1, "ping", "-c", "2", "-W", "2", target); err != nil {
				t.Errorf("ping %s from tr-a1: %v\n%s%s", target, err, out, stderr)
			}
		}
		if out, stderr, err := docker(h, "exec", a2, "ping", "-c", "1", "-W", "2", "tr-a1"); err != nil {
			t.Errorf("ping tr-a1 from tr-a2: %v\n%s%s", err, out, stderr)
		}
	})

	t.Run("different networks are isolated", func(t *testing.T) {
		// each prober first reaches a container of its own network
		expectIsolated(t, "tr-a1 (tra)", inContainer(h, a1), a2ip, b1ip, false)
		expectIsolated(t, "tr-b1 (trb)", inContainer(h, b1), b2ip, a2ip, false)
	})

	t.Run("egress to the LAN is masqueraded", func(t *testing.T) {
		peer, err := peerSeenByLAN(t, 9001, func() (string, string, error) {
			return docker(h, "exec", a1, "sh", "-c", fmt.Sprintf("nc -w 3 %s 9001 </dev/null", lanAddr))
		})
		if err != nil {
			t.Fatalf("container to LAN machine: %v", err)
		}
		if peer != hostAddr(h) {
			t.Errorf("LAN machine saw source %s, want the host's underlay address %s", peer, hostAddr(h))
		}
	})

	t.Run("internal network has no egress", func(t *testing.T) {
		createNetwork(t, h, "trint", "--internal", "--subnet", "198.19.15.0/24")
		i1 := runContainer(t, h, "--network", "trint", image, "sleep", "3600")
		i2 := runContainer(t, h, "--network", "trint", image, "sleep", "3600")
		// positive control: the internal containers reach each other; then the
		// LAN gets no reply (or has no route at all)
		expectIsolated(t, "container on --internal network", inContainer(h, i1), containerIP(t, h, i2, "trint"), lanAddr, true)
		if peer, err := peerSeenByLAN(t, 9002, func() (string, string, error) {
			return docker(h, "exec", i1, "sh", "-c", fmt.Sprintf("nc -w 2 %s 9002 </dev/null", lanAddr))
		}); err == nil {
			t.Errorf("container on --internal network connected to the LAN machine (seen from %s)", peer)
		}
	})
}
