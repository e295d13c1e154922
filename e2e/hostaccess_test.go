//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"
)

// shimStatus is the host access part of a network in `grapevine status --json`.
type shimStatus struct {
	HostAccess string            `json:"host_access"`
	Allocated  bool              `json:"host_access_allocated"`
	HostShims  map[string]string `json:"host_shims"`
}

// shimOf reads host's status of the network on subnet.
func shimOf(host, subnet string) (shimStatus, error) {
	_, raw, err := statusOf(host)
	if err != nil {
		return shimStatus{}, err
	}
	var st struct {
		Networks []struct {
			Subnet string `json:"subnet"`
			shimStatus
		} `json:"networks"`
	}
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		return shimStatus{}, fmt.Errorf("decode status of %s: %v", host, err)
	}
	for _, n := range st.Networks {
		if n.Subnet == subnet {
			return n.shimStatus, nil
		}
	}
	return shimStatus{}, fmt.Errorf("no network %s in the status of %s", subnet, host)
}

// TestMacvlanHostAccessAllocated: -o host_access=true without any
// --aux-address on three hosts. Each host's shim address comes from the
// cluster IPAM: inside --ip-range, marked allocated, different on every
// host, and `grapevine status` (JSON and text) lists all three on each
// host. Each host reaches its own container and the container reaches its
// host's shim. A killed plugin comes back with the same shim and host
// access. A network removed on one host frees its shim address: another
// host's containers then fill the range with it, and one more is refused
// saying the range is full.
func TestMacvlanHostAccessAllocated(t *testing.T) {
	needHosts(t, 3)
	hosts := clusterHosts()[:3]
	for _, h := range hosts {
		checkClean(t, h)
		waitMembers(t, 30*time.Second, h, clusterHosts())
	}
	// Another subnet on the underlay's wire (eth0): the shims and the
	// containers meet there without a router. The /29 range has room for
	// the three shims and five containers.
	const nw, subnet, rng = "mvauto", "198.19.95.0/24", "198.19.95.8/29"
	args := []string{"-o", "mode=macvlan", "-o", "parent=eth0", "-o", "host_access=true", "--subnet", subnet, "--ip-range", rng}
	for _, h := range hosts[:2] {
		createNetwork(t, h, nw, args...)
	}
	// h3's network is removed by the test itself.
	full := append([]string{"network", "create", "-d", pluginName, "--ipam-driver", pluginName}, args...)
	h3net := mustDocker(t, "h3", append(full, nw)...)
	h3removed := false
	t.Cleanup(func() {
		if !h3removed {
			_, _, _ = docker("h3", "network", "rm", nw)
		}
	})

	shims := map[string]string{} // host → its shim address
	owner := map[string]string{} // shim address → host
	for _, h := range hosts {
		st, err := shimOf(h, subnet)
		if err != nil {
			t.Fatal(err)
		}
		a, err := netip.ParseAddr(st.HostAccess)
		if err != nil || !netip.MustParsePrefix(rng).Contains(a) || !st.Allocated {
			t.Fatalf("%s: shim %q (allocated %v), want an allocated address in %s", h, st.HostAccess, st.Allocated, rng)
		}
		if o, dup := owner[st.HostAccess]; dup {
			t.Fatalf("%s and %s have the same shim address %s", o, h, st.HostAccess)
		}
		shims[h], owner[st.HostAccess] = st.HostAccess, h
	}
	t.Logf("shims %v", shims)

	t.Run("status lists every host's shim", func(t *testing.T) {
		for _, h := range hosts {
			eventually(t, 20*time.Second, h+" lists the three shims", func() error {
				st, err := shimOf(h, subnet)
				if err != nil {
					return err
				}
				got := map[string]string{}
				for node, a := range st.HostShims {
					got[nodeHost(node)] = a
				}
				if fmt.Sprint(got) != fmt.Sprint(shims) {
					return fmt.Errorf("host_shims %v, want %v", got, shims)
				}
				return nil
			})
		}
		text := mustHarness(t, "status", "h1")
		for _, h := range hosts {
			if !strings.Contains(text, "="+shims[h]) || !strings.Contains(text, "host access via "+shims["h1"]+" (allocated)") {
				t.Errorf("text status of h1 lacks %s's shim %s or its own as allocated:\n%s", h, shims[h], text)
			}
		}
	})

	cs := map[string]ctr{}
	for _, h := range hosts[:2] {
		cs[h] = startCtr(t, h, nw, "mvauto-"+h)
	}
	reach := func(t *testing.T, h, phase string) {
		t.Helper()
		c := cs[h]
		eventually(t, 20*time.Second, phase+h+" → its own container", func() error { return hostPing(h, c.ip) })
		eventually(t, 20*time.Second, phase+c.String()+" → its host's shim "+shims[h], func() error { return ctrPing(h, c.id, shims[h]) })
	}
	t.Run("each host and its container reach each other", func(t *testing.T) {
		for _, h := range hosts[:2] {
			reach(t, h, "")
		}
	})

	t.Run("a killed plugin keeps its shim", func(t *testing.T) {
		old, err := pluginPID("h2")
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
			t.Fatalf("kill -9 %d: %v", old, err)
		}
		eventually(t, 60*time.Second, "docker restarts the plugin on h2", func() error {
			pid, err := pluginPID("h2")
			if err != nil {
				return err
			}
			if pid == old {
				return fmt.Errorf("still the old process %d", pid)
			}
			_, err = shimOf("h2", subnet)
			return err
		})
		if st, _ := shimOf("h2", subnet); st.HostAccess != shims["h2"] {
			t.Errorf("h2's shim after the restart: %q, want %s", st.HostAccess, shims["h2"])
		}
		reach(t, "h2", "after the restart: ")
	})

	t.Run("a removed network frees its shim address", func(t *testing.T) {
		mustDocker(t, "h3", "network", "rm", nw)
		h3removed = true
		assertNetworkGone(t, "h3", h3net)
		// 8 addresses: the two shims left, two containers, and four
		// free, among them h3's former shim.
		got := map[string]bool{}
		for i := range 4 {
			c := startCtr(t, "h1", nw, fmt.Sprintf("mvauto-fill%d", i))
			if o, dup := owner[c.ip]; dup && o != "h3" {
				t.Fatalf("%s got %s's shim address", c, o)
			}
			got[c.ip] = true
		}
		if !got[shims["h3"]] {
			t.Errorf("h1's containers got %v, not h3's former shim %s", got, shims["h3"])
		}
		stderr := runFails(t, "h1", "mvauto-over", "--network", nw, image, "sleep", "3600")
		if !strings.Contains(stderr, "the range is full") {
			t.Errorf("a ninth address refused with %q, want it to say the range is full", stderr)
		}
	})
}
