package driver

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/docker/go-plugins-helpers/network"

	"grapevine/driver/dataplane"
)

// Host ports chosen for `-p 80` (HostPort 0), as Docker's own allocator does.
const (
	ephemeralFirst = 49153
	ephemeralLast  = 65535
)

// dockerPortBinding is libnetwork's types.PortBinding as JSON.
type dockerPortBinding struct {
	Proto       uint8  `json:"Proto"`
	IP          string `json:"IP"`
	Port        uint16 `json:"Port"`
	HostIP      string `json:"HostIP"`
	HostPort    uint16 `json:"HostPort"`
	HostPortEnd uint16 `json:"HostPortEnd"`
}

// dockerTransportPort is libnetwork's types.TransportPort as JSON.
type dockerTransportPort struct {
	Proto uint8  `json:"Proto"`
	Port  uint16 `json:"Port"`
}

func toDocker(b portBinding, containerIP netip.Addr) dockerPortBinding {
	out := dockerPortBinding{
		Proto:       uint8(b.Proto),
		IP:          containerIP.String(),
		Port:        b.Port,
		HostPort:    b.HostPort,
		HostPortEnd: b.HostPortEnd,
	}
	if b.HostIP.IsValid() {
		out.HostIP = b.HostIP.String()
	}
	return out
}

func (b portBinding) String() string {
	host := "*"
	if b.HostIP.IsValid() {
		host = b.HostIP.String()
	}
	return fmt.Sprintf("%s:%d->%d/%s", host, b.HostPort, b.Port, b.Proto)
}

// ProgramExternalConnectivity chooses host ports for the endpoint's published
// ports, persists them and programs the firewall. Either all bindings are
// applied or none. A repeat with the same ports keeps the ports chosen before.
func (d *Driver) ProgramExternalConnectivity(r *network.ProgramExternalConnectivityRequest) (err error) {
	if r == nil {
		return errors.New("ProgramExternalConnectivity: empty request")
	}
	req, err := portMapOption(r.Options)
	if err != nil {
		return err
	}
	_, hasReq := r.Options[optPortMap]
	exposed, err := exposedOption(r.Options)
	if err != nil {
		return err
	}
	_, hasExposed := r.Options[optExposed]
	log := d.epLog(r.NetworkID, r.EndpointID)

	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.endpoints[r.EndpointID]
	if !ok {
		return fmt.Errorf("endpoint %s is not known to grapevine on this host", shortID(r.EndpointID))
	}
	n := d.networks[e.NetworkID]
	if n == nil || n.Internal {
		log.Debug("internal network: no published ports")
		return nil
	}
	if !n.mode().overlay() {
		if len(req) > 0 {
			log.WithField("ports", len(req)).Info("published ports are ignored on a macvlan network: the container is reachable at its LAN address on every port, with no mapping")
		}
		return nil
	}
	if !hasReq {
		req = e.Requested
	}
	if !hasExposed {
		exposed = e.Exposed
	}
	if e.Programmed && slices.Equal(req, e.Requested) {
		return d.syncFirewall()
	}
	chosen, err := d.choosePorts(e.ID, req)
	if err != nil {
		return err
	}
	old := e
	ne := e.clone()
	ne.Requested, ne.Exposed, ne.Bindings, ne.Programmed = req, exposed, chosen, true
	if err := d.store.putEndpoint(ne); err != nil {
		return err
	}
	d.endpoints[ne.ID] = ne
	if err := d.syncFirewall(); err != nil {
		if perr := d.store.putEndpoint(old); perr != nil {
			log.WithError(perr).Error("rollback: could not restore the endpoint record")
		}
		d.endpoints[old.ID] = old
		if serr := d.syncFirewall(); serr != nil {
			log.WithError(serr).Warn("rollback: could not restore the firewall rules")
		}
		return err
	}
	log.WithField("ports", chosen).Info("ports published")
	return nil
}

