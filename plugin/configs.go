package plugin

import (
	"github.com/sirupsen/logrus"
	bolt "go.etcd.io/bbolt"

	"grapevine/driver"
	"grapevine/driver/dataplane"
	"grapevine/gossip"
	gvipam "grapevine/ipam"
)

// The libraries' Configs are filled from Settings here, and only here: the
// settings are checked by ParseSettings, and the libraries refuse none of
// what it accepts (a test holds them to it).

// gossipConfig is this host's gossip membership as the settings describe
// it; the caller sets the addresses.
func gossipConfig(s Settings, node string, db *bolt.DB, log *logrus.Entry) gossip.Config {
	return gossip.Config{
		NodeName: node,
		Port:     s.GossipPort,
		Peers:    s.Peers,
		Keys:     s.GossipKeys,
		Meta:     gossip.NodeMeta{VXLANPort: s.VXLANPort, Release: Release},
		DB:       db,
		Log:      log,
	}
}

// ipamConfig is the IPAM driver's configuration. With SCOPE=global every
// network is a Swarm network whose addresses the manager chooses; workers
// accept them.
func ipamConfig(s Settings, db *bolt.DB, cluster gossip.Replicated, log *logrus.Entry) gvipam.Config {
	return gvipam.Config{
		DB:             db,
		DefaultPool:    s.Pool,
		Cluster:        cluster,
		SwarmAllocates: s.Scope == "global",
		ForgetAfter:    s.ForgetAfter,
		Log:            log,
	}
}

// driverConfig is the network driver's configuration.
func driverConfig(s Settings, db *bolt.DB, dp dataplane.Dataplane, underlay func() (dataplane.Underlay, error), cluster gossip.Replicated, log *logrus.Entry) driver.Config {
	return driver.Config{
		DB:            db,
		Dataplane:     dp,
		Underlay:      underlay,
		VXLANPort:     s.VXLANPort,
		Scope:         s.Scope,
		AddressSpaces: []string{gvipam.LocalAddressSpace, gvipam.GlobalAddressSpace},
		Cluster:       cluster,
		Log:           log,
	}
}
