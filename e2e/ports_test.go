//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestPublishedPort(t *testing.T) {
	singleHost(t)
	const h = "h1"
	checkClean(t, h)
	netID := createNetwork(t, h, "pub", "--subnet", "198.19.16.0/24")
	web := webServer(t, h, "hello", "--network", "pub", "--name", "pub-web", "-p", "8080:80")
	client := runContainer(t, h, "--network", "pub", image, "sleep", "3600")
	addr := hostAddr(h)

	t.Run("from the LAN", func(t *testing.T) {
		expectHTTP(t, "GET from the LAN machine", "hello", func() (string, string, error) {
			return inLAN(httpGetCmd(addr, 8080)...)
		})
	})
	t.Run("from the host itself", func(t *testing.T) {
		expectHTTP(t, "GET from the host namespace", "hello", func() (string, string, error) {
			return inHost(h, httpGetCmd(addr, 8080)...)
		})
	})
	t.Run("hairpin from a container on the same network", func(t *testing.T) {
		expectHTTP(t, "GET from a container via the host address", "hello", func() (string, string, error) {
			return docker(h, "exec", client, "sh", "-c",
				fmt.Sprintf(`printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 %s 8080`, addr))
		})
	})

	t.Run("what docker shows", func(t *testing.T) {
		// Docker 20.10 keeps the requested bindings in HostConfig but cannot decode a
		// remote driver's port map, so `docker port` and NetworkSettings.Ports are empty.
		bindings := mustDocker(t, h, "inspect", "-f", `{{json .HostConfig.PortBindings}}`, web)
		if !strings.Contains(bindings, `"80/tcp":[{"HostIp":"","HostPort":"8080"}]`) {
			t.Errorf("HostConfig.PortBindings = %s, want 80/tcp → 8080", bindings)
		}
		if out := mustDocker(t, h, "port", web); out != "" {
			t.Logf("docker port now shows %q (Docker learnt to display remote drivers' ports)", out)
		}
	})

	t.Run("ephemeral host port", func(t *testing.T) {
		eph := webServer(t, h, "ephemeral", "--network", "pub", "-p", "80")
		ep := endpointID(t, h, eph, "pub")
		var port int
		eventually(t, 10*time.Second, "DNAT rule for the ephemeral port", func() (err error) {
			port, err = publishedPort(t, h, netID, ep)
			return err
		})
		if port < 1024 {
			t.Errorf("ephemeral host port %d is not in the ephemeral range", port)
		}
		if port == 8080 {
			t.Errorf("ephemeral host port collides with 8080")
		}
		expectHTTP(t, "GET the ephemeral port from the LAN machine", "ephemeral", func() (string, string, error) {
			return inLAN(httpGetCmd(addr, port)...)
		})
		bindings := mustDocker(t, h, "inspect", "-f", `{{json .HostConfig.PortBindings}}`, eph)
		if !strings.Contains(bindings, `"80/tcp"`) {
			t.Errorf("HostConfig.PortBindings = %s, want 80/tcp", bindings)
		}
	})

	t.Run("same host port twice is refused", func(t *testing.T) {
		// a failed `docker run -d` leaves the container created: name it to remove it
		defer func() { _, _, _ = docker(h, "rm", "-f", "pub-dup") }()
		_, stderr, err := docker(h, "run", "-d", "--name", "pub-dup", "--network", "pub", "-p", "8080:80", image, "sleep", "3600")
		if err == nil {
			t.Fatalf("a second container got host port 8080")
		}
		if !strings.Contains(stderr, "8080") {
			t.Errorf("error does not name the port 8080: %s", stderr)
		}
		expectHTTP(t, "first container still serves 8080", "hello", func() (string, string, error) {
			return inLAN(httpGetCmd(addr, 8080)...)
		})
	})

	t.Run("rules go with the container", func(t *testing.T) {
		ep := endpointID(t, h, web, "pub")
		tag := ruleComment + netID[:12] + ":" + ep[:12]
		mustDocker(t, h, "rm", "-f", web)
		for _, table := range []string{"filter", "nat"} {
			out := mustInHost(t, h, "iptables", "-t", table, "-S")
			if strings.Contains(out, tag) {
				t.Errorf("%s rules of the removed container remain:\n%s", table, out)
			}
		}
		if out, _, err := inLAN(httpGetCmd(addr, 8080)...); err == nil && httpBody(out) == "hello" {
			t.Errorf("port 8080 still answers after the container was removed")
		}
		// the port is free again
		webServer(t, h, "again", "--network", "pub", "-p", "8080:80")
		expectHTTP(t, "8080 reusable after rm", "again", func() (string, string, error) {
			return inLAN(httpGetCmd(addr, 8080)...)
		})
	})
}
