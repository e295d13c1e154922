package ipam

import (
	"math/bits"
	"sort"
)

// bitmap is a fixed-size set of ordinals (host offsets inside a pool), one bit
// each. A set bit means "not available": allocated, or reserved (network,
// broadcast, gateway).
type bitmap struct {
	words []uint64
	n     uint32 // number of bits
}

func newBitmap(n uint32) *bitmap {
	return &bitmap{words: make([]uint64, (uint64(n)+63)/64), n: n}
}

func (b *bitmap) test(i uint32) bool { return b.words[i>>6]&(1<<(i&63)) != 0 }
func (b *bitmap) set(i uint32)       { b.words[i>>6] |= 1 << (i & 63) }
func (b *bitmap) clear(i uint32)     { b.words[i>>6] &^= 1 << (i & 63) }

// firstClear returns the lowest clear bit in [lo, hi] (inclusive). Full words
// are skipped 64 bits at a time.
func (b *bitmap) firstClear(lo, hi uint32) (uint32, bool) {
	if lo > hi || hi >= b.n {
		return 0, false
	}
	first, last := lo>>6, hi>>6
	for w := first; w <= last; w++ {
		word := b.words[w]
		if w == first {
			word |= (uint64(1) << (lo & 63)) - 1 // bits below lo count as taken
		}
		if word == ^uint64(0) {
			continue
		}
		i := w<<6 + uint32(bits.TrailingZeros64(^word))
		if i > hi {
			return 0, false
		}
		return i, true
	}
	return 0, false
}

// countClear returns the number of clear bits in [lo, hi] (inclusive).
func (b *bitmap) countClear(lo, hi uint32) int {
	if lo > hi || hi >= b.n {
		return 0
	}
	n := 0
	first, last := lo>>6, hi>>6
	for w := first; w <= last; w++ {
		mask := ^uint64(0)
		if w == first {
			mask &^= (uint64(1) << (lo & 63)) - 1
		}
		if w == last && hi&63 != 63 {
			mask &= (uint64(1) << (hi&63 + 1)) - 1
		}
		n += bits.OnesCount64(^b.words[w] & mask)
	}
	return n
}

// span is an inclusive range of ordinals.
type span struct{ lo, hi uint32 }

func (s span) size() int { return int(s.hi-s.lo) + 1 }

// allocator hands out ordinals of one pool. It searches only the allocatable
// spans (this host's owned ranges intersected with the --ip-range), starting
// at a moving cursor and wrapping around, so a released address is reused only
// after every other free address has been handed out once. free counts the
// clear bits inside the spans, so exhaustion is known without a scan.
//
// allocator is not safe for concurrent use; the Driver's mutex guards it.
type allocator struct {
	bits   *bitmap
	spans  []span // sorted, disjoint
	cursor uint32 // next ordinal to try
	free   int    // clear bits inside spans
}

func newAllocator(n uint32) *allocator {
	return &allocator{bits: newBitmap(n)}
}

// setSpans replaces the allocatable spans (sorted, disjoint, inside the bitmap)
// and recounts free addresses.
func (a *allocator) setSpans(spans []span) {
	a.spans = spans
	a.free = 0
	for _, s := range spans {
		a.free += a.bits.countClear(s.lo, s.hi)
	}
}

// inSpans reports whether ord lies in an allocatable span.
func (a *allocator) inSpans(ord uint32) bool {
	k := sort.Search(len(a.spans), func(i int) bool { return a.spans[i].hi >= ord })
	return k < len(a.spans) && a.spans[k].lo <= ord
}

// capacity is the number of ordinals in the allocatable spans.
func (a *allocator) capacity() int {
	n := 0
	for _, s := range a.spans {
		n += s.size()
	}
	return n
}

// next takes the first clear ordinal at or after the cursor inside the spans,
// wrapping around once, and moves the cursor past it.
func (a *allocator) next() (uint32, bool) {
	if a.free == 0 || len(a.spans) == 0 {
		return 0, false
	}
	k := sort.Search(len(a.spans), func(i int) bool { return a.spans[i].hi >= a.cursor })
	if k == len(a.spans) {
		k = 0 // cursor beyond the last span: start over at the first
	}
	for j := 0; j <= len(a.spans); j++ {
		s := a.spans[(k+j)%len(a.spans)]
		lo, hi := s.lo, s.hi
		switch {
		case j == 0 && a.cursor > lo:
			lo = a.cursor
		case j == len(a.spans): // back at span k: the part before the cursor
			if a.cursor <= s.lo {
				continue
			}
			hi = min(hi, a.cursor-1)
		}
		if ord, ok := a.bits.firstClear(lo, hi); ok {
			a.bits.set(ord)
			a.free--
			a.cursor = ord + 1
			if a.cursor >= a.bits.n {
				a.cursor = 0
			}
			return ord, true
		}
	}
	return 0, false // unreachable while free is accurate
}

// claim takes a specific ordinal. It reports false when it is already taken.
// The cursor does not move.
func (a *allocator) claim(ord uint32) bool {
	if a.bits.test(ord) {
		return false
	}
	a.bits.set(ord)
	if a.inSpans(ord) {
		a.free--
	}
	return true
}

// release clears an ordinal; it reports false when it was not taken.
func (a *allocator) release(ord uint32) bool {
	if !a.bits.test(ord) {
		return false
	}
	a.bits.clear(ord)
	if a.inSpans(ord) {
		a.free++
	}
	return true
}
