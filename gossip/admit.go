package gossip

import "fmt"

// admit runs the checks a received record must pass before the store sees
// it: the generic ones of checkRecord, then, when the record is newer than
// the local copy (so would be stored and relayed), the validators the
// record kind's consumer registered.
func (c *Cluster) admit(r *Record) (RefusalCause, error) {
	if cause, err := checkRecord(r); err != nil {
		return cause, err
	}
	if !c.store.wouldApply(r) {
		return "", nil // stale: not stored, not relayed
	}
	return c.validators.check(r)
}

// RegisterValidator adds fn to the checks every record of kind received
// from a peer must pass before it is stored, relayed or handed to
// subscribers; a record that any of the kind's validators refuses (non-nil
// error) is dropped, logged once per peer and cause, and counted in
// RefusalStats. Validators see tombstones too (r.Deleted): only a kind
// whose consumer lets other hosts delete records needs to accept a
// tombstone from a writer other than the record's owner.
//
// Before any validator runs, gossip itself refuses records with an empty
// or oversized kind, key or owner, an owner that is not a node name, a
// size over MaxRecordBytes, a version beyond the local clock plus
// MaxClockAhead, records past the writer's caps
// (Config.MaxRecordsPerWriter, MaxBytesPerWriter) and, on a node with a DB,
// records in its own name that it never wrote. OwnerKeyed, OwnerSuffix,
// OwnerPrefix and OwnerIsKey build the validator of a kind whose keys name
// their writer.
//
// fn runs on memberlist's goroutines, outside any lock of this package:
// it may call Get and List, must be quick and must not block. It is not run
// on this node's own writes. Register validators before Subscribe (and
// before Start): records already stored that fn refuses are dropped when
// it is registered, without telling subscribers.
func (c *Cluster) RegisterValidator(kind string, fn func(r Record) error) {
	c.validators.add(kind, fn)
	for _, r := range c.store.remote(kind) {
		cause, err := c.validators.check(&r)
		if err == nil {
			continue
		}
		if c.store.drop(&r) {
			c.refused.note(&r, cause, fmt.Errorf("stored record: %w", err))
		}
	}
	c.kickFlush()
}

// RefusalStats counts the records refused since New, by writer and cause,
// sorted by writer then cause; a writer name that is not a node name is
// counted as "(invalid)", an undecodable message as "(unknown)". For the
// status endpoint.
func (c *Cluster) RefusalStats() []Refusal { return c.refused.stats() }
