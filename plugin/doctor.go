package plugin

import (
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"grapevine/driver"
	"grapevine/gossip"
)

// `grapevine doctor [HOST]`: the plugin runs active checks of this host
// and of its paths to the other members (all of them, or HOST only) and
// answers a checklist; every failed check names its cause and its fix
// (docs/doctor.md).

// DoctorPath is the route `grapevine doctor` asks on the plugin socket.
const DoctorPath = "/Grapevine.Doctor"

// DoctorSchema is the version of Report's JSON (`grapevine doctor
// --json`), with the same rules as StatusSchema.
const DoctorSchema = 1

// DoctorRequest is the body of a DoctorPath call.
type DoctorRequest struct {
	// Peer limits the per-peer checks to one member: its node name, its
	// host name or its address ("" = every member).
	Peer string `json:"peer,omitempty"`
}

// Check results.
const (
	ResultPass = "pass"
	ResultWarn = "warn" // worth knowing; not a failure
	ResultFail = "fail"
	ResultSkip = "skip" // not applicable here
)

// Check is one line of the checklist.
type Check struct {
	Check  string `json:"check"`          // what was checked, e.g. "gossip", "vxlan-path", "mtu"
	Peer   string `json:"peer,omitempty"` // the member it concerns (node name)
	Result string `json:"result"`         // pass, warn, fail or skip
	Detail string `json:"detail"`         // what was found
	Fix    string `json:"fix,omitempty"`  // what to do, for warn and fail
}

// Report is the doctor's answer.
type Report struct {
	Schema int     `json:"schema"`
	Host   string  `json:"host"`
	Node   string  `json:"node,omitempty"`
	Peer   string  `json:"peer,omitempty"` // the HOST asked for, as given
	Checks []Check `json:"checks"`
}

// Failed reports whether any check failed.
func (r Report) Failed() bool {
	return slices.ContainsFunc(r.Checks, func(c Check) bool { return c.Result == ResultFail })
}

// report collects checks.
type report struct{ Report }

func (r *report) add(check, peer, result, detail, fix string) {
	r.Checks = append(r.Checks, Check{Check: check, Peer: peer, Result: result, Detail: detail, Fix: fix})
}

// doctor runs every check: this host's first, then each peer's, then the
// drift pass.
func (p *process) doctor(req DoctorRequest) Report {
	host, _ := os.Hostname()
	r := &report{Report{Schema: DoctorSchema, Host: host, Node: p.node, Peer: req.Peer, Checks: []Check{}}}
	members := p.cluster.Members()
	peer := ""
	if req.Peer != "" {
		m, ok := findMember(members, req.Peer)
		if !ok {
			r.add("member", req.Peer, ResultFail, fmt.Sprintf("no member of this host's cluster is called or addressed %q", req.Peer),
				"name a member as `grapevine status` lists it (node name, host name or address)")
			return r.Report
		}
		peer = m.Name
	}
	p.checkIdentity(r)
	p.checkUnderlay(r)
	p.checkKernel(r)
	p.checkFirewall(r)
	p.checkGossipKeys(r, members, peer)
	p.checkMembers(r, members, peer)
	p.checkPaths(r, peer)
	p.checkTunnel(r, peer)
	p.checkNames(r)
	p.checkDrift(r)
	return r.Report
}

// findMember finds the member q names: its node name, its host name (the
// node name without the "-<hex>" suffix), its gossip address or its VTEP.
func findMember(ms []gossip.Member, q string) (gossip.Member, bool) {
	for _, m := range ms {
		hostname := m.Name
		if i := strings.LastIndexByte(hostname, '-'); i > 0 {
			hostname = hostname[:i]
		}
		if !m.Self && (m.Name == q || hostname == q || m.Addr.Addr().String() == q || m.Meta.VTEP.String() == q) {
			return m, true
		}
	}
	return gossip.Member{}, false
}

func (p *process) checkIdentity(r *report) {
	if err := p.clone.conflictError(); err != nil {
		r.add("identity", "", ResultFail, err.Error(), "see the message: reset the copied identity (docs/cluster.md)")
	}
	if p.ipam.IsForgotten(p.node) {
		r.add("identity", "", ResultFail,
			fmt.Sprintf("the cluster forgot this host (%s) by agreement (grapevine forget): it owns no addresses, gives containers none, counts in no quorum, and the other hosts program none of its endpoints", p.node),
			"stop the plugin, move its state directory aside (the state mount) and enable it again: it joins under a new name (docs/cluster.md)")
	}
}

