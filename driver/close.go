package driver

// Close stops the peer worker (when a Cluster was configured). The Driver
// must not be used afterwards. Safe to call more than once.
func (d *Driver) Close() {
	d.closeOnce.Do(func() {
		if d.stop != nil {
			close(d.stop)
			<-d.done
		}
	})
}
