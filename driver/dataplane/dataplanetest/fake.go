// Package dataplanetest holds Fake, an in-memory, recording
// dataplane.Dataplane for the driver's and the plugin's unit tests.
package dataplanetest

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"grapevine/driver/dataplane"
)

// Link kinds recorded by Fake.
const (
	KindBridge     = "bridge"
	KindVXLAN      = "vxlan"
	KindVeth       = "veth"    // host end of a veth pair
	KindVethPeer   = "veth-cn" // container end of a veth pair
	KindMacvlan    = "macvlan"
	KindVLAN       = "vlan"
	KindStandalone = "standalone" // EnsureStandalone's dummy/ifb
	KindOther      = "other"      // a link grapevine did not make (added by a test)
)

// FakeLink is one link in the Fake's pretend namespace.
type FakeLink struct {
	Name   string
	Kind   string
	Bridge dataplane.BridgeSpec // valid when Kind == KindBridge
	VXLAN  dataplane.VXLANSpec  // valid when Kind == KindVXLAN
	Veth   dataplane.VethSpec   // valid when Kind is KindVeth or KindVethPeer
	Peer   string               // the other end of a veth pair
	// Macvlan is valid when Kind == KindMacvlan.
	Macvlan dataplane.MacvlanSpec
	// VLAN is valid when Kind == KindVLAN.
	VLAN dataplane.VLANSpec
	// Info describes a link added with SetLinkInfo (Kind == KindOther).
	Info dataplane.LinkInfo
	// MTU is valid when Kind == KindStandalone.
	MTU int
}

type fakeRouteKey struct {
	dst netip.Prefix
	dev string
}

type fakePortKey struct {
	proto dataplane.Proto
	port  uint16
}

type fakeBusy struct {
	hostIP netip.Addr
	holder string
}

type fakeVNIKey struct {
	port int
	vni  uint32
}

// Fake is an in-memory, recording Dataplane for unit tests. It models one
// network namespace: links (with veth peers and bridge masters), FDB and
// neighbour entries, the routing table, the firewall state and ports held by
// other programs. All methods are safe for concurrent use.
//
// Errors are injected through Fail, keyed by method name ("EnsureVXLAN") or by
// method and object name ("DeleteLink:gvb-0123456789a"); the more specific key
// wins. An injected error is returned before the method has any effect. Set Fail
// before the Fake is shared between goroutines, or use SetFail.
type Fake struct {
	Fail map[string]error

	mu         sync.Mutex
	calls      []string
	links      map[string]*FakeLink
	fdb        map[string]map[string]netip.Addr // vxlan → mac → vtep (self entries)
	fdbMaster  map[string]map[string]bool       // vxlan → mac: the bridge's static entries
	neigh      map[string]map[netip.Addr]string // dev → ip → mac
	neighTemp  map[string]map[netip.Addr]bool   // dev → ip: entries not permanent
	routes     []dataplane.Route                // routes not made by grapevine
	underlay   *dataplane.Underlay
	firewall   dataplane.Firewall
	fwSyncs    int
	busy       map[fakePortKey][]fakeBusy
	foreignVNI map[fakeVNIKey]bool
	ourRoutes  map[fakeRouteKey]netip.Addr // SetRoute's routes → src
	noVLAN     bool
	tunnel     *dataplane.TunnelSpec // EnsureTunnel's last spec; nil: none
	probe      *dataplane.ProbeSpec
	// pathMTU: the largest probe each peer answers (absent: none).
	pathMTU map[netip.Addr]int
}

var _ dataplane.Dataplane = (*Fake)(nil)

// NewFake returns an empty Fake whose underlay is 198.18.0.1 on "eth0", MTU 1500.
func NewFake() *Fake {
	return &Fake{
		Fail:       map[string]error{},
		links:      map[string]*FakeLink{},
		fdb:        map[string]map[string]netip.Addr{},
		fdbMaster:  map[string]map[string]bool{},
		neigh:      map[string]map[netip.Addr]string{},
		busy:       map[fakePortKey][]fakeBusy{},
		foreignVNI: map[fakeVNIKey]bool{},
		ourRoutes:  map[fakeRouteKey]netip.Addr{},
		underlay:   &dataplane.Underlay{Addr: netip.MustParseAddr("198.18.0.1"), Link: "eth0", MTU: 1500},
	}
}

// begin records the call and returns the injected error, if any. Caller holds mu.
func (f *Fake) begin(method, object string) error {
	f.calls = append(f.calls, strings.TrimSpace(method+" "+object))
	if f.Fail == nil {
		return nil
	}
	if err, ok := f.Fail[method+":"+object]; ok && err != nil {
		return err
	}
	if err, ok := f.Fail[method]; ok && err != nil {
		return err
	}
	return nil
}

