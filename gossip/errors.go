package gossip

import "errors"

// Errors returned by this package. Test for them with errors.Is; the
// returned errors wrap them with the offending input.
var (
	// ErrInvalidConfig wraps every configuration problem found by New.
	ErrInvalidConfig = errors.New("invalid gossip configuration")

	// ErrInvalidKey is returned by InstallKey, UseKey and RemoveKey for a
	// key they cannot use.
	ErrInvalidKey = errors.New("invalid gossip key")

	// ErrInvalidRecord is returned by Put and Delete for an empty or
	// oversized kind or key.
	ErrInvalidRecord = errors.New("invalid record")

	// ErrRecordTooLarge is returned by Put when the encoded record would
	// not fit in one gossip UDP message (see MaxRecordBytes).
	ErrRecordTooLarge = errors.New("record too large for one gossip message")

	// ErrNotOwner is wrapped by the validators OwnerKeyed builds: the key
	// of an owner-keyed kind is not in its writer's name.
	ErrNotOwner = errors.New("key not in the writer's name")

	// ErrWriterCap is returned by Put and Delete when this node already
	// holds Config.MaxRecordsPerWriter records or MaxBytesPerWriter bytes
	// of its own (peers would refuse more).
	ErrWriterCap = errors.New("per-writer record cap reached")

	// ErrClockExhausted is returned by Put and Delete once the Lamport
	// clock has reached MaxVersion (it never wraps).
	ErrClockExhausted = errors.New("lamport clock exhausted")

	// ErrClosed is returned by operations on a Cluster after Shutdown.
	ErrClosed = errors.New("gossip cluster is shut down")

	// errMalformed marks an undecodable message from a peer; it is logged,
	// never returned to callers.
	errMalformed = errors.New("malformed gossip message")
)
