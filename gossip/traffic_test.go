package gossip_test

import (
	"bytes"
	"testing"
	"time"

	"grapevine/gossip/gossiptest"
)

// A record written on one node is counted as sent there and received on
// the other, with at least its value's bytes, and as a live record of its
// kind on both.
func TestStatsCountTrafficAndKinds(t *testing.T) {
	_, nodes := startCluster(t, 2, nil)
	w, r := nodes[0], nodes[1]
	sentBefore, recvBefore := w.c.Stats(), r.c.Stats()

	value := bytes.Repeat([]byte("v"), 600)
	if err := w.c.Put("endpoint", "198.18.0.1", value); err != nil {
		t.Fatal(err)
	}
	gossiptest.Eventually(t, 20*time.Second, "the record to reach the other node", func() bool {
		_, ok := r.c.Get("endpoint", "198.18.0.1")
		return ok
	})
	sent, recv := w.c.Stats(), r.c.Stats()
	if sent.MessagesOut <= sentBefore.MessagesOut || sent.BytesOut-sentBefore.BytesOut < uint64(len(value)) {
		t.Errorf("writer sent %d messages, %d bytes more; want ≥ 1 and ≥ %d", sent.MessagesOut-sentBefore.MessagesOut, sent.BytesOut-sentBefore.BytesOut, len(value))
	}
	if recv.MessagesIn <= recvBefore.MessagesIn || recv.BytesIn-recvBefore.BytesIn < uint64(len(value)) {
		t.Errorf("reader received %d messages, %d bytes more; want ≥ 1 and ≥ %d", recv.MessagesIn-recvBefore.MessagesIn, recv.BytesIn-recvBefore.BytesIn, len(value))
	}
	for _, n := range nodes {
		if got := n.c.Stats().RecordsByKind["endpoint"]; got != 1 {
			t.Errorf("%s counts %d endpoint records, want 1", n.name, got)
		}
	}
	if err := w.c.Delete("endpoint", "198.18.0.1"); err != nil {
		t.Fatal(err)
	}
	if got := w.c.Stats().RecordsByKind["endpoint"]; got != 0 {
		t.Errorf("after the delete the writer counts %d live endpoint records, want 0", got)
	}
}