// RevokeExternalConnectivity removes the endpoint's published ports. Unknown
// endpoints and repeats are success.
func (d *Driver) RevokeExternalConnectivity(r *network.RevokeExternalConnectivityRequest) error {
	if r == nil {
		return errors.New("RevokeExternalConnectivity: empty request")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.endpoints[r.EndpointID]
	if !ok || (!e.Programmed && len(e.Bindings) == 0) {
		return nil
	}
	ne := e.clone()
	ne.Bindings, ne.Programmed = nil, false
	if err := d.store.putEndpoint(ne); err != nil {
		return err
	}
	d.endpoints[ne.ID] = ne
	if err := d.syncFirewall(); err != nil {
		return err
	}
	d.epLog(e.NetworkID, e.ID).Info("published ports revoked")
	return nil
}

// choosePorts picks a host port for every requested binding: the fixed port,
// the first free one of a range, or the first free ephemeral port. Ports of
// other grapevine endpoints and ports the dataplane reports as taken are not
// free. Caller holds mu.
func (d *Driver) choosePorts(self string, req []portBinding) ([]portBinding, error) {
	var chosen []portBinding
	for _, b := range req {
		first, last := b.HostPort, b.HostPort
		switch {
		case b.HostPort == 0:
			first, last = ephemeralFirst, ephemeralLast
		case b.HostPortEnd > b.HostPort:
			last = b.HostPortEnd
		}
		fixed := first == last
		found := false
		for p := int(first); p <= int(last); p++ {
			port := uint16(p)
			holder := d.grapevineHolder(self, chosen, b.Proto, b.HostIP, port)
			if holder == "" {
				busy, who, err := d.dp.PortInUse(b.Proto, b.HostIP, port)
				if err != nil {
					return nil, fmt.Errorf("check host port %d/%s: %w", port, b.Proto, err)
				}
				if busy {
					holder = who
					if holder == "" {
						holder = "another program"
					}
				}
			}
			if holder != "" {
				if fixed {
					return nil, fmt.Errorf("host port %d/%s is already in use (by %s); publish on another port", port, b.Proto, holder)
				}
				continue
			}
			c := b
			c.HostPort, c.HostPortEnd = port, port
			chosen = append(chosen, c)
			found = true
			break
		}
		if !found {
			return nil, fmt.Errorf("no free host port in %d-%d/%s; publish on another port range", first, last, b.Proto)
		}
	}
	return chosen, nil
}

// grapevineHolder names the grapevine binding holding proto/port on an
// overlapping host address ("" = none), ignoring endpoint self.
func (d *Driver) grapevineHolder(self string, chosen []portBinding, proto dataplane.Proto, hostIP netip.Addr, port uint16) string {
	overlaps := func(b portBinding) bool {
		return b.Proto == proto && b.HostPort == port &&
			(!b.HostIP.IsValid() || !hostIP.IsValid() || b.HostIP == hostIP)
	}
	if slices.ContainsFunc(chosen, overlaps) {
		return "another port of the same container"
	}
	for _, e := range d.endpoints {
		if e.ID == self {
			continue
		}
		if slices.ContainsFunc(e.Bindings, overlaps) {
			return fmt.Sprintf("grapevine endpoint %s on network %s", shortID(e.ID), shortID(e.NetworkID))
		}
	}
	return ""
}

// portMapOption decodes Options["com.docker.network.portmap"]: a JSON-decoded
// list of {Proto, IP, Port, HostIP, HostPort, HostPortEnd}. Host IPs "",
// "0.0.0.0" and "::" mean all addresses; duplicates are dropped.
func portMapOption(opts map[string]any) ([]portBinding, error) {
	raw, ok := opts[optPortMap]
	if !ok || raw == nil {
		return nil, nil
	}
	list, err := objectList(raw, optPortMap)
	if err != nil {
		return nil, err
	}
	var out []portBinding
	for i, m := range list {
		where := fmt.Sprintf("published port #%d", i+1)
		var b portBinding
		if b.Proto, err = protoField(m, where); err != nil {
			return nil, err
		}
		if b.Port, err = portField(m, "Port", where, false); err != nil {
			return nil, err
		}
		if b.HostPort, err = portField(m, "HostPort", where, true); err != nil {
			return nil, err
		}
		if b.HostPortEnd, err = portField(m, "HostPortEnd", where, true); err != nil {
			return nil, err
		}
		if b.HostPortEnd != 0 && b.HostPortEnd < b.HostPort {
			return nil, fmt.Errorf("%s: host port range %d-%d is reversed", where, b.HostPort, b.HostPortEnd)
		}
		if b.HostPortEnd == b.HostPort {
			b.HostPortEnd = 0
		}
		if b.HostIP, err = hostIPField(m, where); err != nil {
			return nil, err
		}
		if !slices.Contains(out, b) {
			out = append(out, b)
		}
	}
	return out, nil
}

// exposedOption decodes Options["com.docker.network.endpoint.exposedports"].
func exposedOption(opts map[string]any) ([]transportPort, error) {
	raw, ok := opts[optExposed]
	if !ok || raw == nil {
		return nil, nil
	}
	list, err := objectList(raw, optExposed)
	if err != nil {
		return nil, err
	}
	var out []transportPort
	for i, m := range list {
		where := fmt.Sprintf("exposed port #%d", i+1)
		var t transportPort
		if t.Proto, err = protoField(m, where); err != nil {
			return nil, err
		}
		if t.Port, err = portField(m, "Port", where, false); err != nil {
			return nil, err
		}
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out, nil
}

// objectList accepts a JSON-decoded list of objects, or any Go value that
// encodes as one (tests and in-process callers pass typed slices).
func objectList(raw any, key string) ([]map[string]any, error) {
	if l, ok := raw.([]any); ok {
		out := make([]map[string]any, 0, len(l))
		for i, v := range l {
			m, ok := v.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("option %s item #%d is a %T, expected an object", key, i+1, v)
			}
			out = append(out, m)
		}
		return out, nil
	}
	data, err := json.Marshal(raw)
	if err != nil {
		return nil, fmt.Errorf("option %s is a %T, expected a list of objects", key, raw)
	}
	var out []map[string]any
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("option %s is a %T, expected a list of objects", key, raw)
	}
	return out, nil
}

