package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/docker/go-plugins-helpers/network"
	"github.com/sirupsen/logrus"

	gvipam "grapevine/ipam"
)

// fakeNet answers every NetworkDriver call; CreateNetwork fails or panics on demand.
type fakeNet struct {
	created []string
	fail    error
	panics  bool
}

func (f *fakeNet) GetCapabilities() (*network.CapabilitiesResponse, error) {
	return &network.CapabilitiesResponse{Scope: "local", ConnectivityScope: "global"}, nil
}
func (f *fakeNet) CreateNetwork(r *network.CreateNetworkRequest) error {
	if f.panics {
		var m map[string]int
		m["boom"] = 1 //nolint:staticcheck // SA5000: the handler bug this test makes on purpose
	}
	if f.fail != nil {
		return f.fail
	}
	f.created = append(f.created, r.NetworkID)
	return nil
}
func (f *fakeNet) AllocateNetwork(*network.AllocateNetworkRequest) (*network.AllocateNetworkResponse, error) {
	return &network.AllocateNetworkResponse{}, nil
}
func (f *fakeNet) DeleteNetwork(*network.DeleteNetworkRequest) error { return nil }
func (f *fakeNet) FreeNetwork(*network.FreeNetworkRequest) error     { return nil }
func (f *fakeNet) CreateEndpoint(*network.CreateEndpointRequest) (*network.CreateEndpointResponse, error) {
	return &network.CreateEndpointResponse{}, nil
}
func (f *fakeNet) DeleteEndpoint(*network.DeleteEndpointRequest) error { return nil }
func (f *fakeNet) EndpointInfo(*network.InfoRequest) (map[string]any, error) {
	return map[string]any{"com.docker.network.portmap": []any{map[string]any{"HostPort": 8080}}}, nil
}
func (f *fakeNet) Join(*network.JoinRequest) (*network.JoinResponse, error) {
	return &network.JoinResponse{Gateway: "198.19.10.1"}, nil
}
func (f *fakeNet) Leave(*network.LeaveRequest) error                   { return nil }
func (f *fakeNet) DiscoverNew(*network.DiscoveryNotification) error    { return nil }
func (f *fakeNet) DiscoverDelete(*network.DiscoveryNotification) error { return nil }
func (f *fakeNet) ProgramExternalConnectivity(*network.ProgramExternalConnectivityRequest) error {
	return nil
}
func (f *fakeNet) RevokeExternalConnectivity(*network.RevokeExternalConnectivityRequest) error {
	return nil
}

type fakeIPAM struct{}

func (fakeIPAM) Forget(hosts []string) (gvipam.ForgetResult, error) {
	return gvipam.ForgetResult{Forgotten: hosts}, nil
}

func (fakeIPAM) Capabilities() (any, error) {
	return map[string]bool{"RequiresMACAddress": false, "RequiresRequestReplay": false}, nil
}
func (fakeIPAM) GetDefaultAddressSpaces() (*ipam.AddressSpacesResponse, error) {
	return &ipam.AddressSpacesResponse{LocalDefaultAddressSpace: "grapevine-local", GlobalDefaultAddressSpace: "grapevine-global"}, nil
}
func (fakeIPAM) RequestPool(r *ipam.RequestPoolRequest) (*ipam.RequestPoolResponse, error) {
	if r.Pool == "" {
		return nil, errors.New("--subnet is required")
	}
	return &ipam.RequestPoolResponse{PoolID: "p", Pool: r.Pool}, nil
}
func (fakeIPAM) ReleasePool(*ipam.ReleasePoolRequest) error { return nil }
func (fakeIPAM) RequestAddress(*ipam.RequestAddressRequest) (*ipam.RequestAddressResponse, error) {
	return &ipam.RequestAddressResponse{Address: "198.19.10.2/24"}, nil
}
func (fakeIPAM) ReleaseAddress(*ipam.ReleaseAddressRequest) error { return nil }

// testServer is a Server listening on loopback.
type testServer struct{ URL string }

func serveTest(t *testing.T, s *Server) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(func() { ln.Close() })
	return &testServer{URL: "http://" + ln.Addr().String()}
}

func newTestServer(t *testing.T, n *fakeNet, beErr error) *testServer {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	s := NewServer(logrus.NewEntry(log))
	s.SetBackend(n, fakeIPAM{}, func() any { return map[string]string{"host": "h1"} }, beErr)
	return serveTest(t, s)
}

func post(t *testing.T, ts *testServer, path, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(ts.URL+path, "application/vnd.docker.plugins.v1.2+json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s: answer is not JSON: %q", path, raw)
	}
	return resp.StatusCode, m
}

