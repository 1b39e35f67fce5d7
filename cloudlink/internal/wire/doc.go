// Package wire is the socket under the cloud link's paho client: broker
// URLs, TLS client settings, a dialer the session closes for sure before it
// dials again, and a connection that buffers paho's byte-at-a-time reads and
// combines its small writes.
package wire
