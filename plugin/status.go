package plugin

import (
	"fmt"
	"os"
	"strings"

	"grapevine/driver"
	"grapevine/gossip"
	gvipam "grapevine/ipam"
	"grapevine/names"
)

// StatusSchema is the version of Status's JSON, field "schema" of
// `grapevine status --json`. Fields may be added within a version; a field
// that is renamed, removed or changes meaning makes a new version.
// docs/status.md documents every field.
const StatusSchema = 1

// Status is what `grapevine status` shows: this host's view of its cluster,
// networks and address pools. The plugin answers it as JSON on StatusPath;
// `grapevine status --json` prints that JSON and the text report is
// rendered from the same struct (WriteText).
type Status struct {
	Schema  int            `json:"schema"`
	Host    string         `json:"host"`
	Node    string         `json:"node"`
	Joined  bool           `json:"joined"`
	Members []MemberStatus `json:"members"`
	// GossipRefused counts records the gossip layer refused at the
	// boundary, by writer and cause.
	GossipRefused []gossip.Refusal       `json:"gossip_refused,omitempty"`
	Settings      map[string]string      `json:"settings"`
	Underlay      string                 `json:"underlay,omitempty"`
	Networks      []driver.NetworkStatus `json:"networks"`
	Pools         []gvipam.PoolStatus    `json:"pools"`
	// Refused counts other hosts' records refused where they are used
	// (endpoint and block records), by cause.
	Refused map[string]uint64 `json:"refused,omitempty"`
	// VXLANIngress is the filter of the VXLAN port (absent: no VXLAN network).
	VXLANIngress *driver.VXLANIngressStatus `json:"vxlan_ingress,omitempty"`
	// Tunnel is the WireGuard tunnel of encrypted networks (absent: none).
	Tunnel *driver.TunnelStatus `json:"tunnel,omitempty"`
	// Ports are the published ports (`docker port` cannot show them).
	Ports []driver.PublishedPort `json:"published_ports,omitempty"`
	// Names are the names answered across hosts, per network and host.
	Names []names.NetworkNames `json:"names,omitempty"`
	// NamesTapped counts the containers whose queries the names tap sees.
	NamesTapped int    `json:"names_tapped,omitempty"`
	Error       string `json:"error,omitempty"`
	// IdentityConflict says that another live host uses this host's node
	// identity (a cloned machine), and how to reset it.
	IdentityConflict string `json:"identity_conflict,omitempty"`
	// Forgotten are the hosts the cluster forgot by agreement
	// (`grapevine forget`), as this host learned it.
	Forgotten []string `json:"forgotten,omitempty"`
}

// MemberStatus is one member of the gossip cluster as this host sees it.
type MemberStatus struct {
	Name    string `json:"name"`
	Addr    string `json:"addr"`  // gossip address, ip:port
	State   string `json:"state"` // alive, dead or left
	Self    bool   `json:"self,omitempty"`
	VTEP    string `json:"vtep,omitempty"`
	Release string `json:"release,omitempty"`
	// MetaError describes metadata this host could not decode.
	MetaError string `json:"meta_error,omitempty"`
}

// memberStatuses converts gossip's members for the status.
func memberStatuses(ms []gossip.Member) []MemberStatus {
	out := make([]MemberStatus, 0, len(ms))
	for _, m := range ms {
		st := MemberStatus{Name: m.Name, Addr: m.Addr.String(), State: m.State.String(), Self: m.Self,
			Release: m.Meta.Release, MetaError: m.MetaErr}
		if m.Meta.VTEP.IsValid() {
			st.VTEP = m.Meta.VTEP.String()
		}
		out = append(out, st)
	}
	return out
}

// errorStatus is the status of a plugin that refuses every request.
func errorStatus(err error) Status {
	host, _ := os.Hostname()
	return Status{Schema: StatusSchema, Host: host, Members: []MemberStatus{}, Settings: map[string]string{},
		Networks: []driver.NetworkStatus{}, Pools: []gvipam.PoolStatus{}, Error: err.Error()}
}

func (p *process) status() any {
	host, _ := os.Hostname()
	st := Status{
		Schema:        StatusSchema,
		Host:          host,
		Node:          p.node,
		Joined:        p.cluster.Joined(),
		Members:       memberStatuses(p.cluster.Members()),
		GossipRefused: p.cluster.RefusalStats(),
		Settings:      p.settings.shown(),
		Networks:      p.driver.Status(),
		Pools:         p.ipam.Status(),
		Refused:       refusedCounts(p.driver.Refused(), p.ipam.Refused()),
		Ports:         p.driver.PublishedPorts(),
		Forgotten:     p.ipam.Forgotten(),
	}
	if in, err := p.driver.VXLANIngress(); err != nil {
		p.log.WithError(err).Warn("status: VXLAN ingress filter unreadable")
	} else if in.Port != 0 {
		st.VXLANIngress = &in
	}
	if tn, err := p.driver.Tunnel(); err != nil {
		p.log.WithError(err).Warn("status: tunnel unreadable")
	} else {
		st.Tunnel = tn
	}
	if p.names != nil {
		st.Names, st.NamesTapped = p.names.Status(), p.names.Tapped()
	}
	if err := p.clone.conflictError(); err != nil {
		st.IdentityConflict = err.Error()
	}
	if u, err := p.resolveUnderlay(); err == nil {
		st.Underlay = fmt.Sprintf("%s dev %s mtu %d", u.Addr, u.Link, u.MTU)
	} else {
		st.Error = err.Error()
	}
	return st
}

// settingNames are the settings in the order the status shows them.
var settingNames = []string{envPeers, envAdvertise, envGossipPort, envVXLANPort, envGossipKey, envInsecure, envPool, envScope, envLogLevel, envForget}

// shown is every setting by name, as the status shows it: GOSSIP_KEY only
// says whether it is set.
func (s Settings) shown() map[string]string {
	return map[string]string{
		envPeers:      strings.Join(s.Peers, ","),
		envAdvertise:  s.Advertise,
		envGossipPort: fmt.Sprint(s.GossipPort),
		envVXLANPort:  fmt.Sprint(s.VXLANPort),
		envGossipKey:  keysShown(len(s.GossipKeys)),
		envInsecure:   fmt.Sprint(s.InsecurePlaintextGossip),
		envPool:       s.Pool.String(),
		envScope:      s.Scope,
		envLogLevel:   s.LogLevel.String(),
		envForget:     s.ForgetAfter.String(),
	}
}

// refusedCounts merges counts by cause (the causes of the driver and of
// IPAM are distinct); nil when there are none.
func refusedCounts(parts ...map[string]uint64) map[string]uint64 {
	var out map[string]uint64
	for _, m := range parts {
		for k, v := range m {
			if out == nil {
				out = map[string]uint64{}
			}
			out[k] += v
		}
	}
	return out
}

// keysShown describes GOSSIP_KEY without showing it.
func keysShown(n int) string {
	switch n {
	case 0:
		return "(none)"
	case 1:
		return "(set)"
	}
	return fmt.Sprintf("(set, %d keys)", n)
}
