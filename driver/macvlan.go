package driver

// Macvlan mode puts containers directly on a LAN: each endpoint is a
// bridge-mode macvlan child of the network's parent interface, with no
// encapsulation and no NAT. The LAN's router is the gateway. Hosts still
// gossip the network (mode=macvlan) and the endpoints, so a conflicting
// definition on another host is refused and IPAM keeps addresses distinct,
// but nothing is programmed for other hosts' endpoints: they are on the LAN.
//
// The parent is chosen per host from -o parent:
//
//	eth0             the interface of that name
//	eth0.30          that interface if it exists, else VLAN 30 on eth0, created
//	                 by grapevine and removed with the last network using it
//	198.18.0.0/24    the interface holding an address in that CIDR, so one
//	                 `docker network create` fits hosts whose NICs differ
//	(none)           an internal-only network: a link with no wire (gvm-<net>,
//	                 dummy, or ifb where the kernel has no dummy) as parent;
//	                 containers of this host reach each other and nothing else
//	                 (a bridge without ports is no good: it loses its carrier,
//	                 and its macvlan children with it)
//
// -o host_access=true gives the host a macvlan shim (gvh-<net>) holding the
// address --aux-address host-<hostname>=IP (or host-<gossip node name>=IP,
// or host=IP on a single host), or without one an address the cluster IPAM
// allocates for this host (Config.HostAddress), as a /32,
// plus a /32 route per local container through it: Linux does not pass
// traffic between a macvlan parent and its children, so without it the host
// cannot reach its own containers.

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/sirupsen/logrus"

	"grapevine/driver/dataplane"
)

// Limits of Linux interface names and MTUs.
const (
	maxIfName  = 15
	defaultMTU = 1500
)

// refusedParentKinds are link types that cannot carry a LAN's macvlan children.
var refusedParentKinds = []string{"bridge", "macvlan", "macvtap", "ipvlan", "ipvtap", "vxlan", "geneve", "openvswitch"}

// parentPlan is how a new macvlan network reaches its LAN on this host.
type parentPlan struct {
	link  string // "" = internal parent
	mtu   int
	addrs []netip.Prefix
	vlan  *vlanRecord // a VLAN link to create; nil when link exists
}

// macvlanMode is the netMode of macvlan networks.
type macvlanMode struct{}

func (macvlanMode) name() string  { return modeMACVLAN }
func (macvlanMode) overlay() bool { return false }
func (macvlanMode) overhead() int { return 0 }

// prepare chooses the host shim's address (host_access) before the driver's
// lock is taken: allocating one may wait for the cluster's agreement.
func (macvlanMode) prepare(d *Driver, spec *networkSpec) error {
	if !spec.hostAccess {
		return nil
	}
	a, err := d.hostAccessAddr(*spec)
	if err != nil || a.IsValid() {
		spec.hostIP = a
		return err
	}
	if d.hostAddr == nil {
		return fmt.Errorf("-o host_access=true needs this host's shim address: add --aux-address host-%s=IP (one per host) or --aux-address host=IP (a single host), with an unused address of %s outside --ip-range",
			d.hostLabel(), spec.subnet)
	}
	if spec.hostIP, err = d.hostAddr(spec.space, spec.subnet); err != nil {
		return fmt.Errorf("-o host_access=true: allocating this host's shim address in %s: %w (or give one with --aux-address host-%s=IP)", spec.subnet, err, d.hostLabel())
	}
	spec.hostAuto = true
	return nil
}

