package msg

import "context"

// An Intake takes one C2D message in: a command for device, with the
// message's property bag and payload. The local hub (an operator client's
// publish on a devicebound topic), the cloud link (C2D from the cloud) and
// the gateway's HTTP API all hand commands to the same Intake, the command
// ledger's.
//
// It returns nil only once the message is stored durably (or deliberately
// discarded, a duplicate among them): only then does the caller acknowledge
// it (the PUBACK, the 202). An error means "not stored": the caller does not
// acknowledge it, so the sender delivers it again. Because senders
// redeliver, an Intake must be idempotent on the $.mid property
// (PropMessageID). It may be called from several goroutines at once. It
// owns payload.
type Intake func(ctx context.Context, device string, props Props, payload []byte) error
