//go:build e2e

package e2e

import (
	"strings"
	"testing"
)

func TestMTU(t *testing.T) {
	singleHost(t)
	const h = "h1"
	checkClean(t, h)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"default is underlay minus 50", []string{"--subnet", "198.19.20.0/24"}, "1450"},
		{"driver mtu option", []string{"--subnet", "198.19.21.0/24", "-o", "com.docker.network.driver.mtu=1400"}, "1400"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name := "mtu" + string(rune('a'+i))
			createNetwork(t, h, name, tc.args...)
			c := runContainer(t, h, "--network", name, image, "sleep", "3600")
			got := strings.TrimSpace(mustDocker(t, h, "exec", c, "cat", "/sys/class/net/eth0/mtu"))
			if got != tc.want {
				t.Errorf("container eth0 mtu = %s, want %s", got, tc.want)
			}
		})
	}
}
