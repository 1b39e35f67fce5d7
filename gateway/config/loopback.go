package config

import (
	"net"
	"net/netip"
	"strings"
)

// IsLoopback reports whether the host:port listen address binds only a
// loopback address (127.0.0.0/8, ::1 or localhost); an empty host binds
// every interface and is not.
func IsLoopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
