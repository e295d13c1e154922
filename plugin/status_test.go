package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"grapevine/driver"
	"grapevine/gossip"
	gvipam "grapevine/ipam"
	"grapevine/names"
)

func TestPrintStatus(t *testing.T) {
	st := Status{
		Schema: StatusSchema, Host: "h1", Node: "h1-abc123", Joined: true,
		Settings:      map[string]string{"PEERS": "198.18.0.12", "POOL": "198.19.128.0/17"},
		Members:       []MemberStatus{{Name: "h1-abc123", Self: true}, {Name: "h2-def456", State: "dead"}},
		GossipRefused: []gossip.Refusal{{Peer: "h3-aaa", Cause: gossip.CauseNotOwner, Count: 7}},
		Networks: []driver.NetworkStatus{
			{ID: "0123456789abcdef", Mode: "vxlan", Subnet: "198.19.20.0/24", Gateway: "198.19.20.1", VNI: 9000001, MTU: 1450, Endpoints: 2, RemoteEndpoints: 3, RemoteUnreachable: 1, RemoteHosts: map[string]int{"h2-def456": 1, "h3-aaa": 2}},
			{ID: "fedcba9876543210", Mode: "macvlan", Subnet: "198.18.0.0/24", Reach: "LAN via eth0", HostAccess: "198.18.0.101", Conflict: "h3 defines it as vni=5"},
		},
		Pools: []gvipam.PoolStatus{{Pool: "198.19.20.0/24", Space: "grapevine-local", Gateway: "198.19.20.1", Allocated: 2, Free: 60, Capacity: 62, Owned: []string{"198.19.20.0-198.19.20.63"},
			Blocks: []gvipam.BlockStatus{{First: "198.19.20.0", Last: "198.19.20.63", Owner: "h1-abc123"}, {First: "198.19.20.64", Last: "198.19.20.127", Owner: "h2-def456", Reclaimed: true}},
			Lost:   []string{"198.19.20.128-198.19.20.191"}}},
		Refused: map[string]uint64{"mac_not_unicast": 2, "block_not_owner": 1},
		Names:   []names.NetworkNames{{Subnet: "198.19.20.0/24", Hosts: map[string][]string{"h2-def456": {"db=198.19.20.70", "web=198.19.20.70"}}}},
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
		"h1-abc123 (this host)", "dead", "REFUSED 7 gossip records written as h3-aaa: not-owner", "9000001", "3 (1 unreachable)", "h2-def456=1 h3-aaa=2",
		"macvlan", "LAN via eth0; host access via 198.18.0.101", "CONFLICT fedcba987654: h3 defines it",
		"198.19.20.0-198.19.20.63", "h2-def456 (reclaimed)", "WARNING 198.19.20.0/24: blocks 198.19.20.128-198.19.20.191 were reclaimed",
		"refused:   block_not_owner=1 mac_not_unicast=2",
		"NAMES", "h2-def456  db=198.19.20.70 web=198.19.20.70",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, out.String())
		}
	}
	if err := PrintStatus(&out, []byte("not json")); err == nil {
		t.Error("garbage status accepted")
	}
}

// listenUnix serves s on a new unix socket at path.
func listenUnix(t *testing.T, s *Server, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(func() { ln.Close() })
}

func TestFindSocketThenStatus(t *testing.T) {
	dir := t.TempDir()
	_, err := findSocket(dir)
	if err == nil || err.Error() != "no grapevine socket under "+dir+": is the plugin enabled (`docker plugin ls`)?" {
		t.Fatalf("empty plugins directory: %v", err)
	}
	// another plugin's socket, and one nested too deep, are not ours
	for _, p := range []string{filepath.Join(dir, "f00d", "other.sock"), filepath.Join(dir, "a", "b", "grapevine.sock")} {
		listenUnix(t, NewServer(logrus.NewEntry(logrus.New())), p)
	}
	if _, err := findSocket(dir); err == nil {
		t.Fatal("found a socket that is not grapevine's")
	}

	// the managed plugin's socket: found, and it answers the status
	log := logrus.New()
	log.SetOutput(io.Discard)
	srv := NewServer(logrus.NewEntry(log))
	srv.SetBackend(nil, nil, func() any {
		return Status{Schema: StatusSchema, Host: "h1", Node: "h1-abc123", Members: []MemberStatus{{Name: "h1-abc123", Self: true}},
			Pools: []gvipam.PoolStatus{{Pool: "198.19.20.0/24", Allocated: 3, Free: 59, Capacity: 62}}}
	}, nil)
	managed := filepath.Join(dir, "4f2c9e", "grapevine.sock")
	listenUnix(t, srv, managed)
	got, err := findSocket(dir)
	if err != nil || got != managed {
		t.Fatalf("findSocket = %q, %v; want %s", got, err, managed)
	}
	raw, err := QueryStatus(context.Background(), got)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := PrintStatus(&out, raw); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"node:      h1-abc123", "h1-abc123 (this host)", "198.19.20.0/24", "3          59/62"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}

	// a plugin run by hand as well: two sockets, the operator must choose
	legacy := filepath.Join(dir, "grapevine.sock")
	listenUnix(t, NewServer(logrus.NewEntry(log)), legacy)
	_, err = findSocket(dir)
	if err == nil || err.Error() != "several grapevine sockets found ("+managed+", "+legacy+"): choose one with --socket" {
		t.Fatalf("two sockets: %v", err)
	}
	// only the hand-run one
	if err := os.RemoveAll(filepath.Dir(managed)); err != nil {
		t.Fatal(err)
	}
	if got, err := findSocket(dir); err != nil || got != legacy {
		t.Fatalf("findSocket = %q, %v; want %s", got, err, legacy)
	}
	// a socket nobody serves any more answers an error naming it
	if _, err := QueryStatus(context.Background(), managed); err == nil || !strings.Contains(err.Error(), "asking the plugin at "+managed) {
		t.Fatalf("status of a removed socket: %v", err)
	}
}
