package plugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/docker/go-plugins-helpers/network"
	"github.com/docker/go-plugins-helpers/sdk"
	"github.com/sirupsen/logrus"

	gvipam "grapevine/ipam"
)

// manifest answers /Plugin.Activate for legacy (unmanaged) installs; managed
// plugins take their types from config.json and are never activated.
const manifest = `{"Implements": ["NetworkDriver", "IpamDriver"]}`

// StatusPath is the route `grapevine status` asks on the plugin socket.
const StatusPath = "/Grapevine.Status"

// ForgetPath is the route `grapevine forget` asks on the plugin socket.
const ForgetPath = "/Grapevine.Forget"

// ForgetRequest names the hosts `grapevine forget` removes.
type ForgetRequest struct {
	Hosts []string
}

// RotateKeyPath is the route `grapevine rotate-key` asks on the plugin
// socket.
const RotateKeyPath = "/Grapevine.RotateKey"

// maxBody bounds a request body; Docker's largest requests are a few KiB.
const maxBody = 1 << 20

// defaultReadyWait is how long a request waits for start-up (state load,
// first reconcile) before it is answered with an error. Docker retries calls
// to a plugin that is still starting.
const defaultReadyWait = 20 * time.Second

// NetworkAPI is what the server needs from the network driver.
type NetworkAPI interface {
	GetCapabilities() (*network.CapabilitiesResponse, error)
	CreateNetwork(*network.CreateNetworkRequest) error
	AllocateNetwork(*network.AllocateNetworkRequest) (*network.AllocateNetworkResponse, error)
	DeleteNetwork(*network.DeleteNetworkRequest) error
	FreeNetwork(*network.FreeNetworkRequest) error
	CreateEndpoint(*network.CreateEndpointRequest) (*network.CreateEndpointResponse, error)
	DeleteEndpoint(*network.DeleteEndpointRequest) error
	EndpointInfo(*network.InfoRequest) (map[string]any, error)
	Join(*network.JoinRequest) (*network.JoinResponse, error)
	Leave(*network.LeaveRequest) error
	DiscoverNew(*network.DiscoveryNotification) error
	DiscoverDelete(*network.DiscoveryNotification) error
	ProgramExternalConnectivity(*network.ProgramExternalConnectivityRequest) error
	RevokeExternalConnectivity(*network.RevokeExternalConnectivityRequest) error
}

// IPAMAPI is what the server needs from the IPAM driver. Capabilities are
// returned as any so the IPAM package may add fields the helper lacks
// (RequiresRequestReplay).
type IPAMAPI interface {
	Capabilities() (any, error)
	GetDefaultAddressSpaces() (*ipam.AddressSpacesResponse, error)
	RequestPool(*ipam.RequestPoolRequest) (*ipam.RequestPoolResponse, error)
	ReleasePool(*ipam.ReleasePoolRequest) error
	RequestAddress(*ipam.RequestAddressRequest) (*ipam.RequestAddressResponse, error)
	ReleaseAddress(*ipam.ReleaseAddressRequest) error
	// Forget removes hosts gone for good from the cluster's known hosts.
	Forget(hosts []string) (gvipam.ForgetResult, error)
}

// backend is what a request is served by once the plugin is ready: the two
// drivers and the status reporter, or the reason the plugin cannot serve.
type backend struct {
	net    NetworkAPI
	ipam   IPAMAPI
	status func() any
	// rotateKey replaces the host's WireGuard key (nil: not started).
	rotateKey func() (any, error)
	// err is set when start-up failed (e.g. a bad setting): net and ipam are
	// then nil, and every call but the status answers err.
	err error
}

// Server serves both protocols on one socket. It answers as soon as it
// listens; requests wait until SetBackend is called.
type Server struct {
	handler  sdk.Handler
	ready    chan struct{}
	wait     time.Duration // how long a request waits for SetBackend
	be       backend
	inflight sync.WaitGroup
	log      *logrus.Entry
	// rotateKey, when set before SetBackend, answers RotateKeyPath.
	rotateKey func() (any, error)
	// observe, when set before Serve, is told every call's method,
	// duration and error (metrics).
	observe func(method string, took time.Duration, err error)
	methods []string // every route, set by routes
	// doctor answers DoctorPath; set by SetDoctor before SetBackend (nil:
	// the plugin could not start, so there is nothing to examine).
	doctor func(DoctorRequest) Report
}

