package gossip

import (
	"sync"

	"github.com/sirupsen/logrus"
)

// eventQueue delivers callbacks in order on one worker goroutine, so that
// memberlist's goroutines (and writers holding the store lock) only append
// to a slice and never wait for a consumer. The queue is unbounded: a
// consumer that blocks in a callback delays later callbacks and grows the
// queue, but never stalls gossip.
type eventQueue struct {
	log *logrus.Entry

	mu      sync.Mutex
	cond    *sync.Cond
	items   []func()
	closed  bool
	running bool
	done    chan struct{}
}

func newEventQueue(log *logrus.Entry) *eventQueue {
	q := &eventQueue{log: log, done: make(chan struct{})}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// start launches the worker once.
func (q *eventQueue) start() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.running || q.closed {
		return
	}
	q.running = true
	go q.run()
}

// push appends fn; it never blocks beyond the queue's own mutex.
func (q *eventQueue) push(fn func()) {
	q.mu.Lock()
	if !q.closed {
		q.items = append(q.items, fn)
		q.cond.Signal()
	}
	q.mu.Unlock()
}

func (q *eventQueue) run() {
	defer close(q.done)
	for {
		q.mu.Lock()
		for len(q.items) == 0 && !q.closed {
			q.cond.Wait()
		}
		if q.closed {
			q.mu.Unlock()
			return
		}
		fn := q.items[0]
		q.items[0] = nil
		q.items = q.items[1:]
		q.mu.Unlock()
		q.call(fn)
	}
}

// call runs one callback; a panicking consumer is logged and the worker
// carries on with the next event.
func (q *eventQueue) call(fn func()) {
	defer func() {
		if p := recover(); p != nil {
			q.log.WithField("panic", p).Error("gossip subscriber callback panicked; event dropped")
		}
	}()
	fn()
}

// close stops the worker after the callback in progress; callbacks still
// queued are dropped. It must not be called from a callback.
func (q *eventQueue) close() {
	q.mu.Lock()
	wasRunning := q.running
	q.closed = true
	q.items = nil
	q.cond.Broadcast()
	q.mu.Unlock()
	if wasRunning {
		<-q.done
	}
}
