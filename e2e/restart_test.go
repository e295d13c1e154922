//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRestartWithoutLoss kills the plugin, then restarts the whole daemon, and checks
// that running containers keep their addresses, connectivity and published port, and
// that grapevine re-creates kernel state deleted by hand while it was down.
func TestRestartWithoutLoss(t *testing.T) {
	singleHost(t)
	const h = "h1"
	checkClean(t, h)
	netID := createNetwork(t, h, "rst", "--subnet", "198.19.19.0/24")
	// --restart always: containers come back when dockerd does; fixed addresses so
	// that "intact" is well defined across the daemon restart.
	web := webServer(t, h, "survivor", "--network", "rst", "--name", "rst-web", "--ip", "198.19.19.10",
		"--restart", "always", "-p", "8081:80")
	cli := runContainer(t, h, "--network", "rst", "--name", "rst-cli", "--ip", "198.19.19.11",
		"--restart", "always", image, "sleep", "36000")
	addr := hostAddr(h)

	check := func(t *testing.T, phase string) {
		t.Helper()
		for c, want := range map[string]string{web: "198.19.19.10", cli: "198.19.19.11"} {
			if got := containerIP(t, h, c, "rst"); got != want {
				t.Errorf("%s: container address %s, want %s", phase, got, want)
			}
		}
		eventually(t, 30*time.Second, phase+": container to container", func() error {
			out, stderr, err := docker(h, "exec", cli, "ping", "-c", "1", "-W", "1", "rst-web")
			if err != nil {
				return fmt.Errorf("%v: %s%s", err, out, stderr)
			}
			return nil
		})
		expectHTTP(t, phase+": published port from the LAN", "survivor", func() (string, string, error) {
			return inLAN(httpGetCmd(addr, 8081)...)
		})
		eventually(t, 30*time.Second, phase+": egress to the LAN", func() error {
			peer, err := peerSeenByLAN(t, 9003, func() (string, string, error) {
				return docker(h, "exec", cli, "sh", "-c", fmt.Sprintf("nc -w 2 %s 9003 </dev/null", lanAddr))
			})
			if err != nil {
				return err
			}
			if peer != addr {
				return fmt.Errorf("LAN saw %s, want %s", peer, addr)
			}
			return nil
		})
		// a new container gets a fresh, distinct address
		n := runContainer(t, h, "--network", "rst", image, "sleep", "3600")
		ip := containerIP(t, h, n, "rst")
		if ip == "198.19.19.10" || ip == "198.19.19.11" || !strings.HasPrefix(ip, "198.19.19.") {
			t.Errorf("%s: new container got %q", phase, ip)
		}
		mustDocker(t, h, "rm", "-f", n)
	}
	check(t, "before")

	t.Run("plugin killed", func(t *testing.T) {
		old, err := pluginPID(h)
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
			t.Fatalf("kill -9 %d: %v", old, err)
		}
		eventually(t, 60*time.Second, "docker restarts the plugin", func() error {
			pid, err := pluginPID(h)
			if err != nil {
				return err
			}
			if pid == old {
				return fmt.Errorf("still the old process %d", pid)
			}
			return nil
		})
		check(t, "after plugin kill")
	})

	t.Run("dockerd restarted, state deleted by hand meanwhile", func(t *testing.T) {
		bridges := grapevineLinks(t, h, netID[:11])
		if len(bridges) == 0 {
			t.Fatalf("no grapevine link of network %.12s", netID)
		}
		mustHarness(t, "dockerd-stop", h)
		if _, err := pluginPID(h); err == nil {
			t.Fatalf("plugin still runs after dockerd stopped")
		}
		// Delete the network's links and its masquerade rule by hand. A
		// stopping dockerd unmounts the plugin's propagated mount, and with
		// it the network's namespace, so some links may be gone already.
		for _, l := range grapevineLinks(t, h, netID[:11]) {
			// a veth's peer goes with it, a namespace's links with the
			// namespace's last link deleted: skip what is already gone
			if _, _, err := inLinkNS(h, l, "ip", "link", "show", "dev", l); err == nil {
				mustInLinkNS(t, h, l, "ip", "link", "del", l)
			}
		}
		masq := ""
		for _, r := range grapevineRules(t, h, netID) {
			if strings.HasPrefix(r, "nat: ") && strings.Contains(r, "MASQUERADE") && strings.Contains(r, "198.19.19.0/24") {
				masq = strings.TrimPrefix(r, "nat: ")
			}
		}
		if masq == "" {
			t.Fatalf("no masquerade rule of network %.12s while dockerd is down", netID)
		}
		del := append([]string{"iptables", "-t", "nat"}, strings.Fields(strings.Replace(masq, "-A ", "-D ", 1))...)
		// the comment is quoted in -S output; pass it unquoted
		for i, f := range del {
			del[i] = strings.Trim(f, `"`)
		}
		mustInHost(t, h, del...)

		mustHarness(t, "dockerd-start", h)
		eventually(t, 60*time.Second, "plugin back after dockerd start", func() error {
			_, err := pluginPID(h)
			return err
		})
		eventually(t, 60*time.Second, "containers running again", func() error {
			out, _, err := docker(h, "inspect", "-f", "{{.State.Running}}", web, cli)
			if err != nil || strings.Count(out, "true") != 2 {
				return fmt.Errorf("running: %q %v", out, err)
			}
			return nil
		})
		eventually(t, 60*time.Second, "deleted link and rule re-created", func() error {
			if links := grapevineLinks(t, h, netID[:11]); len(links) < len(bridges) {
				return fmt.Errorf("links %v, want at least %v", links, bridges)
			}
			for _, r := range grapevineRules(t, h, netID) {
				if strings.Contains(r, "MASQUERADE") && strings.Contains(r, "198.19.19.0/24") {
					return nil
				}
			}
			return fmt.Errorf("masquerade rule for 198.19.19.0/24 not back")
		})
		check(t, "after dockerd restart")
	})
}
