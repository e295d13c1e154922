package gossip

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestRecordCodecRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		rec  Record
	}{
		{"live", Record{Kind: "block", Key: "100.64.0.0/26", Value: []byte(`{"owner":"a"}`), Owner: "host-a", Version: 42}},
		{"empty value", Record{Kind: "host", Key: "a", Owner: "a", Version: 1}},
		{"tombstone", Record{Kind: "endpoint", Key: "198.18.0.9", Owner: "b", Version: 1 << 40, Deleted: true}},
		{"binary value", Record{Kind: "k", Key: "\x00\xff", Value: []byte{0, 1, 2, 255}, Owner: "ü", Version: 7}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := encodeRecordMsg(&tt.rec)
			if len(msg) != 2+encodedLen(&tt.rec) {
				t.Errorf("encodedLen %d, message %d", encodedLen(&tt.rec), len(msg))
			}
			typ, recs, err := decodeMsg(msg)
			if err != nil || typ != msgRecord || len(recs) != 1 {
				t.Fatalf("decode: %v %d %d", err, typ, len(recs))
			}
			got := recs[0]
			if got.Kind != tt.rec.Kind || got.Key != tt.rec.Key || got.Owner != tt.rec.Owner ||
				got.Version != tt.rec.Version || got.Deleted != tt.rec.Deleted || !bytes.Equal(got.Value, tt.rec.Value) {
				t.Errorf("got %+v, want %+v", got, tt.rec)
			}
			// The decoded record must not alias the message buffer.
			for i := range msg {
				msg[i] = 0xAA
			}
			if !bytes.Equal(got.Value, tt.rec.Value) || got.Key != tt.rec.Key {
				t.Error("decoded record aliases the input buffer")
			}
		})
	}
}

func TestDecodeMalformed(t *testing.T) {
	good := encodeRecordMsg(&Record{Kind: "block", Key: "k", Value: []byte("value"), Owner: "o", Version: 3})
	tests := []struct {
		name string
		msg  []byte
		want string
	}{
		{"empty", nil, "message of 0 bytes"},
		{"other wire version", append([]byte{9}, good[1:]...), "wire version 9"},
		{"unknown type", []byte{wireVersion, 77, 0}, "unknown message type"},
		{"state count lies", []byte{wireVersion, msgState, 200}, "bad varint"},
		{"huge field length", []byte{wireVersion, msgRecord, 1, 0, 0xff, 0xff, 0x03}, "field of"},
		{"empty owner", encodeRecordMsg(&Record{Kind: "a", Key: "b", Version: 1}), "empty or oversized"},
		{"oversized kind", encodeRecordMsg(&Record{Kind: strings.Repeat("k", MaxKindLen+1), Key: "b", Owner: "o", Version: 1}), "empty or oversized"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := decodeMsg(tt.msg)
			if !errors.Is(err, errMalformed) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
	// Every truncation of a valid message fails cleanly, never panics.
	for i := range len(good) {
		if _, _, err := decodeMsg(good[:i]); err == nil {
			t.Errorf("truncated to %d bytes: no error", i)
		}
	}
	// Random garbage never panics.
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		b := make([]byte, r.IntN(64))
		for i := range b {
			b[i] = byte(r.UintN(256))
		}
		if len(b) > 1 {
			b[0] = wireVersion
		}
		decodeMsg(b)
	}
}

func TestNewerIsATotalOrder(t *testing.T) {
	recs := []Record{
		{Version: 1, Owner: "a"},
		{Version: 2, Owner: "a"},
		{Version: 2, Owner: "b"},
		{Version: 2, Owner: "b", Deleted: true},
		{Version: 2, Owner: "b", Value: []byte("x")},
		{Version: 2, Owner: "b", Value: []byte("y")},
		{Version: 10, Owner: "a"},
	}
	// recs is sorted ascending except the tombstone, which beats any value
	// at the same version and owner; check pairwise antisymmetry and that a
	// single winner exists.
	winner := func(order []int) Record {
		w := recs[order[0]]
		for _, i := range order[1:] {
			if newer(&recs[i], &w) {
				w = recs[i]
			}
		}
		return w
	}
	for i := range recs {
		for j := range recs {
			a, b := newer(&recs[i], &recs[j]), newer(&recs[j], &recs[i])
			if i == j && (a || b) {
				t.Errorf("record %d newer than itself", i)
			}
			if i != j && a == b {
				t.Errorf("records %d and %d: newer both ways or neither (%v)", i, j, a)
			}
		}
	}
	want := winner([]int{0, 1, 2, 3, 4, 5, 6})
	r := rand.New(rand.NewPCG(3, 4))
	for range 100 {
		order := r.Perm(len(recs))
		if got := winner(order); !sameVersion(&got, &want) {
			t.Fatalf("order %v picked %+v, want %+v", order, got, want)
		}
	}
	if tomb, val := recs[3], recs[5]; !newer(&tomb, &val) {
		t.Error("a tombstone must beat a value written at the same version by the same owner")
	}
}
