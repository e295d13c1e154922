package names

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"grapevine/driver/dataplane"
)

// Tapper opens the names tap of a container's network namespace, and
// names the tapped containers' addresses, whose UDP queries then skip the
// host's redirect (dataplane.Kernel).
type Tapper interface {
	OpenTap(nsPath string, answer dataplane.TapAnswer) (io.Closer, error)
	SetNamesTapped(addrs []netip.Addr) error
}

// Sandboxes lists the namespaces to tap: each joined sandbox's key as Docker
// gave it at Join, with its endpoints' addresses (address/subnet length) on
// the networks whose names grapevine answers (driver.TapSandboxes).
type Sandboxes func() map[string][]netip.Prefix

// A sandbox whose tap could not be opened is tried again after
// tapFirstRetry, doubling up to tapMaxRetry: Docker gives the sandbox key
// at Join, but the namespace is bound there only when the container's
// process starts, tens of ms later. tapPeriod is the period of the
// comparison of the wanted taps with the open ones (the driver's change
// signal makes it at once).
const (
	tapFirstRetry = 25 * time.Millisecond
	tapMaxRetry   = 30 * time.Second
	tapPeriod     = 2 * time.Second
)

// sandboxName is what a namespace file under Docker's netns directory may
// be called (Docker names it after the sandbox id's first 12 hex digits).
var sandboxName = regexp.MustCompile(`^[0-9a-f]{12,64}$`)

// SandboxPath maps a sandbox key Docker gave at Join to the path of its
// namespace as the plugin sees it (netnsDir: Docker's exec root's netns
// directory inside the plugin). Only the key's base name is used, and only
// when it is a sandbox id: a key is input from the Docker socket.
func SandboxPath(netnsDir, key string) (string, error) {
	base := filepath.Base(key)
	if !filepath.IsAbs(key) || !sandboxName.MatchString(base) {
		return "", fmt.Errorf("sandbox key %q: want an absolute path ending in a sandbox id (12 to 64 lower-case hex digits)", key)
	}
	return filepath.Join(netnsDir, base), nil
}

// openTap is one sandbox's tap, the subnets it answers for and the
// sandbox's addresses on them.
type openTap struct {
	closer io.Closer
	nets   atomic.Pointer[[]netip.Prefix]
	addrs  []netip.Addr
}

