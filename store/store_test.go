package store_test

import (
	"testing"

	"github.com/outpost-iot/outpost/store"
	"github.com/outpost-iot/outpost/store/storetest"
)

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T, dir string, opt store.Options) (storetest.Queue, error) {
		return store.Open(dir, opt)
	})
}
