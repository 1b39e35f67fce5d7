package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/outpost-iot/outpost/adapters"
	"github.com/outpost-iot/outpost/gateway/msg"
)

// Validate checks c as Parse does after decoding, and returns an Errors
// (or nil). On a config built in code the errors carry no position.
func (c *Config) Validate() error {
	if es := c.validate(nil); len(es) > 0 {
		return es.sorted()
	}
	return nil
}

type validator struct {
	c      *Config
	failed map[string]bool
	errs   Errors
	// ids maps a device or client id to the path of its first use.
	ids map[string]string
}

// validate runs every semantic check. failed holds the paths that could
// not be decoded; checks on them (or below them) are skipped, so one
// mistake is reported once.
func (c *Config) validate(failed map[string]bool) Errors {
	v := &validator{c: c, failed: failed, ids: map[string]string{}}
	v.gateway()
	v.hub()
	v.http()
	v.store()
	v.cloud()
	if c.Commands.TTL <= 0 {
		v.errorf("commands.ttl", "commands.ttl must be positive, got %v", c.Commands.TTL)
	}
	v.devices()
	return v.errs
}

// ok reports whether path and its ancestors decoded without problems.
func (v *validator) ok(path string) bool {
	for p := path; ; p = parentPath(p) {
		if v.failed[p] {
			return false
		}
		if p == "" {
			return true
		}
	}
}

