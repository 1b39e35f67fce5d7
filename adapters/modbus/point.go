package modbus

import (
	"time"

	"github.com/outpost-iot/outpost/adapters/modbus/codec"
)

// Protocol limits of one read request.
const (
	maxRegisters = 125
	maxBits      = 2000
)

type table uint8

const (
	tableCoil table = iota
	tableDiscrete
	tableInput
	tableHolding
	numTables
)

var tableByName = map[string]table{"coil": tableCoil, "discrete": tableDiscrete, "input": tableInput, "holding": tableHolding}

func (t table) String() string {
	return [...]string{"coil", "discrete", "input", "holding"}[t]
}

// bits reports whether the table holds single bits rather than registers.
func (t table) bits() bool { return t == tableCoil || t == tableDiscrete }

// limit is the most items one read request of the table may carry.
func (t table) limit() int {
	if t.bits() {
		return maxBits
	}
	return maxRegisters
}

// point is one resolved register-map entry: where its registers are, how
// they decode (the embedded codec.Field), and how it is reported.
type point struct {
	codec.Field
	table     table
	addr      uint16 // protocol (0-based) address
	interval  time.Duration
	deadband  float64
	heartbeat time.Duration
	writable  bool
}

// filtered reports whether the point is reported on change only.
func (p *point) filtered() bool { return p.deadband > 0 || p.heartbeat > 0 }

// end is one past the point's last register or bit.
func (p *point) end() int { return int(p.addr) + p.Words }
