// Package names answers, on every host, the names of containers on the same
// grapevine network on other hosts: it learns the names of this host's
// endpoints from the Docker engine, publishes them as gossip records, and runs
// the resolver that Docker's forwarded queries are redirected to. The kernel
// side (the redirect rules, the original destination of a redirected query)
// lives in driver/dataplane. docs/names.md describes the mechanism.
package names

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"grapevine/gossip"
)

// Kind is the gossip record kind of endpoint names.
const Kind = "names"

// kindEndpoint is the driver's record kind of endpoints: key
// "<subnet>/<ip>", written by the endpoint's host.
const kindEndpoint = "endpoint"

// Limits on one endpoint's names record.
const (
	// MaxNames is the most names one endpoint publishes (container name
	// plus aliases).
	MaxNames = 16
	// MaxValueBytes caps the encoded value; gossip caps the whole record
	// below 1200 bytes.
	MaxValueBytes = 900
	maxNameLen    = 253
	maxLabelLen   = 63
	recordVersion = 1
)

// ErrBadRecord marks a names record refused for its form or content.
var ErrBadRecord = errors.New("bad names record")

// label is one DNS label as Docker's names use them: container names may
// hold '_' (Compose v1's project_service_1), never a dot at either end.
var label = regexp.MustCompile(`^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?$`)

// endpointID is a Docker endpoint id.
var endpointID = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Entry is one endpoint's names as published: the network (by subnet), the
// endpoint's address and id, the host that holds it and its names.
type Entry struct {
	Subnet   netip.Prefix
	Address  netip.Addr
	Endpoint string
	Host     string
	Names    []string
}

// value is the record's JSON value.
type value struct {
	Version  int      `json:"v"`
	Endpoint string   `json:"endpoint"`
	Names    []string `json:"names"`
}

// Key is the record key of an endpoint's names: "<subnet>/<ip>/<host>", so
// that gossip.OwnerSuffix checks the writer.
func Key(subnet netip.Prefix, addr netip.Addr, host string) string {
	return subnet.String() + "/" + addr.String() + "/" + host
}

// Encode returns e's record value, refusing what a receiver would refuse.
func Encode(e Entry) ([]byte, error) {
	v := value{Version: recordVersion, Endpoint: e.Endpoint, Names: e.Names}
	if err := v.check(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encoding names of endpoint %.12s: %w", e.Endpoint, err)
	}
	if len(b) > MaxValueBytes {
		return nil, fmt.Errorf("names of endpoint %.12s encode to %d bytes, more than %d: use fewer or shorter aliases: %w", e.Endpoint, len(b), MaxValueBytes, ErrBadRecord)
	}
	return b, nil
}

// Decode parses a live names record, checking every field; the key's host
// must be the record's writer.
func Decode(r gossip.Record) (Entry, error) {
	subnet, addr, host, err := parseKey(r.Key)
	if err != nil {
		return Entry{}, err
	}
	if host != r.Owner {
		return Entry{}, fmt.Errorf("names record %.64q is written by %q, not the host it names: %w", r.Key, r.Owner, gossip.ErrNotOwner)
	}
	if len(r.Value) > MaxValueBytes {
		return Entry{}, fmt.Errorf("names record %.64q value of %d bytes, more than %d: %w", r.Key, len(r.Value), MaxValueBytes, ErrBadRecord)
	}
	var v value
	if err := json.Unmarshal(r.Value, &v); err != nil {
		return Entry{}, fmt.Errorf("names record %.64q: %w: %w", r.Key, err, ErrBadRecord)
	}
	if err := v.check(); err != nil {
		return Entry{}, fmt.Errorf("names record %.64q: %w", r.Key, err)
	}
	return Entry{Subnet: subnet, Address: addr, Endpoint: v.Endpoint, Host: host, Names: v.Names}, nil
}

