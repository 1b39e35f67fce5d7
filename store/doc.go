// Package store is Outpost's durable queue on Badger: the device-to-cloud
// outbox, its dead letters, gap accounting, and the cloud-to-device inbox
// (command ledger), all in one Badger database under DATA_DIR/queue.
//
// # Acknowledgement contract
//
// A record is acknowledged to its producer when Append returns nil (or
// Submit's done is called with nil): by then the record is fsynced.
// Concurrent producers are group-committed: one writer goroutine gathers
// every request that arrived while the previous batch was syncing into one
// Badger transaction, written with SyncWrites (one sync per batch).
//
// The forwarder Leases the oldest records (High before Normal before Low,
// FIFO by sequence number inside a class), Acks them on upstream PUBACK,
// Releases them on failure (they keep their place at the front) and Rejects
// the ones that can never be delivered (they move to the dead letters).
// Leases live in memory only: after a restart every record not acked is
// leased again, with the same ID and Seq (at-least-once).
//
// # Layout
//
// Keys are one prefix byte and big-endian numbers, so iteration order is
// FIFO order:
//
//	'q' class seq    outbox record (class 0 High, 1 Normal, 2 Low)
//	'x' seq          dead letter (reason, time, record)
//	'm' "meta"       counters, next seq, per-class head, gap report (JSON)
//	'c' id           inbox command
//	'p' seq          inbox arrival index (pending commands)
//	'f' time id      inbox finished index (retention)
//
// Counters (depth, bytes, appends, drops, ...) live in the meta key, written
// in the same transaction as the change they count, so they are exact after
// a crash and reopening needs no scan. The in-memory per-class cursor means
// Lease never iterates over deleted keys (Badger's tombstones).
//
// Sub-packages: internal/layout builds and parses the keys and encodes
// the records and dead letters; internal/damage checks the files before
// Badger opens them, keeps the clean-close mark and quarantines;
// internal/inbox is the command ledger (Command is its type);
// internal/metrics names the Prometheus series.
package store
