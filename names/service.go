package names

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/net/ipv4"

	"grapevine/driver/dataplane"
	"grapevine/gossip"
)

// Redirector programs the kernel's redirect of the networks' DNS queries
// (dataplane.Kernel).
type Redirector interface {
	SyncNamesRedirect(dataplane.NamesRedirect) error
	RemoveNamesRedirect() error
}

// Config wires a Service.
type Config struct {
	Cluster gossip.Replicated
	// Networks lists this host's networks by id (driver.NameNetworks).
	Networks func() map[string]netip.Prefix
	Redirect Redirector
	// OriginalUDP and OriginalTCP recover a redirected query's destination
	// (dataplane.OriginalDstUDP, dataplane.OriginalDstTCP).
	OriginalUDP func(client, local netip.AddrPort) (netip.AddrPort, error)
	OriginalTCP func(*net.TCPConn) (netip.AddrPort, error)
	// Engine is the Docker engine the names of this host's containers come
	// from; nil publishes none (other hosts' names are still answered).
	Engine *Engine
	// Lease is how long the redirect holds without renewal (default 90 s);
	// it is renewed every third of it.
	Lease time.Duration
	// Tapper, Sandboxes and SandboxChanges tap the joined containers'
	// queries to Docker's resolver, so that grapevine names are answered
	// before Docker forwards them (tap.go); a nil Tapper taps nothing and
	// names reach grapevine through the redirect only. NetnsDir is where
	// the plugin sees Docker's sandbox namespaces.
	Tapper         Tapper
	Sandboxes      Sandboxes
	SandboxChanges <-chan struct{}
	NetnsDir       string
	// Resync is the period of the full comparison of the engine's
	// containers with the published records (default 30 s).
	Resync time.Duration
	Log    *logrus.Entry
}

// Service publishes this host's names and answers other hosts'.
type Service struct {
	cfg   Config
	log   *logrus.Entry
	table *Table
	pub   *publisher

	udp     *net.UDPConn
	pc      *ipv4.PacketConn // udp, with the destination of each datagram
	tcp     *net.TCPListener
	udpPort uint16
	tcpPort uint16
	// bufs are the relay's receive buffers (*[]byte of maxUDPMessage
	// bytes): one per forwarded query would be 64 KiB of garbage each.
	bufs sync.Pool
	// relays holds a token per UDP query waiting for its upstream
	// (maxRelays).
	relays chan struct{}

	// subnets are the networks whose queries are served, read by every
	// query without a lock; renewMu serialises the redirect's renewals
	// (iptables-restore takes tens of ms, which no query may wait for).
	subnets   atomic.Pointer[[]netip.Prefix]
	taps      taps
	renewMu   sync.Mutex
	renewedAt time.Time // under renewMu

	cancel context.CancelFunc
	wg     sync.WaitGroup // the sockets' readers and their handlers
	// loops are the goroutines that program the kernel (the redirect's
	// renewal, the taps, the engine's events): Close waits for them before
	// it removes the redirect, so none writes it (or the tapped set) back.
	loops sync.WaitGroup
}

// Start opens the resolver's sockets (kernel-chosen ports on every local
// address; only redirected queries from the networks' subnets are served),
// programs the redirect and starts learning names from the engine.
func Start(cfg Config) (*Service, error) {
	if cfg.Lease <= 0 {
		cfg.Lease = 90 * time.Second
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 30 * time.Second
	}
	s := &Service{cfg: cfg, log: cfg.Log, table: NewTable(cfg.Cluster)}
	s.bufs.New = func() any { b := make([]byte, maxUDPMessage); return &b }
	s.relays = make(chan struct{}, maxRelays)
	s.taps = taps{open: map[string]*openTap{}, failed: map[string]retry{}}
	var err error
	if s.udp, err = net.ListenUDP("udp4", &net.UDPAddr{}); err != nil {
		return nil, fmt.Errorf("names resolver: listen udp: %w", err)
	}
	s.pc = ipv4.NewPacketConn(s.udp)
	if err := s.pc.SetControlMessage(ipv4.FlagDst, true); err != nil {
		s.udp.Close()
		return nil, fmt.Errorf("names resolver: ask for the destination of udp datagrams: %w", err)
	}
	if s.tcp, err = net.ListenTCP("tcp4", &net.TCPAddr{}); err != nil {
		s.udp.Close()
		return nil, fmt.Errorf("names resolver: listen tcp: %w", err)
	}
	s.udpPort = uint16(s.udp.LocalAddr().(*net.UDPAddr).Port)
	s.tcpPort = uint16(s.tcp.Addr().(*net.TCPAddr).Port)
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(2)
	go s.serveUDP()
	go s.serveTCP()
	s.loops.Add(1)
	go s.renewLoop(ctx)
	if cfg.Tapper != nil && cfg.Sandboxes != nil {
		s.loops.Add(1)
		go s.tapLoop(ctx)
	}
	if cfg.Engine != nil {
		s.pub = newPublisher(cfg.Cluster, cfg.Engine, cfg.Networks, cfg.Log)
		s.loops.Add(1)
		go s.learnLoop(ctx)
	}
	s.log.WithFields(logrus.Fields{"udp_port": s.udpPort, "tcp_port": s.tcpPort}).Info("names resolver listening")
	return s, nil
}

