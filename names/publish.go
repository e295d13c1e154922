package names

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"

	"github.com/sirupsen/logrus"

	"grapevine/gossip"
)

// engineAPI is what the publisher reads from the Docker engine.
type engineAPI interface {
	Running(ctx context.Context) ([]string, error)
	Inspect(ctx context.Context, id string) (Container, error)
	NetworkEndpoint(ctx context.Context, netID, id string) (string, ContainerNetwork, error)
}

// publisher keeps this host's names records equal to the names of its
// containers' endpoints on its VXLAN networks, as the engine reports them.
type publisher struct {
	c        gossip.Replicated
	eng      engineAPI
	networks func() map[string]netip.Prefix // local VXLAN networks by id
	log      *logrus.Entry

	mu   sync.Mutex
	byID map[string]map[string]bool // container id → keys of its records
}

func newPublisher(c gossip.Replicated, eng engineAPI, networks func() map[string]netip.Prefix, log *logrus.Entry) *publisher {
	return &publisher{c: c, eng: eng, networks: networks, log: log, byID: map[string]map[string]bool{}}
}

// entries returns the names records a container's endpoints should have.
func (p *publisher) entries(ct Container, nets map[string]netip.Prefix) map[string][]byte {
	out := map[string][]byte{}
	for _, n := range ct.NetworkSettings.Networks {
		subnet, ok := nets[n.NetworkID]
		if !ok || n.EndpointID == "" {
			continue
		}
		addr, err := netip.ParseAddr(n.IPAddress)
		if err != nil || !subnet.Contains(addr) {
			continue
		}
		e := Entry{Subnet: subnet, Address: addr, Endpoint: n.EndpointID, Host: p.c.LocalName(),
			Names: Canonical(append([]string{strings.TrimPrefix(ct.Name, "/")}, n.Aliases...))}
		v, err := Encode(e)
		if err != nil {
			p.log.WithError(err).WithFields(logrus.Fields{"network": shortID(n.NetworkID), "endpoint": shortID(n.EndpointID)}).Warn("names of endpoint not published")
			continue
		}
		out[e.Key()] = v
	}
	return out
}

// syncContainer publishes one container's records and withdraws those it
// no longer has (disconnected, removed).
func (p *publisher) syncContainer(ctx context.Context, id string) error {
	ct, err := p.eng.Inspect(ctx, id)
	switch {
	case errors.Is(err, errNoContainer):
		ct = Container{ID: id}
	case err != nil:
		return err
	}
	want := p.entries(ct, p.networks())
	p.mu.Lock()
	defer p.mu.Unlock()
	p.apply(id, want)
	return nil
}

// publishEarly publishes, at a connect event, the container name of
// container id's endpoint on network netID from the network's endpoint
// list, which answers while the container's start is still under way (the
// container inspect waits for it to finish, after `docker run` has
// returned); its aliases follow with syncContainer. It only adds: a record
// of the same endpoint already published is left as it is.
func (p *publisher) publishEarly(ctx context.Context, netID, id string) error {
	nets := p.networks()
	if _, ok := nets[netID]; !ok {
		return nil // not one of this host's VXLAN networks: nothing to publish
	}
	name, cn, err := p.eng.NetworkEndpoint(ctx, netID, id)
	if err != nil {
		return err
	}
	ct := Container{ID: id, Name: "/" + name}
	ct.NetworkSettings.Networks = map[string]ContainerNetwork{netID: cn}
	want := p.entries(ct, nets)
	p.mu.Lock()
	defer p.mu.Unlock()
	for key, v := range want {
		if cur, ok := p.c.Get(Kind, key); ok && !cur.Deleted && cur.Owner == p.c.LocalName() {
			if e, err := Decode(cur); err == nil && e.Endpoint == cn.EndpointID {
				continue
			}
		}
		if err := p.c.Put(Kind, key, v); err != nil {
			p.log.WithError(err).WithField("key", key).Warn("publishing names")
			continue
		}
		if p.byID[id] == nil {
			p.byID[id] = map[string]bool{}
		}
		p.byID[id][key] = true
	}
	return nil
}

// apply writes want for container id and deletes its other records.
// Caller holds mu.
func (p *publisher) apply(id string, want map[string][]byte) {
	for key, v := range want {
		if cur, ok := p.c.Get(Kind, key); ok && !cur.Deleted && cur.Owner == p.c.LocalName() && bytes.Equal(cur.Value, v) {
			continue
		}
		if err := p.c.Put(Kind, key, v); err != nil {
			p.log.WithError(err).WithField("key", key).Warn("publishing names")
		}
	}
	for key := range p.byID[id] {
		if _, ok := want[key]; !ok {
			p.withdraw(key)
		}
	}
	keys := map[string]bool{}
	for key := range want {
		keys[key] = true
	}
	if len(keys) == 0 {
		delete(p.byID, id)
		return
	}
	p.byID[id] = keys
}

func (p *publisher) withdraw(key string) {
	if err := p.c.Delete(Kind, key); err != nil {
		p.log.WithError(err).WithField("key", key).Warn("withdrawing names")
	}
}

// syncAll publishes every running container's records and withdraws every
// record of this host that no running container accounts for (left from
// before a restart, or a missed event).
func (p *publisher) syncAll(ctx context.Context) error {
	ids, err := p.eng.Running(ctx)
	if err != nil {
		return err
	}
	nets := p.networks()
	wants := map[string]map[string][]byte{}
	for _, id := range ids {
		ct, err := p.eng.Inspect(ctx, id)
		if errors.Is(err, errNoContainer) {
			continue
		}
		if err != nil {
			return err
		}
		wants[id] = p.entries(ct, nets)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	all := map[string]bool{}
	for id := range p.byID {
		if _, ok := wants[id]; !ok {
			wants[id] = nil
		}
	}
	for id, want := range wants {
		p.apply(id, want)
		for key := range want {
			all[key] = true
		}
	}
	for _, r := range p.c.List(Kind) {
		if r.Owner == p.c.LocalName() && !r.Deleted && !all[r.Key] {
			p.withdraw(r.Key)
		}
	}
	return nil
}

// shortID is the first 12 characters of a Docker id, for logs.
func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
