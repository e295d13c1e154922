package dataplane

import "testing"

// TestKernelFeatures: this kernel makes VXLAN and macvlan links (the
// namespace tests use both), 802.1q and WireGuard are reported either way,
// and the test links go with their private namespace: none is left in the
// caller's.
func TestKernelFeatures(t *testing.T) {
	tn, k := newKernelNS(t)
	got, err := k.KernelFeatures()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{FeatureVXLAN, FeatureMacvlan} {
		if err, ok := got[f]; !ok || err != nil {
			t.Errorf("feature %s: present %v, error %v; want made", f, ok, err)
		}
	}
	for _, f := range []string{FeatureVLAN, FeatureWireGuard} {
		if _, ok := got[f]; !ok {
			t.Errorf("feature %s not tested", f)
		}
		t.Logf("%s: %v", f, got[f])
	}
	links, err := tn.nl.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if l.Attrs().Name != "lo" {
			t.Errorf("link %s left in the caller's namespace", l.Attrs().Name)
		}
	}
}
