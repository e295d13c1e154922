package dataplane

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
)

// grapevine's own iptables chains. Everything grapevine adds to the packet
// filter lives in these; the built-in chains only get the jumps below.
const (
	chainInput       = "GRAPEVINE-INPUT"        // filter: drops new traffic from a bridge to 127.0.0.0/8
	chainForward     = "GRAPEVINE-FORWARD"      // filter: isolation, egress, published ports
	chainIsolation   = "GRAPEVINE-ISOLATION"    // filter: drops traffic from a grapevine bridge into another container network
	chainIsolationIn = "GRAPEVINE-ISOLATION-IN" // filter: drops traffic from another container network into a grapevine bridge
	chainDNAT        = "GRAPEVINE-DNAT"         // nat: published ports
	chainPostrouting = "GRAPEVINE-POSTROUTING"  // nat: egress masquerade and hairpin
)

// jumpComment marks the jumps from the built-in chains (plain word: iptables
// prints it unquoted, which keeps the read-back identical).
const jumpComment = "grapevine"

// fwChains lists grapevine's chains per table, in the order they are written.
var fwChains = []struct {
	table  string
	chains []string
}{
	// in iptables-save's order (by name), so that a read-back compares equal
	{"filter", []string{chainForward, chainInput, chainIsolation, chainIsolationIn}},
	{"nat", []string{chainDNAT, chainPostrouting}},
	{"raw", []string{chainVXLAN}}, // only while a VXLAN network exists
}

// fwJump is a rule in a built-in chain that sends packets into grapevine's chain.
type fwJump struct {
	table, chain string
	rule         string // rule text without "-A CHAIN", in iptables-save form
	// afterDocker places the jump right after Docker's jumps to DOCKER-USER
	// and DOCKER-ISOLATION-STAGE-1 (position 1 without them: first) and
	// keeps it there; other jumps are appended and may be anywhere.
	afterDocker bool
}

// Docker's jumps from FORWARD that must come before grapevine's: the
// operator's DOCKER-USER applies to all container traffic first, and Docker's
// own isolation (its --internal networks) before anyone accepts.
var dockerFirst = []string{"DOCKER-USER", "DOCKER-ISOLATION-STAGE-1"}

var fwJumps = []fwJump{
	{"filter", "FORWARD", `-m comment --comment ` + jumpComment + ` -j ` + chainForward, true},
	{"nat", "PREROUTING", `-m addrtype --dst-type LOCAL -m comment --comment ` + jumpComment + ` -j ` + chainDNAT, false},
	{"filter", "INPUT", `-d 127.0.0.0/8 -m comment --comment ` + jumpComment + ` -j ` + chainInput, true},
	// 127.0.0.0/8 included: published ports answer on localhost (see
	// routeLocalnet and the masquerade of 127.0.0.0/8 in renderFirewall).
	{"nat", "OUTPUT", `-m addrtype --dst-type LOCAL -m comment --comment ` + jumpComment + ` -j ` + chainDNAT, false},
	{"nat", "POSTROUTING", `-m comment --comment ` + jumpComment + ` -j ` + chainPostrouting, false},
	{"raw", "PREROUTING", `-p udp -m comment --comment ` + jumpComment + ` -j ` + chainVXLAN, false},
}

// obsoleteJumps are jumps earlier releases wrote; a sync deletes them.
var obsoleteJumps = []fwJump{
	{"nat", "OUTPUT", `! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -m comment --comment ` + jumpComment + ` -j ` + chainDNAT, false},
}

// ifaceName accepts what the kernel accepts as a link name and nothing that
// could break the rule text.
var ifaceName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)

// fwRules is the rendered rule set: per table, the "-A CHAIN …" lines of
// grapevine's chains in order, in the form iptables-save prints them.
type fwRules map[string][]string

// shortID is the first 12 characters of a Docker id, as used in comments.
func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func netComment(networkID string) string {
	return fmt.Sprintf(`-m comment --comment "grapevine:%s"`, shortID(networkID))
}

func portComment(p PortRule) string {
	return fmt.Sprintf(`-m comment --comment "grapevine:%s:%s"`, shortID(p.NetworkID), shortID(p.EndpointID))
}

var idChars = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// isolationComment marks the rules that isolate grapevine's networks from
// other container networks (not tied to one grapevine network).
const isolationComment = `-m comment --comment "grapevine:isolation"`

// dockerIsolationChains are where dockerd 20.10 names every bridge network it
// made (docker0, user-defined bridges, --internal bridges).
var dockerIsolationChains = []string{"DOCKER-ISOLATION-STAGE-1", "DOCKER-ISOLATION-STAGE-2"}