// Close stops learning and answering and removes the redirect, so queries
// leave unchanged again. This host's records stay: they go with its
// endpoints' records or its departure.
func (s *Service) Close() {
	s.cancel()
	s.loops.Wait() // the taps are closed by now
	if err := s.cfg.Redirect.RemoveNamesRedirect(); err != nil {
		s.log.WithError(err).Warn("removing the names redirect")
	}
	s.udp.Close()
	s.tcp.Close()
	s.wg.Wait()
}

func (s *Service) subnetOf(a netip.Addr) (netip.Prefix, bool) {
	cur := s.subnets.Load()
	if cur == nil {
		return netip.Prefix{}, false
	}
	for _, p := range *cur {
		if p.Contains(a) {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// refresh reads the local networks and renews the redirect when they
// changed or a third of the lease has passed.
func (s *Service) refresh() {
	var subnets []netip.Prefix
	for _, p := range s.cfg.Networks() {
		subnets = append(subnets, p)
	}
	slices.SortFunc(subnets, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	s.renewMu.Lock()
	defer s.renewMu.Unlock()
	now := time.Now()
	if cur := s.subnets.Load(); cur != nil && slices.Equal(subnets, *cur) && now.Sub(s.renewedAt) < s.cfg.Lease/3 {
		return
	}
	r := dataplane.NamesRedirect{UDPPort: s.udpPort, TCPPort: s.tcpPort, Subnets: subnets, Until: now.Add(s.cfg.Lease)}
	if err := s.cfg.Redirect.SyncNamesRedirect(r); err != nil {
		s.log.WithError(err).Warn("names redirect not renewed: cross-host names stop when the lease ends")
		return
	}
	s.subnets.Store(&subnets)
	s.renewedAt = now
}

func (s *Service) renewLoop(ctx context.Context) {
	defer s.loops.Done()
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		s.refresh()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// learnLoop follows the engine's network events, publishing a container's
// names when it connects and withdrawing them when it disconnects, with a
// full comparison at every (re)connection of the stream and every Resync.
func (s *Service) learnLoop(ctx context.Context) {
	defer s.loops.Done()
	s.loops.Add(1)
	go s.resyncLoop(ctx)
	for ctx.Err() == nil {
		err := s.cfg.Engine.Events(ctx, func(ev Event) { s.onEvent(ctx, ev) })
		if ctx.Err() != nil {
			return
		}
		s.log.WithError(err).Warn("engine event stream ended; reconnecting")
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		s.resync(ctx)
	}
}

// onEvent publishes or withdraws a container's names first and then
// renews the redirect (a network created or removed changes it), so that
// a renewal never delays a name.
func (s *Service) onEvent(ctx context.Context, ev Event) {
	defer s.refresh()
	id := ev.Actor.Attributes["container"]
	if ev.Type != "network" || id == "" || (ev.Action != "connect" && ev.Action != "disconnect") {
		return
	}
	log := s.log.WithFields(logrus.Fields{"network": shortID(ev.Actor.ID), "container": shortID(id)})
	if ev.Action == "connect" {
		if err := s.pub.publishEarly(ctx, ev.Actor.ID, id); err != nil {
			log.WithError(err).Debug("container name not published from the network's endpoint list; the container inspect follows")
		}
	}
	if err := s.pub.syncContainer(ctx, id); err != nil {
		log.WithError(err).Warn("names of container not updated; the next resync retries")
	}
}

func (s *Service) resyncLoop(ctx context.Context) {
	defer s.loops.Done()
	t := time.NewTicker(s.cfg.Resync)
	defer t.Stop()
	for {
		s.resync(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Service) resync(ctx context.Context) {
	s.refresh()
	if err := s.pub.syncAll(ctx); err != nil && ctx.Err() == nil {
		s.log.WithError(err).Warn("names resync with the engine failed")
	}
}

// NetworkNames is one network's names by host, for status.
type NetworkNames struct {
	Subnet string              `json:"subnet"`
	Hosts  map[string][]string `json:"hosts"` // host → "name=address" sorted
}

// Status lists the names answered on each local network, by host.
func (s *Service) Status() []NetworkNames {
	var subnets []netip.Prefix
	if cur := s.subnets.Load(); cur != nil {
		subnets = *cur
	}
	var out []NetworkNames
	for _, p := range subnets {
		nn := NetworkNames{Subnet: p.String(), Hosts: map[string][]string{}}
		for _, e := range s.table.Entries(p) {
			for _, n := range e.Names {
				nn.Hosts[e.Host] = append(nn.Hosts[e.Host], n+"="+e.Address.String())
			}
		}
		for _, v := range nn.Hosts {
			slices.Sort(v)
		}
		out = append(out, nn)
	}
	return out
}

// Ports are the resolver's UDP and TCP ports (chosen by the kernel).
func (s *Service) Ports() (udp, tcp uint16) { return s.udpPort, s.tcpPort }
