package names

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"grapevine/driver/dataplane"
)

// Tapper opens the names tap of a container's network namespace
// (dataplane.Kernel.OpenTap).
type Tapper interface {
	OpenTap(nsPath string, answer dataplane.TapAnswer) (io.Closer, error)
}

// Sandboxes lists the namespaces to tap: each joined sandbox's key as Docker
// gave it at Join, with the subnets of its networks whose names grapevine
// answers (driver.TapSandboxes).
type Sandboxes func() map[string][]netip.Prefix

// tapRetry is how long a sandbox whose tap could not be opened waits before
// the next try; tapPeriod is the period of the comparison of the wanted taps
// with the open ones (the driver's change signal makes it at once).
const (
	tapRetry  = 30 * time.Second
	tapPeriod = 2 * time.Second
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

// openTap is one sandbox's tap and the subnets it answers for.
type openTap struct {
	closer io.Closer
	nets   atomic.Pointer[[]netip.Prefix]
}

// taps keeps one tap per joined sandbox. Only tapLoop touches it.
type taps struct {
	open   map[string]*openTap
	failed map[string]time.Time // key → next try
	count  atomic.Int64         // open taps, for status
}

// tapLoop keeps the taps in line with the driver's joined sandboxes: at a
// change the driver signals and every tapPeriod.
func (s *Service) tapLoop(ctx context.Context) {
	defer s.wg.Done()
	t := time.NewTicker(tapPeriod)
	defer t.Stop()
	for {
		s.syncTaps()
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
// the others and opens the new ones.
func (s *Service) syncTaps() {
	want := s.cfg.Sandboxes()
	for key, ot := range s.taps.open {
		if _, ok := want[key]; !ok {
			s.closeTap(key, ot)
		}
	}
	for key := range s.taps.failed {
		if _, ok := want[key]; !ok {
			delete(s.taps.failed, key)
		}
	}
	now := time.Now()
	for key, nets := range want {
		slices.SortFunc(nets, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
		if ot, ok := s.taps.open[key]; ok {
			ot.nets.Store(&nets)
			continue
		}
		if next, ok := s.taps.failed[key]; ok && now.Before(next) {
			continue
		}
		s.openTap(key, nets)
	}
	s.taps.count.Store(int64(len(s.taps.open)))
}

func (s *Service) openTap(key string, nets []netip.Prefix) {
	log := s.log.WithField("sandbox", key)
	path, err := SandboxPath(s.cfg.NetnsDir, key)
	if err != nil {
		log.WithError(err).Warn("sandbox not tapped: its names queries reach grapevine through the host's redirect only")
		s.taps.failed[key] = time.Now().Add(24 * time.Hour)
		return
	}
	ot := &openTap{}
	ot.nets.Store(&nets)
	c, err := s.cfg.Tapper.OpenTap(path, func(q []byte) []byte { return s.answerIn(q, *ot.nets.Load(), true) })
	if err != nil {
		log.WithError(err).Warn("sandbox not tapped (retried in 30 s): its names queries reach grapevine through the host's redirect only; is Docker's exec root mounted (docker-exec-root, docs/names.md)?")
		s.taps.failed[key] = time.Now().Add(tapRetry)
		return
	}
	delete(s.taps.failed, key)
	ot.closer = c
	s.taps.open[key] = ot
	log.WithField("subnets", nets).Debug("sandbox tapped")
}

func (s *Service) closeTap(key string, ot *openTap) {
	if err := ot.closer.Close(); err != nil {
		s.log.WithError(err).WithField("sandbox", key).Debug("closing a tap")
	}
	delete(s.taps.open, key)
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
