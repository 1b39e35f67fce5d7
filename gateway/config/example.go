package config

import _ "embed"

// Example is a commented minimal config that validates: a gateway with one
// MQTT leaf, forwarding to an MQTT broker. It is the config shown in the
// README and used by `outpost check` tests.
//
//go:embed example.yaml
var Example []byte
