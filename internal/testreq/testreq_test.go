package testreq

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestRequired(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    string
		wantErr string
	}{
		{"", "", ""},
		{"vlan", "vlan", ""},
		{" VLAN , ipvs,,wireguard ", "vlan,ipvs,wireguard", ""},
		{"vlan,vxlan", "", `unknown feature "vxlan"`},
	} {
		got, err := Required(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Required(%q) error %v, want one containing %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || strings.Join(got, ",") != tc.want {
			t.Errorf("Required(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

// childEnv marks the re-executed test binary that calls Missing for real.
const childEnv = "TESTREQ_CHILD_FEATURE"

// TestMissingChild is the body the other tests run in a child process: a
// test calling Missing, whose outcome (skip or fail) the parent inspects.
func TestMissingChild(t *testing.T) {
	f := os.Getenv(childEnv)
	if f == "" {
		t.Skip("runs only as the child of TestMissing")
	}
	Missing(t, f, "no such thing\nin this kernel")
	t.Error("Missing returned")
}

func runChild(t *testing.T, feature, require, skipLog string) (string, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestMissingChild$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"="+feature, RequireEnv+"="+require, SkipLogEnv+"="+skipLog)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestMissing(t *testing.T) {
	log := filepath.Join(t.TempDir(), "skips")
	for _, tc := range []struct {
		name, feature, require string
		fail                   bool
		want                   string
	}{
		{"not required: skip", VLAN, "", false, "--- SKIP: TestMissingChild"},
		{"another feature required: skip", VLAN, "ipvs,wireguard", false, "--- SKIP: TestMissingChild"},
		{"required: fail", VLAN, "ipvs,vlan", true, "GV_REQUIRE=ipvs,vlan requires vlan, but this machine lacks it: no such thing"},
		{"typo in GV_REQUIRE: fail", IPVS, "ipvs,vlna", true, `unknown feature "vlna"`},
		{"unknown feature: fail", "vxlan", "", true, `unknown feature "vxlan"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runChild(t, tc.feature, tc.require, log)
			if tc.fail != (err != nil) {
				t.Fatalf("child failed=%v (%v), want %v:\n%s", err != nil, err, tc.fail, out)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("child output lacks %q:\n%s", tc.want, out)
			}
		})
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	want := "GV-SKIP vlan TestMissingChild: no such thing in this kernel\n"
	if string(b) != want+want {
		t.Errorf("skip log:\n%s\nwant two lines %q (one per skip, none for failures)", b, want)
	}
}
