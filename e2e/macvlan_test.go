//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"grapevine/internal/testreq"
)

// macvlanNetStatus is the macvlan part of a network in `grapevine status --json`.
type macvlanNetStatus struct {
	ID         string `json:"id"`
	Mode       string `json:"mode"`
	Subnet     string `json:"subnet"`
	Parent     string `json:"parent"`
	HostAccess string `json:"host_access"`
	Reach      string `json:"reach"`
	Internal   bool   `json:"internal"`
}

func macvlanStatus(t *testing.T, host, netID string) macvlanNetStatus {
	t.Helper()
	_, raw, err := statusOf(host)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Networks []macvlanNetStatus `json:"networks"`
	}
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		t.Fatalf("decode status of %s: %v", host, err)
	}
	for _, n := range st.Networks {
		if strings.HasPrefix(netID, n.ID) || strings.HasPrefix(n.ID, netID) {
			return n
		}
	}
	t.Fatalf("network %.12s not in the status of %s:\n%s", netID, host, raw)
	return macvlanNetStatus{}
}

// hostPing pings addr once from host's own namespace (not from a container).
func hostPing(host, addr string) error {
	out, stderr, err := inHost(host, "busybox", "ping", "-c", "1", "-W", "1", addr)
	if err != nil {
		return fmt.Errorf("ping %s from %s: %v: %s%s", addr, host, err, out, stderr)
	}
	return nil
}

func lanPing(addr string) error {
	out, stderr, err := inLAN("busybox", "ping", "-c", "1", "-W", "1", addr)
	if err != nil {
		return fmt.Errorf("ping %s from the LAN machine: %v: %s%s", addr, err, out, stderr)
	}
	return nil
}

func ctrPing(host, c, addr string) error {
	out, stderr, err := docker(host, "exec", c, "ping", "-c", "1", "-W", "1", addr)
	if err != nil {
		return fmt.Errorf("ping %s from container %.12s on %s: %v: %s%s", addr, c, host, err, out, stderr)
	}
	return nil
}

// vlanLinks lists the host's links with a dot in their name (VLAN links).
func vlanLinks(t *testing.T, host string) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(mustInHost(t, host, "ip", "-o", "link", "show"), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name := strings.TrimSuffix(f[1], ":")
		if i := strings.IndexByte(name, '@'); i >= 0 {
			name = name[:i]
		}
		if strings.Contains(name, ".") {
			out = append(out, name)
		}
	}
	return out
}

