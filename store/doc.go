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
// Keys are one prefix byte followed by big-endian numbers (and strings), so
// iteration order is FIFO order (codec.go and inbox.go build them):
//
//	'q' class seq              outbox record, parked ones too (class 0 High, 1 Normal, 2 Low)
//	'x' seq                    dead letter (time, reason, record)
//	'm' "meta"                 counters, next seq, per-class head, gap report (JSON)
//	'c' id                     inbox command (JSON)
//	'p' device 0x00 seq        inbox pending index: arrival order per device
//	'f' finished-ns id         inbox finished index, for the retention sweep
//	't' device                 device twin document (twin.go; its format is gateway/twins')
//
// Leased and parked are states kept in memory, not keys: a parked record
// stays under its 'q' key, and Park, LeaseParked and Release only move its
// reference between in-memory lists (see park.go). After a restart a record
// that was leased or parked is simply queued again.
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
