package driver

// SyncFirewall rewrites the firewall from the persisted networks and
// endpoints alone, without the link repairs of Reconcile: the prompt answer
// to a change on the host that moves Docker's side of the rules, such as a
// network Docker created (a new bridge to isolate from, and Docker's
// FORWARD jumps re-inserted above grapevine's). Reconcile does the same
// periodically.
func (d *Driver) SyncFirewall() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.syncFirewall()
}
