// Package nstest makes network namespaces for tests, in one place for every
// package whose tests program the kernel (driver/dataplane, driver, plugin).
//
// Every helper first calls RequireNetAdmin, which skips the test, with the
// reason, when the process cannot create network namespaces (not root): so
// `go test ./...` run by an ordinary user passes, skipping the kernel tests
// and saying why, instead of failing them.
//
// Three ways in:
//
//   - Enter moves the test's goroutine, locked to its OS thread, into a new
//     namespace until the test ends: for tests whose kernel calls all run
//     on that goroutine.
//   - New makes a namespace without entering it (Do runs a function in it):
//     the other hosts and LANs of a test.
//   - InOwnProcess runs the test again in a child process whose every
//     thread is in a new namespace: for code that starts goroutines of its
//     own (servers, reconcile loops), which a locked thread cannot hold.
package nstest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// SkipReason is the reason every namespace test gives when it skips.
const SkipReason = "needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) to create network namespaces and program the kernel; run the tests as root to include it"

// NS is a named network namespace a test made, with a netlink handle bound
// to it. It is deleted when the test ends.
type NS struct {
	Name   string
	Handle netns.NsHandle
	NL     *netlink.Handle
}

// RequireNetAdmin skips t, saying why, unless this process may create
// network namespaces.
func RequireNetAdmin(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip(SkipReason)
	}
}

// Enter locks the calling goroutine to its thread, creates a namespace named
// prefix-<random hex>, switches the thread into it and brings its loopback
// up. t.Cleanup, which runs on the same goroutine, switches back, deletes
// the namespace and unlocks the thread (or leaves it locked, so the runtime
// discards it, when it could not switch back).
func Enter(t testing.TB, prefix string) *NS {
	t.Helper()
	RequireNetAdmin(t)
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("get current netns: %v", err)
	}
	name := prefix + "-" + randHex(t)
	ns, err := netns.NewNamed(name) // also switches this thread into it
	if err != nil {
		orig.Close()
		runtime.UnlockOSThread()
		t.Fatalf("create netns %s: %v", name, err)
	}
	n := &NS{Name: name, Handle: ns}
	t.Cleanup(func() {
		if n.NL != nil {
			n.NL.Close()
		}
		restored := netns.Set(orig) == nil
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
		ns.Close()
		orig.Close()
		if restored {
			runtime.UnlockOSThread()
		}
	})
	n.bind(t)
	return n
}

// New creates a namespace named prefix-<random hex> without entering it,
// with its loopback up; it is deleted in t.Cleanup. The calling goroutine
// must be locked to its thread (as after Enter): creating a namespace
// switches the thread, and New switches it back.
func New(t testing.TB, prefix string) *NS {
	t.Helper()
	RequireNetAdmin(t)
	cur, err := netns.Get()
	if err != nil {
		t.Fatalf("get current netns: %v", err)
	}
	defer cur.Close()
	name := prefix + "-" + randHex(t)
	ns, err := netns.NewNamed(name)
	if err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	if err := netns.Set(cur); err != nil {
		t.Fatalf("return from netns %s: %v", name, err)
	}
	n := &NS{Name: name, Handle: ns}
	t.Cleanup(func() {
		if n.NL != nil {
			n.NL.Close()
		}
		ns.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	n.bind(t)
	return n
}

// bind opens the netlink handle of n and brings its loopback up.
func (n *NS) bind(t testing.TB) {
	t.Helper()
	h, err := netlink.NewHandleAt(n.Handle)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", n.Name, err)
	}
	n.NL = h
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("set lo up in %s: %v", n.Name, err)
	}
}

// Do runs f with the calling (locked) thread switched into n, and switches
// it back.
func (n *NS) Do(t testing.TB, f func()) {
	t.Helper()
	cur, err := netns.Get()
	if err != nil {
		t.Fatalf("get current netns: %v", err)
	}
	defer cur.Close()
	if err := netns.Set(n.Handle); err != nil {
		t.Fatalf("enter netns %s: %v", n.Name, err)
	}
	defer func() {
		if err := netns.Set(cur); err != nil {
			t.Fatalf("return from netns %s: %v", n.Name, err)
		}
	}()
	f()
}

// childEnv names the test a child process of InOwnProcess runs.
const childEnv = "GV_NSTEST_CHILD"

// InOwnProcess reports whether the test body should run here. In the
// parent it runs the test again (this test only) in a child process started
// in a new network namespace, fails t unless the child passed, and returns
// false; in the child it returns true.
func InOwnProcess(t *testing.T) bool {
	t.Helper()
	if os.Getenv(childEnv) == t.Name() {
		return true
	}
	RequireNetAdmin(t)
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"="+t.Name())
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("--- PASS: "+t.Name())) {
		t.Fatalf("%s in its own network namespace: %v\n%s", t.Name(), err, out)
	}
	return false
}

func randHex(t testing.TB) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("random: %v", err)
	}
	return hex.EncodeToString(b)
}
