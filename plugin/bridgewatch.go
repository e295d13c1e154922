package plugin

import "context"

// watchBridges isolates grapevine's networks from a network Docker creates
// at once instead of at the next reconcile: the data plane reports a new
// bridge, the driver rewrites the firewall. Without the watch (netlink
// refused the subscription) the reconcile loop still does it. The watch
// ends with ctx; p.wg tracks it.
func (p *process) watchBridges(ctx context.Context) {
	done, err := p.dp.WatchBridges(ctx, func() {
		if err := p.driver.SyncFirewall(); err != nil {
			p.log.WithError(err).Warn("firewall sync after a new bridge failed; the reconcile loop retries")
		}
	})
	if err != nil {
		p.log.WithError(err).Warn("not watching for new bridges: grapevine's networks are isolated from a new Docker network at the next reconcile")
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		<-done
	}()
}
