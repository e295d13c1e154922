package names

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"grapevine/internal/unixhttp"
)

// Engine reads containers and network events from the Docker engine API
// over its unix socket (the plugin bind-mounts it), with plain net/http.
type Engine struct {
	hc *http.Client
	// stream has no timeout: /events answers for as long as it runs.
	stream *http.Client
}

// NewEngine returns a client of the engine API at the unix socket path.
func NewEngine(path string) *Engine {
	tr := unixhttp.Transport(path)
	tr.MaxIdleConns = 2
	return &Engine{
		hc:     &http.Client{Transport: tr, Timeout: 10 * time.Second},
		stream: &http.Client{Transport: tr},
	}
}

// ContainerNetwork is one network of an inspected container.
type ContainerNetwork struct {
	NetworkID  string
	EndpointID string
	IPAddress  string
	Aliases    []string
}

// Container is the part of GET /containers/{id}/json names need.
type Container struct {
	ID              string
	Name            string // "/name"
	NetworkSettings struct {
		Networks map[string]ContainerNetwork
	}
}

// Event is one message of GET /events.
type Event struct {
	Type   string
	Action string
	Actor  struct {
		ID         string
		Attributes map[string]string
	}
}

// errNoContainer: the engine does not know the container (removed).
var errNoContainer = errors.New("no such container")

// Running lists the ids of running containers.
func (e *Engine) Running(ctx context.Context) ([]string, error) {
	var list []struct{ ID string }
	if err := e.get(ctx, "/containers/json", &list); err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(list))
	for _, c := range list {
		ids = append(ids, c.ID)
	}
	return ids, nil
}

// Inspect returns a container; errNoContainer when it is gone.
func (e *Engine) Inspect(ctx context.Context, id string) (Container, error) {
	var c Container
	err := e.get(ctx, "/containers/"+url.PathEscape(id)+"/json", &c)
	return c, err
}

// NetworkEndpoint returns the name and endpoint of container id on network
// netID as the network's endpoint list has them (GET /networks/{id}: the
// endpoint's name is the container's). Unlike the container inspect, this
// does not wait for a container start under way to finish; it carries no
// aliases. errNoContainer when the network lists no endpoint of id.
func (e *Engine) NetworkEndpoint(ctx context.Context, netID, id string) (string, ContainerNetwork, error) {
	var nw struct {
		Containers map[string]struct {
			Name        string
			EndpointID  string
			IPv4Address string // "198.19.16.5/20"
		}
	}
	if err := e.get(ctx, "/networks/"+url.PathEscape(netID), &nw); err != nil {
		return "", ContainerNetwork{}, err
	}
	c, ok := nw.Containers[id]
	if !ok {
		return "", ContainerNetwork{}, fmt.Errorf("network %.12s lists no endpoint of container %.12s: %w", netID, id, errNoContainer)
	}
	addr, _, _ := strings.Cut(c.IPv4Address, "/")
	return c.Name, ContainerNetwork{NetworkID: netID, EndpointID: c.EndpointID, IPAddress: addr}, nil
}

func (e *Engine) get(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker"+path, nil)
	if err != nil {
		return fmt.Errorf("engine request %s: %w", path, err)
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		return fmt.Errorf("engine API %s (is the docker-sock mount set to the daemon's socket?): %w", path, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return fmt.Errorf("engine API %s: %w", path, errNoContainer)
	default:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("engine API %s: %s: %s", path, resp.Status, b)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(out); err != nil {
		return fmt.Errorf("engine API %s: decoding the answer: %w", path, err)
	}
	return nil
}

// Events streams network events (connect, disconnect, create, destroy) to
// fn until ctx ends or the stream breaks.
func (e *Engine) Events(ctx context.Context, fn func(Event)) error {
	filters := `{"type":["network"],"event":["connect","disconnect","create","destroy"]}`
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/events?filters="+url.QueryEscape(filters), nil)
	if err != nil {
		return fmt.Errorf("engine events request: %w", err)
	}
	resp, err := e.stream.Do(req)
	if err != nil {
		return fmt.Errorf("engine API /events: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("engine API /events: %s", resp.Status)
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var ev Event
		if err := dec.Decode(&ev); err != nil {
			return fmt.Errorf("engine API /events: %w", err)
		}
		fn(ev)
	}
}
