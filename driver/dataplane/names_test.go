package dataplane

import "testing"

// TestIsManagedName: every name the naming functions and the uplinks give is
// grapevine's; a link that merely starts with "gv", has an unknown kind
// letter or a longer id is someone else's and must never be deleted as an
// orphan or skipped as grapevine's.
func TestIsManagedName(t *testing.T) {
	const id = "4252a05ea07b9c"
	up, in, err := uplinkNames(BridgeName(id))
	if err != nil {
		t.Fatal(err)
	}
	ours := []string{BridgeName(id), VXLANName(id), HostVethName(id), ContainerLinkName(id),
		InternalParentName(id), ShimName(id), up, in, "gvb-a", "gvc-x.y_z-1"}
	for _, n := range ours {
		if !IsManagedName(n) {
			t.Errorf("IsManagedName(%q) = false, want true", n)
		}
	}
	theirs := []string{"", "gv", "gvb", "gvb-", "gvbr0", "gvfoo", "gvz-4252a05ea07", "gvb-0123456789ab",
		"xgvb-a", "gvb-a b", "gvb-a/b", "GVB-a", "eth0", "eth0.30", "docker0"}
	for _, n := range theirs {
		if IsManagedName(n) {
			t.Errorf("IsManagedName(%q) = true, want false", n)
		}
	}
	if got, want := BridgeName(id), "gvb-4252a05ea07"; got != want {
		t.Errorf("BridgeName(%q) = %q, want %q", id, got, want)
	}
	if up != "gvu-4252a05ea07" || in != "gvi-4252a05ea07" {
		t.Errorf("uplinkNames = %q, %q; want gvu-4252a05ea07, gvi-4252a05ea07", up, in)
	}
}
