package plugin

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTunnelKeyFile: the key is made once (0600) and read back the same;
// a damaged, all-zero or world-readable file is refused with the fix.
func TestTunnelKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, tunnelKeyFile)
	k1, err := loadTunnelKey(dir)
	if err != nil || k1.IsZero() {
		t.Fatalf("first start: %v, %v", k1, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v; want mode 0600", fi, err)
	}
	if k2, err := loadTunnelKey(dir); err != nil || k2 != k1 {
		t.Fatalf("second start: another key or %v", err)
	}
	if publicKey(k1) == k1 || publicKey(k1).IsZero() {
		t.Error("public key is not derived")
	}
	bad := []struct {
		name, content string
		mode          os.FileMode
		want          string
	}{
		{"damaged", "not base64\n", 0o600, "damaged"},
		{"short", "c2hvcnQ=\n", 0o600, "damaged"},
		{"zero", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n", 0o600, "all zero"},
		{"readable by others", "", 0o644, "chmod 600"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			d := t.TempDir()
			p := filepath.Join(d, tunnelKeyFile)
			content := tc.content
			if content == "" {
				b, _ := os.ReadFile(path)
				content = string(b)
			}
			if err := os.WriteFile(p, []byte(content), tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, tc.mode); err != nil {
				t.Fatal(err)
			}
			_, err := loadTunnelKey(d)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
				t.Fatalf("loadTunnelKey = %v; want an error naming %s and %q", err, p, tc.want)
			}
		})
	}
}
