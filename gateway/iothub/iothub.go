// Package iothub is the device side of Azure IoT Hub's MQTT protocol as
// pure code, with no I/O: SAS tokens (parse, verify, sign), the MQTT
// username the device SDKs send, the topics of device twins, direct methods
// and cloud-to-device messages, the twin document with IoT Hub's merge
// rules and limits, and the timeout rules of a direct method call.
//
// The local hub uses it to let devices written for IoT Hub log in and talk
// to the gateway unchanged; the upstream link can use it to speak to IoT Hub.
// Property bags are msg's (msg.ParseBag, msg.Props.Encode): there is one bag
// codec in the gateway.
//
// Facts and their sources are in the project's IOTHUB.md (§2 SAS, §4 C2D,
// §5 twins and methods).
package iothub

import (
	"errors"
	"fmt"
)

// Status codes IoT Hub answers twin and method requests with.
const (
	StatusOK          = 200
	StatusNoContent   = 204 // a reported patch applied
	StatusBadRequest  = 400 // malformed JSON, bad names or values
	StatusNotFound    = 404 // a method call for a device that is not connected
	StatusTooLarge    = 413 // a section or payload over its size limit
	StatusThrottled   = 429
	StatusServerError = 500
	StatusTimeout     = 504 // a method call the device did not answer in time
)

// Error is a request IoT Hub would refuse, with the status it would answer.
type Error struct {
	Status int
	Msg    string
}

func (e *Error) Error() string { return fmt.Sprintf("iothub: %d: %s", e.Status, e.Msg) }

func errorf(status int, format string, a ...any) error {
	return &Error{Status: status, Msg: fmt.Sprintf(format, a...)}
}

// StatusOf returns the status of an *Error in err's chain, or 500 for any
// other non-nil error, or 200 for nil.
func StatusOf(err error) int {
	if err == nil {
		return StatusOK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return StatusServerError
}
