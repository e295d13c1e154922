package plugin

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"grapevine/driver"
	"grapevine/gossip"
	gvipam "grapevine/ipam"
)

func TestPrintStatus(t *testing.T) {
	st := Status{
		Host: "h1", Node: "h1-abc123", Joined: true,
		Settings: map[string]string{"PEERS": "198.18.0.12", "POOL": "198.19.128.0/17"},
		Members:  []gossip.Member{{Name: "h1-abc123", Self: true}, {Name: "h2-def456", State: gossip.StateDead}},
		Networks: []driver.NetworkStatus{
			{ID: "0123456789abcdef", Mode: "vxlan", Subnet: "198.19.20.0/24", Gateway: "198.19.20.1", VNI: 9000001, MTU: 1450, Endpoints: 2, RemoteEndpoints: 3, RemoteUnreachable: 1, RemoteHosts: map[string]int{"h2-def456": 1, "h3-aaa": 2}},
			{ID: "fedcba9876543210", Mode: "macvlan", Subnet: "198.18.0.0/24", Reach: "LAN via eth0", HostAccess: "198.18.0.101", Conflict: "h3 defines it as vni=5"},
		},
		Pools: []gvipam.PoolStatus{{Pool: "198.19.20.0/24", Space: "grapevine-local", Gateway: "198.19.20.1", Allocated: 2, Free: 60, Capacity: 62, Owned: []string{"198.19.20.0-198.19.20.63"},
			Blocks: []gvipam.BlockStatus{{First: "198.19.20.0", Last: "198.19.20.63", Owner: "h1-abc123"}, {First: "198.19.20.64", Last: "198.19.20.127", Owner: "h2-def456", Reclaimed: true}},
			Lost:   []string{"198.19.20.128-198.19.20.191"}}},
		Refused: map[string]uint64{"mac_not_unicast": 2, "block_not_owner": 1},
	}
	raw, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := PrintStatus(&out, raw); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"h1-abc123 (this host)", "dead", "9000001", "3 (1 unreachable)", "h2-def456=1 h3-aaa=2",
		"macvlan", "LAN via eth0; host access via 198.18.0.101", "CONFLICT fedcba987654: h3 defines it",
		"198.19.20.0-198.19.20.63", "h2-def456 (reclaimed)", "WARNING 198.19.20.0/24: blocks 198.19.20.128-198.19.20.191 were reclaimed",
		"refused:   block_not_owner=1 mac_not_unicast=2",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, out.String())
		}
	}
	if err := PrintStatus(&out, []byte("not json")); err == nil {
		t.Error("garbage status accepted")
	}
}
