package driver

import (
	"strings"
	"testing"
)

// TestMacvlanInternalIgnoresParent: --internal with -o parent behaves as
// Docker's macvlan driver: the parent is ignored (even one that does not
// exist), the containers hang off a standalone link, never the LAN's.
func TestMacvlanInternalIgnoresParent(t *testing.T) {
	e := newLANEnv(t)
	for _, parent := range []string{"eth0", "nosuch0", "eth0.30"} {
		n := id("int-" + parent)
		r := lanReq(n, "198.19.62.0/24", map[string]string{"parent": parent})
		r.internal = true
		e.mustCreateNetwork(r)
		mustLink(t, e.fake, internalParent(n))
		ep := id("ep-" + parent)
		e.createEP(n, ep, "198.19.62.10/24")
		e.mustJoin(n, ep)
		if l := mustLink(t, e.fake, contVeth(ep)); l.Macvlan.Parent != internalParent(n) {
			t.Errorf("parent=%s --internal: the container's macvlan is on %q, want the standalone %q", parent, l.Macvlan.Parent, internalParent(n))
		}
		st := e.d.Status()
		if len(st) != 1 || st[0].Parent != "" || !st[0].Internal || !strings.HasPrefix(st[0].Reach, "internal only") {
			t.Errorf("parent=%s --internal: status %+v", parent, st)
		}
		if got := grapevineLinks(e.fake); len(got) != 2 {
			t.Errorf("parent=%s --internal: links %v, want the standalone parent and the container's link (no VLAN link)", parent, got)
		}
		e.deleteEP(n, ep)
		e.deleteNet(n)
	}
}