// checkUnderlay compares the underlay link's MTU now with what the VXLAN
// networks need.
func (p *process) checkUnderlay(r *report) {
	u, err := p.resolveUnderlay()
	if err != nil {
		r.add("underlay", "", ResultFail, err.Error(), "set ADVERTISE to this host's address or interface on the network the other hosts reach")
		return
	}
	mtu := u.MTU
	if li, err := p.dp.LinkInfo(u.Link); err == nil {
		mtu = li.MTU
	}
	r.add("underlay", "", ResultPass, fmt.Sprintf("%s dev %s mtu %d", u.Addr, u.Link, mtu), "")
	for _, n := range p.driver.Status() {
		overhead, tunnelled := driver.UnderlayOverhead(n.Mode)
		if !tunnelled || n.MTU+overhead <= mtu {
			continue
		}
		r.add("mtu", "", ResultFail,
			fmt.Sprintf("%s network %s (%s) has MTU %d, which needs %d bytes on the underlay, but %s has MTU %d: packets of full size are dropped",
				n.Mode, shortNet(n.ID), n.Subnet, n.MTU, n.MTU+overhead, u.Link, mtu),
			fmt.Sprintf("raise the MTU of %s to %d, or recreate the network with -o com.docker.network.driver.mtu=%d", u.Link, n.MTU+overhead, mtu-overhead))
	}
}

