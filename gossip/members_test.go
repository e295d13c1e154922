package gossip

import (
	"encoding/base64"
	"strings"
	"testing"
)

// TestDecodeMetaTunnelKey: a WireGuard key in a member's metadata is taken
// only as 32 non-zero bytes with a port; anything else makes the metadata
// undecodable (the member's VTEP and key are not used).
func TestDecodeMetaTunnelKey(t *testing.T) {
	good := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32)))
	zero := base64.StdEncoding.EncodeToString(make([]byte, 32))
	short := base64.StdEncoding.EncodeToString([]byte("short"))
	cases := []struct {
		name, meta string
		ok         bool
	}{
		{"none", `{"version":1,"vtep":"198.18.0.2"}`, true},
		{"key and port", `{"version":1,"vtep":"198.18.0.2","wg_key":"` + good + `","wg_port":51820}`, true},
		{"key without port", `{"version":1,"wg_key":"` + good + `"}`, false},
		{"port without key", `{"version":1,"wg_port":51820}`, false},
		{"port out of range", `{"version":1,"wg_key":"` + good + `","wg_port":70000}`, false},
		{"short key", `{"version":1,"wg_key":"` + short + `","wg_port":51820}`, false},
		{"zero key", `{"version":1,"wg_key":"` + zero + `","wg_port":51820}`, false},
		{"not base64", `{"version":1,"wg_key":"!!!","wg_port":51820}`, false},
		{"not a string", `{"version":1,"wg_key":5,"wg_port":51820}`, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := decodeMeta([]byte(tc.meta))
			if (err == nil) != tc.ok {
				t.Fatalf("decodeMeta(%s) = %+v, %v; want ok %v", tc.meta, m, err, tc.ok)
			}
			if !tc.ok && !m.TunnelKey.IsZero() {
				t.Errorf("refused metadata kept a key")
			}
		})
	}
	// round trip
	var k TunnelKey
	copy(k[:], strings.Repeat("k", 32))
	b, err := NodeMeta{Version: 1, TunnelKey: k, TunnelPort: 51820}.encode()
	if err != nil {
		t.Fatal(err)
	}
	m, err := decodeMeta(b)
	if err != nil || m.TunnelKey != k || m.TunnelPort != 51820 {
		t.Fatalf("round trip: %+v, %v", m, err)
	}
}
