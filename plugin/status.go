package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"grapevine/driver"
	"grapevine/gossip"
	gvipam "grapevine/ipam"
	"grapevine/names"
)

// Status is what `grapevine status` shows: this host's view of its networks and
// address pools.
type Status struct {
	Host    string          `json:"host"`
	Node    string          `json:"node"`
	Joined  bool            `json:"joined"`
	Members []gossip.Member `json:"members"`
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
	// Ports are the published ports (`docker port` cannot show them).
	Ports []driver.PublishedPort `json:"published_ports,omitempty"`
	// Names are the names answered across hosts, per network and host.
	Names []names.NetworkNames `json:"names,omitempty"`
	Error string               `json:"error,omitempty"`
	// IdentityConflict says that another live host uses this host's node
	// identity (a cloned machine), and how to reset it.
	IdentityConflict string `json:"identity_conflict,omitempty"`
}

func (p *process) status() any {
	host, _ := os.Hostname()
	st := Status{
		Host:          host,
		Node:          p.node,
		Joined:        p.cluster.Joined(),
		Members:       p.cluster.Members(),
		GossipRefused: p.cluster.RefusalStats(),
		Settings: map[string]string{
			envPeers:      strings.Join(p.settings.Peers, ","),
			envAdvertise:  p.settings.Advertise,
			envGossipPort: fmt.Sprint(p.settings.GossipPort),
			envVXLANPort:  fmt.Sprint(p.settings.VXLANPort),
			envGossipKey:  keysShown(len(p.settings.GossipKeys)),
			envInsecure:   fmt.Sprint(p.settings.InsecurePlaintextGossip),
			envPool:       p.settings.Pool.String(),
			envScope:      p.settings.Scope,
			envLogLevel:   p.settings.LogLevel.String(),
		},
		Networks: p.driver.Status(),
		Pools:    p.ipam.Status(),
		Refused:  refusedCounts(p.driver.Refused(), p.ipam.Refused()),
		Ports:    p.driver.PublishedPorts(),
	}
	if in, err := p.driver.VXLANIngress(); err != nil {
		p.log.WithError(err).Warn("status: VXLAN ingress filter unreadable")
	} else if in.Port != 0 {
		st.VXLANIngress = &in
	}
	if p.names != nil {
		st.Names = p.names.Status()
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

// pluginsDir is where dockerd serves plugin sockets.
const pluginsDir = "/run/docker/plugins"

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

// FindSocket locates the plugin socket on this host: the managed plugin's socket
// lives under /run/docker/plugins/<plugin-id>/grapevine.sock.
func FindSocket() (string, error) { return findSocket(pluginsDir) }

// findSocket looks for grapevine.sock in dir's subdirectories (managed
// plugins) and in dir itself (a plugin run by hand).
func findSocket(dir string) (string, error) {
	matches, _ := filepath.Glob(filepath.Join(dir, "*", "grapevine.sock"))
	if m, _ := filepath.Glob(filepath.Join(dir, "grapevine.sock")); len(m) == 1 {
		matches = append(matches, m...)
	}
	switch len(matches) {
	case 0:
		return "", fmt.Errorf("no grapevine socket under %s: is the plugin enabled (`docker plugin ls`)?", dir)
	case 1:
		return matches[0], nil
	}
	return "", fmt.Errorf("several grapevine sockets found (%s): choose one with --socket", strings.Join(matches, ", "))
}

// QueryStatus asks the running plugin on socket for its status as raw JSON.
func QueryStatus(ctx context.Context, socket string) ([]byte, error) {
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}, Timeout: 10 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://plugin"+StatusPath, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("asking the plugin at %s: %w", socket, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading the plugin's answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("plugin answered %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// PrintStatus writes a human-readable status report.
func PrintStatus(w io.Writer, raw []byte) error {
	var st Status
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("decoding the plugin's status: %w", err)
	}
	fmt.Fprintf(w, "host:      %s\n", st.Host)
	fmt.Fprintf(w, "underlay:  %s\n", st.Underlay)
	if st.Error != "" {
		fmt.Fprintf(w, "error:     %s\n", st.Error)
	}
	if st.IdentityConflict != "" {
		fmt.Fprintf(w, "IDENTITY CONFLICT: %s\n", st.IdentityConflict)
	}
	fmt.Fprintf(w, "settings:  ")
	for _, k := range []string{envPeers, envAdvertise, envGossipPort, envVXLANPort, envGossipKey, envInsecure, envPool, envScope, envLogLevel} {
		fmt.Fprintf(w, "%s=%s ", k, st.Settings[k])
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "node:      %s (joined: %v)\n", st.Node, st.Joined)
	if len(st.Refused) > 0 {
		var causes []string
		for c, n := range st.Refused {
			causes = append(causes, fmt.Sprintf("%s=%d", c, n))
		}
		sort.Strings(causes)
		fmt.Fprintf(w, "refused:   %s (other hosts' records not used; see the log for each)\n", strings.Join(causes, " "))
	}
	if in := st.VXLANIngress; in != nil {
		fmt.Fprintf(w, "vxlan:     udp/%d accepted from %d member VTEP(s) %s; %d frame(s) from elsewhere dropped\n",
			in.Port, len(in.Peers), strings.Join(in.Peers, ","), in.Dropped)
	}
	fmt.Fprintln(w, "\nPEERS")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tADDRESS\tVTEP\tSTATE\tRELEASE")
	for _, m := range st.Members {
		name := m.Name
		if m.Self {
			name += " (this host)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", name, m.Addr, m.Meta.VTEP, m.State, m.Meta.Release)
	}
	tw.Flush()
	for _, r := range st.GossipRefused {
		fmt.Fprintf(w, "REFUSED %d gossip records written as %s: %s\n", r.Count, r.Peer, r.Cause)
	}
	fmt.Fprintln(w, "\nNETWORKS")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tMODE\tSUBNET\tGATEWAY\tVNI/PARENT\tMTU\tLOCAL\tREMOTE\tREMOTE BY HOST")
	for _, n := range st.Networks {
		link := fmt.Sprint(n.VNI)
		if n.Mode == "macvlan" {
			link = n.Parent
			if link == "" {
				link = "(none)"
			}
		}
		mode := n.Mode
		if n.Internal {
			mode += ",internal"
		}
		var byHost []string
		for h, c := range n.RemoteHosts {
			byHost = append(byHost, fmt.Sprintf("%s=%d", h, c))
		}
		sort.Strings(byHost)
		remote := fmt.Sprint(n.RemoteEndpoints)
		if n.RemoteUnreachable > 0 {
			remote += fmt.Sprintf(" (%d unreachable)", n.RemoteUnreachable)
		}
		fmt.Fprintf(tw, "%.12s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", n.ID, mode, n.Subnet, n.Gateway, link, n.MTU, n.Endpoints, remote, strings.Join(byHost, " "))
	}
	tw.Flush()
	for _, n := range st.Networks {
		if n.Conflict != "" {
			fmt.Fprintf(w, "CONFLICT %.12s: %s\n", n.ID, n.Conflict)
		}
		if n.Reach != "" {
			fmt.Fprintf(w, "%.12s: %s", n.ID, n.Reach)
			if n.HostAccess != "" {
				fmt.Fprintf(w, "; host access via %s", n.HostAccess)
			}
			fmt.Fprintln(w)
		}
	}
	if len(st.Ports) > 0 {
		fmt.Fprintln(w, "\nPUBLISHED PORTS (docker port cannot show a remote driver's)")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "HOST\tCONTAINER\tPROTO\tNETWORK\tENDPOINT")
		for _, pp := range st.Ports {
			fmt.Fprintf(tw, "%s:%d\t%s:%d\t%s\t%s\t%s\n", pp.HostIP, pp.HostPort, pp.ContainerIP, pp.ContainerPort, pp.Proto, pp.Network, pp.Endpoint)
		}
		tw.Flush()
	}
	printNames(w, st.Names)
	fmt.Fprintln(w, "\nPOOLS")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POOL\tRANGE\tSPACE\tGATEWAY\tALLOCATED\tFREE\tOWNED BY THIS HOST")
	for _, p := range st.Pools {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d/%d\t%s\n", p.Pool, p.SubPool, p.Space, p.Gateway, p.Allocated, p.Free, p.Capacity, strings.Join(p.Owned, ","))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, p := range st.Pools {
		if len(p.Lost) > 0 {
			fmt.Fprintf(w, "WARNING %s: blocks %s were reclaimed by the cluster while this host was away; they are not used\n", p.Pool, strings.Join(p.Lost, ","))
		}
		if len(p.Blocks) == 0 {
			continue
		}
		fmt.Fprintf(w, "\nBLOCKS of %s\n", p.Pool)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "FIRST\tLAST\tOWNER")
		for _, b := range p.Blocks {
			owner := b.Owner
			if b.Reclaimed {
				owner += " (reclaimed)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", b.First, b.Last, owner)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// printNames lists the names answered across hosts, per network and host.
func printNames(w io.Writer, nets []names.NetworkNames) {
	if len(nets) == 0 {
		return
	}
	fmt.Fprintln(w, "\nNAMES (answered to the network's containers on this host)")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SUBNET\tHOST\tNAME=ADDRESS")
	for _, n := range nets {
		hosts := make([]string, 0, len(n.Hosts))
		for h := range n.Hosts {
			hosts = append(hosts, h)
		}
		sort.Strings(hosts)
		for _, h := range hosts {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", n.Subnet, h, strings.Join(n.Hosts[h], " "))
		}
	}
	tw.Flush()
}