func shortNet(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// checkKernel reports the link types the kernel cannot make and
// br_netfilter.
func (p *process) checkKernel(r *report) {
	feats, err := p.dp.KernelFeatures()
	if err != nil {
		r.add("kernel", "", ResultWarn, err.Error(), "")
	}
	used := map[string]bool{}
	for _, n := range p.driver.Status() {
		used[n.Mode] = true
	}
	for _, f := range slices.Sorted(maps.Keys(feats)) {
		ferr := feats[f]
		switch {
		case ferr == nil:
			r.add("kernel", "", ResultPass, f+" links: supported", "")
		case (f == "vxlan" && used["vxlan"]) || (f == "macvlan" && used["macvlan"]):
			r.add("kernel", "", ResultFail, fmt.Sprintf("%s links cannot be made (%v) but this host has %s networks", f, ferr, f),
				fmt.Sprintf("load the %s module (modprobe %s) or use a kernel built with it", f, moduleOf(f)))
		default:
			r.add("kernel", "", ResultWarn, fmt.Sprintf("%s links cannot be made: %v", f, ferr),
				fmt.Sprintf("needed only for %s; load the module (modprobe %s) or use a kernel built with it", usesOf(f), moduleOf(f)))
		}
	}
	p.checkBridgeNetfilter(r)
}

func moduleOf(feature string) string {
	if feature == "802.1q" {
		return "8021q"
	}
	return feature
}

func usesOf(feature string) string {
	switch feature {
	case "vxlan":
		return "VXLAN networks (the default mode)"
	case "macvlan":
		return "-o mode=macvlan networks"
	case "802.1q":
		return "macvlan networks on a VLAN (-o parent=IF.VLAN)"
	}
	return "kernel-mode WireGuard for -o encrypted=true networks (without it they use wireguard-go in the plugin, several times slower: docs/encryption.md)"
}

func (p *process) checkBridgeNetfilter(r *report) {
	bnf, err := p.dp.BridgeNetfilter()
	switch {
	case err != nil:
		r.add("br_netfilter", "", ResultWarn, err.Error(), "")
	case !bnf.Loaded:
		r.add("br_netfilter", "", ResultPass, "not loaded: bridged frames skip iptables", "")
	case len(bnf.NotQuiet) > 0:
		r.add("br_netfilter", "", ResultWarn,
			fmt.Sprintf("on in the namespaces of %s: their bridged frames pass through netfilter (7–30 %% of the throughput, docs/dataplane.md)", strings.Join(bnf.NotQuiet, ", ")),
			"the plugin turns it off where /proc/sys/net is writable; see its log for why it could not")
	case !bnf.Isolated && bnf.HostCallsIptables:
		r.add("br_netfilter", "", ResultWarn, "loaded with bridge-nf-call-iptables=1 and the networks' bridges in the host namespace: bridged frames pass through the host's iptables",
			"run the plugin with its network namespace directory (the default) so each network gets its own namespace")
	default:
		r.add("br_netfilter", "", ResultPass, fmt.Sprintf("loaded (host bridge-nf-call-iptables=%t); grapevine's bridges live in namespaces where it is off", bnf.HostCallsIptables), "")
	}
}

// checkFirewall compares grapevine's iptables backend with Docker's.
func (p *process) checkFirewall(r *report) {
	b := p.dp.FirewallBackends()
	for _, u := range b.Unreadable {
		r.add("iptables", "", ResultWarn, "backend unreadable: "+u, "")
	}
	switch {
	case len(b.Docker) == 0:
		r.add("iptables", "", ResultWarn, fmt.Sprintf("grapevine writes with iptables-%s; Docker's chains (DOCKER, DOCKER-USER) are in neither backend yet", b.Chosen),
			"if dockerd runs with iptables=false, isolation from Docker's networks and DOCKER-USER do not apply; otherwise grapevine follows Docker's backend once its chains appear")
	case !slices.Contains(b.Docker, b.Chosen):
		r.add("iptables", "", ResultFail, fmt.Sprintf("grapevine writes with iptables-%s but Docker's chains are in iptables-%s: its rules sit where Docker's traffic does not see them", b.Chosen, strings.Join(b.Docker, ", ")),
			"restart the plugin (docker plugin disable/enable) so it chooses Docker's backend again; remove rules a second Docker or firewall wrote to the other backend")
	default:
		r.add("iptables", "", ResultPass, fmt.Sprintf("grapevine and Docker both write with iptables-%s", b.Chosen), "")
	}
}

// checkGossipKeys names the addresses whose gossip this host could not
// decrypt: another GOSSIP_KEY.
func (p *process) checkGossipKeys(r *report, members []gossip.Member, peer string) {
	keyChecks(r, p.cluster.Health(), members, peer, time.Now())
}

// keyChecks reports h's undecryptable gossip as of now (one check per
// sender, or one pass).
func keyChecks(r *report, h gossip.Health, members []gossip.Member, peer string, now time.Time) {
	addrs := slices.Sorted(maps.Keys(h.Undecryptable))
	found := false
	for _, a := range addrs {
		name := memberAt(members, a)
		if peer != "" && name != peer {
			continue
		}
		found = true
		who := a
		if name != "" {
			who = fmt.Sprintf("%s (%s)", a, name)
		}
		detail := fmt.Sprintf("%d gossip message(s) from %s could not be decrypted, the last %s ago: that host uses another GOSSIP_KEY, or none",
			h.Undecryptable[a], who, now.Sub(h.UndecryptableAt[a]).Round(time.Second))
		fix := "give every host the same GOSSIP_KEY (docker plugin set grapevine:latest GOSSIP_KEY=…); to change keys without an outage follow the rotation in docs/security.md"
		result := ResultFail
		if now.Sub(h.UndecryptableAt[a]) > keyMismatchRecent {
			result = ResultWarn // e.g. during a finished key rotation
			fix = "none while it does not recur; " + fix
		}
		r.add("gossip-key", name, result, detail, fix)
	}
	if !found {
		r.add("gossip-key", peer, ResultPass, "no undecryptable gossip received", "")
	}
}

// keyMismatchRecent: undecryptable gossip older than this is a warning (a
// key rotation's transient), newer a failure.
const keyMismatchRecent = 10 * time.Minute

// memberAt names the member whose gossip or VTEP address is a ("" none).
func memberAt(ms []gossip.Member, a string) string {
	for _, m := range ms {
		if !m.Self && (m.Addr.Addr().String() == a || m.Meta.VTEP.String() == a) {
			return m.Name
		}
	}
	return ""
}

// checkMembers reports each other member's gossip state and last contact.
func (p *process) checkMembers(r *report, members []gossip.Member, peer string) {
	h := p.cluster.Health()
	if len(p.settings.Peers) > 0 && !p.cluster.Joined() {
		r.add("gossip", "", ResultFail, fmt.Sprintf("this host has reached none of PEERS (%s)", strings.Join(p.settings.Peers, ",")),
			fmt.Sprintf("check that the hosts in PEERS run grapevine and that tcp and udp port %d are open between them", p.settings.GossipPort))
	}
	others := 0
	for _, m := range members {
		if m.Self || (peer != "" && m.Name != peer) {
			continue
		}
		others++
		p.checkMember(r, m, h)
	}
	if others == 0 && peer == "" {
		r.add("gossip", "", ResultPass, "no other member (a single host)", "")
	}
}

func (p *process) checkMember(r *report, m gossip.Member, h gossip.Health) {
	forgotten := p.ipam.IsForgotten(m.Name)
	switch {
	case forgotten && m.State != gossip.StateAlive:
		r.add("gossip", m.Name, ResultSkip, "forgotten by agreement (grapevine forget): not expected back", "")
	case forgotten:
		r.add("gossip", m.Name, ResultFail,
			fmt.Sprintf("alive at %s, but the cluster forgot it by agreement: it counts in no quorum, owns no addresses, and none of its endpoints are programmed here", m.Addr),
			"stop the plugin on that host, move its state directory aside and enable it again, so that it joins under a new name (docs/cluster.md)")
	case m.State == gossip.StateAlive:
		detail := fmt.Sprintf("alive at %s", m.Addr)
		if c, ok := h.Contacts[m.Name]; ok {
			detail += fmt.Sprintf(", last probe answered %s ago (rtt %s)", ago(c.At), c.RTT.Round(10*time.Microsecond))
		}
		r.add("gossip", m.Name, ResultPass, detail, "")
	case m.State == gossip.StateLeft:
		r.add("gossip", m.Name, ResultWarn, fmt.Sprintf("left the cluster %s ago (its plugin was disabled or stopped)", ago(h.Departed[m.Name])),
			"enable the plugin on that host again, or ignore this if it was retired")
	default:
		detail := fmt.Sprintf("dead: stopped answering at %s", m.Addr)
		if t, ok := h.Departed[m.Name]; ok {
			detail += fmt.Sprintf(" %s ago", ago(t))
		}
		if c, ok := h.Contacts[m.Name]; ok {
			detail += fmt.Sprintf("; last probe answered %s ago", ago(c.At))
		}
		r.add("gossip", m.Name, ResultFail, detail,
			fmt.Sprintf("check that the host is up with the plugin enabled and that tcp and udp port %d are open between it and this host", m.Addr.Port()))
	}
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "some time"
	}
	return time.Since(t).Round(time.Second).String()
}

