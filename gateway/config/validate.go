package config

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/outpost-iot/outpost/adapters"
	"github.com/outpost-iot/outpost/cloudlink"
	"github.com/outpost-iot/outpost/gateway/hub"
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

// owned places the errors of a section's own Validate (hub, store, cloud):
// each *adapters.FieldError at the section's key below it, with its message
// as the owner wrote it (the owner knows its section and names its keys as
// written in the file); any other error at the section.
func (v *validator) owned(section string, err error) {
	for _, err := range leafErrors(err) {
		var fe *adapters.FieldError
		if errors.As(err, &fe) && fe.Path != "" {
			sep := "."
			if strings.HasPrefix(fe.Path, "[") {
				sep = ""
			}
			v.errorf(section+sep+fe.Path, "%v", fe.Err)
			continue
		}
		v.errorf(section, "%v", err)
	}
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
	if g.StallTimeout < time.Second {
		v.errorf("gateway.stall_timeout", "gateway.stall_timeout must be at least 1s, got %v", g.StallTimeout)
	}
}

// hub places the hub's own errors, each client's after the check of its id
// (two problems at one position keep the order id, password, azure).
func (v *validator) hub() {
	own := leafErrors(v.c.Hub.HubConfig().Validate())
	ofClient := func(i int) (mine []error) {
		prefix := elem("clients", i) + "."
		own = slices.DeleteFunc(own, func(err error) bool {
			var fe *adapters.FieldError
			if errors.As(err, &fe) && strings.HasPrefix(fe.Path, prefix) {
				mine = append(mine, err)
				return true
			}
			return false
		})
		return mine
	}
	clients := make([][]error, len(v.c.Hub.Clients))
	for i := range clients {
		clients[i] = ofClient(i)
	}
	v.owned("hub", errors.Join(own...))
	for i, cl := range v.c.Hub.Clients {
		p := elem("hub.clients", i)
		v.deviceID(p+".id", cl.ID)
		v.owned("hub", errors.Join(clients[i]...))
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
	if err := hub.ValidListen(l); err != nil {
		v.errorf("http.listen", "http.listen: %v", err)
	}
	if l == v.c.Hub.Listen || l == v.c.Hub.TLSListen {
		v.errorf("http.listen", "http.listen: same address as the hub's listener")
	}
	if v.c.HTTP.TokenFile == "" && !IsLoopback(l) {
		v.errorf("http.listen", "http.listen %s is not a loopback address: set http.token_file, or anyone who can reach it may command devices", l)
	}
}

func (v *validator) store() {
	s := v.c.Store
	v.owned("store", s.Validate())
	if s.MaxBytes > 0 && s.MaxBytes < v.c.Hub.MaxMessageBytes {
		v.errorf("store.max_bytes", "store.max_bytes (%v) is smaller than hub.max_message_bytes (%v): a largest message could never be stored", s.MaxBytes, v.c.Hub.MaxMessageBytes)
	}
}

func (v *validator) devices() {
	for i, d := range v.c.Devices {
		p := elem("devices", i)
		v.deviceID(p+".id", d.ID)
		v.deviceAzure(p, d.Azure)
		if d.TwinInterval != 0 && d.TwinInterval < MinTwinInterval {
			v.errorf(p+".twin_interval", "%s.twin_interval: %v is below the minimum of %v", p, d.TwinInterval, MinTwinInterval)
		}
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

// deviceAzure checks a device's or client's own IoT Hub identity: its key
// whenever one is written (a hub client logs in with it under any
// protocol), and its presence under cloud.identity per-device.
func (v *validator) deviceAzure(p string, a *DeviceAzure) {
	cl := v.c.Cloud
	perDevice := cl.Protocol == cloudlink.ProtocolAzure && cl.Identity == cloudlink.IdentityPerDevice
	if !perDevice || !v.ok("cloud.protocol") || !v.ok("cloud.identity") {
		if a != nil {
			v.azureKey(p, a)
		}
		return
	}
	if cl.SharedAccessKeyName != "" && a == nil {
		return // the policy key signs this device's tokens
	}
	if a == nil || (a.SharedAccessKey == "" && a.SharedAccessKeyFile == "") {
		v.errorf(p+".azure", "%s needs azure: {shared_access_key: ...} or {shared_access_key_file: ...} with cloud.identity: per-device (or set cloud.shared_access_key_name to sign with a policy key)", p)
		return
	}
	v.azureKey(p, a)
}

// azureKey checks an azure block's key: one of the two keys, base64.
func (v *validator) azureKey(p string, a *DeviceAzure) {
	if a.SharedAccessKey != "" && a.SharedAccessKeyFile != "" {
		v.errorf(p+".azure.shared_access_key_file", "%s.azure: set shared_access_key or shared_access_key_file, not both", p)
		return
	}
	if a.SharedAccessKey != "" {
		if err := cloudlink.ValidKey(a.SharedAccessKey); err != nil {
			v.errorf(p+".azure.shared_access_key", "%s.azure.shared_access_key %v", p, err)
		}
	}
}
