package gossiptest

import (
	"testing"
	"time"

	"grapevine/gossip"
)

func alive(c *gossip.Cluster) int {
	n := 0
	for _, m := range c.Members() {
		if m.State == gossip.StateAlive {
			n++
		}
	}
	return n
}

func TestRecordsCrossAndPartitionsCut(t *testing.T) {
	n := NewNet()
	a := n.Node(t, "a", nil)
	b := n.Node(t, "b", nil)
	c := n.Node(t, "c", nil)
	Eventually(t, 10*time.Second, "3 alive members everywhere", func() bool {
		return alive(a) == 3 && alive(b) == 3 && alive(c) == 3
	})
	if err := a.Put("test", "k1", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 5*time.Second, "k1 on c", func() bool { _, ok := c.Get("test", "k1"); return ok })

	n.Partition([]string{"a"}, []string{"b", "c"})
	if err := a.Put("test", "k2", []byte("v2")); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 10*time.Second, "a to see b and c gone", func() bool { return alive(a) == 1 })
	if _, ok := b.Get("test", "k2"); ok {
		t.Fatal("a record crossed the partition")
	}
	n.Heal()
	Eventually(t, 20*time.Second, "k2 on b after heal", func() bool { _, ok := b.Get("test", "k2"); return ok })
}

func TestKillIsNoticed(t *testing.T) {
	n := NewNet()
	a := n.Node(t, "a", nil)
	n.Node(t, "b", nil)
	Eventually(t, 10*time.Second, "2 alive", func() bool { return alive(a) == 2 })
	n.Kill("b")
	Eventually(t, 10*time.Second, "b dead on a", func() bool { return alive(a) == 1 })
	if n.BytesSent("a") == 0 {
		t.Fatal("no bytes counted")
	}
}
