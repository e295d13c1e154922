package driver

import (
	"encoding/json"
	"net/netip"
	"testing"

	"grapevine/gossip/gossiptest"
)

// What other hosts publish, written through a gossiptest.FakeCluster.

// remoteEndpoint publishes an endpoint of host node.
func remoteEndpoint(t *testing.T, c *gossiptest.FakeCluster, node, subnet, ip, mac string) {
	t.Helper()
	v, err := json.Marshal(endpointDef{Version: 1, MAC: mac, Node: node})
	if err != nil {
		t.Fatal(err)
	}
	c.RemotePut(node, kindEndpoint, endpointKey(netip.MustParsePrefix(subnet), netip.MustParseAddr(ip)), v)
}

// remoteNetwork publishes host node's definition of subnet.
func remoteNetwork(t *testing.T, c *gossiptest.FakeCluster, node, subnet string, def networkDef) {
	t.Helper()
	v, err := json.Marshal(def)
	if err != nil {
		t.Fatal(err)
	}
	c.RemotePut(node, kindNetwork, networkKey(netip.MustParsePrefix(subnet), node), v)
}