// errorf reports a problem at path's value, or, when path is not written
// in the file, at the nearest ancestor key written (a missing key is
// reported at its parent mapping).
func (v *validator) errorf(path, format string, args ...any) {
	if !v.ok(path) {
		return
	}
	p := v.c.where.lookup(path, false)
	v.errs = append(v.errs, &Error{File: v.c.File, Line: p.line, Col: p.col, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// set reports whether path is written in the file (for code-built
// configs, whether the value is non-zero).
func (v *validator) set(path string, nonzero bool) bool {
	if v.c.where == nil {
		return nonzero
	}
	return v.c.where.has(path)
}

func (v *validator) line(path string) string {
	if p := v.c.where.lookup(path, false); p.line > 0 {
		return fmt.Sprintf(" at line %d", p.line)
	}
	return ""
}

func trimPkg(err error) string { return strings.TrimPrefix(err.Error(), "msg: ") }

// deviceID checks a device or client id and that no other entry uses it.
func (v *validator) deviceID(path, id string) {
	if id == "" {
		v.errorf(path, "%s is required", path)
		return
	}
	if err := msg.ValidDeviceID(id); err != nil {
		v.errorf(path, "%s: %s", path, trimPkg(err))
		return
	}
	if id == v.c.Gateway.ID {
		v.errorf(path, "%s: %q is gateway.id; a device needs an id of its own", path, id)
		return
	}
	if first, dup := v.ids[id]; dup {
		v.errorf(path, "%s: id %q is already used by %s%s", path, id, parentPath(first), v.line(first))
		return
	}
	v.ids[id] = path
}

func (v *validator) gateway() {
	g := v.c.Gateway
	switch {
	case g.ID == "":
		v.errorf("gateway.id", "gateway.id is required")
	default:
		if err := msg.ValidDeviceID(g.ID); err != nil {
			v.errorf("gateway.id", "gateway.id: %s", trimPkg(err))
		}
	}
	if g.DataDir == "" {
		v.errorf("gateway.data_dir", "gateway.data_dir must not be empty")
	}
}

// checkListen checks a host:port listen address; port 0 picks a free port.
func (v *validator) checkListen(path, addr string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.errorf(path, "%s: bad listen address %q: want host:port, e.g. 127.0.0.1:1883 or :1883", path, addr)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		v.errorf(path, "%s: bad port %q in %q", path, port, addr)
		return
	}
	if strings.ContainsAny(host, " /") {
		v.errorf(path, "%s: bad host %q in %q", path, host, addr)
	}
}

func (v *validator) hub() {
	h := v.c.Hub
	if h.Listen != "" {
		v.checkListen("hub.listen", h.Listen)
	}
	tlsSet := h.TLS != HubTLS{}
	if h.TLSListen != "" {
		v.checkListen("hub.tls_listen", h.TLSListen)
		if h.TLSListen == h.Listen {
			v.errorf("hub.tls_listen", "hub.tls_listen: same address as hub.listen")
		}
		if h.TLS.CertFile == "" {
			v.errorf("hub.tls.cert_file", "hub.tls.cert_file is required with hub.tls_listen")
		}
		if h.TLS.KeyFile == "" {
			v.errorf("hub.tls.key_file", "hub.tls.key_file is required with hub.tls_listen")
		}
	} else if tlsSet {
		v.errorf("hub.tls", "hub.tls is set but hub.tls_listen is empty: nothing would use it")
	}
	if h.MaxMessageBytes <= 0 || h.MaxMessageBytes > 256*msg.MiB-1 {
		v.errorf("hub.max_message_bytes", "hub.max_message_bytes must be between 1 and 268435455 (MQTT's limit), got %d", h.MaxMessageBytes)
	}
	if h.MaxInflight < 1 || h.MaxInflight > 65535 {
		v.errorf("hub.max_inflight", "hub.max_inflight must be between 1 and 65535, got %d", h.MaxInflight)
	}
	if h.SessionExpiry < 0 || h.SessionExpiry > math.MaxUint32*time.Second {
		v.errorf("hub.session_expiry", "hub.session_expiry must be between 0 and %v, got %v", math.MaxUint32*time.Second, h.SessionExpiry)
	}
	if h.ConnectRate < 0 || math.IsInf(h.ConnectRate, 0) || math.IsNaN(h.ConnectRate) {
		v.errorf("hub.connect_rate", "hub.connect_rate must be 0 (unlimited) or a positive rate per second, got %v", h.ConnectRate)
	}
	if h.ConnectRate > 0 && h.ConnectBurst < 1 {
		v.errorf("hub.connect_burst", "hub.connect_burst must be at least 1 when hub.connect_rate is set, got %d", h.ConnectBurst)
	}
	for i, cl := range h.Clients {
		p := elem("hub.clients", i)
		v.deviceID(p+".id", cl.ID)
		switch {
		case cl.PasswordHash == "" && h.TLS.ClientCAFile == "":
			v.errorf(p+".password_hash", "%s.password_hash is required (make one with `outpost passwd`); no client connects anonymously", p)
		case cl.PasswordHash != "":
			if _, err := bcrypt.Cost([]byte(cl.PasswordHash)); err != nil {
				v.errorf(p+".password_hash", "%s.password_hash is not a bcrypt hash (make one with `outpost passwd`)", p)
			}
		}
		if cl.IsDevice() {
			v.deviceAzure(p, cl.Azure)
		}
	}
}

func (v *validator) http() {
	l := v.c.HTTP.Listen
	if l == "" {
		return
	}
	v.checkListen("http.listen", l)
	if l == v.c.Hub.Listen || l == v.c.Hub.TLSListen {
		v.errorf("http.listen", "http.listen: same address as the hub's listener")
	}
}

func (v *validator) store() {
	s := v.c.Store
	if s.MaxBytes <= 0 {
		v.errorf("store.max_bytes", "store.max_bytes must be positive, got %v", s.MaxBytes)
	} else if s.MaxBytes < v.c.Hub.MaxMessageBytes {
		v.errorf("store.max_bytes", "store.max_bytes (%v) is smaller than hub.max_message_bytes (%v): a largest message could never be stored", s.MaxBytes, v.c.Hub.MaxMessageBytes)
	}
	switch s.WhenFull {
	case DropOldest, Reject:
	default:
		v.errorf("store.when_full", "store.when_full: unknown policy %q (want drop-oldest or reject)", s.WhenFull)
	}
	if s.TTL < 0 {
		v.errorf("store.ttl", "store.ttl must not be negative (0 keeps records until delivered), got %v", s.TTL)
	}
}

func (v *validator) devices() {
	for i, d := range v.c.Devices {
		p := elem("devices", i)
		v.deviceID(p+".id", d.ID)
		v.deviceAzure(p, d.Azure)
		if v.c.where == nil {
			v.codeBuiltAdapter(p, d)
		}
	}
}

// codeBuiltAdapter checks a device of a config built in code (Parse has
// already done this while decoding a file).
func (v *validator) codeBuiltAdapter(p string, d Device) {
	if _, ok := adapters.Lookup(d.Kind); !ok {
		v.errorf(p, "%s: unknown adapter kind %q (registered: %s)", p, d.Kind, kindList())
		return
	}
	if d.Adapter == nil {
		v.errorf(p, "%s: no adapter config", p)
		return
	}
	kp := join(p, d.Kind)
	for _, err := range leafErrors(d.Adapter.Validate()) {
		var fe *adapters.FieldError
		if errors.As(err, &fe) && fe.Path != "" {
			v.errorf(kp, "%s.%s: %v", kp, fe.Path, fe.Err)
			continue
		}
		v.errorf(kp, "%s: %v", kp, err)
	}
}

// deviceAzure checks a device's or client's own IoT Hub identity.
func (v *validator) deviceAzure(p string, a *DeviceAzure) {
	cl := v.c.Cloud
	perDevice := cl.Protocol == ProtocolAzure && cl.Identity == IdentityPerDevice
	if !perDevice || !v.ok("cloud.protocol") || !v.ok("cloud.identity") {
		return
	}
	if cl.SharedAccessKeyName != "" && a == nil {
		return // the policy key signs this device's tokens
	}
	if a == nil || (a.SharedAccessKey == "" && a.SharedAccessKeyFile == "") {
		v.errorf(p+".azure", "%s needs azure: {shared_access_key: ...} or {shared_access_key_file: ...} with cloud.identity: per-device (or set cloud.shared_access_key_name to sign with a policy key)", p)
		return
	}
	if a.SharedAccessKey != "" && a.SharedAccessKeyFile != "" {
		v.errorf(p+".azure.shared_access_key_file", "%s.azure: set shared_access_key or shared_access_key_file, not both", p)
		return
	}
	if a.SharedAccessKey != "" {
		v.checkKey(p+".azure.shared_access_key", a.SharedAccessKey)
	}
}

func (v *validator) checkKey(path, key string) {
	if b, err := base64.StdEncoding.DecodeString(key); err != nil || len(b) == 0 {
		v.errorf(path, "%s is not a base64 key", path)
	}
}

// cloudURL checks an upstream broker URL and reports whether it uses TLS.
func (v *validator) cloudURL(path, raw string) (secure bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		v.errorf(path, "%s: bad broker URL %q: want mqtts://host:port or mqtt://host:port", path, redactURL(raw))
		return true
	}
	switch u.Scheme {
	case "mqtts", "ssl", "tls":
		secure = true
	case "mqtt", "tcp":
	default:
		v.errorf(path, "%s: unknown scheme %q in %q (want mqtts://, or mqtt:// for plain TCP)", path, u.Scheme, redactURL(raw))
		return true
	}
	if _, pw := u.User.Password(); pw {
		v.errorf(path, "%s must not carry a password: put it in cloud.password_file", path)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			v.errorf(path, "%s: bad port %q", path, p)
		}
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		v.errorf(path, "%s: a broker URL has no path or query, got %q", path, redactURL(raw))
	}
	return secure
}
