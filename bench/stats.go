package main

import (
	"fmt"
	"math"
	"slices"
)

// sample is a set of measurements of one figure on one path.
type sample struct {
	vals []float64
	na   string // why there is no figure ("" when there is one)
}

func (s *sample) add(v float64) { s.vals = append(s.vals, v) }

func (s *sample) ok() bool { return s.na == "" && len(s.vals) > 0 }

// quantile is the nearest-rank quantile q (0..1) of vals.
func quantile(vals []float64, q float64) float64 {
	if len(vals) == 0 {
		return math.NaN()
	}
	v := slices.Clone(vals)
	slices.Sort(v)
	i := int(math.Ceil(q*float64(len(v)))) - 1
	return v[max(0, min(i, len(v)-1))]
}

func (s *sample) median() float64 { return quantile(s.vals, 0.5) }

func (s *sample) minmax() (float64, float64) {
	if len(s.vals) == 0 {
		return math.NaN(), math.NaN()
	}
	return slices.Min(s.vals), slices.Max(s.vals)
}

// cell renders "median (min–max)" with the given format, or the reason for
// having no figure.
func (s *sample) cell(format string) string {
	if s.na != "" {
		return "n/a (" + s.na + ")"
	}
	if len(s.vals) == 0 {
		return "n/a (no runs)"
	}
	lo, hi := s.minmax()
	if len(s.vals) == 1 {
		return fmt.Sprintf(format, s.median())
	}
	return fmt.Sprintf(format+" ("+format+"–"+format+")", s.median(), lo, hi)
}

// pairedRatio is a/b for two figures measured round by round: the median
// of the per-round ratios when both have one value per round, else the
// ratio of the medians.
func pairedRatio(a, b *sample) float64 {
	if len(a.vals) == len(b.vals) && !slices.Contains(b.vals, 0) {
		r := make([]float64, len(a.vals))
		for i := range a.vals {
			r[i] = a.vals[i] / b.vals[i]
		}
		return quantile(r, 0.5)
	}
	return a.median() / b.median()
}

// ratio renders pairedRatio(a, b), or "n/a".
func ratio(a, b *sample) string {
	if a == nil || b == nil || !a.ok() || !b.ok() || b.median() == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", pairedRatio(a, b))
}