// create resolves this host's parent, checks the subnet against it, and
// makes the VLAN link (when -o parent names one that does not exist), the
// internal parent (without -o parent) and the host shim (host_access).
func (m macvlanMode) create(d *Driver, id string, spec networkSpec) (newNetwork, error) {
	rec, plan, err := d.planMacvlan(id, spec)
	if err != nil {
		return newNetwork{}, err
	}
	vlanMade := false
	undo := func() {
		d.rollbackLinks(id, m.links(id))
		if vlanMade {
			if derr := d.dropVLAN(plan.vlan.Name); derr != nil {
				d.netLog(id).WithError(derr).WithField("link", plan.vlan.Name).Warn("rollback: could not delete vlan link")
			}
		}
	}
	if plan.vlan != nil {
		// Recorded before it is made: a crash in between leaves a record
		// Reconcile clears, never an unrecorded link.
		if err := d.store.putVLAN(plan.vlan); err != nil {
			undo()
			return newNetwork{}, err
		}
		d.vlans[plan.vlan.Name] = plan.vlan
		vlanMade = true
		if err := d.dp.EnsureVLAN(vlanSpec(plan.vlan)); err != nil {
			undo()
			return newNetwork{}, vlanError(spec.parentOpt, plan.vlan, err)
		}
	}
	if err := d.makeMacvlanLinks(rec); err != nil {
		undo()
		return newNetwork{}, err
	}
	return newNetwork{rec: rec, undo: undo, announce: func() { d.announceMacvlan(rec, plan) }}, nil
}

// planMacvlan checks a new macvlan network against this host and the
// cluster and chooses its parent, shim address and MTU. Caller holds mu.
func (d *Driver) planMacvlan(id string, spec networkSpec) (*networkRecord, parentPlan, error) {
	if err := d.checkCluster(&spec); err != nil {
		return nil, parentPlan{}, err
	}
	if err := d.checkNewNetwork(id, spec); err != nil {
		return nil, parentPlan{}, err
	}
	plan, err := d.resolveParent(spec)
	if err != nil {
		return nil, parentPlan{}, err
	}
	if err := d.checkParentSubnet(spec, plan); err != nil {
		return nil, parentPlan{}, err
	}
	if err := checkMacvlanMTU(spec, plan.link, plan.mtu); err != nil {
		return nil, parentPlan{}, err
	}
	rec := &networkRecord{
		Version:      recordVersion,
		ID:           id,
		Mode:         modeMACVLAN,
		Subnet:       spec.subnet,
		Gateway:      spec.gateway,
		AddressSpace: spec.space,
		MTU:          spec.mtu,
		Internal:     spec.internal,
		ParentOption: spec.parentOpt,
		Parent:       plan.link,
		HostAccess:   spec.hostIP,
		HostAuto:     spec.hostAuto,
		Aux:          auxAddrs(spec),
	}
	if rec.MTU == 0 {
		rec.MTU = plan.mtu
	}
	return rec, plan, nil
}

// announceMacvlan logs a new macvlan network; one without a parent is
// worth a warning, as its containers reach nothing but each other.
func (d *Driver) announceMacvlan(rec *networkRecord, plan parentPlan) {
	l := d.netLog(rec.ID).WithFields(logrus.Fields{"mode": rec.Mode, "subnet": rec.Subnet, "mtu": rec.MTU, "parent": rec.parentLink(), "internal": rec.Internal})
	if plan.vlan != nil {
		l = l.WithField("vlan_created", plan.vlan.Name)
	}
	if rec.HostAccess.IsValid() {
		l = l.WithField("host_access", rec.HostAccess)
	}
	if rec.Parent == "" {
		l.Warn("macvlan network created without -o parent: internal-only, its containers reach only each other on this host")
	} else {
		l.Info("network created")
	}
}

func (macvlanMode) ensure(d *Driver, n *networkRecord, _ *dataplane.Underlay) error {
	return d.ensureMacvlanNetwork(n)
}

func (macvlanMode) links(networkID string) []string {
	return []string{shimName(networkID), internalParent(networkID)}
}

func (macvlanMode) join(d *Driver, n *networkRecord, e *endpointRecord) (*network.JoinResponse, error) {
	return d.joinMacvlan(n, e)
}

func (macvlanMode) leave(d *Driver, n *networkRecord, e *endpointRecord) error {
	return d.leaveMacvlan(n, e)
}

// firewall: the containers are on the LAN, with no NAT and no forwarding
// through the host; a host shim is isolated from the bridges like any other
// container network.
func (macvlanMode) firewall(_ *Driver, n *networkRecord, fw *dataplane.Firewall) {
	if n.HostAccess.IsValid() {
		fw.Shims = append(fw.Shims, shimName(n.ID))
	}
}