// TestMacvlan runs macvlan mode on three hosts: one `network create` per host puts
// containers directly on the underlay LAN (198.18.0.0/24, eth0 on every host)
// with addresses from --ip-range that are distinct across the hosts; they
// reach each other, the LAN machine and the other hosts without encapsulation
// or port mapping; host_access gives a host its own containers (h1, h3) and
// its absence does not (h2); a restarted host keeps its container's address;
// VLAN parents run where the kernel has 802.1q and are skipped with the reason
// where it does not (a failure with GV_REQUIRE=vlan), an out-of-range VLAN id
// is refused on every kernel; an internal-only network has no way out; removal leaves no
// link behind.
func TestMacvlan(t *testing.T) {
	needHosts(t, 3)
	hosts := clusterHosts()[:3]
	for _, h := range hosts {
		checkClean(t, h)
		waitMembers(t, 30*time.Second, h, clusterHosts())
	}
	const (
		nw      = "lan"
		subnet  = "198.18.0.0/24"
		ipRange = "198.18.0.128/25"
		gateway = "198.18.0.254"
	)
	shim := map[string]string{"h1": "198.18.0.101", "h2": "198.18.0.102", "h3": "198.18.0.103"}
	netIDs := map[string]string{}
	for _, h := range hosts {
		access := "true"
		if h == "h2" {
			access = "false" // the host_access-off case
		}
		args := []string{"-o", "mode=macvlan", "-o", "parent=eth0", "-o", "host_access=" + access,
			"--subnet", subnet, "--gateway", gateway, "--ip-range", ipRange}
		for _, o := range hosts {
			args = append(args, "--aux-address", "host-"+o+"="+shim[o])
		}
		netIDs[h] = createNetwork(t, h, nw, args...)
	}
	var cs []ctr
	for _, h := range hosts {
		cs = append(cs, startCtr(t, h, nw, "mv-"+h))
	}
	byHost := map[string]ctr{}
	for _, c := range cs {
		byHost[c.host] = c
	}

	t.Run("distinct addresses from the range, the LAN router as gateway", func(t *testing.T) {
		distinct(t, cs)
		r := netip.MustParsePrefix(ipRange)
		for _, c := range cs {
			if a, err := netip.ParseAddr(c.ip); err != nil || !r.Contains(a) {
				t.Errorf("%s: address outside --ip-range %s", c, ipRange)
			}
			if gw := mustDocker(t, c.host, "inspect", "-f", `{{(index .NetworkSettings.Networks "`+nw+`").Gateway}}`, c.id); gw != gateway {
				t.Errorf("%s: gateway %q, want %s", c, gw, gateway)
			}
		}
		t.Logf("containers %v", cs)
	})

	t.Run("no bridge, no vxlan, no rules", func(t *testing.T) {
		for _, h := range hosts {
			for _, l := range grapevineLinks(t, h, "") {
				if strings.HasPrefix(l, "gvb-") || strings.HasPrefix(l, "gvx-") {
					t.Errorf("%s: %s exists for a macvlan network", h, l)
				}
			}
			if rules := grapevineRules(t, h, netIDs[h]); len(rules) > 0 {
				t.Errorf("%s: iptables rules for a macvlan network:\n%s", h, strings.Join(rules, "\n"))
			}
			st := macvlanStatus(t, h, netIDs[h])
			if st.Mode != "macvlan" || st.Parent != "eth0" || st.Reach != "LAN of eth0, gateway "+gateway {
				t.Errorf("%s: status %+v", h, st)
			}
		}
	})

	t.Run("cross-host ping", func(t *testing.T) { fullMesh(t, 20*time.Second, cs) })

	t.Run("LAN machine and containers reach each other", func(t *testing.T) {
		for _, c := range cs {
			eventually(t, 20*time.Second, "LAN machine → "+c.String(), func() error { return lanPing(c.ip) })
			eventually(t, 20*time.Second, c.String()+" → LAN machine", func() error { return ctrPing(c.host, c.id, lanAddr) })
		}
		// another host is a plain LAN machine for a container
		c := byHost["h1"]
		eventually(t, 20*time.Second, c.String()+" → h2's address", func() error { return ctrPing(c.host, c.id, hostAddr("h2")) })
	})

	t.Run("no port mapping needed", func(t *testing.T) {
		web := webServer(t, "h3", "mv-web", "--network", nw, "-p", "8090:80")
		ip := containerIP(t, "h3", web, nw)
		expectHTTP(t, "web server on h3 from the LAN at its own address", "mv-web", func() (string, string, error) {
			return inLAN(httpGetCmd(ip, 80)...)
		})
		mustDocker(t, "h3", "rm", "-f", web)
	})

	t.Run("host_access on and off", func(t *testing.T) {
		for _, h := range []string{"h1", "h3"} {
			c := byHost[h]
			eventually(t, 20*time.Second, h+" → its own container", func() error { return hostPing(h, c.ip) })
			eventually(t, 20*time.Second, c.String()+" → its host's shim", func() error { return ctrPing(h, c.id, shim[h]) })
			if st := macvlanStatus(t, h, netIDs[h]); st.HostAccess != shim[h] {
				t.Errorf("%s: status host_access %q, want %s", h, st.HostAccess, shim[h])
			}
		}
		// h2 has no shim: Linux blocks parent ↔ child. h2 itself reaches the
		// LAN machine (the positive control) but gets no reply from its container.
		expectIsolated(t, "h2 (without host_access)", inHostNS("h2"), lanAddr, byHost["h2"].ip, false)
		if links := grapevineLinks(t, "h2", "gvh-"); len(links) > 0 {
			t.Errorf("h2 has a shim without host_access: %v", links)
		}
	})

	t.Run("a restarted host keeps its container's address", func(t *testing.T) {
		// An address of h1's own block: what a fresh container gets there.
		probe := runContainer(t, "h1", "--network", nw, image, "sleep", "3600")
		ip := containerIP(t, "h1", probe, nw)
		mustDocker(t, "h1", "rm", "-f", probe)
		keep := runContainer(t, "h1", "--network", nw, "--ip", ip, "--restart", "always", "--name", "mv-keep", image, "sleep", "36000")
		if out, stderr, err := harnessCmd("dockerd-restart", "h1"); err != nil {
			t.Fatalf("dockerd-restart h1: %v: %s%s", err, out, stderr)
		}
		eventually(t, 60*time.Second, "mv-keep running again with "+ip, func() error {
			out, stderr, err := docker("h1", "inspect", "-f", `{{.State.Running}} {{(index .NetworkSettings.Networks "`+nw+`").IPAddress}}`, keep)
			if err != nil {
				return fmt.Errorf("%v: %s", err, stderr)
			}
			if got := strings.TrimSpace(out); got != "true "+ip {
				return fmt.Errorf("state/address %q, want running with %s", got, ip)
			}
			return nil
		})
		eventually(t, 30*time.Second, "LAN machine → mv-keep", func() error { return lanPing(ip) })
		eventually(t, 30*time.Second, "h2's container → mv-keep", func() error { return ctrPing("h2", byHost["h2"].id, ip) })
		eventually(t, 30*time.Second, "h1 → mv-keep (host_access after the restart)", func() error { return hostPing("h1", ip) })
	})

	t.Run("vlan id out of range refused", func(t *testing.T) {
		// needs no 802.1q: the driver refuses before asking the kernel
		before := vlanLinks(t, "h1")
		out, stderr, err := docker("h1", "network", "create", "-d", pluginName, "--ipam-driver", pluginName,
			"-o", "mode=macvlan", "-o", "parent=eth0.5000", "--subnet", "198.19.93.0/24", "vl5000")
		if err == nil {
			_, _, _ = docker("h1", "network", "rm", "vl5000")
			t.Fatalf("network create on eth0.5000 succeeded (%s)", strings.TrimSpace(out))
		}
		if want := "-o parent=eth0.5000: VLAN id 5000 is out of range: use 1 to 4094"; !strings.Contains(stderr, want) {
			t.Errorf("refusal %q does not say %q", strings.TrimSpace(stderr), want)
		}
		if _, _, err := docker("h1", "network", "inspect", "vl5000"); err == nil {
			t.Errorf("refused network vl5000 exists")
		}
		if got := vlanLinks(t, "h1"); strings.Join(got, ",") != strings.Join(before, ",") {
			t.Errorf("refused vlan network left links %v", got)
		}
	})

	t.Run("vlan", func(t *testing.T) {
		before := vlanLinks(t, "h1")
		out, stderr, err := docker("h1", "network", "create", "-d", pluginName, "--ipam-driver", pluginName,
			"-o", "mode=macvlan", "-o", "parent=eth0.30", "--subnet", "198.19.30.0/24", "vl30")
		if err != nil {
			if !strings.Contains(stderr, "no 802.1q VLAN support") {
				t.Fatalf("network create on eth0.30: %v: %s%s", err, out, stderr)
			}
			if got := vlanLinks(t, "h1"); strings.Join(got, ",") != strings.Join(before, ",") {
				t.Fatalf("refused vlan network left links %v", got)
			}
			testreq.Missing(t, testreq.VLAN, "grapevine refused eth0.30 with: "+strings.TrimSpace(stderr))
		}
		mustDocker(t, "h1", "network", "rm", "vl30")
		// registered first, so it runs after the networks' own cleanups
		t.Cleanup(func() {
			for _, h := range hosts {
				if got := vlanLinks(t, h); len(got) > 0 {
					t.Errorf("%s: vlan links left after their networks: %v", h, got)
				}
			}
		})
		for _, vlan := range []int{30, 40} {
			name := fmt.Sprintf("vl%d", vlan)
			for _, h := range hosts {
				createNetwork(t, h, name, "-o", "mode=macvlan", "-o", fmt.Sprintf("parent=eth0.%d", vlan),
					"--subnet", fmt.Sprintf("198.19.%d.0/24", vlan))
				mustInHost(t, h, "ip", "-d", "link", "show", fmt.Sprintf("eth0.%d", vlan))
			}
			var group []ctr
			for _, h := range hosts {
				group = append(group, startCtr(t, h, name, fmt.Sprintf("%s-%s", name, h)))
			}
			fullMesh(t, 20*time.Second, group)
		}
	})

	t.Run("internal-only without a parent", func(t *testing.T) {
		id := createNetwork(t, "h1", "mvint", "-o", "mode=macvlan", "--subnet", "198.19.41.0/24")
		a := startCtr(t, "h1", "mvint", "mvint-a")
		b := startCtr(t, "h1", "mvint", "mvint-b")
		eventually(t, 20*time.Second, "internal containers reach each other", func() error { return ctrPing("h1", a.id, b.ip) })
		routes := mustDocker(t, "h1", "exec", a.id, "ip", "route")
		if strings.Contains(routes, "default") {
			t.Errorf("a container of an internal-only network has a default route:\n%s", routes)
		}
		// b is the positive control; the LAN has no route at all (or no reply)
		expectIsolated(t, "mvint-a (internal only)", inContainer("h1", a.id), b.ip, lanAddr, true)
		st := macvlanStatus(t, "h1", id)
		if !st.Internal || !strings.HasPrefix(st.Reach, "internal only") {
			t.Errorf("status %+v does not say internal only", st)
		}
	})
}
