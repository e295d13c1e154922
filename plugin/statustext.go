package plugin

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
)

// DecodeStatus reads the plugin's status JSON, refusing another schema.
func DecodeStatus(raw []byte) (Status, error) {
	var st Status
	if err := json.Unmarshal(raw, &st); err != nil {
		return Status{}, fmt.Errorf("decoding the plugin's status: %w", err)
	}
	if st.Schema != StatusSchema {
		return Status{}, fmt.Errorf("the plugin's status has schema %d, this grapevine reads schema %d: run the grapevine binary of the plugin's release", st.Schema, StatusSchema)
	}
	return st, nil
}

// PrintStatus writes the human-readable report of the plugin's status JSON.
func PrintStatus(w io.Writer, raw []byte) error {
	st, err := DecodeStatus(raw)
	if err != nil {
		return err
	}
	return st.WriteText(w)
}

// WriteText writes the human-readable report: a summary, then the peers,
// networks, published ports, names and pools.
func (st Status) WriteText(w io.Writer) error {
	st.writeSummary(w)
	for _, section := range []func(io.Writer) error{st.writePeers, st.writeNetworks, st.writePorts, st.writeNames, st.writePools} {
		if err := section(w); err != nil {
			return err
		}
	}
	return nil
}

func (st Status) writeSummary(w io.Writer) {
	fmt.Fprintf(w, "host:      %s\n", st.Host)
	fmt.Fprintf(w, "underlay:  %s\n", st.Underlay)
	if st.Error != "" {
		fmt.Fprintf(w, "error:     %s\n", st.Error)
	}
	if st.IdentityConflict != "" {
		fmt.Fprintf(w, "IDENTITY CONFLICT: %s\n", st.IdentityConflict)
	}
	if len(st.Forgotten) > 0 {
		fmt.Fprintf(w, "forgotten: %s\n", strings.Join(st.Forgotten, ", "))
	}
	fmt.Fprintf(w, "settings:  ")
	for _, k := range settingNames {
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
	if tn := st.Tunnel; tn != nil {
		fmt.Fprintf(w, "tunnel:    %s WireGuard on %s udp/%d, key %s\n", tn.Mode, tn.Link, tn.ListenPort, tn.PublicKey)
		for _, p := range tn.Peers {
			age := "no handshake yet"
			if p.HandshakeAge >= 0 {
				age = fmt.Sprintf("handshake %ds ago", p.HandshakeAge)
			}
			fmt.Fprintf(w, "           peer %s at %s: %s, rx %d B, tx %d B\n", p.Node, p.Endpoint, age, p.RxBytes, p.TxBytes)
		}
	}
}

func (st Status) writePeers(w io.Writer) error {
	fmt.Fprintln(w, "\nPEERS")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tADDRESS\tVTEP\tSTATE\tRELEASE")
	for _, m := range st.Members {
		name := m.Name
		if m.Self {
			name += " (this host)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", name, m.Addr, m.VTEP, m.State, m.Release)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range st.GossipRefused {
		fmt.Fprintf(w, "REFUSED %d gossip records written as %s: %s\n", r.Count, r.Peer, r.Cause)
	}
	return nil
}

func (st Status) writeNetworks(w io.Writer) error {
	fmt.Fprintln(w, "\nNETWORKS")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
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
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range st.Networks {
		if n.Conflict != "" {
			fmt.Fprintf(w, "CONFLICT %.12s: %s\n", n.ID, n.Conflict)
		}
		if n.Reach != "" {
			fmt.Fprintf(w, "%.12s: %s", n.ID, n.Reach)
			if n.HostAccess != "" {
				fmt.Fprintf(w, "; host access via %s", n.HostAccess)
				if n.HostAccessAllocated {
					fmt.Fprint(w, " (allocated)")
				}
			}
			fmt.Fprintln(w)
			if len(n.HostShims) > 0 {
				var shims []string
				for _, h := range slices.Sorted(maps.Keys(n.HostShims)) {
					shims = append(shims, h+"="+n.HostShims[h])
				}
				fmt.Fprintf(w, "%.12s: host shims %s\n", n.ID, strings.Join(shims, " "))
			}
		}
	}
	return nil
}

func (st Status) writePorts(w io.Writer) error {
	if len(st.Ports) == 0 {
		return nil
	}
	fmt.Fprintln(w, "\nPUBLISHED PORTS (docker port cannot show a remote driver's)")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tCONTAINER\tPROTO\tNETWORK\tENDPOINT")
	for _, pp := range st.Ports {
		fmt.Fprintf(tw, "%s:%d\t%s:%d\t%s\t%s\t%s\n", pp.HostIP, pp.HostPort, pp.ContainerIP, pp.ContainerPort, pp.Proto, pp.Network, pp.Endpoint)
	}
	return tw.Flush()
}

func (st Status) writePools(w io.Writer) error {
	fmt.Fprintln(w, "\nPOOLS")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
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

// writeNames lists the names answered across hosts, per network and host.
func (st Status) writeNames(w io.Writer) error {
	if len(st.Names) == 0 {
		return nil
	}
	fmt.Fprintf(w, "\nNAMES (answered to the network's containers on this host; %d containers tapped)\n", st.NamesTapped)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SUBNET\tHOST\tNAME=ADDRESS")
	for _, n := range st.Names {
		for _, h := range slices.Sorted(maps.Keys(n.Hosts)) {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", n.Subnet, h, strings.Join(n.Hosts[h], " "))
		}
	}
	return tw.Flush()
}
