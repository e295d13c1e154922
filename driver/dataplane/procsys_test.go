package dataplane

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOnlyNetSysctlsBecomeWritable recreates a managed plugin's read-only
// /proc/sys in a mount namespace of its own and checks that
// writableNetSysctls opens /proc/sys/net and nothing else, and that the
// writable /proc/sys/net still shows the sysctls of the writing thread's
// network namespace (a namespace made after the remount).
func TestOnlyNetSysctlsBecomeWritable(t *testing.T) {
	requireRoot(t)
	done := make(chan error, 1)
	go func() {
		// this thread's mount and network namespaces are the test's own; it
		// is never unlocked, so it exits with the goroutine and takes them along
		runtime.LockOSThread()
		done <- onlyNetSysctlsWritable()
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func onlyNetSysctlsWritable() error {
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("unshare mount namespace: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	// what runc does to a container's /proc/sys
	if err := unix.Mount("/proc/sys", "/proc/sys", "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind /proc/sys: %w", err)
	}
	if err := unix.Mount("", "/proc/sys", "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("remount /proc/sys read-only: %w", err)
	}
	if err := unix.Access("/proc/sys/net/ipv4/ip_forward", unix.W_OK); !errors.Is(err, unix.EROFS) {
		return fmt.Errorf("setup: /proc/sys/net is not read-only before the remount: %v", err)
	}

	remounted, err := writableNetSysctls()
	if err != nil || !remounted {
		return fmt.Errorf("writableNetSysctls = %v, %v; want true, nil", remounted, err)
	}
	for _, p := range []string{"/proc/sys/kernel/hostname", "/proc/sys/kernel/core_pattern", "/proc/sys/vm/overcommit_memory", "/proc/sys/fs/file-max"} {
		if err := unix.Access(p, unix.W_OK); !errors.Is(err, unix.EROFS) {
			return fmt.Errorf("%s is writable after the remount (access: %v): only /proc/sys/net may be", p, err)
		}
	}
	if again, err := writableNetSysctls(); err != nil || again {
		return fmt.Errorf("second writableNetSysctls = %v, %v; want false, nil", again, err)
	}

	// a network namespace made after the remount: its own sysctls are the
	// ones seen and written
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("unshare network namespace: %w", err)
	}
	entries, err := os.ReadDir("/proc/sys/net/ipv4/conf")
	if err != nil {
		return err
	}
	var links []string
	for _, e := range entries {
		links = append(links, e.Name())
	}
	if !slices.Equal(links, []string{"all", "default", "lo"}) {
		return fmt.Errorf("/proc/sys/net/ipv4/conf in a new network namespace lists %v, want [all default lo]: the bind shows another namespace", links)
	}
	const fwd = "/proc/sys/net/ipv4/ip_forward"
	if err := os.WriteFile(fwd, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", fwd, err)
	}
	if v, err := os.ReadFile(fwd); err != nil || strings.TrimSpace(string(v)) != "1" {
		return fmt.Errorf("read back %s: %q, %v", fwd, v, err)
	}
	return nil
}