func (macvlanMode) status(n *networkRecord, s *NetworkStatus) {
	s.ParentOption, s.Parent, s.Reach = n.ParentOption, n.Parent, reachText(n)
	s.Internal = n.Internal || n.Parent == ""
	if n.HostAccess.IsValid() {
		s.HostAccess, s.HostAccessAllocated = n.HostAccess.String(), n.HostAuto
	}
}

// hostShims lists every host's shim address on n's subnet by node name,
// this host's included; nil without a cluster or when no host has one.
// Caller holds mu.
func (d *Driver) hostShims(n *networkRecord) map[string]string {
	if d.cluster == nil {
		return nil
	}
	out := map[string]string{}
	if n.HostAccess.IsValid() {
		out[d.self] = n.HostAccess.String()
	}
	for _, c := range d.clusterDefs(n.Subnet) {
		if c.def.HostAccess.IsValid() {
			out[c.node] = c.def.HostAccess.String()
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// deleted deletes the VLAN link grapevine made for the network, unless
// another network still uses it.
func (macvlanMode) deleted(d *Driver, n *networkRecord) error { return d.releaseVLAN(n.Parent) }

func vlanSpec(v *vlanRecord) dataplane.VLANSpec {
	return dataplane.VLANSpec{Name: v.Name, Parent: v.Parent, ID: v.ID}
}

func vlanError(opt string, v *vlanRecord, err error) error {
	if errors.Is(err, dataplane.ErrVLANUnsupported) {
		return fmt.Errorf("-o parent=%s needs VLAN %d on %s, but %w: create %s by other means or use an untagged parent", opt, v.ID, v.Parent, err, v.Name)
	}
	if errors.Is(err, dataplane.ErrLinkNotFound) {
		return fmt.Errorf("-o parent=%s: the interface %s to make VLAN %d on is missing on this host: %w", opt, v.Parent, v.ID, err)
	}
	return fmt.Errorf("-o parent=%s: create VLAN %d on %s: %w", opt, v.ID, v.Parent, err)
}

// resolveParent finds this host's parent for -o parent. Caller holds mu.
func (d *Driver) resolveParent(spec networkSpec) (parentPlan, error) {
	opt := spec.parentOpt
	if opt == "" || spec.internal {
		// --internal: as Docker's macvlan driver, the parent is ignored and
		// the network gets a standalone parent: its containers never reach
		// the LAN.
		return parentPlan{mtu: defaultMTU}, nil
	}
	if strings.Contains(opt, "/") {
		return d.parentByCIDR(opt)
	}
	if err := checkIfName(opt); err != nil {
		return parentPlan{}, err
	}
	li, err := d.dp.LinkInfo(opt)
	if err == nil {
		if err := checkParentLink(opt, li); err != nil {
			return parentPlan{}, err
		}
		return parentPlan{link: li.Name, mtu: li.MTU, addrs: li.Addrs}, nil
	}
	if !errors.Is(err, dataplane.ErrLinkNotFound) {
		return parentPlan{}, fmt.Errorf("-o parent=%s: %w", opt, err)
	}
	base, idText, ok := cutLast(opt, ".")
	if !ok || base == "" || idText == "" || strings.Trim(idText, "0123456789") != "" {
		return parentPlan{}, fmt.Errorf("-o parent=%s: this host has no interface %s; give an existing interface, IF.VLAN for a VLAN subinterface, or the LAN's CIDR (e.g. -o parent=198.18.0.0/24)", opt, opt)
	}
	id, err := strconv.Atoi(idText)
	if err != nil || id < 1 || id > dataplane.MaxVLANID {
		return parentPlan{}, fmt.Errorf("-o parent=%s: VLAN id %s is out of range: use 1 to %d", opt, idText, dataplane.MaxVLANID)
	}
	bli, err := d.dp.LinkInfo(base)
	if errors.Is(err, dataplane.ErrLinkNotFound) {
		return parentPlan{}, fmt.Errorf("-o parent=%s: this host has no interface %s to make VLAN %d on", opt, base, id)
	}
	if err != nil {
		return parentPlan{}, fmt.Errorf("-o parent=%s: %w", opt, err)
	}
	if err := checkParentLink(opt, bli); err != nil {
		return parentPlan{}, err
	}
	v := &vlanRecord{Version: recordVersion, Name: opt, Parent: base, ID: id}
	return parentPlan{link: opt, mtu: bli.MTU, vlan: v}, nil
}

// parentByCIDR picks the one interface holding an address inside the CIDR.
func (d *Driver) parentByCIDR(opt string) (parentPlan, error) {
	p, err := netip.ParsePrefix(opt)
	if err != nil || !p.Addr().Is4() {
		return parentPlan{}, fmt.Errorf("-o parent=%s is neither an interface name nor an IPv4 CIDR such as 198.18.0.0/24", opt)
	}
	p = p.Masked()
	infos, err := d.dp.LinkInfos()
	if err != nil {
		return parentPlan{}, fmt.Errorf("-o parent=%s: %w", opt, err)
	}
	var hits []dataplane.LinkInfo
	for _, li := range infos {
		if li.Loopback || dataplane.IsManagedName(li.Name) {
			continue
		}
		if slices.ContainsFunc(li.Addrs, func(a netip.Prefix) bool { return p.Contains(a.Addr()) }) {
			hits = append(hits, li)
		}
	}
	switch len(hits) {
	case 0:
		return parentPlan{}, fmt.Errorf("-o parent=%s: no interface of this host has an address in %s; give the interface on that LAN an address there, or name it (-o parent=IF)", opt, p)
	case 1:
	default:
		names := make([]string, 0, len(hits))
		for _, h := range hits {
			names = append(names, h.Name)
		}
		return parentPlan{}, fmt.Errorf("-o parent=%s matches %d interfaces of this host (%s): use a narrower CIDR or an interface name", opt, len(hits), strings.Join(names, ", "))
	}
	if err := checkParentLink(opt, hits[0]); err != nil {
		return parentPlan{}, err
	}
	return parentPlan{link: hits[0].Name, mtu: hits[0].MTU, addrs: hits[0].Addrs}, nil
}

// checkIfName accepts a Linux interface name.
func checkIfName(name string) error {
	if len(name) > maxIfName {
		return fmt.Errorf("-o parent=%s is longer than %d characters, the limit of interface names", name, maxIfName)
	}
	if strings.ContainsAny(name, " \t\n:/") || name == "." || name == ".." {
		return fmt.Errorf("-o parent=%q is not a valid interface name", name)
	}
	return nil
}

// checkParentLink refuses links that cannot carry a LAN's macvlan children.
func checkParentLink(opt string, li dataplane.LinkInfo) error {
	what := li.Name
	if what != opt {
		what = fmt.Sprintf("%s (%s)", opt, li.Name)
	}
	switch {
	case dataplane.IsManagedName(li.Name):
		return fmt.Errorf("-o parent=%s is a link grapevine made: use the host's interface on the LAN", what)
	case li.Loopback:
		return fmt.Errorf("-o parent=%s is the loopback interface: use the host's interface on the LAN", what)
	case slices.Contains(refusedParentKinds, li.Kind):
		return fmt.Errorf("-o parent=%s is a %s link: a macvlan parent must be a plain interface (a NIC, bond, veth or VLAN link); use the interface that carries the LAN", what, li.Kind)
	case li.Master != "":
		return fmt.Errorf("-o parent=%s is enslaved to %s (a bridge or bond port cannot carry macvlan links): use another interface", what, li.Master)
	}
	return nil
}

// checkParentSubnet requires the subnet to match the parent's network: where
// the parent has an address whose network overlaps the subnet, that network
// must be the subnet itself. A subnet apart from all of the parent's
// networks is another subnet of the same LAN (several may share one wire);
// it must then not be routed through another interface of this host.
func (d *Driver) checkParentSubnet(spec networkSpec, plan parentPlan) error {
	if plan.link == "" {
		return nil
	}
	for _, a := range plan.addrs {
		if pn := a.Masked(); pn.Overlaps(spec.subnet) && pn != spec.subnet {
			return fmt.Errorf("--subnet %s does not match the network %s of the parent %s (address %s): use --subnet %s, or the interface on the LAN of %s",
				spec.subnet, pn, plan.link, a, pn, spec.subnet)
		}
	}
	routes, err := d.dp.Routes()
	if err != nil {
		return fmt.Errorf("cannot check subnet %s against the host's routes: %w", spec.subnet, err)
	}
	for _, rt := range routes {
		if !rt.Ours && rt.Dev != plan.link && rt.Dst.Overlaps(spec.subnet) {
			return fmt.Errorf("--subnet %s overlaps the host route %s dev %s, but the parent is %s: use -o parent=%s if that is the LAN, or another --subnet",
				spec.subnet, rt.Dst, rt.Dev, plan.link, rt.Dev)
		}
	}
	return nil
}

// hostAccessAddr is this host's shim address from --aux-address
// host-<hostname>, host-<node name> or host, in that order; invalid when
// none is given (the cluster IPAM allocates one).
func (d *Driver) hostAccessAddr(spec networkSpec) (netip.Addr, error) {
	var keys []string
	for _, n := range []string{d.hostname, d.node} {
		if n != "" {
			keys = append(keys, "host-"+n)
		}
	}
	keys = append(keys, "host")
	var key, text string
	for _, k := range keys {
		if v, ok := spec.aux[k]; ok {
			key, text = k, v
			break
		}
	}
	if key == "" {
		return netip.Addr{}, nil
	}
	var a netip.Addr
	var err error
	if strings.Contains(text, "/") {
		var p netip.Prefix
		if p, err = netip.ParsePrefix(text); err == nil {
			a = p.Addr()
		}
	} else {
		a, err = netip.ParseAddr(text)
	}
	switch {
	case err != nil || !a.Is4():
		return netip.Addr{}, fmt.Errorf("--aux-address %s=%s is not an IPv4 address", key, text)
	case !spec.subnet.Contains(a) || a == spec.subnet.Addr() || a == lastAddr(spec.subnet):
		return netip.Addr{}, fmt.Errorf("--aux-address %s=%s is not a host address of --subnet %s", key, text, spec.subnet)
	case a == spec.gateway.Addr():
		return netip.Addr{}, fmt.Errorf("--aux-address %s=%s is the gateway (the LAN's router): give the host shim its own address", key, text)
	}
	return a, nil
}

// makeMacvlanLinks makes (or repairs) the links a macvlan network owns: the
// internal parent when it has no -o parent, and the host shim. Caller holds mu.
func (d *Driver) makeMacvlanLinks(rec *networkRecord) error {
	if rec.Parent == "" {
		if err := d.dp.EnsureStandalone(internalParent(rec.ID), rec.MTU); err != nil {
			return fmt.Errorf("network %s: internal parent %s: %w", shortID(rec.ID), internalParent(rec.ID), err)
		}
	}
	if rec.HostAccess.IsValid() {
		if err := d.dp.EnsureMacvlan(d.shimSpec(rec)); err != nil {
			if errors.Is(err, dataplane.ErrLinkNotFound) {
				return fmt.Errorf("network %s: the parent %s is missing on this host: %w", shortID(rec.ID), rec.parentLink(), err)
			}
			return fmt.Errorf("network %s: host shim %s: %w", shortID(rec.ID), shimName(rec.ID), err)
		}
	}
	return nil
}

func (d *Driver) shimSpec(rec *networkRecord) dataplane.MacvlanSpec {
	return dataplane.MacvlanSpec{
		Name:    shimName(rec.ID),
		Parent:  rec.parentLink(),
		MTU:     rec.MTU,
		MAC:     macFromIPv4(rec.HostAccess),
		Address: netip.PrefixFrom(rec.HostAccess, 32),
	}
}

// ensureMacvlanNetwork repairs a persisted macvlan network: its VLAN link
// (when grapevine made it), parent, shim and the shim's routes to the joined
// endpoints. Caller holds mu.
func (d *Driver) ensureMacvlanNetwork(rec *networkRecord) error {
	if v := d.vlans[rec.Parent]; v != nil {
		if err := d.dp.EnsureVLAN(vlanSpec(v)); err != nil {
			return fmt.Errorf("network %s: %w", shortID(rec.ID), vlanError(rec.ParentOption, v, err))
		}
	}
	if rec.Parent != "" {
		if _, err := d.dp.LinkInfo(rec.Parent); err != nil {
			if errors.Is(err, dataplane.ErrLinkNotFound) {
				return fmt.Errorf("network %s: the parent %s (-o parent=%s) is missing on this host: restore it or recreate the network: %w", shortID(rec.ID), rec.Parent, rec.ParentOption, err)
			}
			return fmt.Errorf("network %s: parent %s: %w", shortID(rec.ID), rec.Parent, err)
		}
	}
	if err := d.makeMacvlanLinks(rec); err != nil {
		return err
	}
	return d.syncShimRoutes(rec)
}

// syncShimRoutes makes the routes through a network's shim exactly one /32
// per joined endpoint. Caller holds mu.
func (d *Driver) syncShimRoutes(rec *networkRecord) error {
	if !rec.HostAccess.IsValid() {
		return nil
	}
	shim := shimName(rec.ID)
	want := map[netip.Prefix]bool{}
	for _, e := range d.endpoints {
		if e.NetworkID == rec.ID && e.Joined {
			want[netip.PrefixFrom(e.Address.Addr(), 32)] = true
		}
	}
	routes, err := d.dp.Routes()
	if err != nil {
		return fmt.Errorf("network %s: list routes: %w", shortID(rec.ID), err)
	}
	var errs []error
	have := map[netip.Prefix]bool{}
	for _, rt := range routes {
		if rt.Dev != shim {
			continue
		}
		if want[rt.Dst] {
			have[rt.Dst] = true
			continue
		}
		if err := d.dp.DelRoute(rt.Dst, shim); err != nil {
			errs = append(errs, fmt.Errorf("network %s: delete stray route %s dev %s: %w", shortID(rec.ID), rt.Dst, shim, err))
		}
	}
	for dst := range want {
		if have[dst] {
			continue
		}
		if err := d.dp.SetRoute(dst, shim, rec.HostAccess); err != nil {
			errs = append(errs, fmt.Errorf("network %s: route %s dev %s: %w", shortID(rec.ID), dst, shim, err))
		}
	}
	return errors.Join(errs...)
}

// releaseVLAN deletes a VLAN link grapevine created once no network uses it
// as parent. A link that another program has since put links on is left in
// place and no longer managed. Caller holds mu.
func (d *Driver) releaseVLAN(name string) error {
	if name == "" || d.vlans[name] == nil {
		return nil
	}
	for _, n := range d.networks {
		if n.Parent == name { // only macvlan networks have one
			return nil
		}
	}
	infos, err := d.dp.LinkInfos()
	if err != nil {
		return fmt.Errorf("vlan link %s: %w", name, err)
	}
	var users []string
	for _, li := range infos {
		if li.Parent == name {
			users = append(users, li.Name)
		}
	}
	if len(users) > 0 {
		d.log.WithFields(logrus.Fields{"link": name, "users": users}).
			Warn("leaving the vlan link grapevine created in place: other links sit on it; grapevine no longer manages it")
		if err := d.store.deleteVLAN(name); err != nil {
			return err
		}
		delete(d.vlans, name)
		return nil
	}
	if err := d.dropVLAN(name); err != nil {
		return err
	}
	d.log.WithField("link", name).Info("deleted the vlan link grapevine created: no network uses it any more")
	return nil
}

// dropVLAN deletes a recorded VLAN link and its record. Caller holds mu.
func (d *Driver) dropVLAN(name string) error {
	if err := d.dp.DeleteLink(name); err != nil {
		return fmt.Errorf("delete vlan link %s: %w", name, err)
	}
	if err := d.store.deleteVLAN(name); err != nil {
		return err
	}
	delete(d.vlans, name)
	return nil
}

// parentText names a macvlan network's parent for messages.
func parentText(n *networkRecord) string {
	if n.Parent == "" {
		return "none (internal-only)"
	}
	return n.Parent
}

// hostLabel is how this host is named in --aux-address host-<name>=IP.
func (d *Driver) hostLabel() string {
	for _, n := range []string{d.hostname, d.node} {
		if n != "" {
			return n
		}
	}
	return "<hostname>"
}

// cutLast splits s around the last sep.
func cutLast(s, sep string) (string, string, bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

// joinMacvlan makes the endpoint's macvlan child on the network's parent, in
// the host namespace for Docker to move, and with host_access the /32 route
// to it through the host's shim. The LAN's router is returned as gateway
// when the network has a parent and is not --internal; a network without a
// parent disables Docker's gateway service so no docker_gwbridge gives it a
// way out. Caller holds mu.
func (d *Driver) joinMacvlan(n *networkRecord, e *endpointRecord) (resp *network.JoinResponse, err error) {
	log := d.epLog(n.ID, e.ID)
	child := contVeth(e.ID)
	spec := dataplane.MacvlanSpec{Name: child, Parent: n.parentLink(), MTU: n.MTU, MAC: e.linkMAC()}
	if err := d.dp.EnsureMacvlan(spec); err != nil {
		if errors.Is(err, dataplane.ErrLinkNotFound) {
			return nil, fmt.Errorf("endpoint %s: the parent %s of network %s is missing on this host (restore it, or recreate the network): %w", shortID(e.ID), n.parentLink(), shortID(n.ID), err)
		}
		return nil, fmt.Errorf("create macvlan %s for endpoint %s: %w", child, shortID(e.ID), err)
	}
	route := netip.PrefixFrom(e.Address.Addr(), 32)
	defer func() {
		if err == nil {
			return
		}
		if n.HostAccess.IsValid() {
			if derr := d.dp.DelRoute(route, shimName(n.ID)); derr != nil {
				log.WithError(derr).Warn("rollback: could not delete the host route")
			}
		}
		if derr := d.dp.DeleteLink(child); derr != nil {
			log.WithError(derr).Warn("rollback: could not delete the macvlan link")
		}
	}()
	if n.HostAccess.IsValid() {
		if err := d.dp.SetRoute(route, shimName(n.ID), n.HostAccess); err != nil {
			return nil, fmt.Errorf("endpoint %s: host access route %s dev %s: %w", shortID(e.ID), route, shimName(n.ID), err)
		}
	}
	if err := d.setJoined(e, true); err != nil {
		return nil, err
	}
	resp = &network.JoinResponse{
		InterfaceName: network.InterfaceName{SrcName: child, DstPrefix: containerIfPrefix},
	}
	switch {
	case n.external():
		resp.Gateway = n.Gateway.Addr().String()
	case !n.Internal:
		resp.DisableGatewayService = true
	}
	log.Debug("endpoint joined")
	return resp, nil
}

// leaveMacvlan removes the endpoint's host route and its macvlan child if it
// is in the host namespace (Docker moves it back after Leave; DeleteEndpoint
// removes it then). Caller holds mu.
func (d *Driver) leaveMacvlan(n *networkRecord, e *endpointRecord) error {
	errs := []error{d.dropShimRoute(n, e)}
	if err := d.dp.DeleteLink(contVeth(e.ID)); err != nil {
		errs = append(errs, fmt.Errorf("delete link %s: %w", contVeth(e.ID), err))
	}
	return errors.Join(errs...)
}

// dropShimRoute removes the host's route to an endpoint through the
// network's shim, if it has one. Caller holds mu.
func (d *Driver) dropShimRoute(n *networkRecord, e *endpointRecord) error {
	if !n.HostAccess.IsValid() {
		return nil
	}
	if err := d.dp.DelRoute(netip.PrefixFrom(e.Address.Addr(), 32), shimName(n.ID)); err != nil {
		return fmt.Errorf("delete host access route of %s: %w", e.Address.Addr(), err)
	}
	return nil
}
