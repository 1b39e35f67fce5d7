package wire

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// BrokerAddr turns mqtt://host[:port] or mqtts://host[:port] into host:port
// and whether TLS is used. tcp://, ssl:// and tls:// are accepted too.
func BrokerAddr(raw string) (addr string, useTLS bool, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", false, fmt.Errorf("url %q: %w", raw, err)
	}
	useTLS, known := BrokerScheme(u.Scheme)
	if !known {
		return "", false, fmt.Errorf("url %q: scheme %q: want mqtt:// or mqtts://", raw, u.Scheme)
	}
	port := "1883"
	if useTLS {
		port = "8883"
	}
	if u.Hostname() == "" {
		return "", false, fmt.Errorf("url %q: no host", raw)
	}
	if (u.Path != "" && u.Path != "/") || u.User != nil {
		return "", false, fmt.Errorf("url %q: only scheme://host:port is allowed (credentials go in username/password_file)", raw)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n <= 0 || n > 65535 {
			return "", false, fmt.Errorf("url %q: bad port", raw)
		}
		port = p
	}
	return u.Hostname() + ":" + port, useTLS, nil
}

// BrokerScheme reports whether a broker URL's scheme means TLS, and whether
// it is one of the schemes accepted: mqtt and tcp (plain), mqtts, ssl and tls.
func BrokerScheme(scheme string) (secure, known bool) {
	switch strings.ToLower(scheme) {
	case "mqtts", "ssl", "tls":
		return true, true
	case "mqtt", "tcp":
		return false, true
	}
	return false, false
}
