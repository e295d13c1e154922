package ipam

import (
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/docker/go-plugins-helpers/ipam"
	"go.etcd.io/bbolt"
)

func reportRate(b *testing.B, n int) {
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(n)/s, "allocs/s")
	}
}

// BenchmarkAllocatorSlash16 measures the in-memory allocator core on a /16:
// fill the pool with next(), empty it (untimed), repeat.
func BenchmarkAllocatorSlash16(b *testing.B) {
	a := newAllocator(1 << 16)
	a.bits.set(0)
	a.bits.set(1<<16 - 1)
	a.setSpans([]span{{0, 1<<16 - 1}})
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, ok := a.next(); !ok {
			b.StopTimer()
			for o := uint32(1); o < 1<<16-1; o++ {
				a.release(o)
			}
			b.StartTimer()
			if _, ok := a.next(); !ok {
				b.Fatal("allocator empty after release")
			}
		}
	}
	reportRate(b, b.N)
}

// BenchmarkAllocatorSlash16Fragmented keeps a /16 ~90 % full with random
// releases, so the cursor must skip taken words to find holes.
func BenchmarkAllocatorSlash16Fragmented(b *testing.B) {
	const n = 1 << 16
	a := newAllocator(n)
	a.bits.set(0)
	a.bits.set(n - 1)
	a.setSpans([]span{{0, n - 1}})
	held := make([]uint32, 0, n)
	for len(held) < n*9/10 {
		o, _ := a.next()
		held = append(held, o)
	}
	r := rand.New(rand.NewPCG(1, 2))
	b.ResetTimer()
	for range b.N {
		i := r.IntN(len(held))
		a.release(held[i])
		o, ok := a.next()
		if !ok {
			b.Fatal("allocator empty")
		}
		held[i] = o
	}
	reportRate(b, b.N)
}

// benchDriver opens a durable (fsync on every commit) store in a temp dir on
// the real disk and registers a /12 with its gateway.
func benchDriver(b *testing.B, noSync bool) (*Driver, string) {
	b.Helper()
	db, err := bbolt.Open(filepath.Join(b.TempDir(), "bench.db"), 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	db.NoSync = noSync
	b.Cleanup(func() { _ = db.Close() })
	d, err := New(Config{DB: db, DefaultPool: testPool})
	if err != nil {
		b.Fatal(err)
	}
	res, err := d.RequestPool(&ipam.RequestPoolRequest{Pool: "100.64.0.0/12"})
	if err != nil {
		b.Fatal(err)
	}
	_, err = d.RequestAddress(&ipam.RequestAddressRequest{PoolID: res.PoolID,
		Options: map[string]string{requestAddressTypeKey: gatewayAddressType}})
	if err != nil {
		b.Fatal(err)
	}
	return d, res.PoolID
}

func benchRequestSerial(b *testing.B, noSync bool) {
	d, id := benchDriver(b, noSync)
	c0 := d.commit.commitCount()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := d.RequestAddress(&ipam.RequestAddressRequest{PoolID: id}); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b, b.N)
	b.ReportMetric(float64(b.N)/float64(d.commit.commitCount()-c0), "allocs/commit")
}

// BenchmarkRequestAddressDurable is the full RequestAddress path, one caller,
// every answer fsynced before it returns.
func BenchmarkRequestAddressDurable(b *testing.B) { benchRequestSerial(b, false) }

// BenchmarkRequestAddressNoSync is the same path without fsync: the CPU cost
// of validation, allocation and the bbolt transaction.
func BenchmarkRequestAddressNoSync(b *testing.B) { benchRequestSerial(b, true) }

// BenchmarkRequestAddressDurableParallel has 16 concurrent callers per CPU;
// group commit lets them share fsyncs (allocs/commit > 1).
func BenchmarkRequestAddressDurableParallel(b *testing.B) {
	d, id := benchDriver(b, false)
	c0 := d.commit.commitCount()
	b.SetParallelism(16)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := d.RequestAddress(&ipam.RequestAddressRequest{PoolID: id}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	reportRate(b, b.N)
	b.ReportMetric(float64(b.N)/float64(d.commit.commitCount()-c0), "allocs/commit")
}
