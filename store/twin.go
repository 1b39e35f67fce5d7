package store

import (
	"context"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/outpost-iot/outpost/gateway/msg"
)

// twinPrefix is the key prefix of device twin documents: 't' device.
const twinPrefix = 't'

// MaxTwinBytes bounds one twin document: two 32 KB sections counted as IoT
// Hub counts them take more as JSON, plus what the owner keeps beside
// them (patches not yet synced upstream, the last version a device saw).
const MaxTwinBytes = 1 << 20

func twinKey(device string) []byte {
	k := make([]byte, 0, 1+len(device))
	return append(append(k, twinPrefix), device...)
}

// PutTwin stores doc as device's twin document, replacing the one before,
// and returns after the sync. The store does not read doc: its owner
// (gateway/twins) decides the format. On a nearly full disk it fails with
// ErrFull and keeps the document before; a doc over MaxTwinBytes is
// ErrTooLarge.
func (q *Queue) PutTwin(ctx context.Context, device string, doc []byte) error {
	if err := msg.ValidDeviceID(device); err != nil {
		return fmt.Errorf("store: put twin: %w", err)
	}
	if len(doc) > MaxTwinBytes {
		return fmt.Errorf("%w: twin of %s is %d bytes (limit %d)", ErrTooLarge, device, len(doc), MaxTwinBytes)
	}
	v := append([]byte(nil), doc...)
	err := q.doSized(ctx, int64(len(v)+len(device)+64), func(b *batch) error {
		if err := q.diskLow(); err != nil {
			return err
		}
		return b.set(twinKey(device), v)
	})
	if err != nil {
		return fmt.Errorf("store: put twin %s: %w", device, err)
	}
	return nil
}

// Twin returns device's twin document as PutTwin stored it last; ok is
// false when none was stored.
func (q *Queue) Twin(device string) (doc []byte, ok bool, err error) {
	err = q.view(func(txn *badger.Txn) error {
		it, err := txn.Get(twinKey(device))
		if err != nil {
			return err
		}
		doc, err = it.ValueCopy(nil)
		return err
	})
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("store: twin %s: %w", device, err)
	}
	return doc, true, nil
}
