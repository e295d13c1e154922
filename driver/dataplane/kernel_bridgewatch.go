package dataplane

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// bridgeWatch is the timing of WatchBridges.
type bridgeWatch struct {
	// settle is the quiet time after the last new bridge before a sync: a
	// burst of network creations costs one sync.
	settle time.Duration
	// retry is the time between syncs while a new bridge is not yet in
	// Docker's isolation chains (dockerd writes them after the bridge).
	retry time.Duration
	// giveUp ends the wait for a new bridge in Docker's chains: a bridge that
	// is not Docker's never turns up there.
	giveUp time.Duration
}

// Timing of the watch in the plugin.
const (
	bridgeSettle = 500 * time.Millisecond
	bridgeRetry  = time.Second
	bridgeGiveUp = 15 * time.Second
)

// WatchBridges calls sync soon after a bridge that grapevine did not make
// appears in the network namespace of the calling thread (the Kernel's, as
// for iptables): Docker made a network, and grapevine's isolation rules are
// to name it now rather than at the next reconcile. A burst of new bridges
// is one call; while a new bridge is not yet in Docker's isolation chains,
// sync is called again every second for up to 15 s. sync runs on a thread in
// that namespace, on the watch's goroutine (never two at once). The watch ends
// with ctx; the returned channel is closed once it has. If the subscription
// breaks, the watch subscribes again and syncs once (updates may have been
// lost meanwhile).
func (k *Kernel) WatchBridges(ctx context.Context, sync func()) (<-chan struct{}, error) {
	return k.watchBridges(ctx, bridgeWatch{settle: bridgeSettle, retry: bridgeRetry, giveUp: bridgeGiveUp}, sync)
}

func (k *Kernel) watchBridges(ctx context.Context, w bridgeWatch, sync func()) (<-chan struct{}, error) {
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("watch for new bridges: open the calling thread's network namespace: %w", err)
	}
	sub, err := k.subscribeLinks(ns)
	if err != nil {
		ns.Close()
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer ns.Close()
		k.bridgeLoop(ctx, ns, w, sync, sub)
	}()
	return done, nil
}

// linkSub is one netlink subscription to link updates.
type linkSub struct {
	ch   chan netlink.LinkUpdate
	stop chan struct{}
}

// subscribeLinks subscribes to the link updates of ns; the links that exist
// come first, as dump entries (NLM_F_MULTI).
func (k *Kernel) subscribeLinks(ns netns.NsHandle) (linkSub, error) {
	s := linkSub{ch: make(chan netlink.LinkUpdate, 64), stop: make(chan struct{})}
	err := netlink.LinkSubscribeWithOptions(s.ch, s.stop, netlink.LinkSubscribeOptions{
		Namespace:    &ns,
		ListExisting: true,
		ErrorCallback: func(err error) {
			k.log.WithError(err).Debug("link update subscription")
		},
	})
	if err != nil {
		return linkSub{}, fmt.Errorf("watch for new bridges: subscribe to link updates (netlink): %w", err)
	}
	return s, nil
}

// close ends the subscription: closing stop closes the socket, and the
// receiver closes ch once what it queued has been drained.
func (s linkSub) close() {
	close(s.stop)
	for range s.ch {
	}
}

// bridgeLoop follows the link updates until ctx ends.
func (k *Kernel) bridgeLoop(ctx context.Context, ns netns.NsHandle, w bridgeWatch, sync func(), sub linkSub) {
	seen := map[string]bool{}         // bridges not grapevine's that exist
	pending := map[string]time.Time{} // new ones not yet in Docker's chains → until when
	timer := time.NewTimer(w.settle)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			sub.close()
			return
		case u, ok := <-sub.ch:
			if !ok {
				if sub = k.resubscribe(ctx, ns); sub.ch == nil {
					return
				}
				clear(seen)
				timer.Reset(w.settle)
				continue
			}
			name := u.Attrs().Name
			if u.Header.Type == unix.RTM_DELLINK {
				delete(seen, name)
				delete(pending, name)
				continue
			}
			if newForeignBridge(u, seen) {
				k.log.WithField("link", name).Debug("a bridge appeared: syncing the firewall")
				pending[name] = time.Now().Add(w.giveUp)
				timer.Reset(w.settle)
			}
		case <-timer.C:
			k.syncForBridges(ns, sync, pending)
			if len(pending) > 0 {
				timer.Reset(w.retry)
			}
		}
	}
}

// newForeignBridge records u's link in seen and reports whether it is a
// bridge grapevine did not make that was not there before: not a dump entry
// (a link that existed when the watch began), not a change to a known one.
func newForeignBridge(u netlink.LinkUpdate, seen map[string]bool) bool {
	name := u.Attrs().Name
	if u.Type() != "bridge" || IsManagedName(name) || seen[name] {
		return false
	}
	seen[name] = true
	return u.Header.Flags&unix.NLM_F_MULTI == 0
}

// resubscribe subscribes again after the subscription broke (a full socket
// buffer, say), once a second until it works or ctx ends (zero linkSub).
func (k *Kernel) resubscribe(ctx context.Context, ns netns.NsHandle) linkSub {
	for {
		sub, err := k.subscribeLinks(ns)
		if err == nil {
			k.log.Info("link update subscription broke and was renewed: syncing the firewall once")
			return sub
		}
		k.log.WithError(err).Warn("new bridges wait for the reconcile loop until the subscription works again")
		select {
		case <-ctx.Done():
			return linkSub{}
		case <-time.After(time.Second):
		}
	}
}

// syncForBridges runs sync in ns and drops from pending the bridges that
// have been waited for long enough; one found in Docker's isolation chains
// gets one more sync.
func (k *Kernel) syncForBridges(ns netns.NsHandle, sync func(), pending map[string]time.Time) {
	var docker []string
	err := inNetNS(ns, func() error {
		sync()
		if len(pending) == 0 {
			return nil
		}
		var err error
		docker, err = k.dockersBridges()
		return err
	})
	if err != nil {
		k.log.WithError(err).Warn("after a new bridge: could not read Docker's isolation chains")
	}
	now := time.Now()
	for name, until := range pending {
		switch {
		case now.After(until):
			delete(pending, name)
		case slices.Contains(docker, name):
			// one more sync: dockerd re-inserts its FORWARD jumps after it
			// wrote the isolation rules
			pending[name] = now
		default:
			k.log.WithFields(logrus.Fields{"link": name}).Debug("new bridge not in Docker's isolation chains yet: syncing again")
		}
	}
}

// dockersBridges lists the bridges Docker's isolation chains name now.
func (k *Kernel) dockersBridges() ([]string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	text, err := k.xt.save("filter")
	if err != nil {
		return nil, err
	}
	return dockerBridges(parseSave(text)), nil
}
