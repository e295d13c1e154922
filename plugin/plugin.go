// Package plugin is the grapevine process: it reads the settings, sets up
// logging, serves the NetworkDriver and IpamDriver protocols on one unix socket,
// opens the persisted state, wires the drivers, the data plane and the gossip
// cluster together, runs the periodic reconcile, and shuts down on SIGTERM.
// It is the only package that holds process-wide state.
package plugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/sirupsen/logrus"
	bolt "go.etcd.io/bbolt"

	"grapevine/driver"
	"grapevine/driver/dataplane"
	"grapevine/gossip"
	gvipam "grapevine/ipam"
	"grapevine/metrics"
	"grapevine/names"
)

// Options are the process's command-line options (the settings come from the
// environment).
type Options struct {
	Socket   string // unix socket to serve on
	StateDir string // directory of the persisted state (a host mount)
	// NetNSDir is where each VXLAN network's isolated network namespace is
	// pinned: the plugin's propagated mount, so that the pins (and the
	// containers' links) outlive a plugin restart; StateDir/netns holds a
	// second pin, which outlives `docker plugin disable` where the host
	// shares the state mount. "" keeps bridges in the host namespace.
	NetNSDir string
	// ReconcileEvery is the period of the kernel reconcile loop.
	ReconcileEvery time.Duration
	// EngineSocket is the Docker engine's API socket (the docker-sock
	// mount) from which containers' names are learnt; "" or absent
	// publishes none (other hosts' names are still answered).
	EngineSocket string
	// SandboxDir is Docker's exec root's netns directory as the plugin sees
	// it (the docker-exec-root mount): the containers' namespaces whose
	// names queries are tapped. "" taps none.
	SandboxDir string
}

// DefaultOptions are right for the managed plugin.
func DefaultOptions() Options {
	return Options{
		Socket:         "/run/docker/plugins/grapevine.sock",
		StateDir:       "/var/lib/grapevine",
		NetNSDir:       "/run/grapevine/netns",
		ReconcileEvery: 30 * time.Second,
		EngineSocket:   "/var/run/docker.sock",
		SandboxDir:     "/var/run/docker/netns",
	}
}

// Serve runs the plugin until SIGTERM/SIGINT or ctx ends.
func Serve(ctx context.Context, opts Options, getenv func(string) string) error {
	log := logrus.New()
	log.SetOutput(os.Stdout) // dockerd logs plugin stdout as info, stderr as error
	log.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true, DisableColors: true})
	entry := logrus.NewEntry(log).WithField("component", "plugin")

	settings, settingsErr := ParseSettings(getenv)
	log.SetLevel(settings.LogLevel)

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	// Listen first: Docker dials ~0.5 s after start and gives up after ~10 s.
	ln, err := listen(opts.Socket)
	if err != nil {
		return err
	}
	srv := NewServer(entry.WithField("component", "server"))
	m := metrics.New()
	srv.observe = m.ObserveAPI
	m.InitAPI(srv.Methods()...)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	entry.WithField("socket", opts.Socket).Info("serving NetworkDriver and IpamDriver")

	if msrv := startMetrics(m, settings, entry.WithField("component", "metrics")); msrv != nil {
		defer msrv.Close()
	}
	var p *process
	if settingsErr != nil {
		entry.WithError(settingsErr).Error("bad settings; every request will be refused until they are fixed")
		srv.SetBackend(nil, nil, func() any { return errorStatus(settingsErr) }, settingsErr)
	} else {
		warnInsecure(entry, settings)
		p, err = start(ctx, opts, settings, entry, m)
		if err != nil {
			entry.WithError(err).Error("start-up failed; every request will be refused")
			srv.SetBackend(nil, nil, func() any { return errorStatus(err) }, err)
		} else {
			srv.rotateKey = func() (any, error) { return p.rotateTunnelKey(opts.StateDir) }
			srv.SetDoctor(p.doctor)
			srv.SetBackend(p.driver, ipamAdapter{p.ipam, p.clone}, p.status, nil)
			if err := m.Register(metrics.NewStateCollector(p.metricSources())); err != nil {
				entry.WithError(err).Error("registering the state metrics")
			}
		}
	}

	select {
	case <-ctx.Done():
		entry.Info("stopping")
	case err := <-served:
		entry.WithError(err).Error("socket server stopped")
	}
	_ = ln.Close()
	if !srv.Drain(3 * time.Second) {
		entry.Warn("requests still running after 3s; stopping anyway")
	}
	if p != nil {
		p.close()
	}
	entry.Info("stopped")
	return nil
}

