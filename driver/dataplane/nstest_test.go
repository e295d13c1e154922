package dataplane

import (
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"grapevine/internal/nstest"
)

// testNS is a network namespace made for one test. The test's goroutine stays
// locked to its OS thread, which is switched into the namespace until cleanup.
type testNS struct {
	t    *testing.T
	name string
	ns   netns.NsHandle
	// outer is the /proc/thread-self/ns/net link of the namespace the thread
	// was in before the test switched it.
	outer string
	nl    *netlink.Handle // handle bound to this namespace, for reading back state
}

// testLog returns a logger that writes through t.Log.
func testLog(t *testing.T) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(testWriter{t})
	l.SetLevel(logrus.DebugLevel)
	return logrus.NewEntry(l).WithField("test", t.Name())
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// requireRoot skips the test when it cannot create network namespaces.
func requireRoot(t *testing.T) {
	t.Helper()
	nstest.RequireNetAdmin(t)
}

// enterNewNS moves the test's goroutine, locked to its thread, into a new
// namespace until the test ends (nstest.Enter), loopback up.
func enterNewNS(t *testing.T) *testNS {
	t.Helper()
	requireRoot(t)
	outer, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatalf("read current netns: %v", err)
	}
	n := nstest.Enter(t, "gvt")
	return &testNS{t: t, name: n.Name, ns: n.Handle, outer: outer, nl: n.NL}
}

// newKernelNS makes a namespace and a Kernel inside it.
func newKernelNS(t *testing.T) (*testNS, *Kernel) {
	t.Helper()
	tn := enterNewNS(t)
	k, err := NewKernel(testLog(t))
	if err != nil {
		t.Fatalf("NewKernel: %v", err)
	}
	t.Cleanup(k.Close)
	return tn, k
}

// otherNS creates an extra named namespace without entering it; it is deleted
// in t.Cleanup. The returned handle is bound to it.
func otherNS(t *testing.T) (string, netns.NsHandle, *netlink.Handle) {
	t.Helper()
	n := nstest.New(t, "gvt")
	return n.Name, n.Handle, n.NL
}

// inNS runs f with the calling (locked) thread switched into ns.
// secondKernel is a Kernel in a namespace of its own (a second host), closed
// when the test ends, with that namespace and a netlink handle in it.
func secondKernel(t *testing.T) (netns.NsHandle, *netlink.Handle, *Kernel) {
	t.Helper()
	_, ns, h := otherNS(t)
	var k *Kernel
	inNS(t, ns, func() {
		var err error
		if k, err = NewKernel(testLog(t).WithField("host", 2)); err != nil {
			t.Fatalf("NewKernel in host 2: %v", err)
		}
	})
	t.Cleanup(k.Close)
	return ns, h, k
}

func inNS(t *testing.T, ns netns.NsHandle, f func()) {
	t.Helper()
	(&nstest.NS{Name: "of the test", Handle: ns}).Do(t, f)
}

func randHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		t.Fatalf("random: %v", err)
	}
	return hex.EncodeToString(b)
}

// run executes a command from the locked thread (so in the current netns) and
// returns its combined output.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// link reads a link back through the test's own handle.
func (tn *testNS) link(name string) netlink.Link {
	tn.t.Helper()
	l, err := tn.nl.LinkByName(name)
	if err != nil {
		tn.t.Fatalf("read back link %q: %v", name, err)
	}
	return l
}

// addIfb adds an ifb link (a plain, addressable link type built into this
// kernel; dummy is not) with the given IPv4 prefixes, up.
func addIfb(t *testing.T, h *netlink.Handle, name string, mtu int, prefixes ...string) netlink.Link {
	t.Helper()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	attrs.MTU = mtu
	if err := h.LinkAdd(&netlink.Ifb{LinkAttrs: attrs}); err != nil {
		t.Fatalf("add ifb %q: %v", name, err)
	}
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("read back %q: %v", name, err)
	}
	for _, p := range prefixes {
		addAddr(t, h, l, p)
	}
	if err := h.LinkSetUp(l); err != nil {
		t.Fatalf("set %q up: %v", name, err)
	}
	return l
}

func addAddr(t *testing.T, h *netlink.Handle, l netlink.Link, prefix string) {
	t.Helper()
	a, err := netlink.ParseAddr(prefix)
	if err != nil {
		t.Fatalf("parse %q: %v", prefix, err)
	}
	if err := h.AddrAdd(l, a); err != nil {
		t.Fatalf("add %s to %q: %v", prefix, l.Attrs().Name, err)
	}
}

func mustMAC(t *testing.T, s string) net.HardwareAddr {
	t.Helper()
	m, err := net.ParseMAC(s)
	if err != nil {
		t.Fatalf("parse mac %q: %v", s, err)
	}
	return m
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func mustAddr(s string) netip.Addr     { return netip.MustParseAddr(s) }

// eventually polls cond until it returns "" or the deadline passes.
func eventually(t *testing.T, d time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %s", d, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