func TestEmptyBodyIPAMCalls(t *testing.T) {
	ts := newTestServer(t, &fakeNet{}, nil)
	code, m := post(t, ts, "/IpamDriver.GetCapabilities", "")
	if code != 200 || m["RequiresMACAddress"] != false {
		t.Fatalf("GetCapabilities: %d %v", code, m)
	}
	code, m = post(t, ts, "/IpamDriver.GetDefaultAddressSpaces", "")
	if code != 200 || m["LocalDefaultAddressSpace"] != "grapevine-local" {
		t.Fatalf("GetDefaultAddressSpaces: %d %v", code, m)
	}
	code, m = post(t, ts, "/NetworkDriver.GetCapabilities", "")
	if code != 200 || m["ConnectivityScope"] != "global" {
		t.Fatalf("NetworkDriver.GetCapabilities: %d %v", code, m)
	}
}

func TestErrorsCarryBothSpellings(t *testing.T) {
	ts := newTestServer(t, &fakeNet{fail: errors.New("option foo is unknown")}, nil)
	code, m := post(t, ts, "/NetworkDriver.CreateNetwork", `{"NetworkID":"n1"}`)
	if code == 200 || m["Err"] != "option foo is unknown" {
		t.Fatalf("network error: %d %v", code, m)
	}
	code, m = post(t, ts, "/IpamDriver.RequestPool", `{"AddressSpace":"grapevine-local"}`)
	if code == 200 || m["Error"] != "--subnet is required" {
		t.Fatalf("ipam error: %d %v", code, m)
	}
}

func TestGarbageAndPanicAreErrorsNotCrashes(t *testing.T) {
	n := &fakeNet{}
	ts := newTestServer(t, n, nil)
	for _, body := range []string{"{not json", "", "[1,2]", `{"NetworkID": 5}`} {
		code, m := post(t, ts, "/NetworkDriver.CreateNetwork", body)
		if code == 200 || !strings.Contains(m["Err"].(string), "NetworkDriver.CreateNetwork") {
			t.Errorf("body %q: %d %v", body, code, m)
		}
	}
	n.panics = true
	code, m := post(t, ts, "/NetworkDriver.CreateNetwork", `{"NetworkID":"n2"}`)
	if code == 200 || !strings.Contains(m["Err"].(string), "internal error") {
		t.Fatalf("panic: %d %v", code, m)
	}
	n.panics = false
	if code, _ := post(t, ts, "/NetworkDriver.CreateNetwork", `{"NetworkID":"n3"}`); code != 200 || len(n.created) != 1 {
		t.Fatalf("server did not keep serving after a panic: %d %v", code, n.created)
	}
}

func TestEndpointOperInfoWrapsValue(t *testing.T) {
	ts := newTestServer(t, &fakeNet{}, nil)
	code, m := post(t, ts, "/NetworkDriver.EndpointOperInfo", `{"NetworkID":"n","EndpointID":"e"}`)
	v, ok := m["Value"].(map[string]any)
	if code != 200 || !ok || v["com.docker.network.portmap"] == nil {
		t.Fatalf("EndpointOperInfo: %d %v", code, m)
	}
}

func TestBackendErrorRefusesCallsCapabilitiesToo(t *testing.T) {
	ts := newTestServer(t, &fakeNet{}, errors.New("setting POOL=\"x\" is invalid"))
	if code, m := post(t, ts, "/NetworkDriver.GetCapabilities", ""); code == 200 || !strings.Contains(m["Err"].(string), "POOL") {
		t.Fatalf("capabilities answered despite bad settings: %d %v", code, m)
	}
	code, m := post(t, ts, "/IpamDriver.RequestPool", `{"Pool":"198.19.10.0/24"}`)
	if code == 200 || !strings.Contains(m["Error"].(string), "POOL") {
		t.Fatalf("bad settings not reported: %d %v", code, m)
	}
}

// arrivals signals each request that has reached the handler (its debug
// "call" entry, logged after decoding and before waiting for the backend).
type arrivals chan string

func (arrivals) Levels() []logrus.Level { return []logrus.Level{logrus.DebugLevel} }
func (a arrivals) Fire(e *logrus.Entry) error {
	if e.Message == "call" {
		a <- fmt.Sprint(e.Data["call"])
	}
	return nil
}

// waitingServer is a Server with no backend yet whose handler reports
// every request it receives on the returned channel.
func waitingServer(t *testing.T, wait time.Duration) (*Server, *testServer, arrivals) {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	log.SetLevel(logrus.DebugLevel)
	arrived := make(arrivals, 16)
	log.AddHook(arrived)
	s := NewServer(logrus.NewEntry(log))
	s.wait = wait
	return s, serveTest(t, s), arrived
}

