package dataplane

import (
	"errors"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestResolveUnderlay(t *testing.T) {
	// Two addressed "NICs" (ifb: dummy is not built into this kernel).
	twoNICs := func(t *testing.T, h *netlink.Handle) {
		addIfb(t, h, "u0", 1500, "198.18.0.1/24")
		addIfb(t, h, "u1", 1400, "198.18.1.1/24", "198.18.1.2/24")
	}
	addBridge := func(t *testing.T, h *netlink.Handle, name, prefix string) {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = name
		if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
			t.Fatal(err)
		}
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		addAddr(t, h, l, prefix)
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	addVeth := func(t *testing.T, h *netlink.Handle, name, prefix string) {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = name
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: name + "p"}); err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{name, name + "p"} {
			l, err := h.LinkByName(n)
			if err != nil {
				t.Fatal(err)
			}
			if n == name {
				addAddr(t, h, l, prefix)
			}
			if err := h.LinkSetUp(l); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Links that must never be chosen automatically.
	noise := func(t *testing.T, h *netlink.Handle) {
		addBridge(t, h, "docker0", "198.18.200.1/24")
		addBridge(t, h, "gvb-net", "198.19.0.1/24")
		l := addIfb(t, h, "u-down", 1500, "198.18.201.1/24")
		if err := h.LinkSetDown(l); err != nil {
			t.Fatal(err)
		}
		// A link-scope address does not make a candidate.
		ll := addIfb(t, h, "u-link", 1500)
		a, _ := netlink.ParseAddr("198.18.202.1/24")
		a.Scope = unix.RT_SCOPE_LINK
		if err := h.AddrAdd(ll, a); err != nil {
			t.Fatal(err)
		}
	}

	tests := []struct {
		name      string
		setup     func(t *testing.T, h *netlink.Handle)
		advertise string
		want      Underlay
		wantErr   []string // substrings; the error must also wrap ErrNoUnderlay
	}{
		{
			name: "default route picks its interface",
			setup: func(t *testing.T, h *netlink.Handle) {
				twoNICs(t, h)
				run(t, "ip", "route", "add", "default", "via", "198.18.1.254", "dev", "u1")
			},
			want: Underlay{Addr: mustAddr("198.18.1.1"), Link: "u1", MTU: 1400},
		},
		{
			name:  "no default route, one candidate among noise",
			setup: func(t *testing.T, h *netlink.Handle) { addIfb(t, h, "u0", 1450, "198.18.0.1/24"); noise(t, h) },
			want:  Underlay{Addr: mustAddr("198.18.0.1"), Link: "u0", MTU: 1450},
		},
		{
			name: "no default route, a NIC wins over a veth",
			setup: func(t *testing.T, h *netlink.Handle) {
				addIfb(t, h, "u0", 1500, "198.18.0.1/24")
				addVeth(t, h, "ve0", "198.18.7.1/24")
			},
			want: Underlay{Addr: mustAddr("198.18.0.1"), Link: "u0", MTU: 1500},
		},
		{
			name:  "no default route, only a veth (namespace host)",
			setup: func(t *testing.T, h *netlink.Handle) { addVeth(t, h, "ve0", "198.18.7.1/24"); noise(t, h) },
			want:  Underlay{Addr: mustAddr("198.18.7.1"), Link: "ve0", MTU: 1500},
		},
		{
			name:    "no default route, two candidates",
			setup:   twoNICs,
			wantErr: []string{"u0 (198.18.0.1)", "u1 (198.18.1.1)", "set ADVERTISE"},
		},
		{
			name:    "no candidate at all",
			setup:   noise,
			wantErr: []string{"set ADVERTISE"},
		},
		{
			name:      "address",
			setup:     twoNICs,
			advertise: "198.18.1.2",
			want:      Underlay{Addr: mustAddr("198.18.1.2"), Link: "u1", MTU: 1400},
		},
		{
			name:      "address not on this host",
			setup:     twoNICs,
			advertise: "198.18.9.9",
			wantErr:   []string{"ADVERTISE=198.18.9.9"},
		},
		{
			name:      "interface name takes its first global address",
			setup:     twoNICs,
			advertise: "u1",
			want:      Underlay{Addr: mustAddr("198.18.1.1"), Link: "u1", MTU: 1400},
		},
		{
			name:      "interface without a global address",
			setup:     noise,
			advertise: "u-link",
			wantErr:   []string{"ADVERTISE=u-link", "no global IPv4"},
		},
		{
			name:      "unknown interface",
			setup:     twoNICs,
			advertise: "eth9",
			wantErr:   []string{"ADVERTISE=eth9"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tn, k := newKernelNS(t)
			tc.setup(t, tn.nl)
			got, err := k.ResolveUnderlay(tc.advertise)
			if tc.wantErr != nil {
				if !errors.Is(err, ErrNoUnderlay) {
					t.Fatalf("ResolveUnderlay(%q) = %+v, %v; want ErrNoUnderlay", tc.advertise, got, err)
				}
				for _, s := range tc.wantErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q lacks %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("ResolveUnderlay(%q): %v", tc.advertise, err)
			}
			if got != tc.want {
				t.Fatalf("ResolveUnderlay(%q) = %+v, want %+v", tc.advertise, got, tc.want)
			}
		})
	}
}
