package names_test

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"grapevine/driver/dataplane"
	"grapevine/gossip/gossiptest"
	"grapevine/names"
)

// fakeTaps records the taps the service opens and closes; fails[path] is
// how many opens of path fail before one succeeds.
type fakeTaps struct {
	mu     sync.Mutex
	open   map[string]dataplane.TapAnswer
	opens  map[string]int
	closed []string
	fails  map[string]int
	events []string // "set a,b" and "close PATH", in order
}

func (f *fakeTaps) SetNamesTapped(addrs []netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ss []string
	for _, a := range addrs {
		ss = append(ss, a.String())
	}
	f.events = append(f.events, "set "+strings.Join(ss, ","))
	return nil
}

func (f *fakeTaps) lastSet() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ev := range slices.Backward(f.events) {
		if strings.HasPrefix(ev, "set ") {
			return ev
		}
	}
	return ""
}

func (f *fakeTaps) OpenTap(path string, a dataplane.TapAnswer) (io.Closer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.opens[path]++
	if f.fails[path] > 0 {
		f.fails[path]--
		return nil, errors.New("no such file or directory")
	}
	f.open[path] = a
	return closer(func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		delete(f.open, path)
		f.closed = append(f.closed, path)
		f.events = append(f.events, "close "+path)
		return nil
	}), nil
}

type closer func() error

func (c closer) Close() error { return c() }

func (f *fakeTaps) answer(path string) dataplane.TapAnswer {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.open[path]
}

func (f *fakeTaps) paths() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for p := range f.open {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// tapQuery asks answer for name and returns the parsed reply (nil: passed on).
func tapQuery(t *testing.T, answer dataplane.TapAnswer, name string, qtype uint16, edns bool) *dns.Msg {
	t.Helper()
	q := new(dns.Msg).SetQuestion(name, qtype)
	if edns {
		q.SetEdns0(4096, false)
	}
	b, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	out := answer(b)
	if out == nil {
		return nil
	}
	var m dns.Msg
	if err := m.Unpack(out); err != nil {
		t.Fatalf("tap answer for %s does not parse: %v", name, err)
	}
	return &m
}

// TestTaps: one tap per joined sandbox, opened under the netns directory by
// the key's base name only, retried quickly while the namespace is not yet
// bound, closed when its sandbox leaves and when the service stops; its
// answers follow the sandbox's networks, truncated to the client's limit.
func TestTaps(t *testing.T) {
	n := gossiptest.NewNet()
	obs := node(t, n, "a")
	b := node(t, n, "b")
	gossiptest.Eventually(t, 10*time.Second, "2 members", func() bool { return len(obs.Members()) == 2 })
	publish(t, b, "198.19.7.5", "db")
	for i := range 40 {
		publishSubnet(t, b, "198.19.7.0/24", fmt.Sprintf("198.19.7.%d", 100+i), "many")
	}

	const dir = "/plugin/netns"
	good, late, hostile := "/docker/exec/netns/0123456789ab", "/docker/exec/netns/ba9876543210", "/docker/exec/netns/../../../etc"
	var mu sync.Mutex
	ep := func(s string) []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix(s)} }
	want := map[string][]netip.Prefix{good: ep("198.19.7.50/24"), late: ep("198.19.7.51/24"), hostile: ep("198.19.7.52/24")}
	kick := make(chan struct{}, 1)
	ft := &fakeTaps{open: map[string]dataplane.TapAnswer{}, opens: map[string]int{}, fails: map[string]int{dir + "/ba9876543210": 3}}
	s, err := names.Start(names.Config{
		Cluster:  obs,
		Networks: func() map[string]netip.Prefix { return nil },
		Redirect: &redirects{},
		Tapper:   ft,
		Sandboxes: func() map[string][]netip.Prefix {
			mu.Lock()
			defer mu.Unlock()
			out := map[string][]netip.Prefix{}
			for k, v := range want {
				out[k] = slices.Clone(v)
			}
			return out
		},
		SandboxChanges: kick,
		NetnsDir:       dir,
		Log:            gossiptest.Log("a"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	wantOpen := []string{dir + "/0123456789ab", dir + "/ba9876543210"}
	gossiptest.Eventually(t, 2*time.Second, "both sandboxes tapped (one after 3 failed opens)", func() bool { return slices.Equal(ft.paths(), wantOpen) })
	ft.mu.Lock()
	for p := range ft.opens {
		if !slices.Contains(wantOpen, p) {
			t.Errorf("a tap was opened at %s (from the key %s): only sandbox ids under %s may be", p, hostile, dir)
		}
	}
	ft.mu.Unlock()
	if s.Tapped() != 2 {
		t.Errorf("Tapped() = %d, want 2", s.Tapped())
	}
	if f := s.TapFailures(); len(f) != 1 || f[0].Sandbox != hostile || !strings.Contains(f[0].Error, "sandbox id") || f[0].Since.IsZero() {
		t.Errorf("TapFailures() = %+v, want only %s, refused as no sandbox id (the quick retries of %s are no failure)", f, hostile, late)
	}
	if got := ft.lastSet(); got != "set 198.19.7.50,198.19.7.51" {
		t.Errorf("tapped addresses %q, want the two open taps' addresses", got)
	}

	answer := ft.answer(dir + "/0123456789ab")
	gossiptest.Eventually(t, 10*time.Second, "db answered by the tap", func() bool {
		m := tapQuery(t, answer, "db.", dns.TypeA, false)
		return m != nil && len(m.Answer) == 1 && m.Answer[0].(*dns.A).A.String() == "198.19.7.5"
	})
	if m := tapQuery(t, answer, "up.example.", dns.TypeA, false); m != nil {
		t.Errorf("an upstream name was answered by the tap: %v", m)
	}
	if m := tapQuery(t, answer, "db.", dns.TypeAAAA, false); m == nil || m.Rcode != dns.RcodeSuccess || len(m.Answer) != 0 {
		t.Errorf("AAAA db: %v, want NOERROR with no data", m)
	}
	gossiptest.Eventually(t, 10*time.Second, "40 holders of many", func() bool {
		m := tapQuery(t, answer, "many.", dns.TypeA, true)
		return m != nil && len(m.Answer) == 40
	})
	if m := tapQuery(t, answer, "many.", dns.TypeA, false); m == nil || !m.Truncated || len(m.Answer) >= 40 {
		t.Errorf("many without EDNS: %v, want a truncated answer (TC) within 512 bytes", m)
	}

	// the sandbox's network changes: the open tap answers for the new one
	mu.Lock()
	want[good] = ep("198.19.8.50/24")
	mu.Unlock()
	kick <- struct{}{}
	gossiptest.Eventually(t, 2*time.Second, "db no longer answered off its network", func() bool {
		return tapQuery(t, answer, "db.", dns.TypeA, false) == nil
	})

	mu.Lock()
	delete(want, good)
	mu.Unlock()
	kick <- struct{}{}
	gossiptest.Eventually(t, time.Second, "the left sandbox untapped", func() bool { return slices.Equal(ft.paths(), wantOpen[1:]) })
	ft.mu.Lock()
	if i := slices.Index(ft.events, "close "+wantOpen[0]); i < 1 || ft.events[i-1] != "set 198.19.7.51" {
		t.Errorf("events %q: the left sandbox's address must leave the tapped set before its tap closes", ft.events)
	}
	ft.mu.Unlock()
	s.Close()
	if p := ft.paths(); len(p) != 0 {
		t.Errorf("taps left open after Close: %v", p)
	}
}
