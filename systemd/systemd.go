// Package systemd holds Outpost's systemd integration files and their
// tests: the hardened service unit (outpost.service), the sysusers.d entry
// that creates the outpost user and the gpio group (outpost.sysusers), and
// the tmpfiles.d entry for the data directory (outpost.tmpfiles).
//
// The files are embedded so that tools (the .deb builder, an installer) take
// the exact bytes the tests checked. The daemon's side of the protocol
// (READY=1, STATUS=, watchdog pings) lives in gateway/service.
package systemd

import _ "embed"

// Unit is outpost.service, installed as /lib/systemd/system/outpost.service.
//
//go:embed outpost.service
var Unit []byte

// Sysusers is outpost.sysusers, installed as /usr/lib/sysusers.d/outpost.conf.
//
//go:embed outpost.sysusers
var Sysusers []byte

// Tmpfiles is outpost.tmpfiles, installed as /usr/lib/tmpfiles.d/outpost.conf.
//
//go:embed outpost.tmpfiles
var Tmpfiles []byte

// MaxExposure is the highest `systemd-analyze security` exposure level the
// unit may have (0 = fully locked down, 10 = unprotected).
const MaxExposure = 2.5
