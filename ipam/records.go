package ipam

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	"grapevine/gossip"
)

// Record kinds IPAM writes to the replicated state (see doc.go). Every record
// has a single writer: the node named at the end of its key, except block
// records, which only the block's current owner writes (and, once, a reclaim
// decided by a majority).
const (
	kindHost  = "ipam-host"  // key <node>: this node takes part in IPAM (known hosts)
	kindPool  = "ipam-pool"  // key <subnet>/<node>: the node's definition of the pool
	kindBlock = "ipam-block" // key <subnet>/<first address>: last address and owner
	kindWant  = "ipam-want"  // key <subnet>/<node>: the node asks a donor for space
	kindProp  = "ipam-prop"  // key <instance>/<node>: the node's current Paxos proposal
	kindAcc   = "ipam-acc"   // key <instance>/<node>: the node's Paxos acceptor state
)

const recordVersion = 1

// hostRec marks a node as a member of the IPAM cluster, for quorum sizes.
type hostRec struct {
	Version int `json:"version"`
}

// poolDef is one node's definition of a pool (local address space).
type poolDef struct {
	Version int    `json:"version"`
	Range   string `json:"range,omitempty"`   // --ip-range, "" for the whole subnet
	Gateway string `json:"gateway,omitempty"` // "" until the gateway is requested
	Spare   int    `json:"spare"`             // addresses the node could donate now
	// Aux is the node's --aux-address list, sorted; null when the node
	// does not know it (a pool stored by an older grapevine).
	Aux []string `json:"aux"`
	// Served: the node has handed an address to an endpoint, so Docker
	// finished creating the network there and Aux is complete.
	Served bool `json:"served,omitempty"`
}

// blockRec is the owner of one block of a pool.
type blockRec struct {
	Version int    `json:"version"`
	Last    string `json:"last"`
	Owner   string `json:"owner"`
	// Reclaimed marks space taken from a dead host: handed out last.
	Reclaimed bool `json:"reclaimed,omitempty"`
}

// wantRec asks Donor for space inside Range of a pool.
type wantRec struct {
	Version int    `json:"version"`
	Donor   string `json:"donor"`
	Range   string `json:"range"` // the asker's allocation range (a prefix)
	Seq     uint64 `json:"seq"`
}

func encodeRec(v any) []byte {
	b, _ := json.Marshal(v) // plain structs of strings and numbers
	return b
}

func decodeRec(r gossip.Record, v any) error {
	if err := json.Unmarshal(r.Value, v); err != nil {
		return fmt.Errorf("record %s/%s from %s: %w", r.Kind, r.Key, r.Owner, err)
	}
	return nil
}

// splitKey splits "<prefix>/<last>" at the last slash (node names and
// addresses contain none).
func splitKey(key string) (prefix, last string, ok bool) {
	i := strings.LastIndexByte(key, '/')
	if i <= 0 || i == len(key)-1 {
		return "", "", false
	}
	return key[:i], key[i+1:], true
}

// subnetKey is the cluster-wide identity of a local-space pool: its subnet.
func subnetKey(p netip.Prefix) string { return p.String() }

// blockView is one block of a pool as the replicated state describes it.
type blockView struct {
	span
	owner     string
	key       string // record key; "" when the block exists only in the decision
	writer    string // node that wrote the record ("" for decision blocks)
	reclaimed bool
}
