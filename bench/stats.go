package main

import (
	"fmt"
	"math"
	"slices"
)

// sample is a set of measurements of one figure on one path. A figure taken
// round by round keeps one entry per round, in round order: a round whose
// measurement failed is a miss (NaN), so that the entries of two paths pair
// by round and a failure is reported, not dropped.
type sample struct {
	vals []float64 // NaN: a missed round
	na   string    // why there is no figure ("" when there is one)
}

func (s *sample) add(v float64) { s.vals = append(s.vals, v) }

// miss records a round without a figure.
func (s *sample) miss() { s.vals = append(s.vals, math.NaN()) }

// got is the figures measured, without the misses.
func (s *sample) got() []float64 { return present(s.vals) }

// misses is the number of rounds without a figure.
func (s *sample) misses() int { return len(s.vals) - len(s.got()) }

func (s *sample) ok() bool { return s.na == "" && len(s.got()) > 0 }

// present drops the misses (NaN) from vals.
func present(vals []float64) []float64 {
	out := make([]float64, 0, len(vals))
	for _, v := range vals {
		if !math.IsNaN(v) {
			out = append(out, v)
		}
	}
	return out
}

// quantile is the nearest-rank quantile q (0..1) of vals, misses left out.
func quantile(vals []float64, q float64) float64 {
	v := present(vals)
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	i := int(math.Ceil(q*float64(len(v)))) - 1
	return v[max(0, min(i, len(v)-1))]
}

// median is the middle value of vals, misses left out; for an even count the
// mean of the two middle values (either one of them alone would favour
// figures where lower, or where higher, is better).
func median(vals []float64) float64 {
	v := present(vals)
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	m := len(v) / 2
	if len(v)%2 == 0 {
		return (v[m-1] + v[m]) / 2
	}
	return v[m]
}

func (s *sample) median() float64 { return median(s.vals) }

func (s *sample) minmax() (float64, float64) {
	v := s.got()
	if len(v) == 0 {
		return math.NaN(), math.NaN()
	}
	return slices.Min(v), slices.Max(v)
}

// cell renders "median (min–max)" with the given format, or the reason for
// having no figure, and how many rounds failed.
func (s *sample) cell(format string) string {
	if s.na != "" {
		return "n/a (" + s.na + ")"
	}
	missed := ""
	if m := s.misses(); m > 0 {
		missed = fmt.Sprintf(" [%d of %d rounds failed]", m, len(s.vals))
	}
	v := s.got()
	switch len(v) {
	case 0:
		if len(s.vals) > 0 {
			return "n/a (every round failed)"
		}
		return "n/a (no runs)"
	case 1:
		return fmt.Sprintf(format, v[0]) + missed
	}
	lo, hi := s.minmax()
	return fmt.Sprintf(format+" ("+format+"–"+format+")", s.median(), lo, hi) + missed
}

// pairedRatio is a/b for two figures measured round by round: the median of
// the ratios of the rounds both measured (b not 0), with the number of those
// rounds. When the two do not have one entry per round each, or share no
// round, it is the ratio of the medians and the count is 0.
func pairedRatio(a, b *sample) (float64, int) {
	if len(a.vals) == len(b.vals) {
		var r []float64
		for i := range a.vals {
			x, y := a.vals[i], b.vals[i]
			if !math.IsNaN(x) && !math.IsNaN(y) && y != 0 {
				r = append(r, x/y)
			}
		}
		if len(r) > 0 {
			return median(r), len(r)
		}
	}
	return a.median() / b.median(), 0
}

// ratio renders pairedRatio(a, b), saying over how many rounds when either
// side missed one; or "n/a".
func ratio(a, b *sample) string {
	if a == nil || b == nil || !a.ok() || !b.ok() || b.median() == 0 {
		return "n/a"
	}
	r, n := pairedRatio(a, b)
	if n == 0 && len(a.vals) == len(b.vals) {
		return "n/a (no round measured both)"
	}
	if n > 0 && n < len(a.vals) {
		return fmt.Sprintf("%.2f (%d of %d rounds)", r, n, len(a.vals))
	}
	return fmt.Sprintf("%.2f", r)
}
