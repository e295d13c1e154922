package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/docker/go-plugins-helpers/ipam"
)

// FuzzRequestAddress drives random sequences of dynamic and static requests,
// releases and restarts against a model, and checks that no address is ever
// handed out twice, the gateway never, dynamic ones only inside --ip-range,
// and that exhaustion is reported only when the range is really full.
func FuzzRequestAddress(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0})
	f.Add([]byte{1, 1, 9, 1, 10, 0, 0, 3, 0, 2, 1, 0, 4, 10, 0})
	f.Add([]byte{3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 3, 3, 0, 1, 12, 1, 12})
	f.Add([]byte{2, 1, 31, 1, 0, 1, 20, 0, 0, 4, 20, 3, 1, 20})
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) == 0 || len(ops) > 400 {
			return
		}
		mode := ops[0]
		ops = ops[1:]
		space := LocalAddressSpace
		if mode&1 != 0 {
			space = GlobalAddressSpace
		}
		gwAddr := "" // default .1, outside the range
		if mode&2 != 0 {
			gwAddr = "198.19.10.9" // inside the range
		}
		prefix := netip.MustParsePrefix("198.19.10.0/27")
		rng := netip.MustParsePrefix("198.19.10.8/29")

		h := newHarness(t, Config{})
		id := h.pool(space, prefix.String(), rng.String())
		gw := bare(t, h.gateway(id, gwAddr))
		held := map[netip.Addr]bool{}
		var order []netip.Addr

		addrOf := func(b byte) netip.Addr { return ordToAddr(prefix.Addr(), uint32(b)%32) }
		take := func(a netip.Addr) {
			if held[a] {
				t.Fatalf("%s handed out twice", a)
			}
			if a == gw {
				t.Fatalf("gateway %s handed out", a)
			}
			held[a] = true
			order = append(order, a)
		}
		drop := func(a netip.Addr) {
			delete(held, a)
			for i, o := range order {
				if o == a {
					order = append(order[:i], order[i+1:]...)
					break
				}
			}
		}
		next := func(i *int) byte {
			if *i+1 < len(ops) {
				*i++
				return ops[*i]
			}
			return 0
		}
		for i := 0; i < len(ops); i++ {
			switch ops[i] % 5 {
			case 0: // dynamic
				res, err := h.d.RequestAddress(&ipam.RequestAddressRequest{PoolID: id})
				if errors.Is(err, ErrExhausted) {
					free := 0
					for o := uint32(8); o < 16; o++ {
						if a := ordToAddr(prefix.Addr(), o); !held[a] && a != gw {
							free++
						}
					}
					if free != 0 {
						t.Fatalf("exhausted with %d free addresses in range: %v", free, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("dynamic request: %v", err)
				}
				a := bare(t, res.Address)
				if !rng.Contains(a) {
					t.Fatalf("dynamic %s outside --ip-range %s", a, rng)
				}
				take(a)
			case 1: // static
				a := addrOf(next(&i))
				res, err := h.d.RequestAddress(&ipam.RequestAddressRequest{PoolID: id, Address: a.String()})
				o := addrToOrd(prefix, a)
				switch {
				case o == 0 || o == 31:
					if !errors.Is(err, ErrInvalid) {
						t.Fatalf("static %s (network/broadcast): %v", a, err)
					}
				case a == gw:
					if !errors.Is(err, ErrConflict) {
						t.Fatalf("static gateway %s: %v", a, err)
					}
				case held[a] && space == LocalAddressSpace:
					if !errors.Is(err, ErrConflict) {
						t.Fatalf("static held %s in local space: %v", a, err)
					}
				case held[a]:
					if err != nil || bare(t, res.Address) != a {
						t.Fatalf("global repeat of %s: %v %v", a, res, err)
					}
				default:
					if err != nil || bare(t, res.Address) != a {
						t.Fatalf("static %s: %v %v", a, res, err)
					}
					take(a)
				}
			case 2: // release a held address
				if len(order) == 0 {
					continue
				}
				a := order[int(next(&i))%len(order)]
				h.release(id, a.String())
				drop(a)
			case 3:
				h.restart()
			case 4: // release anything (not the gateway): idempotent
				a := addrOf(next(&i))
				if a == gw {
					continue
				}
				h.release(id, a.String())
				drop(a)
			}
			s := h.status(id)
			if s.Allocated != len(held) || s.Gateway != gw.String() {
				t.Fatalf("after op %d: status %+v, model holds %d (%v)", i, s, len(held), fmt.Sprint(order))
			}
		}
	})
}