// warnInsecure says, at every start, that the operator chose to gossip in
// clear text.
func warnInsecure(log *logrus.Entry, s Settings) {
	switch {
	case !s.InsecurePlaintextGossip:
	case len(s.GossipKeys) > 0:
		log.Warnf("%s=true has no effect: GOSSIP_KEY is set, so gossip is encrypted", envInsecure)
	default:
		log.Warnf("%s=true: gossip is neither encrypted nor authenticated; any machine that reaches GOSSIP_PORT can join the cluster, read every record and write records that program this host's kernel; set GOSSIP_KEY (see docs/security.md)", envInsecure)
	}
}

func listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating socket directory %s: %w", filepath.Dir(path), err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("removing stale socket %s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	return ln, nil
}

// process holds everything that lives between start-up and shutdown.
type process struct {
	settings Settings
	db       *bolt.DB
	dp       *dataplane.Kernel
	driver   *driver.Driver
	ipam     *gvipam.Driver
	cluster  *gossip.Cluster
	clone    *cloneGuard
	names    *names.Service       // nil when the resolver could not start
	ct       *dataplane.Conntrack // the resolver's conntrack socket (nil: one per query)
	node     string
	log      *logrus.Entry
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	// tunnelKey is this host's WireGuard private key at start
	// (tunnelkey.go); rotateMu serialises rotations.
	tunnelKey dataplane.Key
	rotateMu  sync.Mutex

	underlayOnce sync.Mutex
	underlay     *dataplane.Underlay
}

// start opens the state and starts every part; m (nil: none) is told the
// drivers' timed events.
func start(ctx context.Context, opts Options, s Settings, log *logrus.Entry, m *metrics.Metrics) (_ *process, err error) {
	db, err := openState(opts.StateDir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = db.Close()
		}
	}()

	dp, err := dataplane.NewKernel(log.WithField("component", "dataplane"))
	if err != nil {
		return nil, fmt.Errorf("opening the kernel data plane: %w", err)
	}
	defer func() {
		if err != nil {
			dp.Close()
		}
	}()
	if err := isolateNetworks(dp, opts, log); err != nil {
		return nil, err
	}
	p := &process{settings: s, db: db, dp: dp, log: log}
	if p.tunnelKey, err = loadTunnelKey(opts.StateDir); err != nil {
		return nil, err
	}
	if p.node, err = nodeName(db); err != nil {
		return nil, err
	}
	p.log = log.WithField("node", p.node)
	if p.cluster, err = p.newCluster(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = p.cluster.Shutdown()
		}
	}()
	p.cluster.RegisterValidator(names.Kind, names.Validator(p.cluster))
	if err := p.loadDrivers(m); err != nil {
		return nil, err
	}
	if err := p.run(ctx, opts); err != nil {
		return nil, err
	}
	return p, nil
}

// openState creates the state directory and opens its database.
func openState(stateDir string) (*bolt.DB, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating state directory %s: %w", stateDir, err)
	}
	dbPath := filepath.Join(stateDir, "state.db")
	db, err := bolt.Open(dbPath, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("opening state %s: %w", dbPath, err)
	}
	return db, nil
}

// isolateNetworks pins network namespaces where they outlive the plugin
// (nothing when opts.NetNSDir is empty), logging directories whose pins
// cannot.
func isolateNetworks(dp *dataplane.Kernel, opts Options, log *logrus.Entry) error {
	if opts.NetNSDir == "" {
		return nil
	}
	// pinned in the propagated mount (survives a plugin crash) and in the
	// state directory (survives disable and upgrade where the host
	// shares that mount)
	dirs := []string{opts.NetNSDir, filepath.Join(opts.StateDir, "netns")}
	if err := dp.IsolateNetworks(dirs...); err != nil {
		return fmt.Errorf("isolating networks: %w", err)
	}
	for _, dir := range dirs {
		shared, err := sharedMount(dir)
		switch {
		case err != nil:
			log.WithError(err).WithField("dir", dir).Warn("could not tell whether a network namespace directory is a shared mount")
		case !shared:
			log.WithField("dir", dir).Info("network namespace directory is not a shared mount: its pins do not outlive the plugin")
		}
	}
	return nil
}