func protoField(m map[string]any, where string) (dataplane.Proto, error) {
	v, ok := m["Proto"]
	if !ok || v == nil {
		return 0, fmt.Errorf("%s has no Proto", where)
	}
	if s, ok := v.(string); ok {
		switch strings.ToLower(s) {
		case "tcp":
			return dataplane.TCP, nil
		case "udp":
			return dataplane.UDP, nil
		case "sctp":
			return dataplane.SCTP, nil
		}
	}
	n, ok := number(v)
	if ok {
		switch p := dataplane.Proto(n); p {
		case dataplane.TCP, dataplane.UDP, dataplane.SCTP:
			if float64(p) == n {
				return p, nil
			}
		}
	}
	return 0, fmt.Errorf("%s: Proto %v is not allowed: use tcp (6), udp (17) or sctp (132)", where, v)
}

func portField(m map[string]any, key, where string, zeroOK bool) (uint16, error) {
	v, ok := m[key]
	if !ok || v == nil {
		if zeroOK {
			return 0, nil
		}
		return 0, fmt.Errorf("%s has no %s", where, key)
	}
	n, ok := number(v)
	lo := 1.0
	if zeroOK {
		lo = 0
	}
	if !ok || n != math.Trunc(n) || n < lo || n > 65535 {
		return 0, fmt.Errorf("%s: %s %v is not a port number (%v..65535)", where, key, v, lo)
	}
	return uint16(n), nil
}

func hostIPField(m map[string]any, where string) (netip.Addr, error) {
	v, ok := m["HostIP"]
	if !ok || v == nil {
		return netip.Addr{}, nil
	}
	s, ok := v.(string)
	if !ok {
		return netip.Addr{}, fmt.Errorf("%s: HostIP is a %T, expected a string", where, v)
	}
	if s == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%s: HostIP %q is not an IP address", where, s)
	}
	a = a.Unmap()
	if a.IsUnspecified() {
		return netip.Addr{}, nil
	}
	if !a.Is4() {
		return netip.Addr{}, fmt.Errorf("%s: host address %s is IPv6; grapevine publishes ports on IPv4 only", where, a)
	}
	return a, nil
}

// number reads a JSON number (float64 after decoding) or a Go integer.
func number(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case uint8:
		return float64(n), true
	case uint16:
		return float64(n), true
	case uint32:
		return float64(n), true
	case string:
		f, err := strconv.ParseFloat(n, 64)
		return f, err == nil
	}
	return 0, false
}

// PublishedPort is one programmed port mapping as `grapevine status` lists
// it: Docker 20.10 cannot show a remote driver's mappings (`docker port` is
// empty), so this is where an operator finds them.
type PublishedPort struct {
	Network       string `json:"network"`
	Endpoint      string `json:"endpoint"`
	Proto         string `json:"proto"`
	HostIP        string `json:"host_ip"` // "0.0.0.0": every IPv4 address of the host
	HostPort      uint16 `json:"host_port"`
	ContainerIP   string `json:"container_ip"`
	ContainerPort uint16 `json:"container_port"`
}

// PublishedPorts lists the programmed port mappings of this host, sorted by
// host port.
func (d *Driver) PublishedPorts() []PublishedPort {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []PublishedPort
	for _, r := range d.desiredFirewall().Ports {
		host := "0.0.0.0"
		if r.HostIP.IsValid() {
			host = r.HostIP.String()
		}
		out = append(out, PublishedPort{
			Network: shortID(r.NetworkID), Endpoint: shortID(r.EndpointID), Proto: r.Proto.String(),
			HostIP: host, HostPort: r.HostPort, ContainerIP: r.ContainerIP.String(), ContainerPort: r.ContainerPort,
		})
	}
	slices.SortFunc(out, func(a, b PublishedPort) int {
		return cmp.Or(cmp.Compare(a.HostPort, b.HostPort), cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.HostIP, b.HostIP))
	})
	return out
}
