//go:build !linux

package modbus

import (
	"errors"
	"os"
)

// openSerial is implemented for Linux only: Outpost's targets.
func openSerial(s busSpec) (*os.File, error) {
	return nil, errors.New("modbus: rtu:// serial ports are supported on Linux only")
}