// loadDrivers builds the IPAM and network drivers from the stored state;
// m (nil: none) is told their timed events.
func (p *process) loadDrivers(m *metrics.Metrics) error {
	s, log := p.settings, p.log
	ipamCfg := ipamConfig(s, p.db, p.cluster, log.WithField("component", "ipam"))
	ipamCfg.RouteConflict = p.routeConflict
	ipamCfg.ObserveAgreement = m.ObserveAgreement
	ipamCfg.ObserveDonation = m.ObserveDonation
	var err error
	if p.ipam, err = gvipam.New(ipamCfg); err != nil {
		return fmt.Errorf("loading IPAM state: %w", err)
	}
	driverCfg := driverConfig(s, p.db, p.dp, p.resolveUnderlay, p.cluster, log.WithField("component", "driver"))
	driverCfg.ObserveConvergence = m.ObserveConvergence
	driverCfg.HostAddress = p.ipam.HostAddress
	driverCfg.Forgotten = p.ipam.IsForgotten
	driverCfg.Tunnel = driver.TunnelConfig{PrivateKey: p.tunnelKey, Port: TunnelPort,
		GossipKeyed: len(s.GossipKeys) > 0}
	if p.driver, err = driver.New(driverCfg); err != nil {
		return fmt.Errorf("loading network state: %w", err)
	}
	return nil
}

// run reconciles the kernel once, then starts gossip, the names resolver
// and the background loops, which stop when ctx ends or p closes.
func (p *process) run(ctx context.Context, opts Options) error {
	// The first reconcile runs before requests are answered, so a Join for a
	// container Docker restarts finds its bridge in place.
	if err := p.driver.Reconcile(); err != nil {
		p.log.WithError(err).Warn("first reconcile left errors; retrying periodically")
	}
	// Gossip starts after the socket answers and the kernel is reconciled;
	// joining PEERS goes on in the background.
	var err error
	if p.clone, err = newCloneGuard(p.cluster, DefaultCloneCheckEvery, p.log.WithField("component", "identity")); err != nil {
		return err
	}
	if err := p.cluster.Start(); err != nil {
		return fmt.Errorf("starting gossip on port %d: %w", p.settings.GossipPort, err)
	}
	p.names = p.startNames(opts.EngineSocket, opts.SandboxDir)
	rctx, cancel := context.WithCancel(ctx)
	p.cancel = cancel
	p.clone.start(rctx, &p.wg, p.cluster.LocalAddr().String())
	runEvery(rctx, &p.wg, opts.ReconcileEvery, p.reconcileOnce)
	p.watchBridges(rctx)
	return nil
}

// startNames starts the names resolver; without it (logged) only names
// across hosts are missing.
func (p *process) startNames(engineSocket, sandboxDir string) *names.Service {
	log := p.log.WithField("component", "names")
	var eng *names.Engine
	if engineSocket != "" {
		if _, err := os.Stat(engineSocket); err != nil {
			log.WithError(err).Warn("no Docker engine socket: this host's container names are not published (set the plugin's docker-sock.source to the daemon's socket)")
		} else {
			eng = names.NewEngine(engineSocket)
		}
	}
	origUDP := dataplane.OriginalDstUDP
	if ct, err := dataplane.NewConntrack(); err != nil {
		log.WithError(err).Warn("no kept conntrack socket: the resolver opens one per forwarded query")
	} else {
		p.ct, origUDP = ct, ct.OriginalDstUDP
	}
	cfg := names.Config{
		Cluster:     p.cluster,
		Networks:    p.driver.NameNetworks,
		Redirect:    p.dp,
		OriginalUDP: origUDP,
		OriginalTCP: dataplane.OriginalDstTCP,
		Engine:      eng,
		Log:         log,
	}
	if sandboxDir != "" {
		cfg.Tapper, cfg.Sandboxes, cfg.SandboxChanges, cfg.NetnsDir = p.dp, p.driver.TapSandboxes, p.driver.SandboxChanges(), sandboxDir
	}
	s, err := names.Start(cfg)
	if err != nil {
		log.WithError(err).Warn("names resolver not started: containers resolve only names on their own host")
		return nil
	}
	return s
}

