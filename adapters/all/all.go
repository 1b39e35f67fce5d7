// Package all registers every adapter kind; the outpost binary imports it
// for its side effects.
package all

import (
	_ "github.com/outpost-iot/outpost/adapters/sim"
)