func (f *Fake) lock() func() {
	f.mu.Lock()
	if f.links == nil { // zero Fake: make it usable
		f.links = map[string]*FakeLink{}
		f.fdb = map[string]map[string]netip.Addr{}
		f.fdbMaster = map[string]map[string]bool{}
		f.neigh = map[string]map[netip.Addr]string{}
		f.busy = map[fakePortKey][]fakeBusy{}
		f.foreignVNI = map[fakeVNIKey]bool{}
	}
	if f.ourRoutes == nil {
		f.ourRoutes = map[fakeRouteKey]netip.Addr{}
	}
	return f.mu.Unlock
}

func cloneMAC(m net.HardwareAddr) net.HardwareAddr {
	if m == nil {
		return nil
	}
	return slices.Clone(m)
}

// EnsureBridge implements Dataplane.
func (f *Fake) EnsureBridge(s dataplane.BridgeSpec) error {
	defer f.lock()()
	if err := f.begin("EnsureBridge", s.Name); err != nil {
		return err
	}
	if s.Name == "" {
		return fmt.Errorf("bridge name is empty")
	}
	if l, ok := f.links[s.Name]; ok && l.Kind != KindBridge {
		return fmt.Errorf("bridge %s: %w (it is a %s)", s.Name, dataplane.ErrIncompatibleLink, l.Kind)
	}
	s.MAC = cloneMAC(s.MAC)
	f.links[s.Name] = &FakeLink{Name: s.Name, Kind: KindBridge, Bridge: s}
	return nil
}

// EnsureVXLAN implements Dataplane. A VNI already used on the same port by
// another VXLAN link, or marked with SetForeignVNI, yields ErrVNIInUse.
func (f *Fake) EnsureVXLAN(s dataplane.VXLANSpec) error {
	defer f.lock()()
	if err := f.begin("EnsureVXLAN", s.Name); err != nil {
		return err
	}
	if s.Name == "" {
		return fmt.Errorf("vxlan name is empty")
	}
	if l, ok := f.links[s.Name]; ok && l.Kind != KindVXLAN {
		return fmt.Errorf("vxlan %s: %w (it is a %s)", s.Name, dataplane.ErrIncompatibleLink, l.Kind)
	}
	if f.foreignVNI[fakeVNIKey{s.Port, s.VNI}] {
		return fmt.Errorf("vxlan %s vni %d port %d: %w", s.Name, s.VNI, s.Port, dataplane.ErrVNIInUse)
	}
	for _, l := range f.links {
		if l.Kind == KindVXLAN && l.Name != s.Name && l.VXLAN.VNI == s.VNI && l.VXLAN.Port == s.Port {
			return fmt.Errorf("vxlan %s vni %d port %d: %w", s.Name, s.VNI, s.Port, dataplane.ErrVNIInUse)
		}
	}
	if s.Master != "" {
		if m, ok := f.links[s.Master]; !ok || m.Kind != KindBridge {
			return fmt.Errorf("vxlan %s master %s: %w", s.Name, s.Master, dataplane.ErrLinkNotFound)
		}
	}
	if old, ok := f.links[s.Name]; ok && old.VXLAN.VNI != s.VNI {
		delete(f.fdb, s.Name) // recreated: entries are lost, as in the kernel
		delete(f.fdbMaster, s.Name)
		delete(f.neigh, s.Name)
	}
	f.links[s.Name] = &FakeLink{Name: s.Name, Kind: KindVXLAN, VXLAN: s}
	return nil
}

// EnsureVeth implements Dataplane. If the host end exists but the container end
// does not (moved into a container), only the host end is repaired.
func (f *Fake) EnsureVeth(s dataplane.VethSpec) error {
	defer f.lock()()
	if err := f.begin("EnsureVeth", s.HostName); err != nil {
		return err
	}
	if s.HostName == "" || s.ContainerName == "" {
		return fmt.Errorf("veth names must not be empty")
	}
	if s.Master != "" {
		if m, ok := f.links[s.Master]; !ok || m.Kind != KindBridge {
			return fmt.Errorf("veth %s master %s: %w", s.HostName, s.Master, dataplane.ErrLinkNotFound)
		}
	}
	host, hostOK := f.links[s.HostName]
	if hostOK && host.Kind != KindVeth {
		return fmt.Errorf("veth %s: %w (it is a %s)", s.HostName, dataplane.ErrIncompatibleLink, host.Kind)
	}
	if c, ok := f.links[s.ContainerName]; ok && c.Kind != KindVethPeer {
		return fmt.Errorf("veth %s: %w (it is a %s)", s.ContainerName, dataplane.ErrIncompatibleLink, c.Kind)
	}
	s.MAC = cloneMAC(s.MAC)
	if hostOK && host.Peer == s.ContainerName {
		host.Veth = s
		if c, ok := f.links[s.ContainerName]; ok {
			c.Veth = s
		}
		return nil
	}
	delete(f.links, s.ContainerName)
	f.links[s.HostName] = &FakeLink{Name: s.HostName, Kind: KindVeth, Veth: s, Peer: s.ContainerName}
	f.links[s.ContainerName] = &FakeLink{Name: s.ContainerName, Kind: KindVethPeer, Veth: s, Peer: s.HostName}
	return nil
}

