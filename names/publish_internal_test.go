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

// NetworkEndpoint answers from the container's entry for netID, without
// its aliases, as the network's endpoint list does.
func (e *engineDouble) NetworkEndpoint(_ context.Context, netID, id string) (string, ContainerNetwork, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c, ok := e.containers[id]
	if ok {
		for _, n := range c.NetworkSettings.Networks {
			if n.NetworkID == netID && n.EndpointID != "" {
				n.Aliases = nil
				return strings.TrimPrefix(c.Name, "/"), n, nil
			}
		}
	}
	return "", ContainerNetwork{}, fmt.Errorf("network %s: %w", netID, errNoContainer)
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

// TestPublishEarly: at a connect, the container name is published from the
// network's endpoint list (no aliases there); the inspect adds the
// aliases; a later early publish does not take them away again.
func TestPublishEarly(t *testing.T) {
	n := gossiptest.NewNet()
	c := n.Node(t, "a", nil)
	eng := &engineDouble{containers: map[string]Container{}}
	vx := netip.MustParsePrefix("198.19.7.0/24")
	p := newPublisher(c, eng, func() map[string]netip.Prefix { return map[string]netip.Prefix{"netvx": vx} }, gossiptest.Log("a"))
	ctx := context.Background()
	ep := strings.Repeat("5", 64)
	eng.set("c1", container("db", map[string]ContainerNetwork{"vx": {NetworkID: "netvx", EndpointID: ep, IPAddress: "198.19.7.5", Aliases: []string{"store"}}}))
	key := Key(vx, netip.MustParseAddr("198.19.7.5"), "a")
	names := func() []string {
		r, ok := c.Get(Kind, key)
		if !ok || r.Deleted {
			return nil
		}
		e, err := Decode(r)
		if err != nil {
			t.Fatal(err)
		}
		return e.Names
	}

	if err := p.publishEarly(ctx, "netvx", "c1"); err != nil {
		t.Fatal(err)
	}
	if got := names(); !slices.Equal(got, []string{"db"}) {
		t.Errorf("after the early publish: %v, want [db]", got)
	}
	if err := p.syncContainer(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if got := names(); !slices.Equal(got, []string{"db", "store"}) {
		t.Errorf("after the inspect: %v, want [db store]", got)
	}
	if err := p.publishEarly(ctx, "netvx", "c1"); err != nil {
		t.Fatal(err)
	}
	if got := names(); !slices.Equal(got, []string{"db", "store"}) {
		t.Errorf("after a repeated early publish: %v, want [db store] still", got)
	}
	if err := p.publishEarly(ctx, "netother", "c1"); err != nil {
		t.Errorf("early publish on a network that is not a local VXLAN network: %v, want nothing done", err)
	}
	if err := p.publishEarly(ctx, "netvx", "c9"); err == nil {
		t.Error("early publish for a container the network does not list: no error")
	}
	eng.set("c1", nil) // removed: the inspect withdraws what the early publish wrote
	if err := p.syncContainer(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if got := live(c.List(Kind)); len(got) != 0 {
		t.Errorf("after removal: %v, want none", got)
	}
}