// dockerBridges lists the interfaces that Docker's isolation chains name, from
// the saved filter table: the bridges of Docker's own networks.
func dockerBridges(filter savedTable) []string {
	var out []string
	for _, c := range dockerIsolationChains {
		for _, r := range filter.rules[c] {
			args := splitRule(r)
			for i := 0; i+1 < len(args); i++ {
				if (args[i] == "-i" || args[i] == "-o") && ifaceName.MatchString(args[i+1]) {
					out = append(out, args[i+1])
				}
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// validateFirewall rejects input that would render wrong or unsafe rules.
func validateFirewall(fw Firewall) error {
	if err := validateVXLAN(fw.VXLAN); err != nil {
		return err
	}
	for _, s := range fw.Shims {
		if !ifaceName.MatchString(s) {
			return fmt.Errorf("firewall: host interface %q of a macvlan network is not a valid link name", s)
		}
	}
	nets := map[string]NetworkRules{}
	for i, n := range fw.Networks {
		switch {
		case !idChars.MatchString(n.NetworkID):
			return fmt.Errorf("firewall network %d: network id %q is empty or has characters other than letters, digits, _ . -", i, n.NetworkID)
		case !ifaceName.MatchString(n.Bridge):
			return fmt.Errorf("firewall network %s: bridge name %q is not a valid link name", shortID(n.NetworkID), n.Bridge)
		case n.Masquerade && n.Internal:
			return fmt.Errorf("firewall network %s: masquerade and internal are both set; an internal network has no egress", shortID(n.NetworkID))
		case n.Masquerade && (!n.Subnet.IsValid() || !n.Subnet.Addr().Is4()):
			return fmt.Errorf("firewall network %s: masquerade needs an IPv4 subnet, got %v", shortID(n.NetworkID), n.Subnet)
		case n.Tunnel != "" && (!ifaceName.MatchString(n.Tunnel) || !n.Subnet.IsValid() || !n.Subnet.Addr().Is4()):
			return fmt.Errorf("firewall network %s: tunnel %q needs a valid link name and an IPv4 subnet, got %v", shortID(n.NetworkID), n.Tunnel, n.Subnet)
		}
		if _, dup := nets[n.NetworkID]; dup {
			return fmt.Errorf("firewall network %s listed twice", shortID(n.NetworkID))
		}
		nets[n.NetworkID] = n
	}
	for _, p := range fw.Ports {
		where := fmt.Sprintf("published port %s/%d of endpoint %s", p.Proto, p.HostPort, shortID(p.EndpointID))
		n, ok := nets[p.NetworkID]
		switch {
		case !ok:
			return fmt.Errorf("%s: network %q is not among the firewall's networks", where, shortID(p.NetworkID))
		case n.Internal:
			return fmt.Errorf("%s: network %s is internal and cannot publish ports", where, shortID(p.NetworkID))
		case !idChars.MatchString(p.EndpointID):
			return fmt.Errorf("%s: endpoint id %q is empty or malformed", where, p.EndpointID)
		case p.Bridge != "" && p.Bridge != n.Bridge:
			return fmt.Errorf("%s: bridge %q differs from the network's bridge %q", where, p.Bridge, n.Bridge)
		case p.Proto != TCP && p.Proto != UDP && p.Proto != SCTP:
			return fmt.Errorf("%s: protocol %d is not tcp, udp or sctp", where, p.Proto)
		case p.HostPort == 0 || p.ContainerPort == 0:
			return fmt.Errorf("%s: host port %d and container port %d must be non-zero", where, p.HostPort, p.ContainerPort)
		case !p.ContainerIP.Is4():
			return fmt.Errorf("%s: container address %v is not IPv4", where, p.ContainerIP)
		case p.HostIP.IsValid() && !p.HostIP.Is4():
			return fmt.Errorf("%s: host address %v is not IPv4 (grapevine programs IPv4 only)", where, p.HostIP)
		}
	}
	return nil
}

// renderFirewall turns the desired state into grapevine's chain contents.
// docker names the bridges of Docker's own networks on this host (see
// dockerBridges). The rules are rendered from fw.Sorted(), so that the output
// depends only on the sets.
func renderFirewall(fw Firewall, docker []string) (fwRules, error) {
	if err := validateFirewall(fw); err != nil {
		return nil, err
	}
	r := renderer{seen: map[string]bool{}, byNet: map[string][]PortRule{}}
	fw = fw.Sorted()
	r.nets, r.ports = fw.Networks, fw.Ports
	for _, p := range r.ports {
		r.byNet[p.NetworkID] = append(r.byNet[p.NetworkID], p)
	}
	var raw []string
	if fw.VXLAN.Port != 0 {
		raw = append(raw, vxlanRule(fw.VXLAN))
	}
	return fwRules{"filter": r.filter(slices.Concat(docker, fw.Shims)), "nat": r.nat(), "raw": raw}, nil
}

// renderer holds the sorted input of one rendering.
type renderer struct {
	nets  []NetworkRules
	ports []PortRule
	byNet map[string][]PortRule
	seen  map[string]bool // two host ports may share one container port
}

// add appends one "-A CHAIN …" line to dst unless it was rendered already.
func (r *renderer) add(dst *[]string, chain, format string, args ...any) {
	line := "-A " + chain + " " + fmt.Sprintf(format, args...)
	if !r.seen[line] {
		r.seen[line] = true
		*dst = append(*dst, line)
	}
}

// filter renders the filter table's chains; foreign are the other container
// networks' interfaces (Docker's bridges, macvlan shims).
func (r *renderer) filter(foreign []string) []string {
	var fwd, iso, isoIn, input []string
	// An encrypted network's own traffic between the bridge and the tunnel
	// (its remote endpoints are routed there): from the subnet to the
	// subnet only, so it can reach no other network.
	for _, n := range r.nets {
		if n.Tunnel != "" {
			s := n.Subnet.Masked()
			r.add(&fwd, chainForward, "-s %s -d %s -i %s -o %s %s -j ACCEPT", s, s, n.Bridge, n.Tunnel, netComment(n.NetworkID))
			r.add(&fwd, chainForward, "-s %s -d %s -i %s -o %s %s -j ACCEPT", s, s, n.Tunnel, n.Bridge, netComment(n.NetworkID))
		}
	}
	// Isolation first, so no later accept can let one network reach another:
	// not another grapevine network, not Docker's networks, not a macvlan
	// network's host interface, in either direction.
	for _, n := range r.nets {
		r.add(&fwd, chainForward, "-i %s ! -o %s %s -j %s", n.Bridge, n.Bridge, netComment(n.NetworkID), chainIsolation)
		r.add(&iso, chainIsolation, "-o %s %s -j DROP", n.Bridge, netComment(n.NetworkID))
	}
	if len(r.nets) > 0 {
		slices.Sort(foreign)
		for _, f := range slices.Compact(foreign) {
			r.add(&iso, chainIsolation, "-o %s %s -j DROP", f, isolationComment)
			r.add(&isoIn, chainIsolationIn, "-i %s %s -j DROP", f, isolationComment)
		}
	}
	for _, n := range r.nets {
		r.add(&fwd, chainForward, "! -i %s -o %s %s -j %s", n.Bridge, n.Bridge, netComment(n.NetworkID), chainIsolationIn)
	}
	// br_netfilter sends bridged frames through FORWARD; Docker's policy is DROP.
	for _, n := range r.nets {
		r.add(&fwd, chainForward, "-i %s -o %s %s -j ACCEPT", n.Bridge, n.Bridge, netComment(n.NetworkID))
	}
	for _, n := range r.nets {
		r.networkForward(&fwd, n)
		if len(r.byNet[n.NetworkID]) > 0 {
			// new traffic from a bridge to the host's loopback addresses,
			// which route_localnet would otherwise let containers reach
			r.add(&input, chainInput, "-i %s -m conntrack ! --ctstate RELATED,ESTABLISHED %s -j DROP", n.Bridge, netComment(n.NetworkID))
		}
	}
	return slices.Concat(fwd, input, iso, isoIn)
}

// networkForward renders what may enter and leave one network's bridge.
func (r *renderer) networkForward(fwd *[]string, n NetworkRules) {
	c := netComment(n.NetworkID)
	if n.Internal {
		r.add(fwd, chainForward, "-i %s %s -j DROP", n.Bridge, c)
		r.add(fwd, chainForward, "-o %s %s -j DROP", n.Bridge, c)
		return
	}
	r.add(fwd, chainForward, "-i %s ! -o %s %s -j ACCEPT", n.Bridge, n.Bridge, c)
	r.add(fwd, chainForward, "-o %s -m conntrack --ctstate RELATED,ESTABLISHED %s -j ACCEPT", n.Bridge, c)
	for _, p := range r.byNet[n.NetworkID] {
		// Only what grapevine's DNAT rule sent here, for the host address
		// and port it was published on: not the container's own address
		// from a routed neighbour, not another host address.
		r.add(fwd, chainForward, "-d %s/32 -o %s -p %s -m %s --dport %d -m conntrack --ctstate DNAT %s--ctorigdstport %d %s -j ACCEPT",
			p.ContainerIP, n.Bridge, p.Proto, p.Proto, p.ContainerPort, origDst(p), p.HostPort, portComment(p))
	}
	r.add(fwd, chainForward, "-o %s %s -j DROP", n.Bridge, c)
}

// nat renders the nat table's chains.
func (r *renderer) nat() []string {
	var dnat, post []string
	for _, n := range r.nets {
		if n.Tunnel != "" { // to its remote endpoints: the addresses stay
			s := n.Subnet.Masked()
			r.add(&post, chainPostrouting, "-s %s -d %s -o %s %s -j RETURN", s, s, n.Tunnel, netComment(n.NetworkID))
		}
	}
	for _, p := range r.ports {
		dst := ""
		if hostIPSet(p) {
			dst = fmt.Sprintf("-d %s/32 ", p.HostIP)
		}
		r.add(&dnat, chainDNAT, "%s-p %s -m %s --dport %d %s -j DNAT --to-destination %s:%d",
			dst, p.Proto, p.Proto, p.HostPort, portComment(p), p.ContainerIP, p.ContainerPort)
	}
	for _, n := range r.nets {
		if n.Masquerade {
			r.add(&post, chainPostrouting, "-s %s ! -o %s %s -j MASQUERADE", n.Subnet.Masked(), n.Bridge, netComment(n.NetworkID))
		}
	}
	for _, n := range r.nets {
		if len(r.byNet[n.NetworkID]) == 0 {
			continue
		}
		// Hairpin: a container reaching a published port of its own network
		// through the host. The answer must come back through the host to be
		// un-NATed, so the host's gateway address becomes the source.
		if n.Subnet.IsValid() {
			r.add(&post, chainPostrouting, "-s %s -o %s -m conntrack --ctstate DNAT %s -j MASQUERADE",
				n.Subnet.Masked(), n.Bridge, netComment(n.NetworkID))
		}
		// localhost: a connection to 127.0.0.1:P leaves through the bridge
		// (route_localnet) with the gateway's address as its source.
		r.add(&post, chainPostrouting, "-s 127.0.0.0/8 -o %s %s -j MASQUERADE", n.Bridge, netComment(n.NetworkID))
	}
	return append(dnat, post...)
}

// hostIPSet reports whether the port is published on one host address only.
func hostIPSet(p PortRule) bool { return p.HostIP.IsValid() && !p.HostIP.IsUnspecified() }

// origDst is the forward rule's match on the address the client asked for.
func origDst(p PortRule) string {
	if !hostIPSet(p) {
		return ""
	}
	return fmt.Sprintf("--ctorigdst %s ", p.HostIP)
}

// localnetBridges names the bridges that need route_localnet=1: those with
// published ports, which answer on 127.0.0.1.
func localnetBridges(fw Firewall) []string {
	var out []string
	for _, p := range fw.Ports {
		for _, n := range fw.Networks {
			if n.NetworkID == p.NetworkID && !slices.Contains(out, n.Bridge) {
				out = append(out, n.Bridge)
			}
		}
	}
	return out
}

// Sorted returns a copy of fw with its networks, ports and shims in the one
// order rules are rendered in, so that equal sets compare equal.
func (fw Firewall) Sorted() Firewall {
	out := fw
	out.Networks = slices.Clone(fw.Networks)
	slices.SortFunc(out.Networks, func(a, b NetworkRules) int { return cmp.Compare(a.NetworkID, b.NetworkID) })
	out.Ports = slices.Clone(fw.Ports)
	slices.SortFunc(out.Ports, comparePorts)
	out.Shims = slices.Clone(fw.Shims)
	slices.Sort(out.Shims)
	return out
}

func comparePorts(a, b PortRule) int {
	return cmp.Or(
		cmp.Compare(a.NetworkID, b.NetworkID),
		cmp.Compare(a.EndpointID, b.EndpointID),
		cmp.Compare(a.Proto, b.Proto),
		cmp.Compare(a.HostPort, b.HostPort),
		a.HostIP.Compare(b.HostIP),
		a.ContainerIP.Compare(b.ContainerIP),
		cmp.Compare(a.ContainerPort, b.ContainerPort),
	)
}

// hasForwarding reports whether any network needs the host to route for it.
func hasForwarding(fw Firewall) bool {
	for _, n := range fw.Networks {
		if !n.Internal {
			return true
		}
	}
	return false
}
