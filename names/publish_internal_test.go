package names

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"grapevine/gossip"
	"grapevine/gossip/gossiptest"
)

// engineDouble is an engine whose containers the test sets.
type engineDouble struct {
	mu         sync.Mutex
	containers map[string]Container
}

func (e *engineDouble) Running(context.Context) ([]string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var ids []string
	for id := range e.containers {
		ids = append(ids, id)
	}
	return ids, nil
}

func (e *engineDouble) Inspect(_ context.Context, id string) (Container, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c, ok := e.containers[id]
	if !ok {
		return Container{}, fmt.Errorf("inspect %s: %w", id, errNoContainer)
	}
	return c, nil
}

func (e *engineDouble) set(id string, c *Container) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c == nil {
		delete(e.containers, id)
		return
	}
	e.containers[id] = *c
}

func container(name string, nets map[string]ContainerNetwork) *Container {
	c := &Container{ID: name, Name: "/" + name}
	c.NetworkSettings.Networks = nets
	return c
}

// TestPublisher: a container's endpoints on local VXLAN networks are
// published with its name and aliases; other networks and endpoints
// without an address are not; a disconnect or removal withdraws; a full
// resync withdraws this host's records no container accounts for.
func TestPublisher(t *testing.T) {
	n := gossiptest.NewNet()
	c := n.Node(t, "a", nil)
	eng := &engineDouble{containers: map[string]Container{}}
	vx := netip.MustParsePrefix("198.19.7.0/24")
	nets := func() map[string]netip.Prefix { return map[string]netip.Prefix{"netvx": vx} }
	p := newPublisher(c, eng, nets, gossiptest.Log("a"))
	ep := func(i int) string { return strings.Repeat(fmt.Sprint(i), 64) }
	ctx := context.Background()

	eng.set("c1", container("db", map[string]ContainerNetwork{
		"vx":     {NetworkID: "netvx", EndpointID: ep(1), IPAddress: "198.19.7.5", Aliases: []string{"Store", "bad alias", "c1"}},
		"bridge": {NetworkID: "netbr", EndpointID: ep(2), IPAddress: "172.17.0.2"},
	}))
	eng.set("c2", container("stopped", map[string]ContainerNetwork{"vx": {NetworkID: "netvx"}}))
	if err := p.syncContainer(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	key := Key(vx, netip.MustParseAddr("198.19.7.5"), "a")
	r, ok := c.Get(Kind, key)
	if !ok || r.Deleted {
		t.Fatalf("no record %s: %v", key, r)
	}
	e, err := Decode(r)
	if err != nil || e.Endpoint != ep(1) || !slices.Equal(e.Names, []string{"c1", "db", "store"}) {
		t.Errorf("record %+v, %v; want endpoint %s names [c1 db store]", e, err, ep(1))
	}
	if got := live(c.List(Kind)); len(got) != 1 {
		t.Errorf("records %v, want only %s", got, key)
	}

	eng.set("c1", container("db", nil)) // disconnected
	if err := p.syncContainer(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if got := live(c.List(Kind)); len(got) != 0 {
		t.Errorf("after disconnect: %v, want none", got)
	}

	// a record left from before a restart, and a container the events missed
	stale := Key(vx, netip.MustParseAddr("198.19.7.9"), "a")
	v, _ := Encode(Entry{Endpoint: ep(3), Names: []string{"old"}})
	if err := c.Put(Kind, stale, v); err != nil {
		t.Fatal(err)
	}
	eng.set("c3", container("web", map[string]ContainerNetwork{"vx": {NetworkID: "netvx", EndpointID: ep(4), IPAddress: "198.19.7.6"}}))
	if err := p.syncAll(ctx); err != nil {
		t.Fatal(err)
	}
	want := []string{Key(vx, netip.MustParseAddr("198.19.7.6"), "a")}
	if got := live(c.List(Kind)); !slices.Equal(got, want) {
		t.Errorf("after resync: %v, want %v", got, want)
	}
	eng.set("c3", nil) // removed
	if err := p.syncContainer(ctx, "c3"); err != nil {
		t.Fatal(err)
	}
	if got := live(c.List(Kind)); len(got) != 0 {
		t.Errorf("after removal: %v, want none", got)
	}
}

func live(rs []gossip.Record) []string {
	var keys []string
	for _, r := range rs {
		if !r.Deleted {
			keys = append(keys, r.Key)
		}
	}
	slices.Sort(keys)
	return keys
}