// parseKey splits "<subnet>/<ip>/<host>"; the address must be a host
// address of the subnet.
func parseKey(key string) (netip.Prefix, netip.Addr, string, error) {
	parts := strings.SplitN(key, "/", 4)
	if len(parts) != 4 || parts[3] == "" {
		return netip.Prefix{}, netip.Addr{}, "", fmt.Errorf("names key %.64q is not <subnet>/<ip>/<host>: %w", key, ErrBadRecord)
	}
	subnet, err := netip.ParsePrefix(parts[0] + "/" + parts[1])
	if err != nil || subnet != subnet.Masked() || !subnet.Addr().Is4() {
		return netip.Prefix{}, netip.Addr{}, "", fmt.Errorf("names key %.64q: subnet is not an IPv4 network address: %w", key, ErrBadRecord)
	}
	addr, err := netip.ParseAddr(parts[2])
	if err != nil || !subnet.Contains(addr) || addr == subnet.Addr() {
		return netip.Prefix{}, netip.Addr{}, "", fmt.Errorf("names key %.64q: address is not a host address of %s: %w", key, subnet, ErrBadRecord)
	}
	return subnet, addr, parts[3], nil
}

func (v value) check() error {
	if v.Version != recordVersion {
		return fmt.Errorf("version %d, want %d: %w", v.Version, recordVersion, ErrBadRecord)
	}
	if !endpointID.MatchString(v.Endpoint) {
		return fmt.Errorf("endpoint %.70q is not a Docker endpoint id: %w", v.Endpoint, ErrBadRecord)
	}
	if len(v.Names) == 0 || len(v.Names) > MaxNames {
		return fmt.Errorf("%d names, want 1-%d: %w", len(v.Names), MaxNames, ErrBadRecord)
	}
	for _, n := range v.Names {
		if err := CheckName(n); err != nil {
			return err
		}
	}
	if !slices.IsSorted(v.Names) || len(slices.Compact(slices.Clone(v.Names))) != len(v.Names) {
		return fmt.Errorf("names are not sorted and distinct: %w", ErrBadRecord)
	}
	return nil
}

// CheckName accepts a lower-case DNS name without the trailing dot, of
// labels of letters, digits, '-' and '_'.
func CheckName(n string) error {
	if n == "" || len(n) > maxNameLen {
		return fmt.Errorf("name of %d bytes, want 1-%d: %w", len(n), maxNameLen, ErrBadRecord)
	}
	for _, l := range strings.Split(n, ".") {
		if len(l) > maxLabelLen || !label.MatchString(l) {
			return fmt.Errorf("name %.64q is not a lower-case DNS name (labels of a-z, 0-9, '-', '_', at most %d each): %w", n, maxLabelLen, ErrBadRecord)
		}
	}
	return nil
}

// Canonical returns the names as published: lower-cased, without a
// trailing dot, sorted, without repeats and without names CheckName
// refuses (Docker accepts aliases a DNS name cannot hold).
func Canonical(in []string) []string {
	var out []string
	for _, n := range in {
		n = strings.TrimSuffix(strings.ToLower(n), ".")
		if CheckName(n) == nil {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) > MaxNames {
		out = out[:MaxNames]
	}
	return out
}

// Validator returns the check every received names record must pass before
// gossip stores it: the writer owns the key, the record is well formed, and
// the address is not another host's endpoint in the endpoint records. An
// endpoint record not yet received is checked again where the name is used
// (Table).
func Validator(c gossip.Replicated) func(gossip.Record) error {
	owner := gossip.OwnerSuffix("/")
	return func(r gossip.Record) error {
		if err := owner(r); err != nil {
			return err
		}
		if r.Deleted {
			return nil
		}
		e, err := Decode(r)
		if err != nil {
			return err
		}
		ep, ok := c.Get(kindEndpoint, endpointKey(e.Subnet, e.Address))
		if ok && !ep.Deleted && ep.Owner != e.Host {
			return fmt.Errorf("names record %.64q: address %s is the endpoint of host %q, not of its writer %q: %w", r.Key, e.Address, ep.Owner, e.Host, gossip.ErrNotOwner)
		}
		return nil
	}
}

func endpointKey(subnet netip.Prefix, addr netip.Addr) string {
	return subnet.String() + "/" + addr.String()
}

// Key is the entry's record key.
func (e Entry) Key() string { return Key(e.Subnet, e.Address, e.Host) }
