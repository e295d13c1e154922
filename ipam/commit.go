package ipam

import (
	"errors"
	"sync"

	"go.etcd.io/bbolt"
)

// committer writes to bbolt with group commit: a caller that finds no write in
// progress commits at once (no added latency, unlike bbolt's Batch with its
// MaxBatchDelay); callers that arrive while a transaction is being written and
// fsynced queue up, and the next of them commits the whole queue in one
// transaction, so concurrent callers share one fsync.
//
// Functions must be idempotent and may run more than once: a failing function
// is dropped from the shared transaction and the rest retried. The Driver's
// functions copy the CURRENT in-memory state of what they name, so the order
// in which queued functions run never matters.
type committer struct {
	db *bbolt.DB

	mu      sync.Mutex
	busy    bool // a leader is committing
	pending []*commitReq
	commits uint64 // transactions attempted, for benchmarks and status
}

// commitCount returns how many transactions were attempted.
func (c *committer) commitCount() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.commits
}

type commitReq struct {
	fn  func(*bbolt.Tx) error
	res chan commitResult // buffered 1
}

type commitResult struct {
	err  error
	lead bool // the receiver becomes the leader and commits the queue
}

// do runs fn in a durable read-write transaction and returns once it is
// committed (or failed).
func (c *committer) do(fn func(*bbolt.Tx) error) error {
	r := &commitReq{fn: fn, res: make(chan commitResult, 1)}
	c.mu.Lock()
	c.pending = append(c.pending, r)
	if c.busy {
		c.mu.Unlock()
		res := <-r.res
		if !res.lead {
			return res.err
		}
	} else {
		c.busy = true
		c.mu.Unlock()
	}
	// Leader: commit everything queued so far (including r), then hand over.
	c.mu.Lock()
	batch := c.pending
	c.pending = nil
	c.mu.Unlock()

	c.run(batch)

	c.mu.Lock()
	if len(c.pending) > 0 {
		next := c.pending[0]
		c.mu.Unlock()
		next.res <- commitResult{lead: true}
	} else {
		c.busy = false
		c.mu.Unlock()
	}
	return (<-r.res).err
}

// errFnFailed aborts a shared transaction after one function failed.
var errFnFailed = errors.New("ipam: function failed in group commit")

// run commits batch, delivering every request's result on its channel.
func (c *committer) run(batch []*commitReq) {
	for len(batch) > 0 {
		c.mu.Lock()
		c.commits++
		c.mu.Unlock()
		failed := -1
		var fnErr error
		err := c.db.Update(func(tx *bbolt.Tx) error {
			for i, r := range batch {
				if err := r.fn(tx); err != nil {
					failed, fnErr = i, err
					return errFnFailed
				}
			}
			return nil
		})
		if failed < 0 || !errors.Is(err, errFnFailed) {
			for _, r := range batch {
				r.res <- commitResult{err: err}
			}
			return
		}
		batch[failed].res <- commitResult{err: fnErr}
		batch = append(batch[:failed:failed], batch[failed+1:]...)
	}
}
