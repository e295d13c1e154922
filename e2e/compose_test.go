//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const composeFile = `version: "2.4"
services:
  web:
    image: gvtest/busybox:latest
    command: ["sh", "-c", "mkdir -p /www && echo composed > /www/index.html && exec httpd -f -p 80 -h /www"]
    networks: [gvnet]
  client:
    image: gvtest/busybox:latest
    command: ["sleep", "3600"]
    networks: [gvnet]
networks:
  gvnet:
    driver: grapevine:latest
    ipam:
      driver: grapevine:latest
      config:
        - subnet: 198.19.30.0/24
`

func TestCompose(t *testing.T) {
	singleHost(t)
	const h = "h1"
	if _, err := exec.LookPath("docker-compose"); err != nil {
		t.Fatalf("docker-compose not installed (make deps): %v", err)
	}
	checkClean(t, h)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "docker-compose.yml"), []byte(composeFile), 0o644); err != nil {
		t.Fatal(err)
	}
	project := "gv" + s.run
	compose := func(args ...string) (string, string, error) {
		full := append([]string{"-f", filepath.Join(dir, "docker-compose.yml"), "-p", project}, args...)
		cmd := exec.Command("docker-compose", full...)
		cmd.Env = append(os.Environ(), "DOCKER_HOST="+dockerHost(h), "COMPOSE_INTERACTIVE_NO_CLI=1")
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		done := make(chan error, 1)
		if err := cmd.Start(); err != nil {
			return "", "", err
		}
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			return out.String(), errb.String(), err
		case <-time.After(cmdTimeout):
			_ = cmd.Process.Kill()
			return out.String(), errb.String(), fmt.Errorf("docker-compose %v timed out", args)
		}
	}
	netName := project + "_gvnet"
	downDone := false
	t.Cleanup(func() {
		if !downDone {
			_, _, _ = compose("down", "-t", "1")
		}
	})
	if out, stderr, err := compose("up", "-d"); err != nil {
		t.Fatalf("docker-compose up: %v\n%s%s", err, out, stderr)
	}
	netID := mustDocker(t, h, "network", "inspect", "-f", "{{.Id}}", netName)
	if d := mustDocker(t, h, "network", "inspect", "-f", "{{.Driver}} {{.IPAM.Driver}}", netName); d != "grapevine:latest grapevine:latest" {
		t.Errorf("compose network drivers = %q", d)
	}
	client := project + "_client_1"
	web := project + "_web_1"
	if ip := containerIP(t, h, web, netName); !strings.HasPrefix(ip, "198.19.30.") {
		t.Errorf("web got %q, want an address in 198.19.30.0/24", ip)
	}
	expectHTTP(t, "client reaches web by service name", "composed", func() (string, string, error) {
		return docker(h, "exec", client, "sh", "-c", `printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 web 80`)
	})
	if out, stderr, err := compose("down", "-t", "1"); err != nil {
		t.Fatalf("docker-compose down: %v\n%s%s", err, out, stderr)
	}
	downDone = true
	if _, _, err := docker(h, "network", "inspect", netName); err == nil {
		t.Errorf("network %s still exists after docker-compose down", netName)
	}
	assertNetworkGone(t, h, netID)
}
