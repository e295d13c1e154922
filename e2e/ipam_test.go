//go:build e2e

package e2e

import (
	"net/netip"
	"strings"
	"testing"
)

func TestIPAM(t *testing.T) {
	singleHost(t)
	const h = "h1"
	checkClean(t, h)

	t.Run("subnet gateway and sequential addresses", func(t *testing.T) {
		createNetwork(t, h, "ipam1", "--subnet", "198.19.10.0/24")
		cfg := mustDocker(t, h, "network", "inspect", "-f", `{{range .IPAM.Config}}{{.Subnet}} {{end}}`, "ipam1")
		if strings.TrimSpace(cfg) != "198.19.10.0/24" {
			t.Errorf("network inspect subnet = %q, want 198.19.10.0/24", cfg)
		}
		c1 := runContainer(t, h, "--network", "ipam1", image, "sleep", "3600")
		c2 := runContainer(t, h, "--network", "ipam1", image, "sleep", "3600")
		if got := containerIP(t, h, c1, "ipam1"); got != "198.19.10.2" {
			t.Errorf("first container address = %s, want 198.19.10.2", got)
		}
		if got := containerIP(t, h, c2, "ipam1"); got != "198.19.10.3" {
			t.Errorf("second container address = %s, want 198.19.10.3", got)
		}
		gw := mustDocker(t, h, "inspect", "-f", `{{(index .NetworkSettings.Networks "ipam1").Gateway}}`, c1)
		if gw != "198.19.10.1" {
			t.Errorf("container gateway = %s, want 198.19.10.1", gw)
		}
		route := mustDocker(t, h, "exec", c1, "ip", "route")
		if !strings.Contains(route, "default via 198.19.10.1") {
			t.Errorf("container routes lack default via 198.19.10.1:\n%s", route)
		}
		c3 := runContainer(t, h, "--network", "ipam1", "--ip", "198.19.10.50", image, "sleep", "3600")
		if got := containerIP(t, h, c3, "ipam1"); got != "198.19.10.50" {
			t.Errorf("--ip 198.19.10.50 gave %s", got)
		}
		ifaddr := mustDocker(t, h, "exec", c3, "ip", "-o", "-4", "addr", "show", "eth0")
		if !strings.Contains(ifaddr, "198.19.10.50/24") {
			t.Errorf("container eth0 lacks 198.19.10.50/24: %s", ifaddr)
		}
	})

	t.Run("ip-range", func(t *testing.T) {
		createNetwork(t, h, "ipam2", "--subnet", "198.19.11.0/24", "--ip-range", "198.19.11.128/25")
		rng := netip.MustParsePrefix("198.19.11.128/25")
		for range 2 {
			c := runContainer(t, h, "--network", "ipam2", image, "sleep", "3600")
			ip := containerIP(t, h, c, "ipam2")
			a, err := netip.ParseAddr(ip)
			if err != nil || !rng.Contains(a) {
				t.Errorf("container address %q is not in --ip-range %s", ip, rng)
			}
		}
	})

	t.Run("gateway", func(t *testing.T) {
		createNetwork(t, h, "ipam3", "--subnet", "198.19.12.0/24", "--gateway", "198.19.12.254")
		cfg := mustDocker(t, h, "network", "inspect", "-f", `{{range .IPAM.Config}}{{.Gateway}}{{end}}`, "ipam3")
		if cfg != "198.19.12.254" {
			t.Errorf("network inspect gateway = %q, want 198.19.12.254", cfg)
		}
		c := runContainer(t, h, "--network", "ipam3", image, "sleep", "3600")
		if gw := mustDocker(t, h, "inspect", "-f", `{{(index .NetworkSettings.Networks "ipam3").Gateway}}`, c); gw != "198.19.12.254" {
			t.Errorf("container gateway = %s, want 198.19.12.254", gw)
		}
		if ip := containerIP(t, h, c, "ipam3"); ip == "198.19.12.254" {
			t.Errorf("container got the gateway address %s", ip)
		}
		route := mustDocker(t, h, "exec", c, "ip", "route")
		if !strings.Contains(route, "default via 198.19.12.254") {
			t.Errorf("container routes lack default via 198.19.12.254:\n%s", route)
		}
	})

	t.Run("default pool", func(t *testing.T) {
		pool := netip.MustParsePrefix("198.19.128.0/17")
		var subnets []netip.Prefix
		for _, name := range []string{"ipam4", "ipam5"} {
			createNetwork(t, h, name)
			sub := mustDocker(t, h, "network", "inspect", "-f", `{{range .IPAM.Config}}{{.Subnet}}{{end}}`, name)
			p, err := netip.ParsePrefix(sub)
			if err != nil {
				t.Fatalf("network %s: subnet %q: %v", name, sub, err)
			}
			if p.Bits() != 24 || !pool.Contains(p.Addr()) {
				t.Errorf("network %s got subnet %s, want a /24 inside POOL %s", name, p, pool)
			}
			subnets = append(subnets, p)
			c := runContainer(t, h, "--network", name, image, "sleep", "3600")
			a, err := netip.ParseAddr(containerIP(t, h, c, name))
			if err != nil || !p.Contains(a) {
				t.Errorf("container on %s got %v, outside %s", name, a, p)
			}
		}
		if len(subnets) == 2 && subnets[0].Overlaps(subnets[1]) {
			t.Errorf("two networks without --subnet got overlapping subnets %s and %s", subnets[0], subnets[1])
		}
	})
}