// SetDoctor makes the server answer `grapevine doctor` with fn; call it
// before SetBackend.
func (s *Server) SetDoctor(fn func(DoctorRequest) Report) { s.doctor = fn }

// NewServer registers every NetworkDriver and IpamDriver route.
func NewServer(log *logrus.Entry) *Server {
	s := &Server{handler: sdk.NewHandler(manifest), ready: make(chan struct{}), wait: defaultReadyWait, log: log}
	s.routes()
	return s
}

// SetBackend makes the server answer requests; call it exactly once.
func (s *Server) SetBackend(n NetworkAPI, i IPAMAPI, status func() any, err error) {
	s.be = backend{net: n, ipam: i, status: status, err: err, rotateKey: s.rotateKey}
	close(s.ready)
}

// Serve answers requests on ln until ln is closed.
func (s *Server) Serve(ln net.Listener) error { return s.handler.Serve(ln) }

// Drain waits up to timeout for requests already being answered.
func (s *Server) Drain(timeout time.Duration) bool {
	done := make(chan struct{})
	go func() { s.inflight.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// Methods lists the calls the server answers (route names without the
// slash), for metrics.
func (s *Server) Methods() []string { return slices.Clone(s.methods) }

// empty is the JSON body of a successful call that returns nothing.
type empty struct{}

func (s *Server) routes() {
	// NetworkDriver.*
	route(s, "/NetworkDriver.GetCapabilities", noBody, func(_ *struct{}) (any, error) { return s.be.net.GetCapabilities() })
	route(s, "/NetworkDriver.CreateNetwork", withBody, func(r *network.CreateNetworkRequest) (any, error) { return empty{}, s.be.net.CreateNetwork(r) })
	route(s, "/NetworkDriver.AllocateNetwork", withBody, func(r *network.AllocateNetworkRequest) (any, error) { return s.be.net.AllocateNetwork(r) })
	route(s, "/NetworkDriver.DeleteNetwork", withBody, func(r *network.DeleteNetworkRequest) (any, error) { return empty{}, s.be.net.DeleteNetwork(r) })
	route(s, "/NetworkDriver.FreeNetwork", withBody, func(r *network.FreeNetworkRequest) (any, error) { return empty{}, s.be.net.FreeNetwork(r) })
	route(s, "/NetworkDriver.CreateEndpoint", withBody, func(r *network.CreateEndpointRequest) (any, error) { return s.be.net.CreateEndpoint(r) })
	route(s, "/NetworkDriver.DeleteEndpoint", withBody, func(r *network.DeleteEndpointRequest) (any, error) { return empty{}, s.be.net.DeleteEndpoint(r) })
	route(s, "/NetworkDriver.EndpointOperInfo", withBody, func(r *network.InfoRequest) (any, error) {
		v, err := s.be.net.EndpointInfo(r)
		return map[string]any{"Value": v}, err
	})
	route(s, "/NetworkDriver.Join", withBody, func(r *network.JoinRequest) (any, error) { return s.be.net.Join(r) })
	route(s, "/NetworkDriver.Leave", withBody, func(r *network.LeaveRequest) (any, error) { return empty{}, s.be.net.Leave(r) })
	route(s, "/NetworkDriver.DiscoverNew", withBody, func(r *network.DiscoveryNotification) (any, error) { return empty{}, s.be.net.DiscoverNew(r) })
	route(s, "/NetworkDriver.DiscoverDelete", withBody, func(r *network.DiscoveryNotification) (any, error) { return empty{}, s.be.net.DiscoverDelete(r) })
	route(s, "/NetworkDriver.ProgramExternalConnectivity", withBody, func(r *network.ProgramExternalConnectivityRequest) (any, error) {
		return empty{}, s.be.net.ProgramExternalConnectivity(r)
	})
	route(s, "/NetworkDriver.RevokeExternalConnectivity", withBody, func(r *network.RevokeExternalConnectivityRequest) (any, error) {
		return empty{}, s.be.net.RevokeExternalConnectivity(r)
	})

	// IpamDriver.* — GetCapabilities and GetDefaultAddressSpaces arrive with an empty body.
	route(s, "/IpamDriver.GetCapabilities", noBody, func(_ *struct{}) (any, error) { return s.be.ipam.Capabilities() })
	route(s, "/IpamDriver.GetDefaultAddressSpaces", noBody, func(_ *struct{}) (any, error) { return s.be.ipam.GetDefaultAddressSpaces() })
	route(s, "/IpamDriver.RequestPool", withBody, func(r *ipam.RequestPoolRequest) (any, error) { return s.be.ipam.RequestPool(r) })
	route(s, "/IpamDriver.ReleasePool", withBody, func(r *ipam.ReleasePoolRequest) (any, error) { return empty{}, s.be.ipam.ReleasePool(r) })
	route(s, "/IpamDriver.RequestAddress", withBody, func(r *ipam.RequestAddressRequest) (any, error) { return s.be.ipam.RequestAddress(r) })
	route(s, "/IpamDriver.ReleaseAddress", withBody, func(r *ipam.ReleaseAddressRequest) (any, error) { return empty{}, s.be.ipam.ReleaseAddress(r) })

	// grapevine's own: the operator's view of this host.
	route(s, StatusPath, noBody, func(_ *struct{}) (any, error) { return s.be.status(), nil })
	route(s, ForgetPath, withBody, func(r *ForgetRequest) (any, error) { return s.be.ipam.Forget(r.Hosts) })
	route(s, RotateKeyPath, noBody, func(_ *struct{}) (any, error) {
		if s.be.rotateKey == nil {
			return nil, errors.New("key rotation is not available: the plugin did not start")
		}
		return s.be.rotateKey()
	})
	route(s, DoctorPath, withBody, func(r *DoctorRequest) (any, error) {
		if s.doctor == nil {
			return nil, errors.New("the plugin did not start, so there is nothing to examine: `grapevine status` says why")
		}
		return s.doctor(*r), nil
	})
}

type bodyMode bool

const (
	noBody   bodyMode = false
	withBody bodyMode = true
)

// errorBody carries an error in both spellings: NetworkDriver responses are read
// from Err, IPAM responses from Error. It goes with a non-200 status, which both
// protocols treat as failure.
type errorBody struct {
	Err   string
	Error string
}

// route registers one path. The request is decoded into Req (unless the call
// has no body), fn answers it, and panics become errors instead of crashes.
func route[Req any](s *Server, path string, mode bodyMode, fn func(*Req) (any, error)) {
	s.methods = append(s.methods, path[1:])
	s.handler.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		s.inflight.Add(1)
		defer s.inflight.Done()
		log := s.log.WithField("call", path[1:])
		start := time.Now()
		var (
			res any
			err error
		)
		defer func() {
			if p := recover(); p != nil {
				log.WithField("stack", string(debug.Stack())).Errorf("panic: %v", p)
				err = fmt.Errorf("internal error in grapevine while handling %s: %v (see the plugin log)", path[1:], p)
			}
			if s.observe != nil {
				s.observe(path[1:], time.Since(start), err)
			}
			if err != nil {
				log.WithError(err).WithField("took", time.Since(start)).Info("refused")
				sdk.EncodeResponse(w, errorBody{Err: err.Error(), Error: err.Error()}, true)
				return
			}
			log.WithField("took", time.Since(start)).Debug("ok")
			sdk.EncodeResponse(w, res, false)
		}()

		log.Debug("call") // on arrival, before any wait for start-up
		select {
		case <-s.ready:
		case <-time.After(s.wait):
			err = errors.New("grapevine is still starting; try again in a few seconds")
			return
		}
		if s.be.err != nil && path != StatusPath {
			// no drivers: every call, capabilities included, answers why
			err = s.be.err
			return
		}
		req := new(Req)
		if mode == withBody {
			if err = decode(r, req); err != nil {
				err = fmt.Errorf("%s: %w", path[1:], err)
				return
			}
		}
		if log.Logger.IsLevelEnabled(logrus.DebugLevel) {
			log.WithField("request", fmt.Sprintf("%+v", req)).Debug("request")
		}
		res, err = fn(req)
	})
}

// decode reads a JSON request body strictly enough to give a clear error.
func decode(r *http.Request, into any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return fmt.Errorf("reading request body: %w", err)
	}
	if len(body) > maxBody {
		return fmt.Errorf("request body is larger than %d bytes", maxBody)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return errors.New("empty request body: a JSON object is required")
	}
	if err := json.Unmarshal(body, into); err != nil {
		return fmt.Errorf("request body is not valid JSON for this call: %w", err)
	}
	return nil
}
