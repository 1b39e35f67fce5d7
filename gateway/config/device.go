package config

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/goccy/go-yaml/ast"

	"github.com/outpost-iot/outpost/adapters"
	"github.com/outpost-iot/outpost/gateway/msg"
)

// deviceKeys are the keys a device entry has besides its one kind key.
var deviceKeys = []string{"id", "priority", "azure", "twin_interval"}

// decodeNode decodes one devices[i] entry: id, priority, azure, and exactly
// one registered adapter kind key whose node is decoded strictly into the
// kind's config and then validated.
func (dev *Device) decodeNode(d *decoder, path string, n ast.Node) {
	dev.Priority = msg.Normal
	dev.TwinInterval = DefaultTwinInterval
	m, ok := n.(*ast.MappingNode)
	if !ok {
		d.errorf(d.idx.lookup(path, false), path, "%s: want a device mapping (id and one of %s), got %s", path, kindList(), describe(n))
		return
	}
	var kindKey, kindVal ast.Node
	unknown := false
	for _, mv := range d.entries(path, m, 0) {
		k := keyString(mv.Key)
		p := join(path, k)
		switch k {
		case "id":
			d.decodeValue(p, mv.Value, reflect.ValueOf(&dev.ID).Elem())
			continue
		case "priority":
			d.decodeValue(p, mv.Value, reflect.ValueOf(&dev.Priority).Elem())
			continue
		case "azure":
			d.decodeValue(p, mv.Value, reflect.ValueOf(&dev.Azure).Elem())
			continue
		case "twin_interval":
			d.decodeValue(p, mv.Value, reflect.ValueOf(&dev.TwinInterval).Elem())
			continue
		}
		if _, ok := adapters.Lookup(k); !ok {
			known := append(append([]string(nil), deviceKeys...), adapters.Kinds()...)
			hint := ""
			if s := suggest(k, known); s != "" {
				hint = fmt.Sprintf("did you mean %q? ", s)
			}
			d.errorf(posOf(mv.Key), p, "unknown key %q in %s (%sa device has id, priority, azure, twin_interval and one adapter kind: %s)", k, path, hint, kindList())
			unknown = true
			continue
		}
		if dev.Kind != "" {
			d.errorf(posOf(mv.Key), p, "%s: a device has exactly one adapter kind, but this one has %s and %s", path, dev.Kind, k)
			continue
		}
		dev.Kind, kindKey, kindVal = k, mv.Key, mv.Value
	}
	if dev.Kind == "" {
		if unknown {
			return // the unknown key was most likely meant to be the kind
		}
		d.errorf(posOf(m), path, "%s: no adapter kind: a device needs exactly one of %s", path, kindList())
		return
	}
	kind, _ := adapters.Lookup(dev.Kind)
	kp := join(path, dev.Kind)
	cfg := kind.NewConfig()
	rv := reflect.ValueOf(cfg)
	if cfg == nil || rv.Kind() != reflect.Pointer || rv.IsNil() {
		d.errorf(posOf(kindKey), kp, "%s: adapter kind %q: NewConfig returned %T, not a pointer", kp, dev.Kind, cfg)
		return
	}
	before := len(d.errs)
	d.decodeValue(kp, kindVal, rv.Elem())
	dev.Adapter = cfg
	if len(d.errs) > before {
		return // validating a half-decoded config would repeat the problem
	}
	for _, err := range leafErrors(cfg.Validate()) {
		var fe *adapters.FieldError
		if errors.As(err, &fe) {
			fp := kp
			if fe.Path != "" {
				sep := "."
				if strings.HasPrefix(fe.Path, "[") {
					sep = ""
				}
				fp = kp + sep + fe.Path
			}
			d.errorf(d.idx.lookup(fp, false), fp, "%s: %v", fp, fe.Err)
			continue
		}
		d.errorf(posOf(kindKey), kp, "%s: %v", kp, err)
	}
}

// leafErrors flattens errors.Join trees into their leaves, keeping a
// *FieldError whole.
func leafErrors(err error) []error {
	if err == nil {
		return nil
	}
	if _, ok := err.(*adapters.FieldError); ok {
		return []error{err}
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, leafErrors(e)...)
		}
		return out
	}
	return []error{err}
}

func kindList() string {
	ks := adapters.Kinds()
	if len(ks) == 0 {
		return "(no adapter kinds are registered)"
	}
	return strings.Join(ks, ", ")
}
