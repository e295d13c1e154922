package nstest

import (
	"os"
	"path/filepath"
	"testing"
)

func thisNetns(t *testing.T) string {
	t.Helper()
	l, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestEnterNewDo: Enter switches the test's thread into a namespace of its
// own, New makes one without entering it, Do runs in it and comes back,
// and both are gone once the test ends.
func TestEnterNewDo(t *testing.T) {
	RequireNetAdmin(t)
	outer := thisNetns(t)
	var names []string
	t.Run("inner", func(t *testing.T) {
		in := Enter(t, "gvn")
		inside := thisNetns(t)
		if inside == outer {
			t.Fatalf("Enter left the thread in %s", outer)
		}
		other := New(t, "gvn")
		if got := thisNetns(t); got != inside {
			t.Fatalf("New moved the thread to %s", got)
		}
		var during string
		other.Do(t, func() { during = thisNetns(t) })
		if during == inside || during == outer || thisNetns(t) != inside {
			t.Fatalf("Do ran in %s (test namespace %s), then the thread is in %s", during, inside, thisNetns(t))
		}
		if lo, err := other.NL.LinkByName("lo"); err != nil || lo.Attrs().OperState.String() == "down" {
			t.Fatalf("lo of %s: %v %v", other.Name, lo, err)
		}
		names = append(names, in.Name, other.Name)
	})
	if got := thisNetns(t); got != outer {
		t.Fatalf("after the test the thread is in %s, want %s", got, outer)
	}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join("/run/netns", n)); !os.IsNotExist(err) {
			t.Errorf("namespace %s outlives its test: %v", n, err)
		}
	}
}

// TestInOwnProcess: the body runs only in the child, in another namespace
// than the parent's.
func TestInOwnProcess(t *testing.T) {
	const parentEnv = "GV_NSTEST_PARENT_NETNS"
	if os.Getenv(childEnv) == "" {
		t.Setenv(parentEnv, thisNetns(t))
	}
	if !InOwnProcess(t) {
		return
	}
	if parent := os.Getenv(parentEnv); parent == "" || parent == thisNetns(t) {
		t.Fatalf("the child runs in namespace %s, the parent's is %q", thisNetns(t), parent)
	}
}
