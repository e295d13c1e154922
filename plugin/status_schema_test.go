package plugin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"grapevine/driver"
	"grapevine/gossip"
	gvipam "grapevine/ipam"
	"grapevine/names"
)

// fullStatus is a Status with every field, at every depth, set.
func fullStatus() Status {
	return Status{
		Schema: StatusSchema, Host: "h1", Node: "h1-abc123", Joined: true,
		Members: []MemberStatus{{Name: "h1-abc123", Addr: "198.18.0.1:7947", State: "alive", Self: true,
			VTEP: "198.18.0.1", Release: "v1", MetaError: "unknown version 9"}},
		GossipRefused: []gossip.Refusal{{Peer: "h3-aaa", Cause: gossip.CauseNotOwner, Count: 7}},
		Settings:      map[string]string{envPeers: "198.18.0.2", envGossipKey: "(set)"},
		Underlay:      "198.18.0.1 dev eth0 mtu 1500",
		Networks: []driver.NetworkStatus{{ID: "0123456789abcdef", Mode: "macvlan", Subnet: "198.19.20.0/24", Gateway: "198.19.20.1",
			VNI: 42, MTU: 1450, Bridge: "gvb-0123456789a", VXLAN: "gvx-0123456789a", Tunnel: "gvt-wireguard", Endpoints: 2, Published: 1, Internal: true,
			RemoteEndpoints: 3, RemoteUnreachable: 1, RemoteHosts: map[string]int{"h2-def456": 3}, Conflict: "h3 defines it as vni=5",
			ParentOption: "eth1.10", Parent: "eth1.10", HostAccess: "198.19.20.254", HostAccessAllocated: true,
			HostShims: map[string]string{"h1-abc123": "198.19.20.254", "h2-def456": "198.19.20.253"}, Reach: "LAN of eth1.10"}},
		Pools: []gvipam.PoolStatus{{PoolID: "grapevine-local/198.19.20.0/24", Space: "grapevine-local", Pool: "198.19.20.0/24",
			SubPool: "198.19.20.0/25", Gateway: "198.19.20.1", Refs: 1, Allocated: 2, Capacity: 62, Free: 60,
			Owned:  []string{"198.19.20.0-198.19.20.63"},
			Blocks: []gvipam.BlockStatus{{First: "198.19.20.0", Last: "198.19.20.63", Owner: "h1-abc123", Reclaimed: true}},
			Lost:   []string{"198.19.20.64-198.19.20.127"}, HostAddress: "198.19.20.254"}},
		Refused:      map[string]uint64{"mac_not_unicast": 2},
		VXLANIngress: &driver.VXLANIngressStatus{Port: 4789, Peers: []string{"198.18.0.2"}, Dropped: 5},
		Tunnel: &driver.TunnelStatus{Mode: "userspace", Link: "gvt-wireguard", PublicKey: "a2V5", ListenPort: 51820,
			Peers: []driver.TunnelPeerStatus{{Node: "h2-def456", PublicKey: "a2V5", Endpoint: "198.18.0.2:51820", HandshakeAge: 3, RxBytes: 1, TxBytes: 2}}},
		Ports: []driver.PublishedPort{{Network: "0123456789ab", Endpoint: "ba9876543210", Proto: "tcp", HostIP: "0.0.0.0",
			HostPort: 8080, ContainerIP: "198.19.20.5", ContainerPort: 80}},
		Names:            []names.NetworkNames{{Subnet: "198.19.20.0/24", Hosts: map[string][]string{"h2-def456": {"db=198.19.20.9"}}}},
		NamesTapped:      3,
		Error:            "resolving ADVERTISE",
		IdentityConflict: "h1-abc123 is also used by 198.18.0.9",
		Forgotten:        []string{"h4-0a0b0c"},
	}
}

// zeroFields lists the paths of the fields of v left zero (or empty).
func zeroFields(v reflect.Value, path string) []string {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return []string{path}
		}
		return zeroFields(v.Elem(), path)
	case reflect.Struct:
		var out []string
		for i := range v.NumField() {
			out = append(out, zeroFields(v.Field(i), path+"."+v.Type().Field(i).Name)...)
		}
		return out
	case reflect.Slice:
		if v.Len() == 0 {
			return []string{path}
		}
		return zeroFields(v.Index(0), path+"[]")
	}
	if v.IsZero() {
		return []string{path}
	}
	return nil
}

