// Package gossip owns grapevine's view of the other hosts: the memberlist
// cluster (who is there, at which address, with which VTEP) and a small
// replicated state store that carries records such as address blocks,
// networks and endpoints from host to host.
//
// # Membership
//
// A Cluster wraps one hashicorp/memberlist instance. New validates the
// configuration and loads persisted records; Start creates the memberlist and
// joins PEERS in the background, retrying forever with a capped backoff, so a
// plugin can serve Docker before any peer answers. Joined reports whether this
// host has reached at least one other host (or has no PEERS to reach).
// With a GOSSIP_KEY every packet and stream is encrypted and authenticated,
// and unencrypted or foreign-key traffic is refused.
//
// # Keys
//
// Config.Keys is a memberlist keyring: messages are sealed with the
// primary key (the first) and opened with any key. Keys rotate on a live
// cluster without a partition in three steps, each done on every member
// before the next begins: InstallKey(new); UseKey(new); RemoveKey(old). At
// no step does a member send with a key another cannot open. Restarting
// hosts one at a time with GOSSIP_KEY "old,new", then "new,old", then
// "new" follows the same steps.
//
// # Replicated records
//
// A Record is (Kind, Key) → Value with an Owner (the node that wrote it) and
// a Version taken from a Lamport clock. Every node keeps the record that is
// newest by (Version, Owner, Deleted, Value), so all nodes pick the same
// winner whatever the order in which copies arrive. Values are opaque bytes:
// gossip never decodes them; their consumer (ipam, driver) does.
//
// Records spread three ways:
//
//   - Fast path: every local write is also sent at once, one UDP packet
//     each, to every other alive member of a small cluster, or to
//     Config.FanOut random members of a large one (see FanOut for the
//     bandwidth trade-off). A receiver treats it like a broadcast.
//   - Broadcasts: every local write, and every record newly learnt from a
//     broadcast, is queued in a memberlist TransmitLimitedQueue and
//     piggy-backed on gossip packets (one record per UDP message, hence
//     MaxRecordBytes).
//   - Anti-entropy: on every memberlist push/pull (TCP) each side sends a
//     window of its records of at most Config.PushPullBudget bytes; the
//     window rotates through the whole state, so even a state much larger
//     than one message converges after enough exchanges, and a late joiner
//     receives everything.
//
// # Partitions
//
// memberlist forgets a dead member after Config.GossipToTheDeadTime, so two
// groups of hosts split for longer would never merge again. Every
// Config.RejoinInterval a rejoin round contacts (memberlist Join: one TCP
// push/pull) up to three addresses among PEERS and the failed members this
// host remembers (at most 1024) that are not alive now; hosts that left
// gracefully are not contacted. When a member comes back alive, every
// member of a small cluster (about eight of a large one) push/pulls with it
// at once, as many consecutive exchanges as its state has PushPullBudget
// windows (at most four), rate-limited to a burst of eight and then one per
// second; a host that has just joined also push/pulls with a random member
// shortly after. Records written on either side of a partition thus cross
// within a rejoin round and a few round trips of its healing, instead of
// waiting for the periodic push/pull; larger states (more than four
// windows) complete through periodic push/pulls, one window per exchange.
//
// Deleting writes a tombstone. Tombstones are gossiped like records for
// Config.TombstoneTTL and then reaped into a "floor": a local, un-gossiped
// (kind, key, version) marker kept for Config.FloorTTL. A floor rejects any
// copy of the key that is not newer than the deletion, so a peer that slept
// through the deletion cannot resurrect the record; when such a stale copy
// arrives the node re-announces the tombstone so the stale peer drops it too.
// Only a peer that was away for longer than FloorTTL can bring a deleted
// record back; FloorTTL must therefore exceed the longest absence after which
// a host is expected to come back with its old state (default 7 days).
//
// Records and the Lamport clock persist in the bbolt bucket "gossip", so a
// restarted node keeps its own records and never reuses a version. Own
// writes are persisted first: Put and Delete fsync the record (and the
// clock) before it is in memory, where subscribers and push/pull see it,
// before it is queued for gossip or sent by the fast path, and before they
// return; a write that fails to persist is not made at all. So no host
// learns of a write that its writer could forget by crashing.
//
// # Trust
//
// Every member holds the key, but any member may be buggy or compromised,
// so nothing a peer sends (and nothing read back from the DB) is trusted
// as is. A received record passes these checks before it is stored,
// relayed or handed to subscribers, in this order:
//
//   - Shape: a kind of 1-64 bytes, a key of 1-256, an owner shaped like a
//     node name (letters, digits, '.', '_', '-'; at most 128 bytes), no
//     value on a tombstone, at most MaxRecordBytes encoded. Undecodable
//     messages are dropped whole.
//   - Clock: a version more than MaxClockAhead (2^32) beyond the local
//     Lamport clock, or beyond MaxVersion (2^62), is refused and does not
//     move the clock; the clock stops at MaxVersion (writes then fail with
//     ErrClockExhausted) and never wraps. See MaxClockAhead for the choice
//     of bound. The persisted clock and records are checked the same way
//     on load: a poisoned clock is replaced by the top of the stored
//     versions that follow each other by at most MaxClockAhead, and records
//     beyond it are dropped.
//   - Consumers' validators (RegisterValidator), for records newer than
//     the local copy. A consumer declares a kind owner-keyed with
//     OwnerKeyed, OwnerSuffix, OwnerPrefix or OwnerIsKey: its keys carry
//     the writer's name, and a record or tombstone of a key not in its
//     writer's name is refused, so a host writes and deletes only its own.
//     Other validators check values (addresses, owners of blocks, quorum
//     evidence) against the consumer's own state.
//   - Writer caps: Config.MaxRecordsPerWriter records and MaxBytesPerWriter
//     bytes (live records and tombstones) per owner; own writes past them
//     fail with ErrWriterCap.
//   - Own name: memberlist does not say who sent a message, so the owner
//     inside the (authenticated) record is the only writer identity, and a
//     key holder can write records naming another member. Other members
//     cannot tell; the member named can: with a DB it holds everything it
//     wrote, so it refuses a newer record in its name and overrides it
//     everywhere with a newer write of its own (its live record again, or
//     a tombstone), at most once per key every 5 s.
//
// Each refusal is counted by writer and cause (RefusalStats, Stats.Refused)
// and logged with the writer's name as field "peer", once per writer and
// cause and then at most every 10 minutes with the count since, so a
// flooding peer cannot flood the log.
//
// Consumers learn about changes through Subscribe and OnNodeEvent. Callbacks
// run on a delivery queue's worker goroutine, never on memberlist's
// goroutines. One queue's callbacks run one at a time, in the order the
// record changes and node events happened; a consumer that must not wait
// behind another's slow callbacks (IPAM's Paxos answers and donations
// behind the driver's kernel work) asks for a queue of its own with
// Consumer, and then has no order with respect to the other queues.
package gossip
