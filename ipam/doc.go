// Package ipam is grapevine's remote IPAM driver: it owns address pools (the
// subnets of networks), the per-host blocks of each pool this host may allocate
// from, the gateway reservation and every address handed to an endpoint. It
// never touches the kernel. Every decision is written to the bbolt bucket
// "ipam" before the call that made it returns, and New restores it all.
//
// Methods follow github.com/docker/go-plugins-helpers/ipam and are safe for
// concurrent use. Errors are written for operators (Docker shows them as
// "remote: …") and carry a kind that errors.Is matches: ErrInvalid,
// ErrUnsupported, ErrConflict, ErrExhausted, ErrUnknownPool, ErrNotOwned.
//
// # Cluster mode
//
// With Config.Cluster set, a pool of the local address space is cluster-wide:
// its identity is its subnet. Hosts agree on its definition and divide it
// into blocks; each host allocates only from blocks it owns. Records (kind,
// key → value; every kind has one writer per key):
//
//	ipam-host  <node>                  this node takes part (counts towards quorums)
//	ipam-pool  <subnet>/<node>         the node's --ip-range, gateway, aux list, spare space
//	ipam-block <subnet>/<first>        last address, owner: written by the owner only
//	ipam-want  <subnet>/<node>         the node asks one donor for space
//	ipam-prop  <instance>/<node>       the node's Paxos proposal
//	ipam-acc   <instance>/<node>       the node's Paxos acceptor state
//
// Definition: another host's ipam-pool record with a different --ip-range or
// gateway makes RequestPool (or the gateway request) fail, naming that host.
// The gateway is the same on every host and reserved on every host, so it is
// never handed to a container whoever owns its block.
//
// Aux addresses: every host creates the network with the same
// --aux-address list, and Docker reserves each one through RequestAddress
// at creation. They are reserved on every host that asks, whatever block
// they lie in (no agreement needed), and so never handed out by their
// block's owner; Docker releases them with the pool. Docker 20.10 sends
// three kinds of RequestAddress (libnetwork network.go
// ipamAllocateVersion, endpoint.go assignAddressVersion): the gateway
// (RequestAddressType option), aux addresses (nil options) and endpoints
// (the endpoint's options). Because GetCapabilities answers
// RequiresMACAddress, libnetwork adds the endpoint's MAC
// (com.docker.network.endpoint.macaddress) to every endpoint request, so a
// specific address without it is an aux address; one with it is a
// container's --ip and must lie in a block this host owns.
//
// Aux lists are compared (aux.go): each host publishes its list (stored
// with the pool, so a restart keeps it) and whether an endpoint has asked
// for an address there (then Docker finished creating the network, and the
// list is complete). A host refuses endpoint addresses while another host
// lists an aux address it lacks, and refuses an aux address that a host
// with a complete list lacks, naming the host and the address. A release
// of an aux address (Docker sends them only when removing the network) is
// not published: the list stays until the pool's record is withdrawn. A
// member can thus stop endpoint allocation on the others by listing an
// address they lack (loudly; uniqueness never depends on it).
//
// Host addresses (shim.go): a macvlan network with -o host_access and no
// --aux-address for this host gets its shim address from HostAddress,
// which the network driver calls while Docker creates the network. It is
// taken like a container's address (from this host's blocks, with
// donation), so rule 2 below keeps it unique; the pool stores it, answers
// repeats with it, ignores a ReleaseAddress of it and drops it with the
// pool. This relies on libnetwork's order (controller.go NewNetwork,
// network.go delete): the pool, gateway and aux addresses are requested
// before the driver's CreateNetwork, and the pool is released after
// DeleteNetwork and also when CreateNetwork fails, so a shim address is
// never left behind by a network that was refused.
//
// Space outside --ip-range: the initial division gives it to owners like
// the range (maximal aligned blocks, round-robin after the range's), and
// donations never move it. Dynamic allocation never uses it; it holds the
// gateway and aux addresses (reserved everywhere) and a container's --ip
// there is allowed, as inside the range, only on the host owning its block
// (grapevine status lists the owners; a lone host owns everything). Keeping
// it in blocks is what makes such an --ip safe: nothing else could tell two
// hosts apart that picked the same address.
//
// First ownership: the first address request of a subnet runs single-decree
// Paxos (instance "init/<subnet>") unless it is already decided. No PEERS:
// the only known host is this one, the quorum is 1 and it takes the whole
// range. PEERS set but none reached: the request fails and nothing is
// claimed. Otherwise a proposer writes prepare(b) and accept(b, v) into its
// ipam-prop record; every node answers by rewriting its own ipam-acc record
// (promise: promised=b; accept: accepted=b, value=v, only if b ≥ promised)
// on IPAM's own gossip delivery queue (never behind the driver's
// callbacks), one answer at a time. The quorum is a majority of every host
// the cluster knows (members, departed members, and every node that ever
// wrote an ipam-host record, less the hosts forgotten by agreement, below),
// never just the reachable ones. The
// value v is the range split into equal aligned power-of-two blocks (as
// small as one address) given round-robin to the hosts alive at proposal
// time. A node
// that learns the decision marks its acceptor record decided, so later
// proposers adopt it at once. To keep proposers from duelling, a host that
// is not the leader (the lowest-named reachable IPAM host) writes a
// "request" proposal carrying its value and waits for the leader to run the
// instance; it proposes itself only when it becomes the leader. Waits are
// bounded by AgreeTimeout.
//
// Locking: gossip writes go to the shared bbolt DB, and ipam's commits take
// the Driver's mutex inside their bbolt transaction, so records are never
// written with that mutex held; changes of ownership are serialised by a
// second mutex taken first.
//
// Donation: a host short of space (or under its low-water mark, so it asks
// before it runs dry) writes an ipam-want record naming the best donor: the
// reachable owner with the most published spare space, ties to the lowest
// name. The donor, and only it, drops half of its largest aligned free block
// (no allocated address, and one a container could get: not only the
// network, broadcast or gateway address) from its own allocator, splitting
// down to single addresses, or its last free address, then rewrites its
// block records: the pieces it keeps, then the piece it gives. So a host
// gets an address whenever any reachable owner has one free, whatever the
// range size and host count. A host without the network publishes no
// spare space; the others count all it owns in the range (less those three
// addresses) as spare, and it gives it all away on request, so it hoards
// nothing. A published "no spare space" may be older than the owner's last
// release or gain, so a host asks each such owner once before it gives up.
// If every other owner is reachable and has nothing free, the request fails
// at once saying the range is full; if nobody donates within DonateTimeout
// it fails naming every owner, whether it is reachable and its spare space.
//
// Reclaim: when no reachable owner has spare space, a host may propose
// "reclaim/<subnet>/<dead>/<n>" for an owner absent longer than
// ReclaimAfter. Acceptors promise and accept only if that host has been
// continuously absent for ReclaimAfter in their own view too. The decided
// beneficiary rewrites the dead host's blocks (the one exception to owner
// writes), marked reclaimed: they are allocated from only after never-used
// space. A host that returns keeps every block still naming it; a block
// rewritten by another host while it owned it is logged at error level and
// listed in Status().Lost, and it never allocates from it again.
//
// Forgetting a host: an operator removes hosts that are gone for good
// from the known set (Forget, `grapevine forget HOST…`), so that the
// quorums shrink: the only way a cluster that lost a majority of its
// hosts for good creates networks again. The known set changes only by
// decided instances "forget/1", "forget/2", … (value: the hosts F, and To,
// the proposer, which takes over their blocks), learned and applied in
// order, each counted in the set the ones before it left. A forget is
// chosen only when every known host outside F accepted it under one
// ballot (not a majority: see below), and each of them accepts only the
// next instance after those it learned, with To its proposer, and only
// if every host in F is known, is not itself, is not alive, and has been
// continuously absent for ForgetAfter in its own view; and only once it
// has learned the decision of every instance in which a host of F
// accepted a value (an undecided one refuses the forget, naming it), so
// no chosen value lives only in the acceptor state of hosts that leave.
// Then To rewrites the blocks of F in every decided pool, marked
// reclaimed, and the others accept those records as the beneficiary's of
// a forget they learned (ledger.go); forgotten hosts count in no quorum,
// are never leader and are never alive again; one that returns is logged
// at error level, gives no address (errSelfForgotten), is treated as dead
// by the network driver on the others (Driver.IsForgotten: its endpoints
// may hold addresses handed out again) and must rejoin under a new name
// (its state moved aside).
//
// Why every staying host, not a majority: a minority must be able to
// forget the rest (the point of the feature), so a majority of the old set
// cannot be required; a majority of the staying hosts would let two
// sides of a partition each forget a different host and both go on.
// Requiring every staying host means two forgets can both be chosen only
// if their staying sets are disjoint: each side forgets all of the other,
// which takes an operator on each side asserting that the other side is
// gone for good after ForgetAfter without contact. Nothing can tell that
// apart from death (a minority that can act alone is, by symmetry, a
// majority's equal), so it is the residual risk of forgetting, documented
// in docs/cluster.md. Safety otherwise: a value chosen before a forget by
// a majority Q of the old set either has a host of F in Q (then every
// staying host learned it before accepting the forget) or lies wholly in
// the staying set, of which it is then a majority too; so every later
// quorum meets a host that holds it.
//
// Hosts are never forgotten automatically, however long they are absent:
// reclaim already returns their space (with a majority), so automatic
// forgetting would only act where a majority is gone, which is exactly
// where the survivors cannot tell death from a long partition; there the
// decision needs an operator who knows the machines are gone.
//
// The global address space is exempt from all of this: with Swarm's global
// scope the manager chooses addresses (and a manager that is also a worker
// repeats requests), so those pools stay per host and unchecked. With
// Config.SwarmAllocates (the plugin's SCOPE=global, where every network is
// a Swarm network) the local space is exempt too: each worker asks its
// local space for the same pool and for exactly the addresses the manager
// chose, in whatever block; such pools are owned whole, never divided or
// published, repeats are idempotent, and a local request without an
// address is refused (only the manager may choose).
//
// # Records from other hosts
//
// Any member may write any key, and the newest version wins on every host,
// so a buggy or hostile member can replace an honest record. IPAM therefore
// trusts no record for what it says alone:
//
//   - Decisions: a value is decided for this host only when it learned it
//     itself (its own acceptor state, stored in bucket ipam/paxos before
//     its record is written) or when a majority of every known host
//     accepted that value under one ballot. One acceptor record marked
//     decided is no evidence. A decided acceptor still promises and
//     re-accepts its own value, so a proposer on a host that joined later
//     confirms the value under a higher ballot. Ballots of 2^62 or more are
//     ignored, so the next ballot never wraps.
//   - Blocks: each host keeps a ledger per pool (bucket ipam/ledgers): the
//     decided first division, changed only by block records whose writer
//     owns every address they cover in the ledger and that are newer than
//     the entries they change (a donor's keep and give pieces, the
//     recipient's later writes: the transfer chain), or by the beneficiary
//     of a decided reclaim rewriting the dead host's blocks. Records are
//     applied oldest first and retried when out of order; any other record
//     (another host's block, an overlap, a donation its owner never made)
//     is refused, logged once with the writer's name and counted (Refused).
//     A host builds its first ledger of a pool from the records as they are
//     (it has nothing to check them against): see residual risks below.
//   - Persist first: acceptor state is stored before it is published, and a
//     donor stores its pool without the donated block before it writes the
//     block records.
//   - Damaged promises: stored acceptor state that does not decode, or that
//     this host's own answers could not have produced, is never read as "no
//     promise". The host refuses to start, naming the key and the fix (move
//     the state directory aside and rejoin under a new name; a restored
//     backup may hold an older promise); state damaged while running makes
//     it answer and learn nothing for that instance, logged at error level.
//
// # Safety argument
//
//  1. A block changes owner only by a record its owner in the ledger wrote
//     (or a decided reclaim); LWW by Lamport version orders one writer's
//     writes, and the ledger remembers each accepted transfer, so a record
//     replaced under the same key (by its owner's later write or by a
//     forgery) changes no host's view, and no host ever sees a stale record
//     naming itself as owner of a range it gave away (its own newer write
//     wins).
//  2. A host allocates only inside ranges its own store says it owns, and
//     gives a range away only after removing it from its allocator under the
//     same lock, when no address in it is allocated: a range has at most one
//     allocating host at any moment, partition or not. Nothing here depends
//     on block sizes: a single address changes hands by the same records
//     and the same lock, and a partition during a donation leaves the range
//     with its donor (records not yet seen) or its recipient (records seen),
//     never both, since the donor dropped it before writing them.
//  3. The first division is a Paxos decision with quorums of a majority of
//     all known hosts; two sides of a partition cannot both reach one, so at
//     most one division is ever chosen and all hosts derive the same blocks.
//     A host counts a value as chosen only on a majority's acceptances of
//     one ballot (or its own learning, which required them), so one
//     member's word cannot choose a division; its promises are durable
//     before anyone can count them.
//  4. Hence no address is handed to two endpoints, and after a partition
//     heals the records merge without conflict: each block has one writer.
//  5. Reclaim breaks rule 1 once, only with a majority that has not seen the
//     owner for ReclaimAfter; addresses in reclaimed blocks are reused last.
//     A forget breaks it the same way, with every staying host's agreement
//     (see "Forgetting a host" for its argument and its residual risk).
//     Residual risks (documented, not prevented): a "dead" host that in fact
//     kept running in a minority partition for longer than ReclaimAfter may
//     still have containers there, and a host set that grows between two
//     proposals of one instance by hosts that never synced the decided
//     records could form a disjoint majority (joining through any host syncs
//     all records first, so this needs a partition during the join).
//     A host that builds its first ledger of a pool trusts the block records
//     present at that moment (forgeries written before it ever saw the pool
//     included); and a host that missed a donation whose record the
//     recipient has since overwritten (it was away through both) refuses
//     the recipient's later records and logs them: its view of those blocks
//     stays behind, and space given to it along that chain is not used (a
//     host allocates only from what its ledger gives it, so this costs
//     space, never uniqueness). Paxos is
//     not Byzantine-tolerant: a member lying in its own acceptor record
//     counts as one faulty acceptor.
package ipam
