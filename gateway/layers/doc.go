// Package layers has no code of its own: its tests guard the shape of the
// module.
//
// TestImportRules holds the import graph to the layering the design asks
// for:
//
//   - nothing under adapters imports the store, the cloud link or an MQTT
//     library (mochi-mqtt, paho): an adapter talks to field devices and
//     hands readings to an Emitter, nothing more;
//   - gateway/msg imports only the standard library, so every part can
//     import it;
//   - the store imports no gateway package but gateway/msg;
//   - gateway/twins imports no gateway package but gateway/msg and
//     gateway/iothub, and neither the store, the cloud link nor an MQTT
//     library: the hub, the store and a cloud link reach it through the
//     small interfaces it declares.
//
// Imports are counted directly and transitively, and only those of non-test
// files (what `go list -deps` reports without -test): a _test.go file may
// import what it needs to set up real peers. Helper packages for tests that
// other packages import (adapters/adaptertest, store/storetest) are
// ordinary packages and follow the same rules as their parents.
//
// TestPackageDocs checks that every package other than main, and other than
// a directory holding only _test.go files, has a package comment in at least
// one of its files.
package layers
