package store

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store/internal/damage"
	"github.com/outpost-iot/outpost/store/internal/layout"
)

// meta is the durable bookkeeping, one JSON value under layout.MetaKey.
type meta struct {
	Version  int    `json:"v"`
	Instance string `json:"instance"` // random; prefix of generated ids
	NextSeq  uint64 `json:"next_seq"`

	Classes [msg.NumPriorities]classMeta `json:"classes"`

	Appends     uint64 `json:"appends"`
	Acks        uint64 `json:"acks"`
	Dropped     uint64 `json:"dropped"`
	Expired     uint64 `json:"expired"`
	Dead        uint64 `json:"dead"`
	DeadDepth   uint64 `json:"dead_depth"`
	DeadDropped uint64 `json:"dead_dropped"`
	DeadHead    uint64 `json:"dead_head"`

	Gap    Gap    `json:"gap"`     // accumulating
	GapOut Gap    `json:"gap_out"` // taken, waiting for AckGap
	GapGen uint64 `json:"gap_gen"`

	CmdSeq uint64 `json:"cmd_seq"`
}

type classMeta struct {
	Depth uint64 `json:"depth"`
	Bytes int64  `json:"bytes"`
	Head  uint64 `json:"head"` // no live record below this seq
}

func (m *meta) bytes() int64 {
	var n int64
	for _, c := range m.Classes {
		n += c.Bytes
	}
	return n
}

func (m *meta) depth() uint64 {
	var n uint64
	for _, c := range m.Classes {
		n += c.Depth
	}
	return n
}

func (q *Queue) loadMeta() error {
	var raw []byte
	err := q.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(layout.MetaKey)
		if err != nil {
			return err
		}
		raw, err = it.ValueCopy(nil)
		return err
	})
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		empty, err := q.isEmpty()
		if err != nil {
			return fmt.Errorf("%w: %v", damage.ErrDamaged, err)
		}
		if !empty {
			return fmt.Errorf("%w: records without meta", damage.ErrDamaged)
		}
		var b [6]byte
		rand.Read(b[:])
		q.m = meta{Version: 1, Instance: hex.EncodeToString(b[:]), NextSeq: 1, GapGen: 1}
		return nil
	case err != nil:
		return fmt.Errorf("%w: read meta: %v", damage.ErrDamaged, err)
	}
	if err := json.Unmarshal(raw, &q.m); err != nil || q.m.Version != 1 || q.m.NextSeq == 0 {
		return fmt.Errorf("%w: meta %q: %v", damage.ErrDamaged, raw, err)
	}
	return nil
}

func (q *Queue) isEmpty() (bool, error) {
	empty := true
	err := q.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{})
		defer it.Close()
		it.Rewind()
		empty = !it.Valid()
		return nil
	})
	return empty, err
}
