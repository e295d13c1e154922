package gossip

import (
	"fmt"
	"testing"
)

// Garbage from many (spoofed) addresses costs a bounded memory: the
// senders heard from least recently are forgotten, the newest are kept.
func TestUndecryptableSendersBounded(t *testing.T) {
	var h health
	for i := range 4 * maxUndecryptable {
		h.noteLogLine(fmt.Sprintf("198.18.%d.%d", i/250, i%250+1), "Decrypt packet failed: no installed keys could decrypt the message")
	}
	if n := len(h.undecryptable); n != maxUndecryptable || len(h.undecryptableAt) != maxUndecryptable {
		t.Fatalf("%d senders remembered (%d times), want %d", n, len(h.undecryptableAt), maxUndecryptable)
	}
	last := fmt.Sprintf("198.18.%d.%d", (4*maxUndecryptable-1)/250, (4*maxUndecryptable-1)%250+1)
	if h.undecryptable[last] != 1 {
		t.Errorf("the newest sender %s was not kept", last)
	}
	h.noteLogLine("198.18.9.9", "Marking h2 as failed, suspect timeout reached")
	if _, ok := h.undecryptable["198.18.9.9"]; ok {
		t.Error("a line that is not about decryption was counted")
	}
}
