package gossip

import (
	"fmt"

	"github.com/hashicorp/memberlist"
	"github.com/sirupsen/logrus"
)

// recordBroadcast is one queued record. It is a NamedBroadcast: queueing a
// newer version of a key replaces the older one still in the queue.
type recordBroadcast struct {
	name string
	msg  []byte
}

func newRecordBroadcast(r *Record) *recordBroadcast {
	return &recordBroadcast{name: r.Kind + "\x00" + r.Key, msg: encodeRecordMsg(r)}
}

// Invalidates implements memberlist.Broadcast.
func (b *recordBroadcast) Invalidates(o memberlist.Broadcast) bool {
	nb, ok := o.(memberlist.NamedBroadcast)
	return ok && nb.Name() == b.name
}

// Name implements memberlist.NamedBroadcast.
func (b *recordBroadcast) Name() string { return b.name }

// Message implements memberlist.Broadcast.
func (b *recordBroadcast) Message() []byte { return b.msg }

// Finished implements memberlist.Broadcast.
func (b *recordBroadcast) Finished() {}

// delegate implements memberlist.Delegate for the replicated state.
//
// memberlist calls every method concurrently from its own goroutines
// (UDP receive loop, gossip ticker, TCP push/pull handlers). None of them
// blocks: they take the store's mutex for a map update or an encode and
// hand callbacks to the event queue; persistence happens on the flusher
// goroutine.
type delegate struct{ c *Cluster }

// NodeMeta returns the encoded NodeMeta (checked against the limit by New).
// Called when memberlist (re)announces this node.
func (d *delegate) NodeMeta(limit int) []byte {
	d.c.metaMu.Lock()
	defer d.c.metaMu.Unlock()
	if len(d.c.meta) > limit {
		return nil
	}
	return d.c.meta
}

// NotifyMsg receives one broadcast record from the UDP loop. buf is only
// valid during the call; decoding copies what it keeps. A record new to us
// is re-queued so it keeps spreading epidemically; a stale live copy of a
// reaped record makes us re-announce its tombstone.
func (d *delegate) NotifyMsg(buf []byte) {
	d.c.stats.in.note(1, len(buf))
	typ, recs, err := decodeMsg(buf)
	if err == nil && typ != msgRecord {
		err = fmt.Errorf("message type %d where a record was expected: %w", typ, errMalformed)
	}
	if err != nil {
		d.c.refused.note(nil, CauseMalformed, err)
		return
	}
	d.c.stats.recvBroadcast.Add(1)
	d.c.merge(recs, true)
}

// GetBroadcasts hands memberlist queued records for the next gossip packet,
// within limit bytes including overhead per message. Each record fits one
// packet (MaxRecordBytes).
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	msgs := d.c.queue.GetBroadcasts(overhead, limit)
	n := 0
	for _, m := range msgs {
		n += len(m)
	}
	d.c.stats.out.note(len(msgs), n)
	return msgs
}

// LocalState returns the next anti-entropy window of at most
// PushPullBudget bytes of records (plus a few bytes of header). It is called
// for every push/pull and join, in either direction; each call advances the
// window, so successive exchanges cover the whole state.
func (d *delegate) LocalState(join bool) []byte {
	b := d.c.store.window(d.c.cfg.PushPullBudget)
	d.c.stats.noteLocalState(len(b))
	d.c.stats.out.note(1, len(b))
	return b
}

// MergeRemoteState merges a peer's window. Merged records are not
// re-broadcast (push/pull already reaches every node over time and would
// flood the queue); only tombstones re-announced from floors are.
func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	if len(buf) == 0 {
		return
	}
	d.c.stats.in.note(1, len(buf))
	typ, recs, err := decodeMsg(buf)
	if err == nil && typ != msgState {
		err = fmt.Errorf("message type %d where a push/pull state was expected: %w", typ, errMalformed)
	}
	if err != nil {
		d.c.refused.note(nil, CauseMalformed, err)
		return
	}
	d.c.stats.recvPushPull.Add(uint64(len(recs)))
	d.c.merge(recs, false)
}

// merge admits and applies received records and queues what must be sent
// on. A refused record is neither stored nor relayed.
func (c *Cluster) merge(recs []*Record, rebroadcast bool) {
	changed := false
	for _, r := range recs {
		if cause, err := c.admit(r); err != nil {
			c.refused.note(r, cause, err)
			continue
		}
		res, tomb, why := c.store.apply(r)
		switch res {
		case refused:
			c.refused.note(r, why.cause, why.err)
			if why.cause == CauseImpersonation {
				c.queueReassert(r)
			}
		case applied:
			changed = true
			if rebroadcast {
				c.broadcast(r)
			}
		case staleFloor:
			c.stats.floorHits.Add(1)
			c.log.WithFields(logrus.Fields{"kind": r.Kind, "key": r.Key, "owner": r.Owner}).
				Debug("rejected stale copy of a deleted record; re-announcing its deletion")
			c.broadcast(tomb)
		}
	}
	if changed {
		c.kickFlush()
	}
}

// broadcast queues r for gossip, keeping the queue bounded.
func (c *Cluster) broadcast(r *Record) {
	c.queue.QueueBroadcast(newRecordBroadcast(r))
	if c.queue.NumQueued() > c.cfg.MaxQueuedBroadcasts {
		c.queue.Prune(c.cfg.MaxQueuedBroadcasts)
	}
}
