package gossip_test

import (
	"sync"
	"testing"
	"time"

	"grapevine/gossip"
	"grapevine/gossip/gossiptest"
)

// TestConsumerQueueNotBehindOthers: a subscriber of the default queue is
// stuck in a callback; a consumer with a queue of its own still receives
// every change, of two kinds, in the order they were written, and a node
// event; the stuck one gets its changes once released.
func TestConsumerQueueNotBehindOthers(t *testing.T) {
	n := gossiptest.NewNet()
	a := n.Node(t, "a", nil)

	release, stuck := make(chan struct{}), make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free) // before the node's shutdown, which waits for the stuck callback
	var late []string
	done := make(chan struct{})
	a.Subscribe("k", func(_, cur *gossip.Record) {
		if cur.Key == "first" {
			close(stuck)
			<-release
		}
		if late = append(late, cur.Key); len(late) == 2 {
			close(done)
		}
	})
	got := make(chan string, 16)
	own := a.Consumer("own")
	own.Subscribe("k", func(_, cur *gossip.Record) { got <- "k/" + cur.Key })
	own.Subscribe("j", func(_, cur *gossip.Record) { got <- "j/" + cur.Key })
	own.OnNodeEvent(func(m gossip.Member, ev gossip.EventType) {
		if ev == gossip.EventJoin {
			got <- "join/" + m.Name
		}
	})

	put := func(kind, key string) {
		t.Helper()
		if err := a.Put(kind, key, []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	put("k", "first")
	<-stuck
	put("j", "second")
	put("k", "third")
	want := []string{"k/first", "j/second", "k/third"}
	for _, w := range want {
		select {
		case g := <-got:
			if g != w {
				t.Fatalf("own queue delivered %s, want %s (order %v)", g, w, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("own queue never delivered %s while the default queue was stuck", w)
		}
	}
	n.Node(t, "b", nil)
	select {
	case g := <-got:
		if g != "join/b" {
			t.Fatalf("own queue delivered %s, want join/b", g)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("own queue never delivered b's join while the default queue was stuck")
	}

	free()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("default queue did not deliver first and third after its release")
	}
}
