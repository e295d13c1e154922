package plugin

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// Release is grapevine's version, published to peers in the node metadata.
const Release = "0.1.0"

var (
	bucketPlugin = []byte("plugin")
	keyNodeName  = []byte("node-name")
)

// nodeName returns this host's name in the cluster, chosen once and then
// persisted: the hostname plus a random suffix, so that two hosts with the same
// hostname (cloned machines) never collide, and a renamed host keeps the name
// its records are owned by.
func nodeName(db *bolt.DB) (string, error) {
	var name string
	err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketPlugin)
		if err != nil {
			return err
		}
		if v := b.Get(keyNodeName); len(v) > 0 {
			name = string(v)
			return nil
		}
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "host"
		}
		host = strings.SplitN(host, ".", 2)[0]
		var suffix [3]byte
		if _, err := rand.Read(suffix[:]); err != nil {
			return fmt.Errorf("choosing a node name: %w", err)
		}
		name = host + "-" + hex.EncodeToString(suffix[:])
		return b.Put(keyNodeName, []byte(name))
	})
	if err != nil {
		return "", fmt.Errorf("loading this host's node name: %w", err)
	}
	return name, nil
}
