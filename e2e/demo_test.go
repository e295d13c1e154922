//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// demoCmd is scripts/demo.sh (what `make demo` runs) on this suite's hosts
// h1..h3 (GV_DEMO_RUN) instead of a harness run of its own: bringing hosts up
// and tearing them down is the harness every test here already goes through,
// the demo's own steps are what this file checks. The demo runs in a process
// group of its own, as a shell's foreground job does, so that a test can send
// it a terminal's Ctrl-C.
func demoCmd() *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.repo, "scripts", "demo.sh"))
	cmd.Env = append(os.Environ(), "GV_DEMO_RUN="+s.run)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// demoGone checks that nothing the demo made is left on hosts: no container
// box1..box3, no network "demo".
func demoGone(t *testing.T, hosts []string) {
	t.Helper()
	for _, h := range hosts {
		for _, c := range strings.Fields(mustDocker(t, h, "ps", "-a", "--format", "{{.Names}}")) {
			if c == "box1" || c == "box2" || c == "box3" {
				t.Errorf("demo container %s left on %s", c, h)
			}
		}
		for _, n := range strings.Fields(mustDocker(t, h, "network", "ls", "--format", "{{.Name}}")) {
			if n == "demo" {
				t.Errorf("demo network left on %s", h)
			}
		}
	}
}

// TestDemo: `make demo` shows every container reaching the others by address
// and by name across the three hosts, prints `grapevine status`, and removes
// what it made, also when interrupted with Ctrl-C.
func TestDemo(t *testing.T) {
	needHosts(t, 3)
	hosts := clusterHosts()[:3]
	for _, h := range hosts {
		checkClean(t, h)
	}

	t.Run("reaches every container by address and by name", func(t *testing.T) {
		cmd := demoCmd()
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		timer := time.AfterFunc(5*time.Minute, func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
		err := cmd.Run()
		timer.Stop()
		text := out.String()
		if err != nil {
			t.Fatalf("scripts/demo.sh: %v\n%s", err, text)
		}
		for _, h := range hosts {
			for _, o := range hosts {
				if h == o {
					continue
				}
				fetch := fmt.Sprintf("%s$ docker exec box%s wget -qO- http://box%s/\n    hello from box%s on %s\n", h, h[1:], o[1:], o[1:], o)
				if !strings.Contains(text, fetch) {
					t.Errorf("the demo's output lacks\n%s", fetch)
				}
			}
		}
		if n := strings.Count(text, "    64 bytes from 198.19.77."); n != 6 {
			t.Errorf("the demo shows %d ping replies on the demo network, want 6 (each of 3 containers to the 2 others)", n)
		}
		for _, want := range []string{"h1$ grapevine status\n", "\nPEERS\n", " box2=198.19.77.", "demo: exit status 0\n"} {
			if !strings.Contains(text, want) {
				t.Errorf("the demo's output lacks %q", want)
			}
		}
		if t.Failed() {
			t.Logf("demo output:\n%s", text)
		}
		demoGone(t, hosts)
	})

	t.Run("Ctrl-C tears down", func(t *testing.T) {
		cmd := demoCmd()
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = cmd.Stdout
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		timer := time.AfterFunc(5*time.Minute, func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
		defer timer.Stop()
		text, running := readUntil(stdout, "== 3a.")
		if !running {
			_ = cmd.Wait()
			t.Fatalf("the demo never reached its containers' pings:\n%s", text)
		}
		// the terminal's Ctrl-C: SIGINT to the whole foreground process group
		if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		rest, _ := io.ReadAll(stdout)
		text += string(rest)
		err = cmd.Wait()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 130 {
			t.Errorf("the interrupted demo ended with %v, want exit status 130:\n%s", err, text)
		}
		if !strings.Contains(text, "removing the demo's containers and network") {
			t.Errorf("the interrupted demo did not say it removes what it made:\n%s", text)
		}
		demoGone(t, hosts)
	})
}

// readUntil reads r line by line until a line starts with prefix; it returns
// what it read and whether it found the line.
func readUntil(r io.Reader, prefix string) (string, bool) {
	var b strings.Builder
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		b.WriteString(sc.Text() + "\n")
		if strings.HasPrefix(sc.Text(), prefix) {
			return b.String(), true
		}
	}
	return b.String(), false
}
