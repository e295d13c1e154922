package names_test

import (
	"slices"
	"testing"

	"grapevine/gossip"
	"grapevine/names"
)

// FuzzDecode: Decode never panics, and whatever it accepts passes the
// same checks again when re-encoded (Encode refuses nothing Decode took)
// and decodes to the same entry.
func FuzzDecode(f *testing.F) {
	f.Add("198.19.7.0/24/198.19.7.5/h1", "h1", []byte(`{"v":1,"endpoint":"`+epID+`","names":["db","web"]}`))
	f.Add("198.19.7.0/24/198.19.7.5/h1", "h2", []byte(`{"v":1,"endpoint":"`+epID+`","names":["db"]}`))
	f.Add("0.0.0.0/0/1.2.3.4/x", "x", []byte(`{"v":1,"endpoint":"","names":null}`))
	f.Fuzz(func(t *testing.T, key, owner string, value []byte) {
		e, err := names.Decode(gossip.Record{Kind: names.Kind, Key: key, Owner: owner, Value: value})
		if err != nil {
			return
		}
		if e.Host != owner || !e.Subnet.Contains(e.Address) {
			t.Fatalf("accepted %q by %q as %+v", key, owner, e)
		}
		v, err := names.Encode(e)
		if err != nil {
			t.Fatalf("accepted entry %+v does not re-encode: %v", e, err)
		}
		again, err := names.Decode(gossip.Record{Kind: names.Kind, Key: names.Key(e.Subnet, e.Address, e.Host), Owner: owner, Value: v})
		if err != nil || again.Endpoint != e.Endpoint || again.Key() != e.Key() || !slices.Equal(again.Names, e.Names) {
			t.Fatalf("re-encoded %+v decodes to %+v, %v", e, again, err)
		}
	})
}
