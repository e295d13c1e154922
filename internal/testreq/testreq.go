// Package testreq decides, in one place, what a test does when the machine
// lacks a kernel feature it exercises: skip, or fail.
//
// A skipped feature test passes silently in `go test`, so a kernel without
// 802.1q, IPVS or WireGuard would hide whole features. Tests therefore never
// call t.Skip for a missing feature themselves; they call Missing, which
//
//   - fails the test when the environment variable GV_REQUIRE (a comma
//     list, e.g. GV_REQUIRE=vlan,ipvs,wireguard) names the feature: set it
//     on machines that have the feature, so that losing it is a failure;
//   - otherwise skips the test with a line starting with SkipPrefix, and
//     appends the same line to the file named by GV_SKIP_LOG (if set), from
//     which `make test` prints a summary of everything skipped.
//
// A name in GV_REQUIRE that is not one of the features below fails every
// test that calls Missing, so a typo cannot turn the switch off.
package testreq

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

// The features a test may find missing, as named in GV_REQUIRE.
const (
	VLAN      = "vlan"      // 802.1q VLAN links (CONFIG_VLAN_8021Q)
	IPVS      = "ipvs"      // IP virtual server, used by Docker for Swarm VIPs (CONFIG_IP_VS)
	WireGuard = "wireguard" // WireGuard links (CONFIG_WIREGUARD)
)

// Environment variables read by Missing.
const (
	RequireEnv = "GV_REQUIRE"
	SkipLogEnv = "GV_SKIP_LOG"
)

// SkipPrefix starts every skip line Missing writes, in the test output and in
// the GV_SKIP_LOG file.
const SkipPrefix = "GV-SKIP"

var known = []string{VLAN, IPVS, WireGuard}

// Missing reports that this machine lacks feature; reason says how the test
// found out (the refusal or probe it saw). It fails t if GV_REQUIRE names the
// feature and skips t otherwise. It does not return.
func Missing(t testing.TB, feature, reason string) {
	t.Helper()
	required, err := Required(os.Getenv(RequireEnv))
	if err != nil {
		t.Fatalf("%s: %v", RequireEnv, err)
	}
	if !slices.Contains(known, feature) {
		t.Fatalf("testreq.Missing: unknown feature %q (known: %s)", feature, strings.Join(known, ","))
	}
	if slices.Contains(required, feature) {
		t.Fatalf("%s=%s requires %s, but this machine lacks it: %s", RequireEnv, os.Getenv(RequireEnv), feature, reason)
	}
	line := fmt.Sprintf("%s %s %s: %s", SkipPrefix, feature, t.Name(), oneLine(reason))
	if path := os.Getenv(SkipLogEnv); path != "" {
		if err := appendLine(path, line); err != nil {
			t.Errorf("recording the skip in %s=%s: %v", SkipLogEnv, path, err)
		}
	}
	t.Skip(line)
}

// Required parses a GV_REQUIRE value: comma-separated feature names, blanks
// ignored. An unknown name is an error naming the known ones.
func Required(v string) ([]string, error) {
	var out []string
	for _, f := range strings.Split(v, ",") {
		f = strings.ToLower(strings.TrimSpace(f))
		if f == "" {
			continue
		}
		if !slices.Contains(known, f) {
			return nil, fmt.Errorf("unknown feature %q in %q: use a comma list of %s", f, v, strings.Join(known, ","))
		}
		out = append(out, f)
	}
	return out, nil
}

// appendLine appends line to the file at path. One write of a short line
// with O_APPEND, so test binaries running in parallel do not interleave.
func appendLine(path, line string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	if _, err := f.WriteString(line + "\n"); err != nil {
		_ = f.Close() // the write error is the one to report
		return fmt.Errorf("write: %w", err)
	}
	return f.Close()
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
