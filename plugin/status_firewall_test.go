package plugin

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"grapevine/driver"
)

// TestPrintStatusFirewall: the published ports (which `docker port` cannot
// show for a remote driver) and the VXLAN ingress filter are printed.
func TestPrintStatusFirewall(t *testing.T) {
	st := Status{
		Schema:       StatusSchema,
		Host:         "h1",
		VXLANIngress: &driver.VXLANIngressStatus{Port: 4789, Peers: []string{"198.18.0.12", "198.18.0.13"}, Dropped: 7},
		Ports: []driver.PublishedPort{{Network: "0123456789ab", Endpoint: "ba9876543210", Proto: "tcp",
			HostIP: "127.0.0.1", HostPort: 8080, ContainerIP: "198.19.20.5", ContainerPort: 80}},
	}
	raw, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := PrintStatus(&out, raw); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"udp/4789 accepted from 2 member VTEP(s) 198.18.0.12,198.18.0.13; 7 frame(s) from elsewhere dropped",
		"PUBLISHED PORTS", "127.0.0.1:8080", "198.19.20.5:80", "ba9876543210",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, out.String())
		}
	}
}