// TestStatusJSONRoundTrip: the JSON of a status with every field set
// decodes to the same status, with every section present, and the text
// report of the JSON is the report of the struct.
func TestStatusJSONRoundTrip(t *testing.T) {
	st := fullStatus()
	if zero := zeroFields(reflect.ValueOf(st), "Status"); len(zero) > 0 {
		t.Fatalf("fullStatus leaves fields zero, so the round trip does not cover them: %v", zero)
	}
	raw, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeStatus(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, st) {
		t.Fatalf("round trip changed the status:\n got %+v\nwant %+v", got, st)
	}
	var sections map[string]json.RawMessage
	if err := json.Unmarshal(raw, &sections); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"schema", "host", "node", "joined", "members", "gossip_refused", "settings", "underlay",
		"networks", "pools", "refused", "vxlan_ingress", "published_ports", "error", "identity_conflict", "forgotten"} {
		if _, ok := sections[key]; !ok {
			t.Errorf("the JSON lacks section %q: %s", key, raw)
		}
	}
	var fromJSON, fromStruct bytes.Buffer
	if err := PrintStatus(&fromJSON, raw); err != nil {
		t.Fatal(err)
	}
	if err := st.WriteText(&fromStruct); err != nil {
		t.Fatal(err)
	}
	if fromJSON.String() != fromStruct.String() {
		t.Fatalf("text of the JSON:\n%s\ntext of the struct:\n%s", fromJSON.String(), fromStruct.String())
	}
}

// TestDecodeStatusRefusesOtherSchemas: a status of another version (or one
// from before versions) is refused with a message saying what to do.
func TestDecodeStatusRefusesOtherSchemas(t *testing.T) {
	for _, raw := range []string{`{"schema":2,"host":"h1"}`, `{"host":"h1","members":[]}`} {
		_, err := DecodeStatus([]byte(raw))
		if err == nil || !strings.Contains(err.Error(), "this grapevine reads schema 1") {
			t.Errorf("%s: %v", raw, err)
		}
	}
}

// jsonPaths lists the JSON field paths of t ("members[].name"), at every depth.
func jsonPaths(t reflect.Type, prefix string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var out []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			name = f.Name
		}
		path := prefix + name
		out = append(out, path)
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Slice {
			out = append(out, jsonPaths(ft.Elem(), path+"[].")...)
		} else {
			out = append(out, jsonPaths(ft, path+".")...)
		}
	}
	return out
}

// TestStatusSchemaDocumented: docs/status.md documents every field of the
// JSON, and no field the JSON does not have.
func TestStatusSchemaDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/status.md")
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z_.\\[\\]]+)` \\|").FindAllSubmatch(doc, -1) {
		documented = append(documented, string(m[1]))
	}
	fields := jsonPaths(reflect.TypeFor[Status](), "")
	for _, f := range fields {
		if !slices.Contains(documented, f) {
			t.Errorf("docs/status.md does not document %s", f)
		}
	}
	for _, d := range documented {
		if !slices.Contains(fields, d) {
			t.Errorf("docs/status.md documents %s, which the status does not have", d)
		}
	}
	if !strings.Contains(string(doc), fmt.Sprintf("now **%d**", StatusSchema)) {
		t.Errorf("docs/status.md does not name schema version %d", StatusSchema)
	}
}

// TestMemberStatuses: members are shown with their state by name and
// their VTEP, whatever gossip's own types are.
func TestMemberStatuses(t *testing.T) {
	got := memberStatuses([]gossip.Member{
		{Name: "h1-abc123", Addr: netip.MustParseAddrPort("198.18.0.1:7947"), Self: true,
			Meta: gossip.NodeMeta{VTEP: netip.MustParseAddr("198.18.0.1"), Release: "v1"}},
		{Name: "h2-def456", Addr: netip.MustParseAddrPort("198.18.0.2:7947"), State: gossip.StateDead, MetaErr: "bad"},
	})
	want := []MemberStatus{
		{Name: "h1-abc123", Addr: "198.18.0.1:7947", State: "alive", Self: true, VTEP: "198.18.0.1", Release: "v1"},
		{Name: "h2-def456", Addr: "198.18.0.2:7947", State: "dead", MetaError: "bad"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
}