type answer struct {
	code int
	body string
	err  error
}

// postAsync sends one request and delivers its answer on the channel.
func postAsync(ts *testServer, path, body string) <-chan answer {
	out := make(chan answer, 1)
	go func() {
		c := &http.Client{Timeout: 30 * time.Second}
		resp, err := c.Post(ts.URL+path, "application/json", bytes.NewBufferString(body))
		if err != nil {
			out <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		out <- answer{code: resp.StatusCode, body: string(raw), err: err}
	}()
	return out
}

func TestRequestsWaitForBackend(t *testing.T) {
	s, ts, arrived := waitingServer(t, defaultReadyWait)
	done := postAsync(ts, "/IpamDriver.RequestAddress", `{"PoolID":"p"}`)
	select {
	case call := <-arrived:
		if call != "IpamDriver.RequestAddress" {
			t.Fatalf("unexpected call %q", call)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the request never reached the server")
	}
	// The request is in the handler and there is no backend: it must wait.
	select {
	case a := <-done:
		t.Fatalf("request answered before the backend was set: %d %q %v", a.code, a.body, a.err)
	case <-time.After(300 * time.Millisecond):
	}
	s.SetBackend(&fakeNet{}, fakeIPAM{}, func() any { return nil }, nil)
	select {
	case a := <-done:
		if a.err != nil || a.code != 200 || !strings.Contains(a.body, `"Address":"198.19.10.2/24"`) {
			t.Fatalf("request that waited for the backend: %d %q %v", a.code, a.body, a.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("request still unanswered after SetBackend")
	}
}

func TestRequestsTimeOutWithoutBackend(t *testing.T) {
	s, ts, arrived := waitingServer(t, 200*time.Millisecond)
	start := time.Now()
	done := postAsync(ts, "/NetworkDriver.CreateNetwork", `{"NetworkID":"n1"}`)
	<-arrived
	var a answer
	select {
	case a = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("request without a backend still unanswered after 10 s (readyWait is 200 ms)")
	}
	if took := time.Since(start); took < s.wait {
		t.Fatalf("answered after %v, before readyWait %v", took, s.wait)
	}
	var m map[string]string
	if a.err != nil || json.Unmarshal([]byte(a.body), &m) != nil {
		t.Fatalf("answer: %q %v", a.body, a.err)
	}
	const want = "grapevine is still starting; try again in a few seconds"
	if a.code == 200 || m["Err"] != want || m["Error"] != want {
		t.Fatalf("answer %d %v, want an error %q in both spellings", a.code, m, want)
	}
	// A backend set later serves the next request.
	n := &fakeNet{}
	s.SetBackend(n, fakeIPAM{}, func() any { return nil }, nil)
	if code, _ := post(t, ts, "/NetworkDriver.CreateNetwork", `{"NetworkID":"n2"}`); code != 200 || !slices.Equal(n.created, []string{"n2"}) {
		t.Fatalf("after SetBackend: %d %v", code, n.created)
	}
}

// refusingIPAM refuses every forget, as the cluster does for a live host.
type refusingIPAM struct{ fakeIPAM }

func (refusingIPAM) Forget(hosts []string) (gvipam.ForgetResult, error) {
	return gvipam.ForgetResult{}, fmt.Errorf("cannot forget %s: %s is alive: only a host that is gone for good can be forgotten", hosts[0], hosts[0])
}

// TestForgetClient: `grapevine forget` posts the hosts to the plugin and
// prints what it did, or the plugin's refusal as it is.
func TestForgetClient(t *testing.T) {
	log := logrus.New()
	log.SetOutput(io.Discard)
	for _, tc := range []struct {
		be   IPAMAPI
		want string
		err  string
	}{
		{fakeIPAM{}, "forgot h2, h3; took over 0 of their blocks; known hosts now: ", ""},
		{refusingIPAM{}, "", "cannot forget h2: h2 is alive: only a host that is gone for good can be forgotten"},
	} {
		srv := NewServer(logrus.NewEntry(log))
		srv.SetBackend(&fakeNet{}, tc.be, func() any { return nil }, nil)
		sock := filepath.Join(t.TempDir(), "grapevine.sock")
		listenUnix(t, srv, sock)
		got, err := Forget(context.Background(), sock, []string{"h2", "h3"})
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("refused forget: %q, %v; want error %q", got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("forget: %q, %v; want %q", got, err, tc.want)
		}
	}
}