// checkPaths probes the VXLAN path to each peer (or only peer) at a small
// and at the networks' full size.
func (p *process) checkPaths(r *report, peer string) {
	paths, err := p.driver.ProbePaths(peer)
	if err != nil {
		r.add("vxlan-path", peer, ResultFail, "probe device: "+err.Error(), "see the plugin log; the probe uses VNI "+fmt.Sprint(driver.ProbeVNI)+" on the VXLAN port")
		return
	}
	if paths == nil {
		r.add("vxlan-path", peer, ResultSkip, "no VXLAN network on this host (or no cluster): the VXLAN path is not probed", "")
		return
	}
	port := p.settings.VXLANPort
	u, _ := p.resolveUnderlay()
	for _, pc := range paths {
		pathCheck(r, pc, port, u.Addr)
	}
}

// pathCheck turns one probed path into its checks.
func pathCheck(r *report, pc driver.PathCheck, port int, local netip.Addr) {
	switch {
	case pc.Skipped != "":
		r.add("vxlan-path", pc.Node, ResultSkip, "not probed: "+pc.Skipped, "")
	case pc.Error != "":
		r.add("vxlan-path", pc.Node, ResultFail, "probe failed: "+pc.Error, "see the plugin log")
	case !pc.Reached:
		r.add("vxlan-path", pc.Node, ResultFail,
			fmt.Sprintf("VXLAN UDP port blocked between this host and %s: gossip reaches %s but no encapsulated probe (udp/%d, VTEP %s → %s) came back",
				pc.Node, pc.Node, port, local, pc.VTEP),
			fmt.Sprintf("allow udp/%d both ways between %s and %s (firewalls on both hosts and between them; security groups)", port, local, pc.VTEP))
	case pc.Carries < pc.Size:
		r.add("vxlan-path", pc.Node, ResultPass, fmt.Sprintf("encapsulated probe to %s (VTEP %s) answered in %s", pc.Node, pc.VTEP, pc.RTT.Round(10*time.Microsecond)), "")
		r.add("mtu", pc.Node, ResultFail,
			fmt.Sprintf("VXLAN path to %s carries %d but not %d bytes: the networks' full-size packets are dropped", pc.Node, pc.Carries, pc.Size),
			fmt.Sprintf("lower the network MTU (-o com.docker.network.driver.mtu=%d) or raise the underlay MTU to %d on every host and link between this host and %s", pc.Carries, pc.Size+driver.VXLANOverhead, pc.Node))
	default:
		r.add("vxlan-path", pc.Node, ResultPass, fmt.Sprintf("encapsulated probe to %s (VTEP %s) answered in %s", pc.Node, pc.VTEP, pc.RTT.Round(10*time.Microsecond)), "")
		r.add("mtu", pc.Node, ResultPass, fmt.Sprintf("VXLAN path to %s carries the networks' %d bytes", pc.Node, pc.Size), "")
	}
}

// checkDrift runs one reconcile pass and reports what it repaired.
func (p *process) checkDrift(r *report) {
	d := p.driver.CheckDrift()
	if d.Error != "" {
		r.add("drift", "", ResultFail, "the reconcile pass could not make the kernel match the replicated state: "+d.Error,
			"see the error and the plugin log; the loop retries every reconcile period")
	}
	if len(d.Repairs) > 0 {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(d.Repairs)) {
			parts = append(parts, fmt.Sprintf("%s %d", k, d.Repairs[k]))
		}
		r.add("drift", "", ResultWarn, "the kernel differed from the replicated state, now repaired: "+strings.Join(parts, ", "),
			"if this recurs, something else on this host changes grapevine's links, FDB or neighbour entries")
		return
	}
	if d.Error == "" {
		r.add("drift", "", ResultPass, "the kernel matches the replicated state", "")
	}
}
