package plugin

import (
	"strings"
	"testing"

	"grapevine/driver"
)

// A tunnel peer passes while its last handshake is younger than
// WireGuard's Reject-After-Time and fails, naming the peer's endpoint and
// key, before the first handshake and after it.
func TestTunnelPeerCheck(t *testing.T) {
	cases := []struct {
		age    int64
		result string
		words  string
	}{
		{-1, ResultFail, "no WireGuard handshake with h2-b (198.18.0.2:51820) yet"},
		{0, ResultPass, "handshake with h2-b (198.18.0.2:51820) 0s ago"},
		{179, ResultPass, "2m59s ago"},
		{181, ResultFail, "was 3m1s ago: a session older than 3m0s carries nothing"},
	}
	for _, tc := range cases {
		r := &report{}
		tunnelPeerCheck(r, driver.TunnelPeerStatus{Node: "h2-b", PublicKey: "K2", Endpoint: "198.18.0.2:51820", HandshakeAge: tc.age, RxBytes: 7, TxBytes: 9})
		if len(r.Checks) != 1 {
			t.Fatalf("age %d: checks %+v, want one", tc.age, r.Checks)
		}
		c := r.Checks[0]
		if c.Check != "tunnel" || c.Peer != "h2-b" || c.Result != tc.result || !strings.Contains(c.Detail, tc.words) {
			t.Errorf("age %d: %+v, want tunnel h2-b %s with %q", tc.age, c, tc.result, tc.words)
		}
		if (c.Result == ResultFail) != (c.Fix != "") {
			t.Errorf("age %d: result %s with fix %q: every failure, and only failures, name a fix", tc.age, c.Result, c.Fix)
		}
		if c.Result == ResultFail && (!strings.Contains(c.Fix, "198.18.0.2:51820") || !strings.Contains(c.Fix, "K2")) {
			t.Errorf("age %d: fix %q does not name the peer's endpoint and the key it should hold", tc.age, c.Fix)
		}
	}
	r := &report{}
	tunnelPeerCheck(r, driver.TunnelPeerStatus{PublicKey: "K9", Endpoint: "198.18.0.9:51820", HandshakeAge: -1})
	if c := r.Checks[0]; c.Peer != "" || !strings.Contains(c.Detail, "key K9") {
		t.Errorf("a peer no member holds: %+v, want it named by its key", c)
	}
}