// setEndpoints stores the subnets and addresses of eps (address/length).
func (ot *openTap) setEndpoints(eps []netip.Prefix) {
	nets := make([]netip.Prefix, 0, len(eps))
	ot.addrs = ot.addrs[:0]
	for _, p := range eps {
		nets = append(nets, p.Masked())
		ot.addrs = append(ot.addrs, p.Addr())
	}
	slices.SortFunc(nets, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	ot.nets.Store(&nets)
}

// retry is when a sandbox's tap is tried again and the wait after that,
// since when it fails and why it failed last.
type retry struct {
	next  time.Time
	wait  time.Duration
	since time.Time
	err   error
}

// TapFailure is a sandbox whose tap has failed for a while (its retries
// are a second or more apart): the container's queries for other hosts'
// names reach grapevine only through the host's redirect.
type TapFailure struct {
	Sandbox string    // the sandbox key Docker gave at Join
	Since   time.Time // the first failed open
	Error   string    // the last open's error
}

// tapFailureShown is the retry wait from which a failing tap is reported:
// the first tries fail while Docker binds the namespace.
const tapFailureShown = time.Second

// taps keeps one tap per joined sandbox. Only tapLoop touches it.
type taps struct {
	open   map[string]*openTap
	failed map[string]retry
	count  atomic.Int64 // open taps, for status
	// failures is the failed sandboxes as of the last sync, for the doctor.
	failures atomic.Pointer[[]TapFailure]
	// bypass is the address set last given to SetNamesTapped.
	bypass []netip.Addr
}

// tapLoop keeps the taps in line with the driver's joined sandboxes: at a
// change the driver signals and every tapPeriod.
func (s *Service) tapLoop(ctx context.Context) {
	defer s.loops.Done()
	t := time.NewTimer(tapPeriod)
	defer t.Stop()
	for {
		t.Reset(s.syncTaps())
		select {
		case <-ctx.Done():
			s.closeTaps()
			return
		case <-s.cfg.SandboxChanges:
		case <-t.C:
		}
	}
}

// syncTaps closes the taps of sandboxes that left, updates the subnets of
// the others and opens the new ones; it returns how long until the next
// sync is due (a retry or the period).
func (s *Service) syncTaps() time.Duration {
	want := s.cfg.Sandboxes()
	leaving := map[string]*openTap{}
	for key, ot := range s.taps.open {
		if _, ok := want[key]; !ok {
			leaving[key] = ot
			delete(s.taps.open, key)
		}
	}
	if len(leaving) > 0 {
		s.setBypass() // their addresses take the redirect again before their taps go
		for key, ot := range leaving {
			s.closeTap(key, ot)
		}
	}
	for key := range s.taps.failed {
		if _, ok := want[key]; !ok {
			delete(s.taps.failed, key)
		}
	}
	now := time.Now()
	for key, eps := range want {
		if ot, ok := s.taps.open[key]; ok {
			ot.setEndpoints(eps)
			continue
		}
		if r, ok := s.taps.failed[key]; ok && now.Before(r.next) {
			continue
		}
		s.openTap(key, eps)
	}
	s.setBypass()
	s.taps.count.Store(int64(len(s.taps.open)))
	s.noteFailures()
	due := tapPeriod
	for _, r := range s.taps.failed {
		due = min(due, max(time.Until(r.next), time.Millisecond))
	}
	return due
}

// noteFailed schedules the next try of key's tap after err.
func (s *Service) noteFailed(key string, err error) retry {
	now := time.Now()
	r, ok := s.taps.failed[key]
	switch {
	case !ok:
		r.wait, r.since = tapFirstRetry, now
	case r.wait < tapMaxRetry:
		r.wait = min(2*r.wait, tapMaxRetry)
	}
	r.next, r.err = now.Add(r.wait), err
	s.taps.failed[key] = r
	return r
}

// noteFailures publishes the sandboxes whose taps have failed for a while.
func (s *Service) noteFailures() {
	out := []TapFailure{}
	for key, r := range s.taps.failed {
		if r.wait >= tapFailureShown {
			out = append(out, TapFailure{Sandbox: key, Since: r.since, Error: r.err.Error()})
		}
	}
	slices.SortFunc(out, func(a, b TapFailure) int { return strings.Compare(a.Sandbox, b.Sandbox) })
	s.taps.failures.Store(&out)
}

// TapFailures lists the sandboxes whose taps have failed for a while, as
// of the last comparison of the wanted taps with the open ones.
func (s *Service) TapFailures() []TapFailure {
	if f := s.taps.failures.Load(); f != nil {
		return slices.Clone(*f)
	}
	return nil
}

// setBypass gives the open taps' addresses to SetNamesTapped when they
// changed.
func (s *Service) setBypass() {
	var addrs []netip.Addr
	for _, ot := range s.taps.open {
		addrs = append(addrs, ot.addrs...)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	addrs = slices.Compact(addrs)
	if slices.Equal(addrs, s.taps.bypass) && s.taps.bypass != nil {
		return
	}
	if err := s.cfg.Tapper.SetNamesTapped(addrs); err != nil {
		s.log.WithError(err).Warn("tapped containers' addresses not set: their upstream queries pass through grapevine's relay")
		s.taps.bypass = nil
		return
	}
	if addrs == nil {
		addrs = []netip.Addr{}
	}
	s.taps.bypass = addrs
}

func (s *Service) openTap(key string, eps []netip.Prefix) {
	log := s.log.WithField("sandbox", key)
	path, err := SandboxPath(s.cfg.NetnsDir, key)
	if err != nil {
		log.WithError(err).Warn("sandbox not tapped: its names queries reach grapevine through the host's redirect only")
		s.taps.failed[key] = retry{next: time.Now().Add(24 * time.Hour), wait: tapMaxRetry, since: time.Now(), err: err}
		return
	}
	ot := &openTap{}
	ot.setEndpoints(eps)
	c, err := s.cfg.Tapper.OpenTap(path, func(q []byte) []byte { return s.answerIn(q, *ot.nets.Load(), true) })
	if err != nil {
		// the first tries fail while the container's start binds the namespace
		if r := s.noteFailed(key, err); r.wait >= tapFailureShown {
			log.WithError(err).WithField("retry_in", r.wait).Warn("sandbox not tapped: its names queries reach grapevine through the host's redirect only; is Docker's exec root mounted and shared (docker-exec-root, docs/names.md)?")
		}
		return
	}
	delete(s.taps.failed, key)
	ot.closer = c
	s.taps.open[key] = ot
	log.WithField("endpoints", eps).Debug("sandbox tapped")
}

// closeTap closes the tap of a sandbox already removed from the open ones.
func (s *Service) closeTap(key string, ot *openTap) {
	if err := ot.closer.Close(); err != nil {
		s.log.WithError(err).WithField("sandbox", key).Debug("closing a tap")
	}
}

// closeTaps closes every tap (the plugin stops), four at a time: their
// rules go, so queries reach Docker's resolver directly again.
func (s *Service) closeTaps() {
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for key, ot := range s.taps.open {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := ot.closer.Close(); err != nil {
				s.log.WithError(err).WithField("sandbox", key).Debug("closing a tap")
			}
		}()
	}
	wg.Wait()
	clear(s.taps.open)
	s.taps.count.Store(0)
}

// Tapped is the number of containers' namespaces tapped now.
func (s *Service) Tapped() int { return int(s.taps.count.Load()) }