// DeleteLink implements Dataplane. Deleting one end of a veth pair deletes the
// other end too; deleting a bridge releases its ports.
func (f *Fake) DeleteLink(name string) error {
	defer f.lock()()
	if err := f.begin("DeleteLink", name); err != nil {
		return err
	}
	l, ok := f.links[name]
	if !ok {
		return nil
	}
	delete(f.links, name)
	delete(f.fdb, name)
	delete(f.fdbMaster, name)
	delete(f.neigh, name)
	delete(f.neighTemp, name)
	if l.Peer != "" {
		if p, ok := f.links[l.Peer]; ok && p.Peer == name {
			delete(f.links, l.Peer)
		}
	}
	// As in the kernel: macvlan and vlan links go with their parent, routes
	// with their link.
	for n, c := range f.links {
		if (c.Kind == KindMacvlan && c.Macvlan.Parent == name) || (c.Kind == KindVLAN && c.VLAN.Parent == name) {
			delete(f.links, n)
			f.dropRoutes(n)
		}
	}
	f.dropRoutes(name)
	return nil
}

func (f *Fake) dropRoutes(dev string) {
	for k := range f.ourRoutes {
		if k.dev == dev {
			delete(f.ourRoutes, k)
		}
	}
}

// ListLinks implements Dataplane.
func (f *Fake) ListLinks(prefix string) ([]string, error) {
	defer f.lock()()
	if err := f.begin("ListLinks", prefix); err != nil {
		return nil, err
	}
	var out []string
	for n := range f.links {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out, nil
}

// SetFDB implements Dataplane.
func (f *Fake) SetFDB(vxlan string, mac net.HardwareAddr, vtep netip.Addr) error {
	defer f.lock()()
	if err := f.begin("SetFDB", vxlan); err != nil {
		return err
	}
	if l, ok := f.links[vxlan]; !ok || l.Kind != KindVXLAN {
		return fmt.Errorf("fdb on %s: %w", vxlan, dataplane.ErrLinkNotFound)
	}
	if len(mac) != 6 || !vtep.IsValid() {
		return fmt.Errorf("fdb on %s: bad mac %q or vtep %v", vxlan, mac, vtep)
	}
	if f.fdb[vxlan] == nil {
		f.fdb[vxlan] = map[string]netip.Addr{}
	}
	f.fdb[vxlan][mac.String()] = vtep
	if f.links[vxlan].VXLAN.Master != "" {
		if f.fdbMaster[vxlan] == nil {
			f.fdbMaster[vxlan] = map[string]bool{}
		}
		f.fdbMaster[vxlan][mac.String()] = true
	}
	return nil
}

// DelFDB implements Dataplane.
func (f *Fake) DelFDB(vxlan string, mac net.HardwareAddr) error {
	defer f.lock()()
	if err := f.begin("DelFDB", vxlan); err != nil {
		return err
	}
	delete(f.fdb[vxlan], mac.String())
	delete(f.fdbMaster[vxlan], mac.String())
	return nil
}

// SetNeigh implements Dataplane.
func (f *Fake) SetNeigh(dev string, ip netip.Addr, mac net.HardwareAddr) error {
	defer f.lock()()
	if err := f.begin("SetNeigh", dev); err != nil {
		return err
	}
	if _, ok := f.links[dev]; !ok {
		return fmt.Errorf("neighbour on %s: %w", dev, dataplane.ErrLinkNotFound)
	}
	if len(mac) != 6 || !ip.IsValid() {
		return fmt.Errorf("neighbour on %s: bad mac %q or ip %v", dev, mac, ip)
	}
	if f.neigh[dev] == nil {
		f.neigh[dev] = map[netip.Addr]string{}
	}
	f.neigh[dev][ip] = mac.String()
	delete(f.neighTemp[dev], ip)
	return nil
}

// DelNeigh implements Dataplane.
func (f *Fake) DelNeigh(dev string, ip netip.Addr) error {
	defer f.lock()()
	if err := f.begin("DelNeigh", dev); err != nil {
		return err
	}
	delete(f.neigh[dev], ip)
	delete(f.neighTemp[dev], ip)
	return nil
}

// ListFDB implements Dataplane: the self entries and the bridge's static
// entries of the device, sorted by MAC (master after self).
func (f *Fake) ListFDB(vxlan string) ([]dataplane.FDBEntry, error) {
	defer f.lock()()
	if err := f.begin("ListFDB", vxlan); err != nil {
		return nil, err
	}
	if l, ok := f.links[vxlan]; !ok || l.Kind != KindVXLAN {
		return nil, fmt.Errorf("list fdb of %s: %w", vxlan, dataplane.ErrLinkNotFound)
	}
	var out []dataplane.FDBEntry
	for m, vtep := range f.fdb[vxlan] {
		mac, _ := net.ParseMAC(m)
		out = append(out, dataplane.FDBEntry{MAC: mac, VTEP: vtep})
	}
	for m := range f.fdbMaster[vxlan] {
		mac, _ := net.ParseMAC(m)
		out = append(out, dataplane.FDBEntry{MAC: mac, Master: true})
	}
	slices.SortFunc(out, func(a, b dataplane.FDBEntry) int {
		if c := strings.Compare(a.MAC.String(), b.MAC.String()); c != 0 {
			return c
		}
		switch {
		case a.Master == b.Master:
			return 0
		case b.Master:
			return -1
		}
		return 1
	})
	return out, nil
}

// ListNeigh implements Dataplane: the device's entries (all permanent unless
// added with InjectNeigh), sorted by address.
func (f *Fake) ListNeigh(dev string) ([]dataplane.NeighEntry, error) {
	defer f.lock()()
	if err := f.begin("ListNeigh", dev); err != nil {
		return nil, err
	}
	if _, ok := f.links[dev]; !ok {
		return nil, fmt.Errorf("list neighbours of %s: %w", dev, dataplane.ErrLinkNotFound)
	}
	var out []dataplane.NeighEntry
	for ip, m := range f.neigh[dev] {
		mac, _ := net.ParseMAC(m)
		out = append(out, dataplane.NeighEntry{IP: ip, MAC: mac, Permanent: !f.neighTemp[dev][ip]})
	}
	slices.SortFunc(out, func(a, b dataplane.NeighEntry) int { return a.IP.Compare(b.IP) })
	return out, nil
}

// Routes implements Dataplane: the routes set with SetRoutes plus one connected
// route (Ours) for every bridge that carries an address.
func (f *Fake) Routes() ([]dataplane.Route, error) {
	defer f.lock()()
	if err := f.begin("Routes", ""); err != nil {
		return nil, err
	}
	out := slices.Clone(f.routes)
	for _, l := range f.links {
		if l.Kind == KindBridge && l.Bridge.Address.IsValid() {
			out = append(out, dataplane.Route{Dst: l.Bridge.Address.Masked(), Dev: l.Name, Ours: true})
		}
	}
	for k := range f.ourRoutes {
		out = append(out, dataplane.Route{Dst: k.dst, Dev: k.dev, Ours: dataplane.IsManagedName(k.dev)})
	}
	slices.SortFunc(out, func(a, b dataplane.Route) int {
		if c := a.Dst.Addr().Compare(b.Dst.Addr()); c != 0 {
			return c
		}
		return strings.Compare(a.Dev, b.Dev)
	})
	return out, nil
}

// ResolveUnderlay implements Dataplane: it ignores advertise and returns the
// underlay set with SetUnderlay (ErrNoUnderlay after SetUnderlay(nil)).
func (f *Fake) ResolveUnderlay(advertise string) (dataplane.Underlay, error) {
	defer f.lock()()
	if err := f.begin("ResolveUnderlay", advertise); err != nil {
		return dataplane.Underlay{}, err
	}
	if f.underlay == nil {
		return dataplane.Underlay{}, dataplane.ErrNoUnderlay
	}
	return *f.underlay, nil
}

// SyncFirewall implements Dataplane: it records a copy of fw as the state.
func (f *Fake) SyncFirewall(fw dataplane.Firewall) error {
	defer f.lock()()
	if err := f.begin("SyncFirewall", ""); err != nil {
		return err
	}
	f.firewall = cloneFirewall(fw)
	f.fwSyncs++
	return nil
}

// PortInUse implements Dataplane against the ports marked with SetPortBusy.
func (f *Fake) PortInUse(proto dataplane.Proto, hostIP netip.Addr, port uint16) (bool, string, error) {
	defer f.lock()()
	if err := f.begin("PortInUse", fmt.Sprintf("%d/%s", port, proto)); err != nil {
		return false, "", err
	}
	for _, b := range f.busy[fakePortKey{proto, port}] {
		if !b.hostIP.IsValid() || !hostIP.IsValid() || b.hostIP == hostIP {
			return true, b.holder, nil
		}
	}
	return false, "", nil
}

// RemoveFirewall implements Dataplane.
func (f *Fake) RemoveFirewall() error {
	defer f.lock()()
	if err := f.begin("RemoveFirewall", ""); err != nil {
		return err
	}
	f.firewall = dataplane.Firewall{}
	return nil
}

// SetVXLANPeers implements Dataplane: it changes the peers of the recorded
// firewall's VXLAN filter when there is one.
func (f *Fake) SetVXLANPeers(in dataplane.VXLANIngress) error {
	defer f.lock()()
	if err := f.begin("SetVXLANPeers", ""); err != nil {
		return err
	}
	if f.firewall.VXLAN.Port != 0 {
		f.firewall.VXLAN.Peers, f.firewall.VXLAN.Partial = slices.Clone(in.Peers), in.Partial
	}
	return nil
}

// EnsureProbe implements Dataplane: it records the probe device's spec.
func (f *Fake) EnsureProbe(spec dataplane.ProbeSpec) error {
	defer f.lock()()
	if err := f.begin("EnsureProbe", ""); err != nil {
		return err
	}
	spec.Peers = slices.Clone(spec.Peers)
	f.probe = &spec
	return nil
}

// RemoveProbe implements Dataplane.
func (f *Fake) RemoveProbe() error {
	defer f.lock()()
	if err := f.begin("RemoveProbe", ""); err != nil {
		return err
	}
	f.probe = nil
	return nil
}

// ProbeSpec returns the probe device's spec; nil without one.
func (f *Fake) ProbeSpec() *dataplane.ProbeSpec {
	defer f.lock()()
	if f.probe == nil {
		return nil
	}
	c := *f.probe
	c.Peers = slices.Clone(c.Peers)
	return &c
}

// SetPathMTU makes probes to peer of up to mtu bytes answered (0: none),
// once the probe device reaches it.
func (f *Fake) SetPathMTU(peer netip.Addr, mtu int) {
	defer f.lock()()
	if f.pathMTU == nil {
		f.pathMTU = map[netip.Addr]int{}
	}
	f.pathMTU[peer] = mtu
}

// Probe implements Dataplane: answered when the probe device reaches peer
// and size is within the peer's path MTU (SetPathMTU).
func (f *Fake) Probe(peer netip.Addr, size int, _ time.Duration) (time.Duration, error) {
	defer f.lock()()
	if err := f.begin("Probe", peer.String()); err != nil {
		return 0, err
	}
	if f.probe == nil {
		return 0, dataplane.ErrNoProbe
	}
	if !slices.Contains(f.probe.Peers, peer) || size > f.pathMTU[peer] {
		return 0, fmt.Errorf("probe of %d bytes to %s: %w", size, peer, dataplane.ErrProbeLost)
	}
	return time.Millisecond, nil
}

// VXLANDrops implements Dataplane: the Fake drops nothing.
func (f *Fake) VXLANDrops() (uint64, error) {
	defer f.lock()()
	if err := f.begin("VXLANDrops", ""); err != nil {
		return 0, err
	}
	return 0, nil
}

func cloneFirewall(fw dataplane.Firewall) dataplane.Firewall {
	out := dataplane.Firewall{Networks: slices.Clone(fw.Networks), Ports: slices.Clone(fw.Ports), Shims: slices.Clone(fw.Shims), VXLAN: fw.VXLAN}
	out.VXLAN.Peers = slices.Clone(fw.VXLAN.Peers)
	return out
}

// --- test set-up helpers ---

// SetFail injects (err != nil) or clears (err == nil) a failure for key.
func (f *Fake) SetFail(key string, err error) {
	defer f.lock()()
	if f.Fail == nil {
		f.Fail = map[string]error{}
	}
	if err == nil {
		delete(f.Fail, key)
		return
	}
	f.Fail[key] = err
}

// InjectFDB writes entries without recording a call, as another program (or
// an earlier run) would: a self entry mac → vtep when vtep is valid, and the
// bridge's static entry when master is true.
func (f *Fake) InjectFDB(vxlan string, mac net.HardwareAddr, vtep netip.Addr, master bool) {
	defer f.lock()()
	if vtep.IsValid() {
		if f.fdb[vxlan] == nil {
			f.fdb[vxlan] = map[string]netip.Addr{}
		}
		f.fdb[vxlan][mac.String()] = vtep
	}
	if master {
		if f.fdbMaster[vxlan] == nil {
			f.fdbMaster[vxlan] = map[string]bool{}
		}
		f.fdbMaster[vxlan][mac.String()] = true
	}
}

// DropFDB removes entries without recording a call, as an operator's
// `bridge fdb del` would: the self entry, the static bridge entry, or both.
func (f *Fake) DropFDB(vxlan string, mac net.HardwareAddr, self, master bool) {
	defer f.lock()()
	if self {
		delete(f.fdb[vxlan], mac.String())
	}
	if master {
		delete(f.fdbMaster[vxlan], mac.String())
	}
}

// InjectNeigh writes a neighbour entry without recording a call; permanent
// false models an entry the kernel resolved itself.
func (f *Fake) InjectNeigh(dev string, ip netip.Addr, mac net.HardwareAddr, permanent bool) {
	defer f.lock()()
	if f.neigh[dev] == nil {
		f.neigh[dev] = map[netip.Addr]string{}
	}
	f.neigh[dev][ip] = mac.String()
	if f.neighTemp == nil {
		f.neighTemp = map[string]map[netip.Addr]bool{}
	}
	if f.neighTemp[dev] == nil {
		f.neighTemp[dev] = map[netip.Addr]bool{}
	}
	f.neighTemp[dev][ip] = !permanent
}

// DropNeigh removes a neighbour entry without recording a call.
func (f *Fake) DropNeigh(dev string, ip netip.Addr) {
	defer f.lock()()
	delete(f.neigh[dev], ip)
}

// FDBMaster returns the MACs of the bridge's static entries behind the device.
func (f *Fake) FDBMaster(vxlan string) []string {
	defer f.lock()()
	var out []string
	for m := range f.fdbMaster[vxlan] {
		out = append(out, m)
	}
	slices.Sort(out)
	return out
}

// SetRoutes sets the routes that were not made by grapevine.
func (f *Fake) SetRoutes(rs ...dataplane.Route) {
	defer f.lock()()
	f.routes = slices.Clone(rs)
}

// SetUnderlay sets what ResolveUnderlay returns; nil makes it fail.
func (f *Fake) SetUnderlay(u *dataplane.Underlay) {
	defer f.lock()()
	if u == nil {
		f.underlay = nil
		return
	}
	c := *u
	f.underlay = &c
}

// SetPortBusy marks hostIP:port/proto (invalid hostIP = all addresses) as held
// by something other than grapevine.
func (f *Fake) SetPortBusy(proto dataplane.Proto, hostIP netip.Addr, port uint16, holder string) {
	defer f.lock()()
	k := fakePortKey{proto, port}
	f.busy[k] = append(f.busy[k], fakeBusy{hostIP, holder})
}

// SetForeignVNI marks vni on UDP port as taken by a VXLAN device grapevine did
// not make (Docker's overlay, another tool).
func (f *Fake) SetForeignVNI(port int, vni uint32) {
	defer f.lock()()
	f.foreignVNI[fakeVNIKey{port, vni}] = true
}

// AddLink adds a link of the given kind without the checks of the Ensure
// methods, e.g. an orphan left by an earlier run.
func (f *Fake) AddLink(name, kind string) {
	defer f.lock()()
	f.links[name] = &FakeLink{Name: name, Kind: kind}
}

// MoveOut removes a link from the namespace without deleting its peer, as
// Docker does when it moves a container end into a container.
func (f *Fake) MoveOut(name string) {
	defer f.lock()()
	delete(f.links, name)
}

// --- read helpers ---

// Link returns a copy of the named link.
func (f *Fake) Link(name string) (FakeLink, bool) {
	defer f.lock()()
	l, ok := f.links[name]
	if !ok {
		return FakeLink{}, false
	}
	return *l, true
}

// LinkNames returns the names of all links, sorted.
func (f *Fake) LinkNames() []string {
	defer f.lock()()
	out := make([]string, 0, len(f.links))
	for n := range f.links {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// FDB returns the FDB entries of a VXLAN device as MAC → VTEP.
func (f *Fake) FDB(vxlan string) map[string]netip.Addr {
	defer f.lock()()
	out := map[string]netip.Addr{}
	maps.Copy(out, f.fdb[vxlan])
	return out
}

// Neigh returns the neighbour entries of a device as IP → MAC.
func (f *Fake) Neigh(dev string) map[netip.Addr]string {
	defer f.lock()()
	out := map[netip.Addr]string{}
	maps.Copy(out, f.neigh[dev])
	return out
}

// Firewall returns a copy of the last synced firewall state.
func (f *Fake) Firewall() dataplane.Firewall {
	defer f.lock()()
	return cloneFirewall(f.firewall)
}

// FirewallSyncs counts successful SyncFirewall calls.
func (f *Fake) FirewallSyncs() int {
	defer f.lock()()
	return f.fwSyncs
}

// Calls returns the recorded calls as "Method object" strings, in order.
func (f *Fake) Calls() []string {
	defer f.lock()()
	return slices.Clone(f.calls)
}

// CallCount counts recorded calls of method.
func (f *Fake) CallCount(method string) int {
	defer f.lock()()
	n := 0
	for _, c := range f.calls {
		if c == method || strings.HasPrefix(c, method+" ") {
			n++
		}
	}
	return n
}

// ResetCalls forgets the recorded calls.
func (f *Fake) ResetCalls() {
	defer f.lock()()
	f.calls = nil
}

// EnsureMacvlan implements Dataplane. The parent must exist; a link of the
// name of another kind is ErrIncompatibleLink.
func (f *Fake) EnsureMacvlan(s dataplane.MacvlanSpec) error {
	defer f.lock()()
	if err := f.begin("EnsureMacvlan", s.Name); err != nil {
		return err
	}
	if s.Name == "" || s.Parent == "" {
		return fmt.Errorf("macvlan name and parent must not be empty")
	}
	if _, ok := f.links[s.Parent]; !ok {
		return fmt.Errorf("macvlan %s parent %s: %w", s.Name, s.Parent, dataplane.ErrLinkNotFound)
	}
	if l, ok := f.links[s.Name]; ok && l.Kind != KindMacvlan {
		return fmt.Errorf("macvlan %s: %w (it is a %s)", s.Name, dataplane.ErrIncompatibleLink, l.Kind)
	}
	s.MAC = cloneMAC(s.MAC)
	f.links[s.Name] = &FakeLink{Name: s.Name, Kind: KindMacvlan, Macvlan: s}
	return nil
}

// EnsureVLAN implements Dataplane. After SetVLANSupport(false) it fails with
// ErrVLANUnsupported as a kernel without 802.1q does.
func (f *Fake) EnsureVLAN(s dataplane.VLANSpec) error {
	defer f.lock()()
	if err := f.begin("EnsureVLAN", s.Name); err != nil {
		return err
	}
	if s.Name == "" || s.Parent == "" {
		return fmt.Errorf("vlan name and parent must not be empty")
	}
	if s.ID < 1 || s.ID > dataplane.MaxVLANID {
		return fmt.Errorf("vlan %s: id %d outside 1..%d", s.Name, s.ID, dataplane.MaxVLANID)
	}
	if _, ok := f.links[s.Parent]; !ok {
		return fmt.Errorf("vlan %s parent %s: %w", s.Name, s.Parent, dataplane.ErrLinkNotFound)
	}
	if l, ok := f.links[s.Name]; ok {
		if l.Kind != KindVLAN || l.VLAN != s {
			return fmt.Errorf("vlan %s: %w (it is a %s)", s.Name, dataplane.ErrIncompatibleLink, l.Kind)
		}
		return nil
	}
	if f.noVLAN {
		return fmt.Errorf("create vlan %s: %w", s.Name, dataplane.ErrVLANUnsupported)
	}
	f.links[s.Name] = &FakeLink{Name: s.Name, Kind: KindVLAN, VLAN: s}
	return nil
}

// LinkInfo implements Dataplane.
func (f *Fake) LinkInfo(name string) (dataplane.LinkInfo, error) {
	defer f.lock()()
	if err := f.begin("LinkInfo", name); err != nil {
		return dataplane.LinkInfo{}, err
	}
	l, ok := f.links[name]
	if !ok {
		return dataplane.LinkInfo{}, fmt.Errorf("link %q: %w", name, dataplane.ErrLinkNotFound)
	}
	return f.info(l), nil
}

// LinkInfos implements Dataplane, sorted by name.
func (f *Fake) LinkInfos() ([]dataplane.LinkInfo, error) {
	defer f.lock()()
	if err := f.begin("LinkInfos", ""); err != nil {
		return nil, err
	}
	out := make([]dataplane.LinkInfo, 0, len(f.links))
	for _, l := range f.links {
		out = append(out, f.info(l))
	}
	slices.SortFunc(out, func(a, b dataplane.LinkInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// info describes a fake link. Caller holds mu.
func (f *Fake) info(l *FakeLink) dataplane.LinkInfo {
	li := dataplane.LinkInfo{Name: l.Name, Kind: l.Kind, MTU: 1500, Up: true}
	parentMTU := func(name string) int {
		if p, ok := f.links[name]; ok && p != l {
			return f.info(p).MTU
		}
		return 1500
	}
	switch l.Kind {
	case KindOther:
		li = l.Info
		li.Name = l.Name
		li.Addrs = slices.Clone(l.Info.Addrs)
		if li.Kind == "" {
			li.Kind = "device"
		}
	case KindBridge:
		if l.Bridge.MTU > 0 {
			li.MTU = l.Bridge.MTU
		}
		if l.Bridge.Address.IsValid() {
			li.Addrs = []netip.Prefix{l.Bridge.Address}
		}
	case KindVXLAN:
		li.Master = l.VXLAN.Master
		if l.VXLAN.MTU > 0 {
			li.MTU = l.VXLAN.MTU
		}
	case KindVeth, KindVethPeer:
		li.Kind = KindVeth
		li.Master = l.Veth.Master
		if l.Veth.MTU > 0 {
			li.MTU = l.Veth.MTU
		}
	case KindMacvlan:
		li.Parent = l.Macvlan.Parent
		li.MTU = parentMTU(l.Macvlan.Parent)
		if l.Macvlan.MTU > 0 {
			li.MTU = l.Macvlan.MTU
		}
		if l.Macvlan.Address.IsValid() {
			li.Addrs = []netip.Prefix{l.Macvlan.Address}
		}
	case KindStandalone:
		if l.MTU > 0 {
			li.MTU = l.MTU
		}
	case KindVLAN:
		li.Parent = l.VLAN.Parent
		li.VLANID = l.VLAN.ID
		li.MTU = parentMTU(l.VLAN.Parent)
	}
	return li
}

// SetRoute implements Dataplane.
func (f *Fake) SetRoute(dst netip.Prefix, dev string, src netip.Addr) error {
	defer f.lock()()
	if err := f.begin("SetRoute", dst.String()+" "+dev); err != nil {
		return err
	}
	if !dst.IsValid() {
		return fmt.Errorf("route: invalid destination")
	}
	if _, ok := f.links[dev]; !ok {
		return fmt.Errorf("route to %s: link %q: %w", dst, dev, dataplane.ErrLinkNotFound)
	}
	f.ourRoutes[fakeRouteKey{dst.Masked(), dev}] = src
	return nil
}

// DelRoute implements Dataplane.
func (f *Fake) DelRoute(dst netip.Prefix, dev string) error {
	defer f.lock()()
	if err := f.begin("DelRoute", dst.String()+" "+dev); err != nil {
		return err
	}
	delete(f.ourRoutes, fakeRouteKey{dst.Masked(), dev})
	return nil
}

// SetLinkInfo adds (or replaces) a link grapevine did not make, described by
// li (Kind "" means a physical "device"), e.g. a host's NIC as a macvlan parent.
func (f *Fake) SetLinkInfo(li dataplane.LinkInfo) {
	defer f.lock()()
	li.Addrs = slices.Clone(li.Addrs)
	f.links[li.Name] = &FakeLink{Name: li.Name, Kind: KindOther, Info: li}
}

// SetVLANSupport makes EnsureVLAN create links (true, the default) or fail
// with ErrVLANUnsupported as a kernel without 802.1q does (false).
func (f *Fake) SetVLANSupport(on bool) {
	defer f.lock()()
	f.noVLAN = !on
}

// RouteSrc returns the source of a route written with SetRoute and whether it
// exists.
func (f *Fake) RouteSrc(dst netip.Prefix, dev string) (netip.Addr, bool) {
	defer f.lock()()
	src, ok := f.ourRoutes[fakeRouteKey{dst.Masked(), dev}]
	return src, ok
}

// EnsureStandalone implements Dataplane.
func (f *Fake) EnsureStandalone(name string, mtu int) error {
	defer f.lock()()
	if err := f.begin("EnsureStandalone", name); err != nil {
		return err
	}
	if name == "" {
		return fmt.Errorf("standalone link name is empty")
	}
	if l, ok := f.links[name]; ok && l.Kind != KindStandalone {
		return fmt.Errorf("standalone %s: %w (it is a %s)", name, dataplane.ErrIncompatibleLink, l.Kind)
	}
	f.links[name] = &FakeLink{Name: name, Kind: KindStandalone, MTU: mtu}
	return nil
}
