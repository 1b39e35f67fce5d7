// Package all registers every adapter kind; the outpost binary imports it
// for its side effects.
package all

import (
	_ "github.com/outpost-iot/outpost/adapters/gpio"
	_ "github.com/outpost-iot/outpost/adapters/modbus"
	_ "github.com/outpost-iot/outpost/adapters/serial"
	_ "github.com/outpost-iot/outpost/adapters/sim"
)