// reconcileOnce re-applies the driver's state to the kernel.
func (p *process) reconcileOnce() {
	if err := p.driver.Reconcile(); err != nil {
		p.log.WithError(err).Warn("reconcile left errors")
	}
}

// runEvery calls fn every period, on a goroutine wg tracks, until ctx ends.
func runEvery(ctx context.Context, wg *sync.WaitGroup, period time.Duration, fn func()) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				fn()
			}
		}
	}()
}

// newCluster prepares this host's gossip membership. Gossip and the VTEP use
// the underlay address (ADVERTISE); without PEERS the host is a cluster of
// one, and an unresolvable underlay then only disables gossip.
func (p *process) newCluster() (*gossip.Cluster, error) {
	cfg := gossipConfig(p.settings, p.node, p.db, p.log.WithField("component", "gossip"))
	cfg.Meta.TunnelKey, cfg.Meta.TunnelPort = gossip.TunnelKey(publicKey(p.tunnelKey)), TunnelPort
	u, err := p.resolveUnderlay()
	switch {
	case err == nil:
		cfg.AdvertiseAddr = u.Addr
		cfg.BindAddr = u.Addr.String()
	case len(p.settings.Peers) > 0:
		return nil, fmt.Errorf("PEERS is set but the address to gossip on is unknown: %w", err)
	default:
		p.log.WithError(err).Warn("no underlay address; gossip listens on all addresses of this host")
		cfg.AdvertiseAddr = netip.MustParseAddr("127.0.0.1")
		cfg.BindAddr = "127.0.0.1"
	}
	c, err := gossip.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("configuring gossip: %w", err)
	}
	return c, nil
}

// resolveUnderlay resolves ADVERTISE once it works and caches the answer.
func (p *process) resolveUnderlay() (dataplane.Underlay, error) {
	p.underlayOnce.Lock()
	defer p.underlayOnce.Unlock()
	if p.underlay != nil {
		return *p.underlay, nil
	}
	u, err := p.dp.ResolveUnderlay(p.settings.Advertise)
	if err != nil {
		return dataplane.Underlay{}, fmt.Errorf("resolving ADVERTISE=%q: %w", p.settings.Advertise, err)
	}
	p.underlay = &u
	p.log.WithFields(logrus.Fields{"address": u.Addr, "link": u.Link, "mtu": u.MTU}).Info("underlay resolved")
	return u, nil
}

// routeConflict names a host route, not made by grapevine, that overlaps pfx.
func (p *process) routeConflict(pfx netip.Prefix) (string, error) {
	routes, err := p.dp.Routes()
	if err != nil {
		return "", err
	}
	for _, r := range routes {
		if !r.Ours && r.Dst.Overlaps(pfx) {
			return fmt.Sprintf("%s dev %s", r.Dst, r.Dev), nil
		}
	}
	return "", nil
}

func (p *process) close() {
	if p.cancel != nil {
		p.cancel()
	}
	p.wg.Wait()
	if p.names != nil {
		p.names.Close()
	}
	if p.ct != nil {
		p.ct.Close()
	}
	p.driver.Close()
	p.ipam.Close()
	if err := p.cluster.Shutdown(); err != nil {
		p.log.WithError(err).Warn("leaving the cluster")
	}
	p.dp.Close()
	if err := p.db.Close(); err != nil {
		p.log.WithError(err).Warn("closing state")
	}
}

// ipamAdapter exposes the IPAM driver's capabilities under the server's
// name, and refuses allocations while another live host uses this host's
// identity.
type ipamAdapter struct {
	*gvipam.Driver
	clone *cloneGuard
}

func (a ipamAdapter) Capabilities() (any, error) { return a.GetCapabilities() }

func (a ipamAdapter) RequestPool(r *ipam.RequestPoolRequest) (*ipam.RequestPoolResponse, error) {
	if err := a.clone.conflictError(); err != nil {
		return nil, err
	}
	return a.Driver.RequestPool(r)
}

func (a ipamAdapter) RequestAddress(r *ipam.RequestAddressRequest) (*ipam.RequestAddressResponse, error) {
	if err := a.clone.conflictError(); err != nil {
		return nil, err
	}
	return a.Driver.RequestAddress(r)
}
