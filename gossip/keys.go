package gossip

import (
	"errors"
	"fmt"
)

// Key rotation on a live cluster (memberlist's keyring: messages are
// sealed with the primary key and opened with any installed key):
//
//  1. InstallKey(new) on every member: all still send with the old key,
//     and every member can now open the new one.
//  2. UseKey(new) on every member: each starts sending with the new key,
//     which every member can already open.
//  3. RemoveKey(old) on every member, once all of them use the new key.
//
// At no step does a member send with a key another member cannot open, so
// the cluster never partitions. With restarts instead (GOSSIP_KEY set to
// "old,new", then "new,old", then "new", one host at a time) the steps are
// the same.

// errNoKeyring is returned by the key methods of a cluster started without
// keys: memberlist only encrypts when it starts with a key.
var errNoKeyring = errors.New("this cluster runs without GOSSIP_KEY: set a key and restart to encrypt gossip")

// InstallKey adds key to the keyring as a secondary key: messages sealed
// with it are accepted from now on; this node still sends with its primary
// key. Installing an installed key is a no-op.
func (c *Cluster) InstallKey(key []byte) error {
	if c.keyring == nil {
		return fmt.Errorf("install key: %w: %w", errNoKeyring, ErrInvalidKey)
	}
	if err := c.keyring.AddKey(key); err != nil {
		return fmt.Errorf("install key of %d bytes (want 16, 24 or 32): %w: %w", len(key), err, ErrInvalidKey)
	}
	c.log.WithField("keys", len(c.keyring.GetKeys())).Info("installed a gossip key")
	return nil
}

// UseKey makes an installed key the primary key, which this node sends
// with from now on. Install it on every member first.
func (c *Cluster) UseKey(key []byte) error {
	if c.keyring == nil {
		return fmt.Errorf("use key: %w: %w", errNoKeyring, ErrInvalidKey)
	}
	if err := c.keyring.UseKey(key); err != nil {
		return fmt.Errorf("use key: %w (install it first with InstallKey): %w", err, ErrInvalidKey)
	}
	c.log.Info("switched to another primary gossip key")
	return nil
}

// RemoveKey removes a secondary key: messages sealed with it are refused
// from now on. The primary key cannot be removed: UseKey another first.
func (c *Cluster) RemoveKey(key []byte) error {
	if c.keyring == nil {
		return fmt.Errorf("remove key: %w: %w", errNoKeyring, ErrInvalidKey)
	}
	if err := c.keyring.RemoveKey(key); err != nil {
		return fmt.Errorf("remove key: %w (make another key primary first with UseKey): %w", err, ErrInvalidKey)
	}
	c.log.WithField("keys", len(c.keyring.GetKeys())).Info("removed a gossip key")
	return nil
}

// KeyCount is how many keys the keyring holds (0 without encryption).
func (c *Cluster) KeyCount() int {
	if c.keyring == nil {
		return 0
	}
	return len(c.keyring.GetKeys())
}
