package config

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestPosAndErrorAt(t *testing.T) {
	src := ok + "devices:\n  - id: a\n    other: {port: p}\n  - id: b\n    fake:\n      url: u\n"
	c, err := Parse("t.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"devices[1]":                     "t.yaml:5:5",
		"devices[1].fake.url":            "t.yaml:7:12",
		"devices[1].fake.points[3].type": "t.yaml:6:5", // not written: nearest key
		"gateway.id":                     "t.yaml:1:15",
		"hub.listen":                     "t.yaml:1:1", // not written at all
	} {
		if got := c.Pos(path); got != want {
			t.Errorf("Pos(%q) = %s, want %s", path, got, want)
		}
	}
	e := c.ErrorAt("devices[0]", errors.New("open p: no such file"))
	if got, want := e.Error(), "t.yaml:3:5: open p: no such file"; got != want {
		t.Errorf("ErrorAt = %s, want %s", got, want)
	}
	if got := Default().Pos("hub"); got != "" {
		t.Errorf("Default().Pos = %q", got)
	}
}

func TestDeviceEqual(t *testing.T) {
	src := ok + "devices:\n  - {id: a, fake: {url: u, points: [{name: x, type: int16}]}}\n"
	c1, err1 := Parse("1.yaml", []byte(src))
	c2, err2 := Parse("2.yaml", []byte("# moved\n"+src))
	c3, err3 := Parse("3.yaml", []byte(strings.Replace(src, "int16", "float32", 1)))
	if err := errors.Join(err1, err2, err3); err != nil {
		t.Fatal(err)
	}
	if !c1.Devices[0].Equal(c2.Devices[0]) {
		t.Error("the same device is not Equal")
	}
	if c1.Devices[0].Equal(c3.Devices[0]) {
		t.Error("a changed point type is Equal")
	}
}

// TestEveryKeyCovered guards TestEveryKey: every YAML key of every config
// section must appear in it, so a new key cannot go untested.
func TestEveryKeyCovered(t *testing.T) {
	src := everyKeySrc + everyKeyMQTTSrc
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || typ.PkgPath() != reflect.TypeFor[Config]().PkgPath() {
			return
		}
		if typ == reflect.TypeFor[Device]() {
			for _, k := range deviceKeys {
				if !strings.Contains(src, k+":") {
					t.Errorf("key devices[].%s is not in TestEveryKey", k)
				}
			}
			walk("devices[].azure", reflect.TypeFor[DeviceAzure]())
			return
		}
		fs := fieldsOf(typ)
		for _, name := range fs.names {
			if !strings.Contains(src, name+":") {
				t.Errorf("key %s%s is not in TestEveryKey", prefix, name)
			}
			walk(fmt.Sprint(prefix, name, "."), typ.FieldByIndex(fs.byName[name]).Type)
		}
	}
	walk("", reflect.TypeFor[Config]())
}

func TestValidateCodeBuilt(t *testing.T) {
	c := Default()
	c.Gateway.ID = "gw"
	c.Devices = []Device{
		{ID: "a", Kind: "fake", Adapter: &fakeConfig{URL: "u", Interval: time.Second}},
		{ID: "b", Kind: "fake", Adapter: &fakeConfig{Interval: time.Second, Points: []fakePoint{{Type: "x"}}}},
		{ID: "c", Kind: "nope"},
		{ID: "a", Kind: "other"},
	}
	want := strings.Join([]string{
		`devices[1].fake.url: url is required`,
		`devices[1].fake.points[0].type: unknown type "x"`,
		`devices[2]: unknown adapter kind "nope" (registered: fake, other)`,
		`devices[3].id: id "a" is already used by devices[0]`,
		`devices[3]: no adapter config`,
	}, "\n")
	if err := c.Validate(); err == nil || err.Error() != want {
		t.Errorf("got\n%v\nwant\n%s", err, want)
	}
}

// TestTwinInterval: devices[].twin_interval defaults to 10s and may not be
// below 100ms.
func TestTwinInterval(t *testing.T) {
	c, err := Parse("t.yaml", []byte(ok+"devices:\n  - {id: a, fake: {url: u, points: [{name: x, type: int16}]}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Devices[0].TwinInterval; got != DefaultTwinInterval {
		t.Errorf("default twin_interval %v, want %v", got, DefaultTwinInterval)
	}
	_, err = Parse("t.yaml", []byte(ok+"devices:\n  - {id: a, twin_interval: 10ms, fake: {url: u, points: [{name: x, type: int16}]}}\n"))
	if err == nil || !strings.Contains(err.Error(), "devices[0].twin_interval: 10ms is below the minimum of 100ms") {
		t.Errorf("twin_interval 10ms: %v", err)
	}
}
