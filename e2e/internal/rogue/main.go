// Command rogue is a hostile cluster member for the end-to-end tests: it
// joins with the cluster's own GOSSIP_KEY, built from grapevine's gossip
// package, and writes records in its own name that the other hosts must
// refuse where they use them:
//
//   - an endpoint record for the network's gateway address,
//   - an endpoint record with MAC 00:00:00:00:00:00,
//   - a block record giving itself a block another host owns.
//
// It prints "forged <kind> <key>" for each, then "ready", and stays a member
// until SIGTERM or SIGINT, when it withdraws its endpoint records and leaves.
// The record encodings are the driver's and IPAM's (unexported there),
// written out here by their JSON field names.
package main

import (
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"grapevine/gossip"
)

// Record kinds, as driver/cluster.go and ipam/records.go name them.
const (
	kindEndpoint = "endpoint"   // key <subnet>/<ip>
	kindBlock    = "ipam-block" // key <subnet>/<first address>
)

type endpointDef struct {
	Version int    `json:"version"`
	MAC     string `json:"mac"`
	Node    string `json:"node"`
}

type blockRec struct {
	Version int    `json:"version"`
	Last    string `json:"last"`
	Owner   string `json:"owner"`
}

type options struct {
	name, addr, key, subnet, gateway, zeroIP, victim string
	port                                             int
	peers                                            []string
	timeout                                          time.Duration
}

func main() {
	var o options
	var peers string
	flag.StringVar(&o.name, "name", "rogue-1", "node name")
	flag.StringVar(&o.addr, "addr", "", "underlay address to bind and advertise (the VTEP)")
	flag.StringVar(&peers, "peers", "", "comma-separated PEERS")
	flag.StringVar(&o.key, "key", "", "GOSSIP_KEY (base64)")
	flag.IntVar(&o.port, "port", 7947, "gossip port (GOSSIP_PORT of the cluster)")
	flag.StringVar(&o.subnet, "subnet", "", "the network's subnet")
	flag.StringVar(&o.gateway, "gateway", "", "the network's gateway address")
	flag.StringVar(&o.zeroIP, "zero-ip", "", "address to announce with MAC 00:00:00:00:00:00")
	flag.StringVar(&o.victim, "victim", "", "host name (node name prefix) whose block to claim")
	flag.DurationVar(&o.timeout, "timeout", 30*time.Second, "how long to wait for the join and the victim's block")
	flag.Parse()
	o.peers = strings.Split(peers, ",")
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "rogue:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(o.key))
	if err != nil {
		return fmt.Errorf("-key: %w", err)
	}
	addr, err := netip.ParseAddr(o.addr)
	if err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	subnet, err := netip.ParsePrefix(o.subnet)
	if err != nil {
		return fmt.Errorf("-subnet: %w", err)
	}
	c, err := gossip.New(gossip.Config{
		NodeName: o.name, BindAddr: addr.String(), AdvertiseAddr: addr, Port: o.port,
		Peers: o.peers, Keys: [][]byte{key},
	})
	if err != nil {
		return fmt.Errorf("gossip config: %w", err)
	}
	if err := c.Start(); err != nil {
		return fmt.Errorf("gossip start: %w", err)
	}
	leave := true
	defer func() {
		if !leave {
			return
		}
		if err := c.Shutdown(); err != nil {
			fmt.Fprintln(os.Stderr, "rogue: leaving the cluster:", err)
		}
	}()
	victimKey, victimLast, err := waitVictimBlock(c, subnet, o.victim, o.timeout)
	if err != nil {
		return err
	}
	eps, err := forge(c, o, subnet, victimKey, victimLast)
	if err != nil {
		return err
	}
	fmt.Println("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	for _, k := range eps {
		if err := c.Delete(kindEndpoint, k); err != nil {
			fmt.Fprintln(os.Stderr, "rogue: withdrawing", k, err)
		}
	}
	time.Sleep(time.Second) // let the withdrawals reach the others
	// Vanish without a leave, as a crashed or hostile member does: the
	// others find it dead and drop its VTEP at once, where a graceful
	// leave would keep it accepted for the left-member grace period.
	leave = false
	return nil
}

// waitVictimBlock waits until the joined cluster shows a block of subnet
// owned by a node of host victim, and returns its key and last address.
func waitVictimBlock(c *gossip.Cluster, subnet netip.Prefix, victim string, timeout time.Duration) (string, string, error) {
	deadline := time.Now().Add(timeout)
	for ; time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if !c.Joined() {
			continue
		}
		for _, r := range c.List(kindBlock) {
			var b blockRec
			if r.Deleted || !strings.HasPrefix(r.Key, subnet.String()+"/") || json.Unmarshal(r.Value, &b) != nil {
				continue
			}
			if strings.HasPrefix(b.Owner, victim+"-") {
				return r.Key, b.Last, nil
			}
		}
	}
	return "", "", fmt.Errorf("no block of %s owned by %s after %v (joined %v)", subnet, victim, timeout, c.Joined())
}

// forge writes the three forged records and returns the endpoint keys.
func forge(c *gossip.Cluster, o options, subnet netip.Prefix, blockKey, blockLast string) ([]string, error) {
	eps := map[string]endpointDef{
		subnet.String() + "/" + o.gateway: {Version: 1, MAC: "02:42:c6:13:25:99", Node: o.name},
		subnet.String() + "/" + o.zeroIP:  {Version: 1, MAC: "00:00:00:00:00:00", Node: o.name},
	}
	var keys []string
	for k, v := range eps {
		if err := put(c, kindEndpoint, k, v); err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	if err := put(c, kindBlock, blockKey, blockRec{Version: 1, Last: blockLast, Owner: o.name}); err != nil {
		return nil, err
	}
	return keys, nil
}

func put(c *gossip.Cluster, kind, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding %s %s: %w", kind, key, err)
	}
	if err := c.Put(kind, key, b); err != nil {
		return fmt.Errorf("put %s %s: %w", kind, key, err)
	}
	fmt.Printf("forged %s %s %s\n", kind, key, b)
	return nil
}
