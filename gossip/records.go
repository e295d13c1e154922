package gossip

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"
)

// Limits on records. A record travels as one memberlist user message inside
// one UDP packet (memberlist's UDPBufferSize is 1400 bytes, minus up to 45
// bytes of encryption and a few bytes of framing), so its encoded form is
// capped well below that.
const (
	// MaxRecordBytes is the largest encoded record (kind, key, owner, value
	// and about 16 bytes of framing) that Put accepts.
	MaxRecordBytes = 1200
	// MaxKindLen is the longest record kind.
	MaxKindLen = 64
	// MaxKeyLen is the longest record key.
	MaxKeyLen = 256
)

// Record is one replicated (Kind, Key) → Value entry.
//
// Records are values: the slices returned by Get, List and given to
// callbacks are copies the caller may keep but should not modify.
type Record struct {
	// Kind groups records of one consumer, e.g. "host", "network",
	// "block", "endpoint".
	Kind string
	// Key identifies the record within its kind.
	Key string
	// Value is opaque to gossip; only the record's consumer decodes it.
	// Nil for tombstones.
	Value []byte
	// Owner is the node name that wrote this version (for a tombstone: the
	// node that deleted it).
	Owner string
	// Version is the writer's Lamport clock at the write. Higher wins; ties
	// are broken by Owner, then by Deleted, then by Value, so every node
	// picks the same winner.
	Version uint64
	// Deleted marks a tombstone.
	Deleted bool
	// ReapAt is, for a tombstone, the local time after which this node
	// stops gossiping it (receipt time + TombstoneTTL). Zero for live
	// records. It is local to each node and never sent.
	ReapAt time.Time
}

// newer reports whether a must replace b: a total order on record versions,
// identical on every node.
func newer(a, b *Record) bool {
	if a.Version != b.Version {
		return a.Version > b.Version
	}
	if a.Owner != b.Owner {
		return a.Owner > b.Owner
	}
	if a.Deleted != b.Deleted {
		return a.Deleted
	}
	return bytes.Compare(a.Value, b.Value) > 0
}

// Supersedes reports whether r must replace old under the order every node
// applies (newer Version, then Owner, Deleted and Value): the one
// last-writer-wins rule, for test doubles of Replicated.
func (r *Record) Supersedes(old *Record) bool { return newer(r, old) }

// sameVersion reports whether a and b are the same write.
func sameVersion(a, b *Record) bool {
	return !newer(a, b) && !newer(b, a)
}

func (r *Record) clone() *Record {
	c := *r
	if r.Value != nil {
		c.Value = append([]byte(nil), r.Value...)
	}
	return &c
}

// validateName checks a kind or key given by a local caller.
func validateName(field, s string, maxLen int) error {
	if s == "" {
		return fmt.Errorf("record %s is empty: give a non-empty %s: %w", field, field, ErrInvalidRecord)
	}
	if len(s) > maxLen {
		return fmt.Errorf("record %s %.32q… is %d bytes, more than %d: %w", field, s, len(s), maxLen, ErrInvalidRecord)
	}
	return nil
}

// Wire format (all integers unsigned varints):
//
//	message  = wireVersion msgType body
//	record   = version flags len(kind) kind len(key) key len(owner) owner len(value) value
//	msgRecord body   = record
//	msgState  body   = count record*
//
// Peers ignore messages with another wireVersion (logged at debug), so the
// format can evolve with a version bump.
const (
	wireVersion byte = 1

	msgRecord byte = 1 // one record, sent as a broadcast
	msgState  byte = 2 // a window of records, sent by push/pull

	flagDeleted byte = 1 << 0
)

// encodedLen is the exact size appendRecord will produce.
func encodedLen(r *Record) int {
	n := uvarintLen(r.Version) + 1
	for _, s := range []int{len(r.Kind), len(r.Key), len(r.Owner), len(r.Value)} {
		n += uvarintLen(uint64(s)) + s
	}
	return n
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func appendRecord(b []byte, r *Record) []byte {
	b = binary.AppendUvarint(b, r.Version)
	var flags byte
	if r.Deleted {
		flags |= flagDeleted
	}
	b = append(b, flags)
	for _, s := range []string{r.Kind, r.Key, r.Owner} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendUvarint(b, uint64(len(r.Value)))
	return append(b, r.Value...)
}

// encodeRecordMsg returns the broadcast message carrying r.
func encodeRecordMsg(r *Record) []byte {
	b := make([]byte, 0, 2+encodedLen(r))
	b = append(b, wireVersion, msgRecord)
	return appendRecord(b, r)
}

// decoder reads the wire format without ever panicking on bad input.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("bad varint: %w", errMalformed)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = fmt.Errorf("field of %d bytes with %d left: %w", n, len(d.b), errMalformed)
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.err = fmt.Errorf("truncated: %w", errMalformed)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

// record decodes one record, copying everything out of the input buffer
// (memberlist reuses it after NotifyMsg returns).
func (d *decoder) record() *Record {
	r := &Record{Version: d.uvarint()}
	r.Deleted = d.byte()&flagDeleted != 0
	r.Kind = string(d.bytes())
	r.Key = string(d.bytes())
	r.Owner = string(d.bytes())
	if v := d.bytes(); len(v) > 0 && !r.Deleted {
		r.Value = append([]byte(nil), v...)
	}
	if d.err != nil {
		return nil
	}
	if r.Kind == "" || r.Key == "" || r.Owner == "" || len(r.Kind) > MaxKindLen || len(r.Key) > MaxKeyLen {
		d.err = fmt.Errorf("record with empty or oversized kind, key or owner: %w", errMalformed)
		return nil
	}
	return r
}

// decodeMsg decodes a broadcast or push/pull message into its records.
func decodeMsg(buf []byte) (byte, []*Record, error) {
	if len(buf) < 2 {
		return 0, nil, fmt.Errorf("message of %d bytes: %w", len(buf), errMalformed)
	}
	if buf[0] != wireVersion {
		return 0, nil, fmt.Errorf("wire version %d, want %d: %w", buf[0], wireVersion, errMalformed)
	}
	typ := buf[1]
	d := &decoder{b: buf[2:]}
	switch typ {
	case msgRecord:
		r := d.record()
		if d.err != nil {
			return typ, nil, d.err
		}
		return typ, []*Record{r}, nil
	case msgState:
		n := d.uvarint()
		if d.err != nil {
			return typ, nil, d.err
		}
		// Every record takes at least 5 bytes: never trust n for allocation.
		recs := make([]*Record, 0, min(n, uint64(len(d.b)/5)))
		for range n {
			r := d.record()
			if d.err != nil {
				return typ, nil, d.err
			}
			recs = append(recs, r)
		}
		return typ, recs, nil
	default:
		return typ, nil, fmt.Errorf("unknown message type %d: %w", typ, errMalformed)
	}
}

func errTooLarge(kind, key string, n int) error {
	return fmt.Errorf("record %s/%.32q encodes to %d bytes, more than the %d that fit in one gossip message: store less in its value: %w",
		kind, key, n, MaxRecordBytes, ErrRecordTooLarge)
}
